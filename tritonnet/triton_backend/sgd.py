"""Launcher of the one-launch SGD update (`tritonnet.kernels.sgd`)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from tritonnet import checks
from tritonnet.kernels import sgd as kernels
from tritonnet.triton_backend.common import check_operands
from tritonnet.triton_backend.launch import Kernel, Launch
from tritonnet.triton_backend.plans import Plans

SGD = Kernel(
    kernels.sgd_update_kernel,
    lambda arguments: (
        triton.cdiv(arguments["w_numel"], arguments["BLOCK"]) + triton.cdiv(arguments["b_numel"], arguments["BLOCK"]),
    ),
    autotuned=kernels.sgd_update_autotuned,
    fixed=kernels.SGD_INTERPRETER_CONFIG,
)


def _dense(tensor: torch.Tensor) -> bool:
    """Whether `tensor` fills one run of memory: contiguous, or the transpose of a
    contiguous matrix (the MLP's weights on the CPU, stored `[out, in]`)."""
    return tensor.is_contiguous() or (tensor.dim() == 2 and tensor.t().is_contiguous())


def check_parameter(name: str, param: torch.Tensor) -> None:
    """`param`, stepped in place by a kernel that walks it element by element, fills
    one run of memory: no two elements share an address, so no two programs race."""
    if not _dense(param):
        raise ValueError(
            f"{name} must be contiguous or the transpose of a contiguous matrix, got strides {param.stride()}"
        )


def _check_pair(name: str, param: torch.Tensor, grad_name: str, grad: object) -> None:
    """`grad` matches `param` in shape, device, dtype, kernel support and memory
    layout, and `param` is dense."""
    grad = checks.check_float_tensor(grad_name, grad)
    if grad.shape != param.shape:
        raise ValueError(
            f"{grad_name} must have the shape of {name}, {tuple(param.shape)}, got {tuple(grad.shape)}"
        )
    check_operands(**{name: param, grad_name: grad})
    # The kernel walks both tensors as one flat run of elements, in memory order:
    # the parameter must fill one run, and its gradient be laid out the same way.
    check_parameter(name, param)
    if grad.stride() != param.stride():
        raise ValueError(f"{grad_name} must have the strides of {name}, {param.stride()}, got {grad.stride()}")


@dataclass(frozen=True)
class _Plan:
    weight_numel: int
    bias_numel: int
    launch: Launch | None


def _plan(weight: object, bias: object, grad_weight: object, grad_bias: object) -> _Plan:
    weight = checks.check_float_tensor("weight", weight)
    _check_pair("weight", weight, "grad_weight", grad_weight)
    if (bias is None) != (grad_bias is None):
        raise ValueError(
            "bias and grad_bias must both be tensors or both be None, got "
            f"bias {type(bias).__name__} and grad_bias {type(grad_bias).__name__}"
        )
    bias_numel = 0  # no bias programs without a bias
    if bias is not None:
        bias = checks.check_float_tensor("bias", bias)
        check_operands(weight=weight, bias=bias)
        _check_pair("bias", bias, "grad_bias", grad_bias)
        bias_numel = bias.numel()
    launch = Launch(SGD) if weight.numel() + bias_numel else None
    return _Plan(weight.numel(), bias_numel, launch)


_plans = Plans(_plan)


def sgd_update(
    weight: torch.Tensor, bias: torch.Tensor | None, grad_weight: torch.Tensor, grad_bias: torch.Tensor | None, lr: float
) -> None:
    """Plain SGD in place, `weight -= lr * grad_weight` and `bias -= lr * grad_bias`, in one launch.

    Each parameter must be contiguous or the transpose of a contiguous matrix, and
    its gradient laid out the same (`torch.empty_like` does it); bias and
    grad_bias are both None or both tensors. fp32 math, rounded once to the
    parameters' dtype.
    """
    plan = _plans(weight, bias, grad_weight, grad_bias)
    lr = checks.check_learning_rate("lr", lr)
    if plan.launch is not None:
        if bias is None:
            # The kernel never reads the bias pointers when there are no bias programs.
            bias, grad_bias = weight, grad_weight
        plan.launch(weight, grad_weight, plan.weight_numel, bias, grad_bias, plan.bias_numel, lr)
