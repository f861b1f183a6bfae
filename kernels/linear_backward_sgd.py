"""A layer's whole backward with its SGD step in one launch: the input gradient,
the weight and bias gradients, and the step they take, for a narrow layer at a
small batch.

Math. As in `linear_backward.py`, with the layer's saved output y `[M, N]`, the
incoming gradient dy `[M, N]` and the gradient normalization `scale`:

    dz = dy * y * (1 - y)  (sigmoid)    or    dz = dy  (no activation)
    dx = dz @ w^T                       [M, K]   from the weight BEFORE the step
    w -= lr * (scale * x^T @ dz)        [K, N]   in place
    b -= lr * (scale * sum_m dz[m, :])  [N]      in place

with each gradient rounded to the parameters' dtype before the step, as a
stored gradient is (`linear_backward.write_gradient`): the numbers of the
two-launch path, but for the order dx's sum over N is taken in.

Why one launch. The two-launch path (`linear_backward.py`, EPILOGUE "sgd") runs
kernel 1 (dx) and then kernel 2 (dw, with the step in its epilogue) in that
order, because kernel 1 must read the old weight and kernel 2 writes the new
one. At batch 64 each of the two is a few microseconds of work in a launch of
its own, with its own ramp-up and tail; one launch saves one of each per layer,
two per training step of the exercise (8 launches down to 6).

How the race is avoided: row-block ownership. Program p owns the rows
`p * BLOCK_K ...` of w `[K, N]` and every one of its N columns (BLOCK_N >= N).
It loads its block of w once, then walks the whole batch in BLOCK_M steps:
forms dz in registers (`load_dz`, shared with the two-launch kernels), stores
its `[BLOCK_M, BLOCK_K]` block of dx (the columns of dx are the rows of w), and
adds `x[rows, kblock]^T @ dz` into its dw block. Program 0 also sums dz's rows
for db. Last, the epilogue steps its block of w (and program 0 the bias). Each
element of w is read and written by exactly one program, which reads it before
it writes it: no other program reads the weight it steps, so there is no race,
no barrier and no second copy of the weights, and the parameters keep their
addresses (a captured CUDA graph needs that). Double-buffering the weights was
the other way the issue names; it needs an even and an odd graph, and both
kernels would still run; this needs neither.

What it costs. Every program reads all of dy and y (dz is recomputed by each:
`cdiv(K, BLOCK_K)` times M x N values, from L2), and there are only
`cdiv(K, BLOCK_K)` programs, each walking the whole batch. That is why the
launcher takes this kernel only where `backward_in_one_launch` says: a layer
narrow enough for one column block and a batch small enough for one program to
walk. Elsewhere the two launches stay.

Shapes and strides. x `[M, K]`, w `[K, N]`, b `[N]`, dy and y `[M, N]`, dx
`[M, K]`, each with its own strides in elements: w may be a transposed view,
and nothing has to be contiguous.
"""

import triton
import triton.language as tl

from tritonnet.kernels.linear_backward import dz_pointers, load_dz, next_dz_pointers, write_gradient
from tritonnet.kernels.pdl import wait_for_previous_kernel
from tritonnet.kernels.targets import autotune_per_target
from tritonnet.kernels.tiling import ALIGNED, UNALIGNED

# The widest layer (out_features) one program's column block covers: the
# exercise's 128-wide hidden layer and its 10-class output layer. At 128 columns
# only 16 x 16 blocks compile without spills (docs/kernels.md), and tl.dot takes
# no block under 16: a wider layer keeps the two launches.
MAX_BLOCK_N = 128
# The largest batch taken in one launch: each program walks the whole batch, so
# a large one would run long on few SMs while the two-launch path spreads it.
# The exercise trains at 64; 256 is a guess, not yet timed on a GPU
# (docs/kernels.md).
MAX_ROWS = 256


def backward_in_one_launch(rows: int, in_features: int, out_features: int) -> bool:
    """Whether `linear_backward_sgd` with an input gradient takes this kernel:
    a non-empty layer at most MAX_BLOCK_N wide, at a batch of at most MAX_ROWS
    (see there). `benchmarks/bench_step_variants.py` switches it off by
    replacing this function."""
    return 0 < rows <= MAX_ROWS and in_features > 0 and 0 < out_features <= MAX_BLOCK_N


def column_block(out_features: int) -> int:
    """BLOCK_N: every column of the layer in one block, at least 16 for `tl.dot`."""
    return max(16, triton.next_power_of_2(out_features))


# The configs name the row block of w a program owns, BLOCK_K, and the step over
# the batch, BLOCK_M; BLOCK_N is the launcher's (`column_block`). The dz block
# `[BLOCK_M, BLOCK_N]` feeds two dots, as the left operand of dx's and the right
# of dw's, and both layouts of it stay in registers beside w's block and dw's
# accumulator: at BLOCK_N 128 every 32-row step or 32-row block of w spilled
# somewhere (docs/kernels.md), so the blocks are 16 x 16, and the narrow output
# layer takes them too. Every config compiles without spills at BLOCK_N 16 and
# 128 for sm_90, sm_80, gfx942 and gfx90a (tests/test_linear_backward_one_launch.py).
LINEAR_BACKWARD_SGD_UNALIGNED_CONFIGS = [
    # The fixed config: 32 programs for the 512-row hidden layer, 8 warps, as on 4
    # the fp32 build spilled on gfx942.
    triton.Config({"BLOCK_M": 16, "BLOCK_K": 16}, num_stages=2, num_warps=8),
    triton.Config({"BLOCK_M": 16, "BLOCK_K": 16}, num_stages=2, num_warps=4),
]
LINEAR_BACKWARD_SGD_ALIGNED_CONFIGS = [
    triton.Config({"BLOCK_M": 16, "BLOCK_K": 16}, num_stages=2, num_warps=8),
    triton.Config({"BLOCK_M": 16, "BLOCK_K": 16}, num_stages=2, num_warps=4),
    # Half the programs, each with twice the rows of w (on tensor cores only: its
    # fp32 "ieee" build spilled on sm_90).
    triton.Config({"BLOCK_M": 16, "BLOCK_K": 32}, num_stages=2, num_warps=8),
]
LINEAR_BACKWARD_SGD_CONFIGS = {
    ALIGNED: LINEAR_BACKWARD_SGD_ALIGNED_CONFIGS,
    UNALIGNED: LINEAR_BACKWARD_SGD_UNALIGNED_CONFIGS,
}
# On AMD the 4-warp fp32 build and the 32-row block of w spilled (gfx942): 8 warps only.
LINEAR_BACKWARD_SGD_AMD_CONFIGS = {
    ALIGNED: LINEAR_BACKWARD_SGD_ALIGNED_CONFIGS[:1],
    UNALIGNED: LINEAR_BACKWARD_SGD_UNALIGNED_CONFIGS[:1],
}
# The config each class runs without autotuning (the interpreter,
# TRITONNET_AUTOTUNE=0), on NVIDIA and AMD alike.
LINEAR_BACKWARD_SGD_FIXED_CONFIGS = {
    ALIGNED: LINEAR_BACKWARD_SGD_ALIGNED_CONFIGS[0],
    UNALIGNED: LINEAR_BACKWARD_SGD_UNALIGNED_CONFIGS[0],
}


@triton.jit
def linear_backward_sgd_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    dy_ptr,
    y_ptr,
    dx_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_xk,
    stride_wk,
    stride_wn,
    stride_b,
    stride_dym,
    stride_dyn,
    stride_ym,
    stride_yn,
    stride_dxm,
    stride_dxk,
    scale,
    lr,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """dx for rows `[pid * BLOCK_K, ...)` of w, and the SGD step of those rows.

    Args:
        x_ptr: the forward's input x `[M, K]`, strides `(stride_xm, stride_xk)`.
        w_ptr: w `[K, N]`, strides `(stride_wk, stride_wn)`; read, then stepped.
        b_ptr: b `[N]`, stride `stride_b`, stepped if HAS_BIAS (otherwise any
            pointer, never read or written).
        dy_ptr: the incoming gradient dy `[M, N]`, strides `(stride_dym, stride_dyn)`.
        y_ptr: the saved output y `[M, N]`, strides `(stride_ym, stride_yn)`, for
            the sigmoid only (None otherwise).
        dx_ptr: dx `[M, K]`, strides `(stride_dxm, stride_dxk)`.
        scale: the fp32 factor of dw and db; lr: the learning rate.
        HAS_BIAS: whether to step b.
        ACTIVATION: "none" or "sigmoid".
        INPUT_PRECISION: `tl.dot`'s input_precision for fp32 operands.
        BLOCK_K: the rows of w a program owns; BLOCK_N (>= N): all its columns;
        BLOCK_M: the step over the batch.
        USE_PDL: launched by programmatic dependent launch (`pdl.py`).

    A 1-D grid of `cdiv(K, BLOCK_K)` programs. The bias has one writer, program
    0, which sums dz in fp32 before it is rounded for the dots.
    """
    wait_for_previous_kernel(USE_PDL)
    # int64 ids keep the offsets below exact past 2**31 elements.
    pid = tl.program_id(axis=0).to(tl.int64)
    offs_k = pid * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    mask_k = offs_k < K
    mask_n = offs_n < N

    # This program's rows of w, as w^T `[BLOCK_N, BLOCK_K]` for dx: read once,
    # before anything is written to them.
    w_t_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk
    w_t = tl.load(w_t_ptrs, mask=mask_n[:, None] & mask_k[None, :], other=0.0)
    x_t_ptrs = x_ptr + offs_k[:, None] * stride_xk + offs_m[None, :] * stride_xm
    dx_ptrs = dx_ptr + offs_m[:, None] * stride_dxm + offs_k[None, :] * stride_dxk
    dy_ptrs, y_ptrs = dz_pointers(
        dy_ptr, y_ptr, 0, offs_m, offs_n, stride_dym, stride_dyn, stride_ym, stride_yn, ACTIVATION
    )
    is_bias_program = pid == 0

    accumulator = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    bias_accumulator = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m in range(0, tl.cdiv(M, BLOCK_M)):
        mask_m = offs_m < M - m * BLOCK_M
        dz = load_dz(dy_ptrs, y_ptrs, mask_m[:, None] & mask_n[None, :], ACTIVATION)
        dy_ptrs, y_ptrs = next_dz_pointers(dy_ptrs, y_ptrs, BLOCK_M * stride_dym, BLOCK_M * stride_ym, ACTIVATION)
        if HAS_BIAS:
            if is_bias_program:
                bias_accumulator += tl.sum(dz, axis=0)
        dz_operand = dz.to(w_t.dtype)
        dx = tl.dot(dz_operand, w_t, input_precision=INPUT_PRECISION)
        tl.store(dx_ptrs, dx.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_k[None, :])
        x_t = tl.load(x_t_ptrs, mask=mask_k[:, None] & mask_m[None, :], other=0.0)
        accumulator = tl.dot(x_t, dz_operand, accumulator, input_precision=INPUT_PRECISION)
        dx_ptrs += BLOCK_M * stride_dxm
        x_t_ptrs += BLOCK_M * stride_xm

    # The step, on the rows of w only this program has read.
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
    write_gradient(w_ptrs, accumulator * scale, mask_k[:, None] & mask_n[None, :], lr, "sgd")
    if HAS_BIAS:
        if is_bias_program:
            write_gradient(b_ptr + offs_n * stride_b, bias_accumulator * scale, mask_n, lr, "sgd")


# One autotuner per alignment class. It steps the weight and bias in place, so it
# restores both after each timing run, as the two-launch SGD epilogue's does
# (docs/kernels.md); the launcher never passes None for b_ptr (triton 3.6
# clones a restored argument unchecked).
linear_backward_sgd_autotuned = {
    alignment: autotune_per_target(
        configs, LINEAR_BACKWARD_SGD_AMD_CONFIGS[alignment], key=["M", "N", "K", "INPUT_PRECISION"],
        restore_value=["w_ptr", "b_ptr"],
    )(linear_backward_sgd_kernel)
    for alignment, configs in LINEAR_BACKWARD_SGD_CONFIGS.items()
}
