"""Launchers of the standalone sigmoid kernels (`tritonnet.kernels.sigmoid`)."""

from __future__ import annotations

import torch
import triton

from tritonnet import checks
from tritonnet.kernels import sigmoid as kernels
from tritonnet.triton_backend.common import check_operands, output_strides
from tritonnet.triton_backend.launch import Kernel, Launch
from tritonnet.triton_backend.plans import Plan, Plans


def _tiles(arguments: dict) -> tuple[int, int]:
    return (triton.cdiv(arguments["M"], arguments["BLOCK_M"]), triton.cdiv(arguments["N"], arguments["BLOCK_N"]))


FORWARD = Kernel(
    kernels.sigmoid_forward_kernel,
    _tiles,
    autotuned=kernels.sigmoid_forward_autotuned,
    fixed=kernels.SIGMOID_INTERPRETER_CONFIG,
)
BACKWARD = Kernel(
    kernels.sigmoid_backward_kernel,
    _tiles,
    autotuned=kernels.sigmoid_backward_autotuned,
    fixed=kernels.SIGMOID_INTERPRETER_CONFIG,
)


def _plan(kernel: Kernel, out: object, **inputs: torch.Tensor) -> Plan:
    """The plan of an element-wise kernel over `[M, N]`, the shape of the inputs:
    their strides go to the kernel in the order given, then those of `out`."""
    like_name, like = next(iter(inputs.items()))
    rows, cols = like.shape
    check_operands(**inputs)
    strides = [stride for tensor in inputs.values() for stride in tensor.stride()]
    strides += output_strides("out", out, rows, cols, like_name, like)
    launch = Launch(kernel) if like.numel() else None
    return Plan((rows, cols), like.dtype, like.device, (rows, cols, *strides), launch)


def _plan_forward(x: object, out: object) -> Plan:
    x = checks.check_matrix("x", x)
    return _plan(FORWARD, out, x=x)


def _plan_backward(grad_output: object, output: object, out: object) -> Plan:
    output = checks.check_matrix("output", output)
    grad_output = checks.check_matrix("grad_output", grad_output, cols=output.shape[1], rows=output.shape[0])
    return _plan(BACKWARD, out, grad_output=grad_output, output=output)


_forward_plans = Plans(_plan_forward)
_backward_plans = Plans(_plan_backward)


def sigmoid_forward(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """`1 / (1 + exp(-x))` of x `[M, N]` (any strides), into `out` if given (x itself too)."""
    plan = _forward_plans(x, out)
    out = plan.output(out)
    if plan.launch is not None:
        plan.launch(x, out, *plan.sizes)
    return out


def sigmoid_backward(
    grad_output: torch.Tensor, output: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """`grad_output * output * (1 - output)` for the saved sigmoid `output` `[M, N]`.

    `out` may be grad_output itself.
    """
    plan = _backward_plans(grad_output, output, out)
    out = plan.output(out)
    if plan.launch is not None:
        plan.launch(grad_output, output, out, *plan.sizes)
    return out
