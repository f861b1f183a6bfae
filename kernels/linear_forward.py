"""The fused linear layer forward: `y = activation(x @ w + b)` in one kernel.

Math. For x `[M, K]` (M rows of the batch, K in_features), w `[K, N]` (N
out_features) and b `[N]`:

    y[m, n] = activation(sum_k x[m, k] * w[k, n] + b[n])

with activation the identity ("none") or `1 / (1 + exp(-z))` ("sigmoid").

Shapes and strides. Every operand is addressed through its own pair of strides,
so no operand has to be contiguous: the weight may be the transposed view
`linear.weight.t()` of an `[N, K]` tensor, and x may be a column slice of a wider
buffer. The strides are passed in elements.

Blocks and programs. Each program computes one `[BLOCK_M, BLOCK_N]` tile of y. It
walks along K in steps of BLOCK_K, loads a `[BLOCK_M, BLOCK_K]` tile of x and a
`[BLOCK_K, BLOCK_N]` tile of w, and adds their `tl.dot` into an fp32 accumulator.
The program ids are ordered in groups of GROUP_M tile rows (as in Triton's
matrix-multiplication tutorial): the programs that run at the same time then share
a few rows of x and a few columns of w, which stay in L2 instead of being read
again from memory. At the exercise's shapes (x is 784 or 512 wide, w at most
784 x 512) both fit in L2 anyway for small batches; the grouping matters at
large batches, where x alone is many megabytes.

What is fused, and why. The bias and the activation are applied to the fp32
accumulator while the tile is still in registers, before the one store. Unfused,
the layer is three passes over y (matmul, add the bias, sigmoid), each reading
and writing `M x N` values; fused, y is written once, and the activation sees the
sum before it is rounded to the output's dtype.
"""

import triton
import triton.language as tl

from tritonnet.kernels.targets import autotune_per_target
from tritonnet.kernels.tiling import ALIGNED, UNALIGNED, grouped_tile, linear_tile

# Tiles for each alignment class (tiling.ALIGNED, UNALIGNED); the autotuner picks
# among a class's list per shape and precision. Every config compiles without
# spills for sm_80 and sm_90 (tests/test_linear_forward.py); docs/kernels.md has
# how they were chosen.
LINEAR_FORWARD_UNALIGNED_CONFIGS = [
    # Big layers at big batches; BLOCK_K 32 is the most an fp32 "ieee" dot holds in registers.
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8}, num_stages=3, num_warps=8),
    # The mid tile, also the fixed config: BLOCK_K 16 keeps its fp32 "ieee" build unspilled on 4 warps.
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 16, "GROUP_M": 8}, num_stages=3, num_warps=4),
    # The 10-class output layer: a 16-wide tile wastes few masked-off columns.
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 16, "BLOCK_K": 32, "GROUP_M": 8}, num_stages=4, num_warps=8),
    # Small batches: enough programs to spread over the SMs.
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8}, num_stages=4, num_warps=4),
]
LINEAR_FORWARD_ALIGNED_CONFIGS = [
    # Tensor-core tile: a batch of 4096 at 512 features is one wave of 128 programs.
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=3, num_warps=8),
    # The same tile in half the shared memory (its TF32 build fits sm_80's), also the fixed config.
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 32, "GROUP_M": 8}, num_stages=3, num_warps=8),
    # Four times the programs, for batches of about 1024 and the 128-wide layer.
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=4, num_warps=4),
]
LINEAR_FORWARD_CONFIGS = {ALIGNED: LINEAR_FORWARD_ALIGNED_CONFIGS, UNALIGNED: LINEAR_FORWARD_UNALIGNED_CONFIGS}

# On AMD (kernels/targets.py) the aligned tiles take 2 stages where their TF32
# builds outgrew the 64 KiB of LDS; the fixed config fits as it is.
LINEAR_FORWARD_AMD_CONFIGS = {
    ALIGNED: [
        triton.Config({"BLOCK_M": 128, "BLOCK_N": 128, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=2, num_warps=8),
        LINEAR_FORWARD_ALIGNED_CONFIGS[1],
        triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=2, num_warps=4),
    ],
    UNALIGNED: LINEAR_FORWARD_UNALIGNED_CONFIGS,
}

# The config each class runs without autotuning: in Triton's CPU interpreter (which
# runs programs one after another, so few big tiles are fastest) and under
# TRITONNET_AUTOTUNE=0.
LINEAR_FORWARD_FIXED_CONFIGS = {
    ALIGNED: LINEAR_FORWARD_ALIGNED_CONFIGS[1],
    UNALIGNED: LINEAR_FORWARD_UNALIGNED_CONFIGS[1],
}


@triton.jit
def linear_forward_kernel(
    x_ptr,
    w_ptr,
    b_ptr,
    y_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_xk,
    stride_wk,
    stride_wn,
    stride_ym,
    stride_yn,
    stride_b,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
):
    """One `[BLOCK_M, BLOCK_N]` tile of `y = activation(x @ w + b)`.

    Args:
        x_ptr: x `[M, K]`, strides `(stride_xm, stride_xk)`.
        w_ptr: w `[K, N]`, strides `(stride_wk, stride_wn)`; same dtype as x.
        b_ptr: b `[N]`, stride `stride_b`; read only if HAS_BIAS (None otherwise).
        y_ptr: y `[M, N]`, strides `(stride_ym, stride_yn)`; written in its own dtype
            (x's, or fp32 for fp16 and bf16 x: the accumulator unrounded).
        HAS_BIAS: whether to add b.
        ACTIVATION: "none" or "sigmoid".
        INPUT_PRECISION: `tl.dot`'s input_precision for fp32 operands ("ieee", "tf32").
        BLOCK_M, BLOCK_N, BLOCK_K: tile sizes; GROUP_M: tile rows per group.
    """
    # Grouped order for L2 reuse (see tiling.grouped_tile); int64 ids keep the
    # offsets below exact past 2**31 elements.
    pid = tl.program_id(axis=0).to(tl.int64)
    pid_m, pid_n = grouped_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    accumulator = linear_tile(
        x_ptr, w_ptr, b_ptr, offs_m, offs_n, M, N, K,
        stride_xm, stride_xk, stride_wk, stride_wn, stride_b,
        HAS_BIAS, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
    )
    if ACTIVATION == "sigmoid":
        accumulator = tl.sigmoid(accumulator)

    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    y_mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    tl.store(y_ptrs, accumulator.to(y_ptr.dtype.element_ty), mask=y_mask)


# One autotuner per alignment class. The key holds INPUT_PRECISION: "ieee" and
# "tf32" run on different units (CUDA cores, tensor cores).
linear_forward_autotuned = {
    alignment: autotune_per_target(
        configs, LINEAR_FORWARD_AMD_CONFIGS[alignment], key=["M", "N", "K", "INPUT_PRECISION"]
    )(linear_forward_kernel)
    for alignment, configs in LINEAR_FORWARD_CONFIGS.items()
}
