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
"""

import triton
import triton.language as tl

from tritonnet.kernels.tiling import grouped_tile

# Kernel 1 is a forward-shaped GEMM (output dx [M, K], reduction over N). Its
# configs name the tile of dx, BLOCK_M x BLOCK_K, and the reduction step BLOCK_N:
# a wide tile for the 784- and 512-wide dx of big batches, BLOCK_N = 16 for the
# 10-wide reduction of the output layer, and small tiles for small batches. The
# sigmoid prologue keeps dy and y tiles in registers beside the dot's operands,
# so the 128-row tiles the forward uses spill here; these do not (sm_80 and
# sm_90, fp32 "ieee" and "tf32", bf16, with w contiguous or the transposed view
# of an `[N, K]` tensor; see tests/test_linear_backward.py). With the transposed
# w, the fp32 "ieee" builds spilled at 8 warps for the wide tile and at 4 stages
# for the small ones.
WIDE_INPUT_TILES = triton.Config(
    {"BLOCK_M": 64, "BLOCK_N": 32, "BLOCK_K": 128, "GROUP_M": 8}, num_stages=3, num_warps=16
)
LINEAR_BACKWARD_INPUT_CONFIGS = [
    WIDE_INPUT_TILES,
    triton.Config({"BLOCK_M": 64, "BLOCK_N": 16, "BLOCK_K": 64, "GROUP_M": 8}, num_stages=2, num_warps=4),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32, "GROUP_M": 8}, num_stages=2, num_warps=4),
]

# Kernel 2 reduces over the batch (M, up to 16384) into a dw of at most 784 x 512
# that has few tiles, so its tiles are mid-sized: more tiles, more programs to
# fill the GPU. BLOCK_M, the reduction step, stays at 32: on the CUDA cores
# (fp32 "ieee") a 64-row step with the sigmoid prologue spills. BLOCK_N = 16
# fits the 10-class output layer. No spills, as for kernel 1; the 64 x 32 tile
# of dw takes 8 warps, as on 4 its fp32 "ieee" build spilled 72 bytes on sm_90.
MID_WEIGHT_TILES = triton.Config({"BLOCK_M": 32, "BLOCK_N": 64, "BLOCK_K": 64}, num_stages=3, num_warps=8)
LINEAR_BACKWARD_WEIGHT_CONFIGS = [
    MID_WEIGHT_TILES,
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 64}, num_stages=3, num_warps=8),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 16, "BLOCK_K": 64}, num_stages=4, num_warps=4),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 32, "BLOCK_K": 32}, num_stages=4, num_warps=4),
]

# The CPU interpreter runs the programs one after another, and every step of a
# program's loop costs milliseconds of Python: it takes the largest tiles of
# each list, which still leave partial blocks at the tests' odd shapes.
LINEAR_BACKWARD_INPUT_INTERPRETER_CONFIG = WIDE_INPUT_TILES
LINEAR_BACKWARD_WEIGHT_INTERPRETER_CONFIG = MID_WEIGHT_TILES


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
    # int64 ids keep the offsets below exact past 2**31 elements.
    pid = tl.program_id(axis=0).to(tl.int64)
    pid_m, pid_k = grouped_tile(pid, M, K, BLOCK_M, BLOCK_K, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = tl.arange(0, BLOCK_N)
    mask_m = offs_m < M
    mask_k = offs_k < K
    dy_ptrs = dy_ptr + offs_m[:, None] * stride_dym + offs_n[None, :] * stride_dyn
    y_ptrs = dy_ptrs  # not read without activation
    if ACTIVATION == "sigmoid":
        y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    w_t_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk

    accumulator = tl.zeros((BLOCK_M, BLOCK_K), dtype=tl.float32)
    for n in range(0, tl.cdiv(N, BLOCK_N)):
        mask_n = offs_n < N - n * BLOCK_N
        mask_dz = mask_m[:, None] & mask_n[None, :]
        dz = load_dz(dy_ptrs, y_ptrs, mask_dz, ACTIVATION)
        if ACTIVATION == "sigmoid":
            y_ptrs += BLOCK_N * stride_yn
        w_t = tl.load(w_t_ptrs, mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        accumulator = tl.dot(dz.to(w_t.dtype), w_t, accumulator, input_precision=INPUT_PRECISION)
        dy_ptrs += BLOCK_N * stride_dyn
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
    stride_dwk,
    stride_dwn,
    stride_db,
    scale,
    HAS_BIAS: tl.constexpr,
    ACTIVATION: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """One `[BLOCK_K, BLOCK_N]` tile of `dw = scale * x^T @ dz`, and of db.

    Args:
        x_ptr: the forward's input x `[M, K]`, strides `(stride_xm, stride_xk)`;
            read as x^T `[K, M]`.
        dy_ptr: dy `[M, N]`, strides `(stride_dym, stride_dyn)`.
        y_ptr: the forward's output y `[M, N]`, strides `(stride_ym, stride_yn)`;
            read only for the sigmoid (None otherwise).
        dw_ptr: dw `[K, N]`, strides `(stride_dwk, stride_dwn)`.
        db_ptr: db `[N]`, stride `stride_db`; written only if HAS_BIAS (None otherwise).
        scale: the fp32 factor of dw and db.
        HAS_BIAS: whether to compute db.
        ACTIVATION: "none" or "sigmoid".
        INPUT_PRECISION: `tl.dot`'s input_precision for fp32 operands.
        BLOCK_K, BLOCK_N: the tile of dw; BLOCK_M: the reduction step over rows.

    The grid is 2-D, (K tiles, N tiles). dw has few tiles (at most 784 x 512
    in the exercise), so they all run in one wave and read the same rows of x
    and dz at about the same time; a grouped order would add nothing.

    db without atomics: the programs of the first tile row (pid_k == 0) load
    every dz tile of their columns anyway, so they also add up its rows. Each
    column of db then has exactly one writer, and the sum is taken in fp32 from
    dz before it is rounded for the dot.
    """
    # int64 ids keep the offsets below exact past 2**31 elements.
    pid_k = tl.program_id(axis=0).to(tl.int64)
    pid_n = tl.program_id(axis=1).to(tl.int64)

    offs_k = pid_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    mask_k = offs_k < K
    mask_n = offs_n < N
    x_t_ptrs = x_ptr + offs_k[:, None] * stride_xk + offs_m[None, :] * stride_xm
    dy_ptrs = dy_ptr + offs_m[:, None] * stride_dym + offs_n[None, :] * stride_dyn
    y_ptrs = dy_ptrs  # not read without activation
    if ACTIVATION == "sigmoid":
        y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    is_bias_program = pid_k == 0

    accumulator = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    bias_accumulator = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m in range(0, tl.cdiv(M, BLOCK_M)):
        mask_m = offs_m < M - m * BLOCK_M
        mask_dz = mask_m[:, None] & mask_n[None, :]
        dz = load_dz(dy_ptrs, y_ptrs, mask_dz, ACTIVATION)
        if ACTIVATION == "sigmoid":
            y_ptrs += BLOCK_M * stride_ym
        if HAS_BIAS:
            if is_bias_program:
                bias_accumulator += tl.sum(dz, axis=0)
        x_t = tl.load(x_t_ptrs, mask=mask_k[:, None] & mask_m[None, :], other=0.0)
        accumulator = tl.dot(x_t, dz.to(x_t.dtype), accumulator, input_precision=INPUT_PRECISION)
        x_t_ptrs += BLOCK_M * stride_xm
        dy_ptrs += BLOCK_M * stride_dym

    dw_ptrs = dw_ptr + offs_k[:, None] * stride_dwk + offs_n[None, :] * stride_dwn
    dw = (accumulator * scale).to(dw_ptr.dtype.element_ty)
    tl.store(dw_ptrs, dw, mask=mask_k[:, None] & mask_n[None, :])
    if HAS_BIAS:
        if is_bias_program:
            db = (bias_accumulator * scale).to(db_ptr.dtype.element_ty)
            tl.store(db_ptr + offs_n * stride_db, db, mask=mask_n)


# The key holds INPUT_PRECISION: "ieee" and "tf32" run on different units (CUDA
# cores, tensor cores), so the best tile for one is no guide to the other.
linear_backward_input_autotuned = triton.autotune(configs=LINEAR_BACKWARD_INPUT_CONFIGS, key=["M", "N", "K", "INPUT_PRECISION"])(
    linear_backward_input_kernel
)
linear_backward_weight_autotuned = triton.autotune(
    configs=LINEAR_BACKWARD_WEIGHT_CONFIGS, key=["M", "N", "K", "INPUT_PRECISION"]
)(linear_backward_weight_kernel)
