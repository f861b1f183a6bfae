"""The output layer, its softmax and the cross-entropy loss, with the loss gradient.

Math. For x `[M, K]`, w `[K, N]`, b `[N]` and class indices t `[M]`, the logits
`z = x @ w + b`, and from them what `cross_entropy.py` computes, in the same way:

    p[m, :] = softmax(z[m, :])                     (the probabilities)
    loss[m] = logsumexp(z[m, :]) - z[m, t[m]]      (finite when p[m, t[m]] underflows)
    grad_logits[m, n] = (p[m, n] - [n == t[m]]) * scale

A target outside `[0, N)` gives loss NaN for its row (and grad_logits `p * scale`);
it is never used as an address. The trainer does not check the labels' range on
the GPU, because reading them back would wait for the device at every step; the
NaN loss is how a bad label shows up there.

Two paths:
- `linear_cross_entropy_kernel`, when one row of logits fits one block (N <=
  FUSED_MAX_N, the exercise's 10 classes): everything in one launch. Each program
  owns BLOCK_M rows, builds their `[BLOCK_M, BLOCK_N]` logits in an fp32
  accumulator with `tl.dot` along K, and while the tile is still in registers adds
  the bias, takes the softmax, the loss and the gradient, and stores p and
  grad_logits; the per-row losses go into the mean (below). The logits never reach memory: unfused, they are
  written by the matmul, read by the softmax, and p is read again by the loss and
  again by its gradient.
- for wider rows, the linear forward kernel writes the logits in fp32, and the
  row-wise kernel of `cross_entropy.py` makes the online-softmax pass of
  `softmax.py` for each row's maximum and sum, then a second pass that writes p
  and grad_logits.

Both paths take the mean over rows in the same launch (`loss_mean.py`): each
program stores the sum of its rows' losses, and the last program to finish adds
those partial sums in a fixed order. Atomic adds of the partials into the loss
would make it depend on the order the programs finish in. Before, the launcher
took a `.mean()` of a per-row loss vector: one more launch per training step.
"""

import triton
import triton.language as tl

from tritonnet.kernels.loss_mean import store_mean
from tritonnet.kernels.pdl import wait_for_previous_kernel
from tritonnet.kernels.tiling import linear_tile

# Widest logits row the fused kernel holds in registers: at 128 the fp32 "ieee"
# build spilled (docs/kernels.md).
FUSED_MAX_N = 64

# M is the batch, K the last hidden width (128 in the exercise), N <= 64. One list
# serves every launch: the exercise's 10-class rows (stride 10) never qualify for
# the other GEMMs' aligned configs. Each config compiles without spills
# (tests/test_linear_cross_entropy.py).
LINEAR_CROSS_ENTROPY_CONFIGS = [
    # A batch of 64 gets four programs.
    triton.Config({"BLOCK_M": 16, "BLOCK_K": 32}, num_stages=2, num_warps=4),
    # Big batches: w is read a quarter as often.
    triton.Config({"BLOCK_M": 64, "BLOCK_K": 16}, num_stages=2, num_warps=4),
]

# The most programs a launch may run is rows / SMALLEST_BLOCK_M: the loss's mean
# has a workspace slot for each.
SMALLEST_BLOCK_M = min(config.kwargs["BLOCK_M"] for config in LINEAR_CROSS_ENTROPY_CONFIGS)

# The CPU interpreter runs programs one after another: few programs are fastest.
# It is one of the configs above, so the compile tests cover it.
LINEAR_CROSS_ENTROPY_INTERPRETER_CONFIG = LINEAR_CROSS_ENTROPY_CONFIGS[1]


@triton.jit
def softmax_cross_entropy(logits, offs_m, offs_n, M, N, target_ptr, stride_target):
    """`(p, loss, grad)` of a `[BLOCK_M, BLOCK_N]` tile of fp32 logits at rows
    `offs_m` and columns `offs_n` (all of the row's N classes): the softmax, each
    row's loss (NaN for a target outside `[0, N)`) and `p - onehot(target)`.
    Shared by this kernel and the persistent step (`persistent_step.py`)."""
    mask_n = offs_n < N
    # Columns past N are -inf: they never win the maximum and add exp(-inf) = 0.
    logits = tl.where(mask_n[None, :], logits, float("-inf"))
    shifted = logits - tl.max(logits, axis=1)[:, None]
    exponentials = tl.exp(shifted)
    row_sum = tl.sum(exponentials, axis=1)
    p = exponentials / row_sum[:, None]

    # Rows past M read target 0; their results are never stored.
    target = tl.load(target_ptr + offs_m * stride_target, mask=offs_m < M, other=0).to(tl.int64)
    is_target = offs_n[None, :] == target[:, None]
    target_shifted = tl.sum(tl.where(is_target, shifted, 0.0), axis=1)
    valid_target = (target >= 0) & (target < N)
    loss = tl.where(valid_target, tl.log(row_sum) - target_shifted, float("nan"))
    return p, loss, p - tl.where(is_target, 1.0, 0.0)


@triton.jit
def linear_cross_entropy_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    target_ptr,
    p_ptr,
    grad_ptr,
    loss_ptr,
    partials_ptr,
    counter_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_xk,
    stride_wk,
    stride_wn,
    stride_b,
    stride_target,
    stride_pm,
    stride_pn,
    stride_gm,
    stride_gn,
    scale,
    HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """Logits, softmax, loss gradient and per-row loss of BLOCK_M rows, in one
    program; the grid's last program to finish stores the mean loss.

    Args:
        x_ptr: x `[M, K]`, strides `(stride_xm, stride_xk)`.
        w_ptr: w `[K, N]`, strides `(stride_wk, stride_wn)`; same dtype as x.
        b_ptr: b `[N]`, stride `stride_b`; read only if HAS_BIAS.
        target_ptr: t `[M]` integer class indices, stride `stride_target`.
        p_ptr: p `[M, N]`, strides `(stride_pm, stride_pn)`; written in its own dtype.
        grad_ptr: grad_logits `[M, N]`, strides `(stride_gm, stride_gn)`.
        loss_ptr: the mean loss, a 0-dim fp32 tensor.
        partials_ptr: fp32, at least one slot per program; counter_ptr: int32, 0.
        scale: the factor on grad_logits.
        INPUT_PRECISION: `tl.dot`'s input_precision for fp32 operands ("ieee", "tf32").
        BLOCK_M, BLOCK_K: tile sizes; BLOCK_N: N rounded up to a power of two >= 16.
    """
    wait_for_previous_kernel(USE_PDL)
    # int64 ids keep the offsets below exact past 2**31 elements.
    pid = tl.program_id(axis=0).to(tl.int64)
    offs_m = pid * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_n = offs_n < N
    accumulator = linear_tile(
        x_ptr, w_ptr, b_ptr, offs_m, offs_n, M, N, K,
        stride_xm, stride_xk, stride_wk, stride_wn, stride_b,
        HAS_BIAS, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
    )

    p, loss, grad = softmax_cross_entropy(accumulator, offs_m, offs_n, M, N, target_ptr, stride_target)
    grad = grad * scale

    mask = mask_m[:, None] & mask_n[None, :]
    p_ptrs = p_ptr + offs_m[:, None] * stride_pm + offs_n[None, :] * stride_pn
    tl.store(p_ptrs, p.to(p_ptr.dtype.element_ty), mask=mask)
    grad_ptrs = grad_ptr + offs_m[:, None] * stride_gm + offs_n[None, :] * stride_gn
    tl.store(grad_ptrs, grad.to(grad_ptr.dtype.element_ty), mask=mask)
    store_mean(tl.sum(tl.where(mask_m, loss, 0.0), axis=0), M, partials_ptr, counter_ptr, loss_ptr)


# The key holds INPUT_PRECISION: "ieee" and "tf32" run on different units (CUDA
# cores, tensor cores), so the best tile for one is no guide to the other.
linear_cross_entropy_autotuned = triton.autotune(configs=LINEAR_CROSS_ENTROPY_CONFIGS, key=["M", "N", "K", "INPUT_PRECISION"])(
    linear_cross_entropy_kernel
)
