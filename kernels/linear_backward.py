"""The fused linear layer backward: the input, weight and bias gradients of
`y = activation(x @ w + b)`, in two GEMM kernels.

Math. With the layer's forward saved as y `[M, N]` and the incoming gradient dy
`[M, N]`, the gradient before the activation is

    dz = dy * y * (1 - y)        for the sigmoid (its derivative, from y itself)
    dz = dy                      without activation

and from it, with `scale` the gradient normalization (1/batch, 1/in_features or 1):

    dx = dz @ w^T                [M, K]    (kernel 1, `linear_backward_input_kernel`)
    dw = scale * x^T @ dz        [K, N]    (kernel 2, `linear_backward_weight_kernel`)
    db = scale * sum_m dz[m, :]  [N]       (kernel 2 as well)

Kernel 1 is not launched at all where no dx is needed (the first layer, whose
input is the images).

Names follow the forward: M rows of the batch, K in_features, N out_features.
Every operand has its own strides (in elements), so w may be a transposed view
and no operand has to be contiguous.

What is fused, and why. dz is never written to memory. Both kernels compute it in
the load prologue of their reduction loop (`load_dz`): they load the dy and y tiles they
need, form dz in fp32 in registers, and feed it straight to `tl.dot`. The
unfused alternative, an element-wise kernel writing dz and two GEMMs reading it,
moves `M x N` values out and twice back in and costs one more launch; the
recomputation here is three multiplies per element, which is nothing beside the
dot products. With fp16 or bf16 operands, dz is rounded to their dtype for the
tensor-core dot, as the forward's inputs are; the bias gradient is summed from
the fp32 dz. It rides along in kernel 2, which already loads every dz tile (see
there), and `scale` is applied once in the epilogue.

Split-K. dw has few tiles (784 x 512 is 28 tiles of 128 x 128), and each of them
reduces over the whole batch: at a large batch the GPU's SMs would mostly idle
while a few programs walk thousands of rows. Kernel 2 can therefore split the
batch into `splits` runs of `rows_per_split` rows, a third grid axis: each
program writes the fp32 partial sums of its run (dw and db, unscaled) to a
workspace `[splits, K + 1, N]` (row K holds db), and kernel 3
(`linear_weight_gradient_reduce_kernel`) adds the partials in a fixed order,
split 0 first, scales them, rounds them to the gradient's dtype and stores them.
A fixed order makes the result the same on every run; atomics would add in the
order the programs finish in. The launcher decides the split
(`weight_gradient_splits`).

The SGD epilogue. With EPILOGUE "sgd" the kernel that would store dw and db
(kernel 2 unsplit, kernel 3 split) takes the SGD step there instead, on the
weight and bias it is handed in their place: `w -= lr * dw`, `b -= lr * db`,
with dw and db rounded to the parameters' dtype first, as a stored gradient is
(`write_gradient`). The gradients never reach memory, and the separate SGD
launch over them is gone. Kernel 1 reads w, so it must run before the step: the
launcher launches it first, on the same stream.
"""

import triton
import triton.language as tl

from tritonnet.kernels.pdl import wait_for_previous_kernel
from tritonnet.kernels.targets import autotune_per_target
from tritonnet.kernels.tiling import ALIGNED, UNALIGNED, grouped_tile

# Tiles for each alignment class (tiling.ALIGNED, UNALIGNED); every config
# compiles without spills for sm_80 and sm_90 (tests/test_linear_backward.py).
# docs/kernels.md has how they were chosen.
#
# Kernel 1 is a forward-shaped GEMM: the configs name the tile of dx,
# BLOCK_M x BLOCK_K, and the reduction step BLOCK_N. Its sigmoid prologue keeps dy
# and y tiles in registers beside the dot's operands, so its tiles are smaller
# than the forward's.
LINEAR_BACKWARD_INPUT_UNALIGNED_CONFIGS = [
    # The 784- and 512-wide dx of big batches; also the fixed config.
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=3, num_warps=16),
    # BLOCK_N 16 for the 10-wide reduction of the output layer.
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=2, num_warps=4),
    # Small batches: more programs.
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8}, num_stages=2, num_warps=4),
]
LINEAR_BACKWARD_INPUT_ALIGNED_CONFIGS = [
    # Tensor-core tile of dx, the fixed config: in two stages its TF32 build fits sm_80's shared memory.
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=2, num_warps=8),
    # The same tile with a shorter reduction step and deeper pipeline.
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=4, num_warps=8),
    # Half the tile, for batches of about 1024 (on 4 warps its bf16 build spilled on sm_80).
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=3, num_warps=8),
]
LINEAR_BACKWARD_INPUT_CONFIGS = {
    ALIGNED: LINEAR_BACKWARD_INPUT_ALIGNED_CONFIGS,
    UNALIGNED: LINEAR_BACKWARD_INPUT_UNALIGNED_CONFIGS,
}
# On AMD (kernels/targets.py) the 128 x 128 tile of dx takes the 32-row reduction
# step in 2 stages, its fixed config too: with a 64-row step its TF32 build
# outgrew the 64 KiB of LDS and its bf16 build spilled on gfx90a, and so did 4
# stages. The half tile takes 2 stages, where 3 spilled on gfx942.
LINEAR_BACKWARD_INPUT_AMD_ALIGNED_CONFIGS = [
    triton.Config({"BLOCK_M": 128, "BLOCK_N": 32, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=2, num_warps=8),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=2, num_warps=8),
]
LINEAR_BACKWARD_INPUT_AMD_CONFIGS = {
    ALIGNED: LINEAR_BACKWARD_INPUT_AMD_ALIGNED_CONFIGS,
    UNALIGNED: LINEAR_BACKWARD_INPUT_UNALIGNED_CONFIGS,
}

# Kernel 2 reduces over the batch (M, up to 16384) into a dw of few tiles; its
# configs name the tile of dw, BLOCK_K x BLOCK_N, and the reduction step BLOCK_M.
LINEAR_BACKWARD_WEIGHT_UNALIGNED_CONFIGS = [
    # The mid tile, also the fixed config: more tiles, more programs; 8 warps, as on 4 it spilled.
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64}, num_stages=3, num_warps=8),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64}, num_stages=3, num_warps=8),
    # BLOCK_N 16 for the 10-class output layer.
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 64}, num_stages=4, num_warps=4),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, num_stages=4, num_warps=4),
]
LINEAR_BACKWARD_WEIGHT_ALIGNED_CONFIGS = [
    # Tensor-core tile of dw; a 64-row step with 3 stages took 263 KB of shared memory in TF32.
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 128, "BLOCK_K": 128}, num_stages=4, num_warps=8),
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 128, "BLOCK_K": 128}, num_stages=2, num_warps=8),
    # A quarter of the tile, four times the programs (the 512 x 128 layer has 4 big tiles); the fixed config.
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 64}, num_stages=3, num_warps=4),
]
LINEAR_BACKWARD_WEIGHT_CONFIGS = {
    ALIGNED: LINEAR_BACKWARD_WEIGHT_ALIGNED_CONFIGS,
    UNALIGNED: LINEAR_BACKWARD_WEIGHT_UNALIGNED_CONFIGS,
}

# The config each class runs without autotuning: in Triton's CPU interpreter (which
# runs programs one after another, so few big tiles are fastest) and under
# TRITONNET_AUTOTUNE=0.
LINEAR_BACKWARD_INPUT_FIXED_CONFIGS = {
    ALIGNED: LINEAR_BACKWARD_INPUT_ALIGNED_CONFIGS[0],
    UNALIGNED: LINEAR_BACKWARD_INPUT_UNALIGNED_CONFIGS[0],
}
LINEAR_BACKWARD_INPUT_AMD_FIXED_CONFIGS = {
    ALIGNED: LINEAR_BACKWARD_INPUT_AMD_ALIGNED_CONFIGS[0],
    UNALIGNED: LINEAR_BACKWARD_INPUT_UNALIGNED_CONFIGS[0],
}
LINEAR_BACKWARD_WEIGHT_FIXED_CONFIGS = {
    ALIGNED: LINEAR_BACKWARD_WEIGHT_ALIGNED_CONFIGS[2],
    UNALIGNED: LINEAR_BACKWARD_WEIGHT_UNALIGNED_CONFIGS[0],
}

# Kernel 3 is memory-bound, like the SGD step: one fixed config moving a few
# 16-byte vectors per thread.
WEIGHT_GRADIENT_REDUCE_CONFIG = triton.Config({"BLOCK": 1024}, num_warps=4)

# When to split kernel 2's reduction (see `weight_gradient_splits`).
SPLIT_MIN_ROWS = 512  # rows of the batch each split reduces, at least
SPLIT_ROWS_MULTIPLE = 128  # a split's rows are whole steps of every config's BLOCK_M
SPLIT_TILE = 128  # the dw tile the program count is reckoned in (the aligned configs')


def weight_gradient_splits(rows: int, in_features: int, out_features: int, processors: int) -> tuple[int, int]:
    """`(splits, rows_per_split)` for kernel 2 over a batch of `rows`.

    How it was derived. Unsplit, kernel 2 has one program per 128 x 128 tile of dw
    (28 for 784 x 512): the batch is split until the programs fill the
    `processors` (SMs) once, but never into runs shorter than SPLIT_MIN_ROWS,
    where the partial sums' round trip through memory (4 bytes per element of dw
    per split) would outweigh the programs gained. Runs are rounded up to
    SPLIT_ROWS_MULTIPLE, so no program ends on a partial step; `splits` is then
    recounted so that no split is empty. Not yet timed on a GPU.
    """
    tiles = max(triton.cdiv(in_features, SPLIT_TILE) * triton.cdiv(out_features, SPLIT_TILE), 1)
    splits = max(1, min(triton.cdiv(processors, tiles), rows // SPLIT_MIN_ROWS))
    if splits == 1:
        return 1, rows
    rows_per_split = triton.cdiv(triton.cdiv(rows, splits), SPLIT_ROWS_MULTIPLE) * SPLIT_ROWS_MULTIPLE
    return triton.cdiv(rows, rows_per_split), rows_per_split


@triton.jit
def write_gradient(ptrs, gradient, mask, lr, EPILOGUE: tl.constexpr):
    """The epilogue of a gradient held in fp32: rounded to the dtype at `ptrs` and
    stored there (EPILOGUE "gradient"), or, with EPILOGUE "sgd", the SGD step on
    the parameter at `ptrs`, `param -= lr * gradient`, in fp32 from the rounded
    gradient (the numbers of a stored gradient and a separate SGD pass) and
    rounded once to the parameter's dtype."""
    rounded = gradient.to(ptrs.dtype.element_ty)
    if EPILOGUE == "sgd":
        parameter = tl.load(ptrs, mask=mask).to(tl.float32)
        rounded = (parameter - lr * rounded.to(tl.float32)).to(ptrs.dtype.element_ty)
    tl.store(ptrs, rounded, mask=mask)


@triton.jit
def load_dz(dy_ptrs, y_ptrs, mask, ACTIVATION: tl.constexpr):
    """The load prologue both gradient GEMMs share: a tile of dz in fp32.

    dz = dy * y * (1 - y) for the sigmoid, from the saved output y; dz = dy without
    activation (y_ptrs is then not read). Masked-off entries are 0, since dy loads
    as 0 there, so they add nothing to the dot products or the bias sum.
    """
    dz = tl.load(dy_ptrs, mask=mask, other=0.0).to(tl.float32)
    if ACTIVATION == "sigmoid":
        y = tl.load(y_ptrs, mask=mask, other=0.0).to(tl.float32)
        dz = dz * y * (1.0 - y)
    return dz


@triton.jit
def dz_pointers(
    dy_ptr, y_ptr, row_start, rows, cols, stride_dym, stride_dyn, stride_ym, stride_yn, ACTIVATION: tl.constexpr
):
    """The pointers `load_dz` reads a tile through: dy's and y's at `rows`, `cols`,
    past the first `row_start` rows. Without activation y is not read (y_ptr may be
    None), and its pointers are dy's. `row_start` moves the base pointers, so that
    the tile's own offsets keep their type."""
    dy_ptrs = dy_ptr + row_start * stride_dym + rows[:, None] * stride_dym + cols[None, :] * stride_dyn
    y_ptrs = dy_ptrs
    if ACTIVATION == "sigmoid":
        y_ptrs = y_ptr + row_start * stride_ym + rows[:, None] * stride_ym + cols[None, :] * stride_yn
    return dy_ptrs, y_ptrs


@triton.jit
def next_dz_pointers(dy_ptrs, y_ptrs, dy_step, y_step, ACTIVATION: tl.constexpr):
    """`dz_pointers` moved on to the next tile of the reduction: y's only where y
    is read."""
    if ACTIVATION == "sigmoid":
        y_ptrs += y_step
    return dy_ptrs + dy_step, y_ptrs


@triton.jit
def linear_backward_input_kernel(
    dy_ptr,
    y_ptr,
    w_ptr,
    dx_ptr,
    M,
    N,
    K,
    stride_dym,
    stride_dyn,
    stride_ym,
    stride_yn,
    stride_wk,
    stride_wn,
    stride_dxm,
    stride_dxk,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """One `[BLOCK_M, BLOCK_K]` tile of `dx = dz @ w^T`, dz formed on load.

    Args:
        dy_ptr: dy `[M, N]`, strides `(stride_dym, stride_dyn)`.
        y_ptr: the forward's output y `[M, N]`, strides `(stride_ym, stride_yn)`;
            read only for the sigmoid (None otherwise).
        w_ptr: w `[K, N]`, strides `(stride_wk, stride_wn)`; read as w^T `[N, K]`.
        dx_ptr: dx `[M, K]`, strides `(stride_dxm, stride_dxk)`.
        ACTIVATION: "none" or "sigmoid".
        INPUT_PRECISION: `tl.dot`'s input_precision for fp32 operands.
        BLOCK_M, BLOCK_K: the tile of dx; BLOCK_N: the reduction step;
        GROUP_M: tile rows per group of the grouped order.

    Programs walk the tiles of dx in the forward's grouped order, for the same
    L2 reuse. Each program recomputes dz for its rows at every tile along K;
    that is a few multiplies per element, against a write and a read of dz.
    """
    wait_for_previous_kernel(USE_PDL)
    # int64 ids keep the offsets below exact past 2**31 elements.
    pid = tl.program_id(axis=0).to(tl.int64)
    pid_m, pid_k = grouped_tile(pid, M, K, BLOCK_M, BLOCK_K, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_k = offs_k < K
    dy_ptrs, y_ptrs = dz_pointers(
        dy_ptr, y_ptr, 0, offs_m, offs_n, stride_dym, stride_dyn, stride_ym, stride_yn, ACTIVATION
    )
    w_t_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk

    accumulator = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n in range(0, tl.cdiv(N, BLOCK_N)):
        mask_n = offs_n < N - n * BLOCK_N
        mask_dz = mask_m[:, None] & mask_n[None, :]
        dz = load_dz(dy_ptrs, y_ptrs, mask_dz, ACTIVATION)
        dy_ptrs, y_ptrs = next_dz_pointers(dy_ptrs, y_ptrs, BLOCK_N * stride_dyn, BLOCK_N * stride_yn, ACTIVATION)
        w_t = tl.load(w_t_ptrs, mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        accumulator = tl.dot(dz.to(w_t.dtype), w_t, accumulator, input_precision=INPUT_PRECISION)
        w_t_ptrs += BLOCK_N * stride_wn

    dx_ptrs = dx_ptr + offs_m[:, None] * stride_dxm + offs_k[None, :] * stride_dxk
    tl.store(dx_ptrs, accumulator.to(dx_ptr.dtype.element_ty), mask=mask_m[:, None] & mask_k[None, :])


@triton.jit
def linear_backward_weight_kernel(
    x_ptr,
    dy_ptr,
    y_ptr,
    dw_ptr,
    db_ptr,
    M,
    N,
    K,
    stride_xm,
    stride_xk,
    stride_dym,
    stride_dyn,
    stride_ym,
    stride_yn,
    stride_dws,
    stride_dwk,
    stride_dwn,
    stride_dbs,
    stride_db,
    rows_per_split,
    scale,
    lr,
    HAS_BIAS: tl.constexpr,
    EPILOGUE: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """One `[BLOCK_K, BLOCK_N]` tile of `dw = scale * x^T @ dz`, and of db, over one
    run of `rows_per_split` rows of the batch.

    Args:
        x_ptr: the forward's input x `[M, K]`, strides `(stride_xm, stride_xk)`;
            read as x^T `[K, M]`.
        dy_ptr: dy `[M, N]`, strides `(stride_dym, stride_dyn)`.
        y_ptr: the forward's output y `[M, N]`, strides `(stride_ym, stride_yn)`;
            read only for the sigmoid (None otherwise).
        dw_ptr: dw `[splits, K, N]`, strides `(stride_dws, stride_dwk, stride_dwn)`:
            unsplit, the gradient itself (one split, stride_dws unused), or with
            EPILOGUE "sgd" the weight w it steps; split, the fp32 partial sums.
        db_ptr: db `[splits, N]`, strides `(stride_dbs, stride_db)`, or the bias
            with EPILOGUE "sgd"; written only if HAS_BIAS (None otherwise).
        rows_per_split: the rows each split reduces (M when unsplit).
        scale: the fp32 factor of dw and db (1 for partial sums).
        lr: the learning rate of EPILOGUE "sgd" (unused otherwise).
        HAS_BIAS: whether to compute db.
        EPILOGUE: "gradient" stores dw and db; "sgd" steps w and b by them
            (`write_gradient`), unsplit only.
        ACTIVATION: "none" or "sigmoid".
        INPUT_PRECISION: `tl.dot`'s input_precision for fp32 operands.
        BLOCK_K, BLOCK_N: the tile of dw; BLOCK_M: the reduction step over rows.

    The grid is (K tiles, N tiles, splits). dw has few tiles (at most 784 x 512
    in the exercise), so they all run in one wave and read the same rows of x
    and dz at about the same time; a grouped order would add nothing.

    db without atomics: the programs of the first tile row (pid_k == 0) load
    every dz tile of their columns anyway, so they also add up its rows. Each
    column of db then has exactly one writer, and the sum is taken in fp32 from
    dz before it is rounded for the dot.
    """
    wait_for_previous_kernel(USE_PDL)
    # int64 ids keep the offsets below exact past 2**31 elements.
    pid_k = tl.program_id(axis=0).to(tl.int64)
    pid_n = tl.program_id(axis=1).to(tl.int64)
    # The split's first row moves the base pointers (in int64), so that the row
    # offsets within it stay int32, as unsplit: fewer registers.
    split = tl.program_id(axis=2)
    split_rows = tl.minimum(rows_per_split, M - split * rows_per_split)
    row_start = split.to(tl.int64) * rows_per_split

    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    mask_k = offs_k < K
    mask_n = offs_n < N
    x_t_ptrs = x_ptr + row_start * stride_xm + offs_k[:, None] * stride_xk + offs_m[None, :] * stride_xm
    dy_ptrs, y_ptrs = dz_pointers(
        dy_ptr, y_ptr, row_start, offs_m, offs_n, stride_dym, stride_dyn, stride_ym, stride_yn, ACTIVATION
    )
    is_bias_program = pid_k == 0

    accumulator = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    bias_accumulator = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m in range(0, tl.cdiv(split_rows, BLOCK_M)):
        mask_m = offs_m < split_rows - m * BLOCK_M
        mask_dz = mask_m[:, None] & mask_n[None, :]
        dz = load_dz(dy_ptrs, y_ptrs, mask_dz, ACTIVATION)
        dy_ptrs, y_ptrs = next_dz_pointers(dy_ptrs, y_ptrs, BLOCK_M * stride_dym, BLOCK_M * stride_ym, ACTIVATION)
        if HAS_BIAS:
            if is_bias_program:
                bias_accumulator += tl.sum(dz, axis=0)
        x_t = tl.load(x_t_ptrs, mask=mask_k[:, None] & mask_m[None, :], other=0.0)
        accumulator = tl.dot(x_t, dz.to(x_t.dtype), accumulator, input_precision=INPUT_PRECISION)
        x_t_ptrs += BLOCK_M * stride_xm

    dw_ptrs = dw_ptr + split * stride_dws + offs_k[:, None] * stride_dwk + offs_n[None, :] * stride_dwn
    write_gradient(dw_ptrs, accumulator * scale, mask_k[:, None] & mask_n[None, :], lr, EPILOGUE)
    if HAS_BIAS:
        if is_bias_program:
            db_ptrs = db_ptr + split * stride_dbs + offs_n * stride_db
            write_gradient(db_ptrs, bias_accumulator * scale, mask_n, lr, EPILOGUE)


@triton.jit
def reduce_block(
    partial_ptr, stride_split, out_ptr, numel, cols, splits, stride_row, stride_col, scale, lr, block,
    EPILOGUE: tl.constexpr, BLOCK: tl.constexpr,
):
    """The `block`-th BLOCK of one gradient from its partial sums: `splits` runs of
    `numel` contiguous fp32 values, `stride_split` apart, added split by split,
    scaled, and written into out `[numel // cols, cols]`, strides
    `(stride_row, stride_col)`, by `write_gradient`."""
    offsets = block * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    partial_ptrs = partial_ptr + offsets
    total = tl.zeros((BLOCK,), dtype=tl.float32)
    for _ in range(0, splits):
        total += tl.load(partial_ptrs, mask=mask, other=0.0)
        partial_ptrs += stride_split
    out_ptrs = out_ptr + (offsets // cols) * stride_row + (offsets % cols) * stride_col
    write_gradient(out_ptrs, total * scale, mask, lr, EPILOGUE)


@triton.jit
def linear_weight_gradient_reduce_kernel(
    partial_ptr,
    dw_ptr,
    db_ptr,
    K,
    N,
    splits,
    stride_dwk,
    stride_dwn,
    stride_db,
    scale,
    lr,
    HAS_BIAS: tl.constexpr,
    EPILOGUE: tl.constexpr,
    BLOCK: tl.constexpr,
    USE_PDL: tl.constexpr = False,
):
    """Kernel 3: dw and db from kernel 2's partial sums, or the SGD step by them.

    Args:
        partial_ptr: the partial sums `[splits, K + 1, N]`, fp32, contiguous: rows
            0 to K - 1 of each split are dw's, row K is db's.
        dw_ptr: dw `[K, N]`, strides `(stride_dwk, stride_dwn)`; the weight with
            EPILOGUE "sgd".
        db_ptr: db `[N]`, stride `stride_db`, or the bias; written only if HAS_BIAS.
        scale: the fp32 factor of dw and db.
        lr: the learning rate of EPILOGUE "sgd".
        EPILOGUE: "gradient" or "sgd", as in kernel 2.
        BLOCK: elements per program.

    A 1-D grid of BLOCK-element programs: the first cover dw, the rest db, as in
    the SGD kernel (`sgd.py`). Each element's splits are added in order, split 0
    first: the same sums in the same order on every run.
    """
    wait_for_previous_kernel(USE_PDL)
    # int64 ids keep the offsets below exact past 2**31 elements.
    pid = tl.program_id(axis=0).to(tl.int64)
    weight_numel = K * N
    weight_programs = tl.cdiv(weight_numel, BLOCK)
    stride_split = weight_numel + N
    if pid < weight_programs:
        reduce_block(
            partial_ptr, stride_split, dw_ptr, weight_numel, N, splits, stride_dwk, stride_dwn, scale, lr, pid,
            EPILOGUE, BLOCK,
        )
    elif HAS_BIAS:
        reduce_block(
            partial_ptr + weight_numel, stride_split, db_ptr, N, N, splits, 0, stride_db, scale, lr,
            pid - weight_programs, EPILOGUE, BLOCK,
        )


# One autotuner per alignment class. The key holds INPUT_PRECISION: "ieee" and
# "tf32" run on different units (CUDA cores, tensor cores).
linear_backward_input_autotuned = {
    alignment: autotune_per_target(
        configs, LINEAR_BACKWARD_INPUT_AMD_CONFIGS[alignment], key=["M", "N", "K", "INPUT_PRECISION"]
    )(linear_backward_input_kernel)
    for alignment, configs in LINEAR_BACKWARD_INPUT_CONFIGS.items()
}
WEIGHT_TUNING_KEY = ["M", "N", "K", "rows_per_split", "INPUT_PRECISION"]
linear_backward_weight_autotuned = {
    alignment: triton.autotune(configs=configs, key=WEIGHT_TUNING_KEY)(linear_backward_weight_kernel)
    for alignment, configs in LINEAR_BACKWARD_WEIGHT_CONFIGS.items()
}
# The SGD epilogue updates the weight and bias in place: the autotuner would step
# them once per timing run of every config, so it restores both after each run
# (docs/kernels.md). Its key holds EPILOGUE, so that its tuned-table entries are
# its own. The launcher never passes None for a restored pointer (triton 3.6
# clones it unchecked): without a bias, db_ptr is the weight, never written.
linear_backward_weight_sgd_autotuned = {
    alignment: triton.autotune(
        configs=configs, key=[*WEIGHT_TUNING_KEY, "EPILOGUE"], restore_value=["dw_ptr", "db_ptr"]
    )(linear_backward_weight_kernel)
    for alignment, configs in LINEAR_BACKWARD_WEIGHT_CONFIGS.items()
}
