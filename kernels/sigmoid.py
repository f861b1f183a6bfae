"""The exercise's standalone Sigmoid layer: forward, and backward from the output.

Math. Forward `y = 1 / (1 + exp(-x))`; backward `grad_x = grad_y * y * (1 - y)`,
from the saved output y rather than by recomputing the sigmoid from x (the
exercise recomputes it; the two are equal, and y is already in memory).

Both are computed in fp32 and rounded once to the output's dtype. The forward is
`tl.sigmoid`, as in the linear forward kernel's fused activation, so that the
standalone layer and the fused one give the same values.

Shapes and strides. Every matrix `[M, N]` has its own pair of strides: a
transposed or sliced view works without a copy.

Blocks and programs. A 2-D grid of `[BLOCK_M, BLOCK_N]` tiles. Element-wise work
is memory-bound; wide BLOCK_N runs along the contiguous dimension so that each
warp reads whole cache lines. The MLP itself does not launch these kernels: it
fuses the sigmoid into the linear kernels. They serve the exercise's layer API.
"""

import triton
import triton.language as tl

# Memory-bound: 8 to 32 elements a thread, 16-byte vectors along the rows;
# docs/kernels.md has how the tiles were sized.
SIGMOID_CONFIGS = [
    triton.Config({"BLOCK_M": 16, "BLOCK_N": 128}, num_warps=4),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 128}, num_warps=8),
    triton.Config({"BLOCK_M": 32, "BLOCK_N": 256}, num_warps=8),
]

# The interpreter runs programs one after another: few large tiles are fastest,
# and 32 x 64 still leaves partial tiles at the odd shapes of the tests.
SIGMOID_INTERPRETER_CONFIG = triton.Config({"BLOCK_M": 32, "BLOCK_N": 64}, num_warps=4)


@triton.jit
def elementwise_tile(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The rows and columns of this program's `[BLOCK_M, BLOCK_N]` tile of an
    `[M, N]` matrix, and the mask of those inside it, on the 2-D grid of tiles.

    int64 ids keep the offsets built from them exact past 2**31 elements.
    """
    pid_m = tl.program_id(axis=0).to(tl.int64)
    pid_n = tl.program_id(axis=1).to(tl.int64)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    return offs_m, offs_n, mask


@triton.jit
def sigmoid_forward_kernel(
    x_ptr,
    y_ptr,
    M,
    N,
    stride_xm,
    stride_xn,
    stride_ym,
    stride_yn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One tile of `y = sigmoid(x)`.

    Args:
        x_ptr: x `[M, N]`, strides `(stride_xm, stride_xn)`.
        y_ptr: y `[M, N]`, strides `(stride_ym, stride_yn)`; may be x itself.
        BLOCK_M, BLOCK_N: the tile.
    """
    offs_m, offs_n, mask = elementwise_tile(M, N, BLOCK_M, BLOCK_N)
    x = tl.load(x_ptr + offs_m[:, None] * stride_xm + offs_n[None, :] * stride_xn, mask=mask)
    y = tl.sigmoid(x.to(tl.float32))
    y_ptrs = y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn
    tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def sigmoid_backward_kernel(
    grad_y_ptr,
    y_ptr,
    grad_x_ptr,
    M,
    N,
    stride_gym,
    stride_gyn,
    stride_ym,
    stride_yn,
    stride_gxm,
    stride_gxn,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
):
    """One tile of `grad_x = grad_y * y * (1 - y)`.

    Args:
        grad_y_ptr: the gradient of the output `[M, N]`, strides `(stride_gym, stride_gyn)`.
        y_ptr: the saved sigmoid output `[M, N]`, strides `(stride_ym, stride_yn)`.
        grad_x_ptr: the gradient of the input `[M, N]`, strides `(stride_gxm, stride_gxn)`;
            may be grad_y itself.
        BLOCK_M, BLOCK_N: the tile.
    """
    offs_m, offs_n, mask = elementwise_tile(M, N, BLOCK_M, BLOCK_N)
    grad_y = tl.load(grad_y_ptr + offs_m[:, None] * stride_gym + offs_n[None, :] * stride_gyn, mask=mask)
    y = tl.load(y_ptr + offs_m[:, None] * stride_ym + offs_n[None, :] * stride_yn, mask=mask)
    y = y.to(tl.float32)
    grad_x = grad_y.to(tl.float32) * y * (1.0 - y)
    grad_x_ptrs = grad_x_ptr + offs_m[:, None] * stride_gxm + offs_n[None, :] * stride_gxn
    tl.store(grad_x_ptrs, grad_x.to(grad_x_ptr.dtype.element_ty), mask=mask)


# The autotuner runs every config on the same tensors before the real launch. The
# output may be the input itself (an in-place call); restoring the inputs after
# each trial run keeps the real launch reading the values it was given.
sigmoid_forward_autotuned = triton.autotune(
    configs=SIGMOID_CONFIGS, key=["M", "N"], restore_value=["x_ptr"]
)(sigmoid_forward_kernel)

sigmoid_backward_autotuned = triton.autotune(
    configs=SIGMOID_CONFIGS, key=["M", "N"], restore_value=["grad_y_ptr", "y_ptr"]
)(sigmoid_backward_kernel)
