"""Softmax and cross-entropy of rows of logits, with the loss gradient, in one kernel.

Math. For logits z `[M, N]` and class indices t `[M]`:

    p[m, :] = softmax(z[m, :])                     (the probabilities)
    loss[m] = logsumexp(z[m, :]) - z[m, t[m]]      (= -log p[m, t[m]])
    grad_logits[m, n] = (p[m, n] - [n == t[m]]) * scale

`logsumexp(z) - z[t]` is computed as `log(sum(exp(z - max))) - (z[t] - max)`: no
exponential overflows, and the loss stays finite when p[t] underflows to 0 (the
exercise's `-log(p)` would be inf there). grad_logits is the gradient of the
summed loss over the logits, times `scale`. A target outside `[0, N)` gives loss
NaN for its row and grad_logits `p * scale` (no class subtracted); it is never
used as an address. The mean over rows is taken in the same launch, in a fixed
order (`loss_mean.py`): the last program to finish adds the programs' partial
sums.

Shapes and strides. z, p and grad_logits each have their own pair of strides;
the loss is a 0-dim fp32 tensor; `partials` (one fp32 slot per program) and
`counter` (one int32, 0 between launches) are `loss_mean.py`'s workspace. z may be fp32 while p and
grad_logits are fp16 or bf16: the fused output layer's wide path keeps its
logits in fp32 and rounds once, at the store.

Blocks and programs. As in `softmax.py`: each program owns BLOCK_ROWS rows
(several narrow rows packed into one tile by `softmax_blocks`) and walks their
columns in blocks of BLOCK_COLS. A first pass takes each row's maximum and sum
with the online softmax (`online_row_statistics`); the loss needs only those
and the target's logit, one load per row. A second pass reads z again and
stores p and grad_logits.

What is fused, and why. Unfused, the softmax writes p, the loss reads p back at
the targets, and the gradient reads p again to subtract the one-hot and scale:
here z is read twice (for a row that fits one block, the second read mostly
comes from cache) and p and grad_logits are written once each. It serves the
standalone `cross_entropy` operation and the output layer's path for rows too
wide for the fused linear kernel (`linear_cross_entropy.py`).
"""

import triton
import triton.language as tl

from tritonnet.kernels.loss_mean import store_mean
from tritonnet.kernels.softmax import load_row_block, online_row_statistics


@triton.jit
def cross_entropy_kernel(
    z_ptr,
    target_ptr,
    p_ptr,
    grad_ptr,
    loss_ptr,
    partials_ptr,
    counter_ptr,
    M,
    N,
    stride_zm,
    stride_zn,
    stride_target,
    stride_pm,
    stride_pn,
    stride_gm,
    stride_gn,
    scale,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):
    """Softmax, loss gradient and per-row loss of BLOCK_ROWS rows of logits z; the
    grid's last program to finish stores the mean loss.

    Args:
        z_ptr: z `[M, N]` logits, strides `(stride_zm, stride_zn)`.
        target_ptr: t `[M]` integer class indices, stride `stride_target`.
        p_ptr: p `[M, N]`, strides `(stride_pm, stride_pn)`; written in its own dtype.
        grad_ptr: grad_logits `[M, N]`, strides `(stride_gm, stride_gn)`.
        loss_ptr: the mean loss, a 0-dim fp32 tensor.
        partials_ptr: fp32, at least one slot per program; counter_ptr: int32, 0.
        scale: the factor on grad_logits.
        BLOCK_ROWS, BLOCK_COLS: the tile, from `softmax.softmax_blocks`.
    """
    # int64 row offsets keep the addresses exact past 2**31 elements.
    row_block = tl.program_id(axis=0).to(tl.int64)
    offs_row = row_block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    mask_row = offs_row < M
    row_max, row_sum = online_row_statistics(
        z_ptr, offs_row, mask_row, N, stride_zm, stride_zn, BLOCK_ROWS, BLOCK_COLS
    )

    target = tl.load(target_ptr + offs_row * stride_target, mask=mask_row, other=0).to(tl.int64)
    valid_target = (target >= 0) & (target < N)
    # Only a target inside the row is read; the others get loss NaN.
    target_logit = tl.load(
        z_ptr + offs_row * stride_zm + target * stride_zn, mask=mask_row & valid_target, other=0.0
    ).to(tl.float32)
    loss = tl.where(valid_target, tl.log(row_sum) - (target_logit - row_max), float("nan"))
    store_mean(tl.sum(tl.where(mask_row, loss, 0.0), axis=0), M, partials_ptr, counter_ptr, loss_ptr)

    for col_start in range(0, N, BLOCK_COLS):
        z = load_row_block(z_ptr, offs_row, mask_row, col_start, N, stride_zm, stride_zn, BLOCK_COLS)
        p = tl.exp(z - row_max[:, None]) / row_sum[:, None]
        offs_col = col_start + tl.arange(0, BLOCK_COLS)
        is_target = offs_col[None, :] == target[:, None]
        grad = (p - tl.where(is_target, 1.0, 0.0)) * scale
        mask = mask_row[:, None] & (offs_col < N)[None, :]
        p_ptrs = p_ptr + offs_row[:, None] * stride_pm + offs_col[None, :] * stride_pn
        tl.store(p_ptrs, p.to(p_ptr.dtype.element_ty), mask=mask)
        grad_ptrs = grad_ptr + offs_row[:, None] * stride_gm + offs_col[None, :] * stride_gn
        tl.store(grad_ptrs, grad.to(grad_ptr.dtype.element_ty), mask=mask)
