"""Launcher of the row-wise softmax and cross-entropy kernel (`tritonnet.kernels.cross_entropy`)."""

from __future__ import annotations

import torch
import triton

from tritonnet import checks
from tritonnet.kernels.cross_entropy import cross_entropy_kernel
from tritonnet.triton_backend.common import check_operands, check_scale, output_buffer
from tritonnet.triton_backend.softmax import row_blocks


def launch_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    probabilities: torch.Tensor,
    grad_logits: torch.Tensor,
    row_loss: torch.Tensor,
    scale: float,
) -> None:
    """Run the kernel on checked, non-empty arguments; `row_loss` is fp32 `[M]`, contiguous.

    Shared with the output layer's path for rows too wide for its fused kernel.
    """
    rows, classes = logits.shape
    blocks = row_blocks(rows, classes)
    grid = (triton.cdiv(rows, blocks["BLOCK_ROWS"]),)
    cross_entropy_kernel[grid](
        logits,
        target,
        probabilities,
        grad_logits,
        row_loss,
        rows,
        classes,
        *logits.stride(),
        target.stride(0),
        *probabilities.stride(),
        *grad_logits.stride(),
        scale,
        BLOCK_ROWS=blocks["BLOCK_ROWS"],
        BLOCK_COLS=blocks["BLOCK_COLS"],
        num_warps=blocks["num_warps"],
    )


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    scale: float = 1.0,
    *,
    out_probabilities: torch.Tensor | None = None,
    out_grad_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax and cross-entropy of logits `[M, N]` (any strides) against integer class
    indices target `[M]`: `(probabilities, loss, grad_logits)`.

    Same contract as `tritonnet.reference.cross_entropy`. The loss is an fp32
    0-dim tensor on the device, the `.mean()` of the per-row losses the kernel
    writes. The target's range is not checked, which would wait for the GPU: a
    target outside `[0, N)` gives its row a NaN loss, so the mean is NaN. No rows
    (M = 0) gives a NaN loss, as the mean of nothing does in torch, and launches
    nothing. `out_*` tensors `[M, N]` of the logits' dtype are written in place.
    """
    logits = checks.check_matrix("logits", logits)
    rows, classes = logits.shape
    target = checks.check_labels("target", target, rows, classes, check_range=False)
    check_operands(logits=logits)
    checks.check_same_device(logits=logits, target=target)
    scale = check_scale(scale)
    probabilities = output_buffer("out_probabilities", out_probabilities, rows, classes, "logits", logits)
    grad_logits = output_buffer("out_grad_logits", out_grad_logits, rows, classes, "logits", logits)

    row_loss = torch.empty(rows, dtype=torch.float32, device=logits.device)
    if rows > 0:
        launch_cross_entropy(logits, target, probabilities, grad_logits, row_loss, scale)
    return probabilities, row_loss.mean(), grad_logits
