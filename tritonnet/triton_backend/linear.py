"""Launchers of the fused linear kernels (`tritonnet.kernels.linear_forward`,
`tritonnet.kernels.linear_backward`).

Same contract as `tritonnet.reference.linear_forward` and `linear_backward`. The
launchers check the arguments (the kernels trust them), allocate the outputs
that were not given, and skip the launch when there is nothing to compute.
`alignment.launch_gemm` picks the configs of the launch's alignment class
(tensor-core tiles for aligned operands): autotuned on a GPU, one fixed config in
Triton's CPU interpreter, whose autotuner would run every config. The weight
gradient's launch, split over the batch when it is large, is `weight_gradient.py`'s.
"""

from __future__ import annotations

import torch
import triton

from tritonnet import checks
from tritonnet.kernels import linear_backward as backward_kernels
from tritonnet.kernels import linear_forward as forward_kernels
from tritonnet.reference import ACTIVATIONS
from tritonnet.triton_backend.alignment import launch_gemm
from tritonnet.triton_backend.common import check_operands, check_scale, dot_precision
from tritonnet.triton_backend.sgd import sgd_update
from tritonnet.triton_backend.weight_gradient import launch_weight_gradient


def _check_vector(name: str, value: object, length: int) -> torch.Tensor:
    tensor = checks.check_float_tensor(name, value)
    if tensor.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {tuple(tensor.shape)}")
    return tensor


def linear_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str = "none",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`activation(x @ weight + bias)` for x `[M, K]`, weight `[K, N]`, bias `[N]` or None.

    Any strides (weight may be the transposed view of an `[N, K]` tensor).
    activation is "none" or "sigmoid". `out` `[M, N]`, if given, is written in
    place and returned; it has x's dtype, or float32 for fp16 and bf16 inputs,
    which keeps the fp32 accumulator unrounded (the wide output layer's logits).
    """
    x = checks.check_matrix("x", x)
    rows, in_features = x.shape
    weight = checks.check_matrix("weight", weight, rows=in_features)
    out_features = weight.shape[1]
    if bias is not None:
        bias = _check_vector("bias", bias, out_features)
    activation = checks.check_choice("activation", activation, ACTIVATIONS)
    check_operands(x=x, weight=weight, bias=bias)
    if out is None:
        out = torch.empty(rows, out_features, dtype=x.dtype, device=x.device)
    else:
        out = checks.check_matrix("out", out, cols=out_features, rows=rows)
        checks.check_same_device(x=x, out=out)
        if out.dtype not in (x.dtype, torch.float32):
            also = "" if x.dtype == torch.float32 else " or torch.float32"
            raise TypeError(f"out must have x's dtype {x.dtype}{also}, got {out.dtype}")
    if out.numel() == 0:
        return out

    def grid(meta):
        return (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(out_features, meta["BLOCK_N"]),)

    args = (
        x,
        weight,
        bias,
        out,
        rows,
        out_features,
        in_features,
        *x.stride(),
        *weight.stride(),
        *out.stride(),
        bias.stride(0) if bias is not None else 0,
    )
    constexprs = dict(HAS_BIAS=bias is not None, ACTIVATION=activation, INPUT_PRECISION=dot_precision(x.dtype))
    launch_gemm(
        forward_kernels.linear_forward_autotuned, forward_kernels.LINEAR_FORWARD_FIXED_CONFIGS, grid, args, constexprs
    )
    return out


def linear_backward(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    output: torch.Tensor | None = None,
    activation: str = "none",
    scale: float = 1.0,
    *,
    need_grad_input: bool = True,
    need_grad_bias: bool = True,
    out_grad_input: torch.Tensor | None = None,
    out_grad_weight: torch.Tensor | None = None,
    out_grad_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Gradients of `output = activation(x @ weight + bias)`, from two fused kernels.

    With `dz = grad_output * output * (1 - output)` for the sigmoid (output is the
    saved forward result, required then) and `dz = grad_output` without:
    `grad_input = dz @ weight.T` if `need_grad_input` (else None),
    `grad_weight = scale * x.T @ dz`, `grad_bias = scale * dz.sum(0)` if
    `need_grad_bias` (else None). dz is never stored. Each `out_*` tensor given
    for a gradient that is computed is written in place and returned.
    """
    x = checks.check_matrix("x", x)
    rows, in_features = x.shape
    weight = checks.check_matrix("weight", weight, rows=in_features)
    out_features = weight.shape[1]
    grad_output = checks.check_matrix("grad_output", grad_output, cols=out_features, rows=rows)
    activation = checks.check_choice("activation", activation, ACTIVATIONS)
    if activation == "sigmoid":
        if output is None:
            raise ValueError(
                "output (the saved forward output) is required for activation 'sigmoid', got None"
            )
        output = checks.check_matrix("output", output, cols=out_features, rows=rows)
    else:
        output = None  # dz = grad_output: the kernels do not read it
    scale = check_scale(scale)
    out_grad_input = out_grad_input if need_grad_input else None
    out_grad_bias = out_grad_bias if need_grad_bias else None
    if out_grad_input is not None:
        out_grad_input = checks.check_matrix("out_grad_input", out_grad_input, cols=in_features, rows=rows)
    if out_grad_weight is not None:
        out_grad_weight = checks.check_matrix(
            "out_grad_weight", out_grad_weight, cols=out_features, rows=in_features
        )
    if out_grad_bias is not None:
        out_grad_bias = _check_vector("out_grad_bias", out_grad_bias, out_features)
    check_operands(
        grad_output=grad_output,
        x=x,
        weight=weight,
        output=output,
        out_grad_input=out_grad_input,
        out_grad_weight=out_grad_weight,
        out_grad_bias=out_grad_bias,
    )

    def new(*shape: int) -> torch.Tensor:
        return torch.empty(*shape, dtype=x.dtype, device=x.device)

    grad_input = None
    if need_grad_input:
        grad_input = out_grad_input if out_grad_input is not None else new(rows, in_features)
    # In the weight's memory layout, so that an SGD step can walk both as one run.
    grad_weight = out_grad_weight if out_grad_weight is not None else torch.empty_like(weight)
    grad_bias = None
    if need_grad_bias:
        grad_bias = out_grad_bias if out_grad_bias is not None else new(out_features)

    if rows == 0:
        # An empty batch: no rows to sum over.
        grad_weight.zero_()
        if grad_bias is not None:
            grad_bias.zero_()
        return grad_input, grad_weight, grad_bias

    precision = dot_precision(x.dtype)
    output_strides = output.stride() if output is not None else (0, 0)

    if grad_input is not None and grad_input.numel() > 0:

        def input_grid(meta):
            return (triton.cdiv(rows, meta["BLOCK_M"]) * triton.cdiv(in_features, meta["BLOCK_K"]),)

        args = (
            grad_output,
            output,
            weight,
            grad_input,
            rows,
            out_features,
            in_features,
            *grad_output.stride(),
            *output_strides,
            *weight.stride(),
            *grad_input.stride(),
        )
        launch_gemm(
            backward_kernels.linear_backward_input_autotuned,
            backward_kernels.LINEAR_BACKWARD_INPUT_FIXED_CONFIGS,
            input_grid,
            args,
            dict(ACTIVATION=activation, INPUT_PRECISION=precision),
        )

    if out_features > 0:
        launch_weight_gradient(x, grad_output, output, activation, scale, precision, grad_weight, grad_bias)
    return grad_input, grad_weight, grad_bias


def linear_backward_sgd(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    output: torch.Tensor | None,
    activation: str,
    scale: float,
    lr: float,
    *,
    need_grad_input: bool = True,
    out_grad_input: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """`linear_backward` followed by the SGD step, as `tritonnet.reference.linear_backward_sgd`.

    The step is its own launch (`sgd_update`) after the gradient kernels, split
    or not; docs/kernels.md says why it is not folded into them yet.
    """
    grad_input, grad_weight, grad_bias = linear_backward(
        grad_output,
        x,
        weight,
        output,
        activation,
        scale,
        need_grad_input=need_grad_input,
        need_grad_bias=bias is not None,
        out_grad_input=out_grad_input,
    )
    sgd_update(weight, bias, grad_weight, grad_bias, lr)
    return grad_input
