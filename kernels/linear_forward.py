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

Split-K (SPLIT_K). At batch 64 the first layer is 16 tiles
of 32 x 64: a GPU of 132 SMs would leave most of them idle while each program
walks all 784 features. A split launch's grid is (tiles, splits): program
(t, s) reduces the run `[s * k_per_split, (s + 1) * k_per_split)` of K for tile
t, stores its fp32 partial tile in `partials[s]`, and draws a ticket from the
tile's counter, as the loss's mean does (`loss_mean.py` has the memory-ordering
argument). The tile's last split adds the S partial tiles in split order, then
the bias and the activation, stores y and resets the counter: one launch, and the
same bits whichever split finishes last. `forward_splits` says when to split.
"""

import triton
import triton.language as tl

from tritonnet.kernels.pdl import wait_for_previous_kernel
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
def store_output(accumulator, y_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, ACTIVATION: tl.constexpr):
    """The activation of a tile of fp32 sums, stored in y's dtype."""
    if ACTIVATION == "sigmoid":
        accumulator = tl.sigmoid(accumulator)
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    y_mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    tl.store(y_ptrs, accumulator.to(y_ptr.dtype.element_ty), mask=y_mask)


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
    partials_ptr,
    counters_ptr,
    k_per_split,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    SPLIT_K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """One `[BLOCK_M, BLOCK_N]` tile of `y = activation(x @ w + b)`; with SPLIT_K,
    one split of one tile, the tile's last split to finish storing y.

    Args:
        x_ptr: x `[M, K]`, strides `(stride_xm, stride_xk)`.
        w_ptr: w `[K, N]`, strides `(stride_wk, stride_wn)`; same dtype as x.
        b_ptr: b `[N]`, stride `stride_b`; read only if HAS_BIAS (None otherwise).
        y_ptr: y `[M, N]`, strides `(stride_ym, stride_yn)`; written in its own dtype
            (x's, or fp32 for fp16 and bf16 x: the accumulator unrounded).
        partials_ptr: with SPLIT_K, fp32 `[splits, M, N]`, contiguous: each split's
            sums, without the bias; counters_ptr: int32, one per tile, 0 on entry
            and on exit; k_per_split: the run of K each split reduces, a multiple
            of BLOCK_K. Unsplit, none of the three is read.
        HAS_BIAS: whether to add b.
        ACTIVATION: "none" or "sigmoid".
        INPUT_PRECISION: `tl.dot`'s input_precision for fp32 operands ("ieee", "tf32").
        SPLIT_K: whether the grid's second axis splits K.
        BLOCK_M, BLOCK_N, BLOCK_K: tile sizes; GROUP_M: tile rows per group.
    """
    # Grouped order for L2 reuse (see tiling.grouped_tile); int64 ids keep the
    wait_for_previous_kernel(USE_PDL)
    # offsets below exact past 2**31 elements.
    pid = tl.program_id(axis=0).to(tl.int64)
    pid_m, pid_n = grouped_tile(pid, M, N, BLOCK_M, BLOCK_N, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if not SPLIT_K:
        accumulator = linear_tile(
            x_ptr, w_ptr, b_ptr, offs_m, offs_n, M, N, K,
            stride_xm, stride_xk, stride_wk, stride_wn, stride_b,
            HAS_BIAS, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )
        store_output(accumulator, y_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, ACTIVATION)
    else:
        split = tl.program_id(axis=1)
        splits = tl.num_programs(axis=1)
        # The split's first k moves the base pointers (in int64), so the offsets
        # within it stay int32, as in the weight gradient's split (docs/kernels.md).
        k_start = split.to(tl.int64) * k_per_split
        partial = linear_tile(
            x_ptr + k_start * stride_xk, w_ptr + k_start * stride_wk, b_ptr, offs_m, offs_n, M, N,
            tl.minimum(K - split * k_per_split, k_per_split),
            stride_xm, stride_xk, stride_wk, stride_wn, stride_b,
            False, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
        )
        mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
        split_size = M.to(tl.int64) * N
        tile_offsets = offs_m[:, None] * N + offs_n[None, :]
        tl.store(partials_ptr + split * split_size + tile_offsets, partial, mask=mask)
        # Every thread's part of the tile stored before the ticket (`loss_mean.py`
        # has the memory-ordering argument).
        tl.debug_barrier()
        ticket = tl.atomic_add(counters_ptr + pid, 1, sem="acq_rel", scope="gpu")
        if ticket == splits - 1:
            # Split 0 first, and so on: the same sum whichever split finished last.
            accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            partial_ptrs = partials_ptr + tile_offsets
            for _ in range(0, splits):
                accumulator += tl.load(partial_ptrs, mask=mask, other=0.0)
                partial_ptrs += split_size
            if HAS_BIAS:
                b = tl.load(b_ptr + offs_n * stride_b, mask=offs_n < N, other=0.0)
                accumulator += b.to(tl.float32)[None, :]
            store_output(accumulator, y_ptr, offs_m, offs_n, M, N, stride_ym, stride_yn, ACTIVATION)
            tl.store(counters_ptr + pid, 0)


# One autotuner per alignment class. The key holds INPUT_PRECISION: "ieee" and
# "tf32" run on different units (CUDA cores, tensor cores).
linear_forward_autotuned = {
    alignment: autotune_per_target(
        configs, LINEAR_FORWARD_AMD_CONFIGS[alignment], key=["M", "N", "K", "INPUT_PRECISION"]
    )(linear_forward_kernel)
    for alignment, configs in LINEAR_FORWARD_CONFIGS.items()
}


# Split-K (SPLIT_K): one tile for every split launch, so that the launcher knows
# the tiles, and so the splits, before a config is chosen. 32 x 64 gives the
# exercise's first layer at batch 64 sixteen tiles; BLOCK_K 32 is the most an fp32
# "ieee" dot holds in registers. AMD GPUs do not split (docs/kernels.md).
SPLIT_BLOCK_M = 32
SPLIT_BLOCK_N = 64
LINEAR_FORWARD_SPLIT_CONFIGS = [
    triton.Config({"BLOCK_M": SPLIT_BLOCK_M, "BLOCK_N": SPLIT_BLOCK_N, "BLOCK_K": 32, "GROUP_M": 8}, num_stages=3, num_warps=4),
    triton.Config({"BLOCK_M": SPLIT_BLOCK_M, "BLOCK_N": SPLIT_BLOCK_N, "BLOCK_K": 16, "GROUP_M": 8}, num_stages=4, num_warps=4),
]
# Each split's run of K is a multiple of this, so every BLOCK_K above steps it whole.
SPLIT_K_STEP = 32


# The split configs share one tile, so this autotuner chooses only the K step and
# the pipelining.
linear_forward_split_autotuned = triton.autotune(
    configs=LINEAR_FORWARD_SPLIT_CONFIGS, key=["M", "N", "K", "INPUT_PRECISION"]
)(linear_forward_kernel)
LINEAR_FORWARD_SPLIT_FIXED_CONFIG = LINEAR_FORWARD_SPLIT_CONFIGS[0]

SPLIT_MIN_K = 128  # in_features each split reduces, at least
SPLIT_FAR_BELOW = 4  # split only when the tiles are at most 1 / SPLIT_FAR_BELOW of the SMs


def forward_splits(rows: int, in_features: int, out_features: int, processors: int) -> tuple[int, int]:
    """`(splits, k_per_split)` for a forward of `rows` x `in_features` -> `out_features`.

    How it was derived. At batch 64 the first layer (784 -> 512) is 16 tiles of
    SPLIT_BLOCK_M x SPLIT_BLOCK_N, and an unsplit launch 8 to 32 programs, on 132
    SMs (an H200). When the tiles are at most a 1 / SPLIT_FAR_BELOW of the
    `processors`, K is split until the programs fill them once, but no split
    reduces fewer than SPLIT_MIN_K features, where the partial tile's round trip
    through memory would outweigh the programs gained. Runs are rounded up to
    SPLIT_K_STEP, and `splits` recounted so that none is empty. On an H200 at
    batch 64: 784 -> 512 in 5 splits of 160, 512 -> 128 in 4 of 128. Not yet timed
    on a GPU.
    """
    tiles = triton.cdiv(rows, SPLIT_BLOCK_M) * triton.cdiv(out_features, SPLIT_BLOCK_N)
    splits = min(triton.cdiv(processors, max(tiles, 1)), in_features // SPLIT_MIN_K)
    if tiles * SPLIT_FAR_BELOW > processors or splits < 2:
        return 1, in_features
    k_per_split = triton.cdiv(triton.cdiv(in_features, splits), SPLIT_K_STEP) * SPLIT_K_STEP
    splits = triton.cdiv(in_features, k_per_split)
    return (splits, k_per_split) if splits > 1 else (1, in_features)
