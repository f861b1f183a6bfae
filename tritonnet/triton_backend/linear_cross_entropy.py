"""Launcher of the fused output layer: linear, softmax and cross-entropy
(`tritonnet.kernels.linear_cross_entropy`)."""

from __future__ import annotations

import torch
import triton

from tritonnet import checks
from tritonnet.kernels.linear_cross_entropy import (
    FUSED_MAX_N,
    LINEAR_CROSS_ENTROPY_INTERPRETER_CONFIG,
    linear_cross_entropy_autotuned,
    linear_cross_entropy_kernel,
)
from tritonnet.triton_backend.common import (
    check_operands,
    check_scale,
    dot_precision,
    fixed_configs,
    output_buffer,
)
from tritonnet.triton_backend.cross_entropy import launch_cross_entropy
from tritonnet.triton_backend.linear import linear_forward


def _launch_fused(x, weight, bias, target, probabilities, grad_logits, row_loss, scale) -> None:
    """Everything in one kernel: the logits row fits one block."""
    rows, inner = x.shape
    classes = weight.shape[1]
    args = (
        x,
        weight,
        weight if bias is None else bias,  # never read without a bias
        target,
        probabilities,
        grad_logits,
        row_loss,
        rows,
        classes,
        inner,
        *x.stride(),
        *weight.stride(),
        0 if bias is None else bias.stride(0),
        target.stride(0),
        *probabilities.stride(),
        *grad_logits.stride(),
        scale,
    )
    constants = {
        "HAS_BIAS": bias is not None,
        "INPUT_PRECISION": dot_precision(x.dtype),
        # tl.dot needs every block dimension >= 16.
        "BLOCK_N": max(16, triton.next_power_of_2(classes)),
    }
    if fixed_configs():
        config = LINEAR_CROSS_ENTROPY_INTERPRETER_CONFIG.all_kwargs()
        grid = (triton.cdiv(rows, config["BLOCK_M"]),)
        linear_cross_entropy_kernel[grid](*args, **constants, **config)
    else:
        def grid(meta):
            return (triton.cdiv(rows, meta["BLOCK_M"]),)

        linear_cross_entropy_autotuned[grid](*args, **constants)


def _launch_unfused(x, weight, bias, target, probabilities, grad_logits, row_loss, scale) -> None:
    """Rows too wide for one block: the linear forward kernel, then the row-wise kernel."""
    # fp32 logits, as the fused kernel keeps them: rounded to fp16 or bf16 they
    # would shift every probability by up to a few percent.
    logits = torch.empty(x.shape[0], weight.shape[1], dtype=torch.float32, device=x.device)
    linear_forward(x, weight, bias, "none", out=logits)
    launch_cross_entropy(logits, target, probabilities, grad_logits, row_loss, scale)


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    scale: float = 1.0,
    *,
    out_probabilities: torch.Tensor | None = None,
    out_grad_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The output layer with its softmax and cross-entropy: `(probabilities, loss, grad_logits)`.

    Same contract as `tritonnet.reference.linear_cross_entropy`, for x `[M, K]`,
    weight `[K, N]` (both any strides), bias `[N]` or None and integer class
    indices target `[M]`. The loss is an fp32 0-dim tensor on the device: the mean
    of the per-row losses the kernel writes, taken with `.mean()` (see the kernel
    module). Its range is not checked here, which would wait for the GPU: a target
    outside `[0, N)` gives a NaN loss instead. No rows (M = 0) gives a NaN loss, as
    the mean of nothing does in torch, and launches nothing.
    """
    x = checks.check_matrix("x", x)
    rows, inner = x.shape
    weight = checks.check_matrix("weight", weight, rows=inner)
    classes = weight.shape[1]
    if bias is not None:
        bias = checks.check_float_tensor("bias", bias)
        if bias.shape != (classes,):
            raise ValueError(f"bias must have shape ({classes},), got {tuple(bias.shape)}")
    target = checks.check_labels("target", target, rows, classes, check_range=False)
    check_operands(x=x, weight=weight, bias=bias)
    checks.check_same_device(x=x, target=target)
    scale = check_scale(scale)
    probabilities = output_buffer("out_probabilities", out_probabilities, rows, classes, "x", x)
    grad_logits = output_buffer("out_grad_logits", out_grad_logits, rows, classes, "x", x)

    row_loss = torch.empty(rows, dtype=torch.float32, device=x.device)
    if rows > 0:
        launch = _launch_fused if classes <= FUSED_MAX_N else _launch_unfused
        launch(x, weight, bias, target, probabilities, grad_logits, row_loss, scale)
    return probabilities, row_loss.mean(), grad_logits
