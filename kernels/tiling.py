"""Building blocks shared by the GEMM kernels (inlined where they are called).

- `grouped_tile`: how program ids map onto output tiles, in grouped order; used by
  the linear forward and the input-gradient kernel.
- `linear_tile`: one tile of `x @ w + b` in an fp32 accumulator; used by the linear
  forward and the fused output layer, which differ only in their epilogues.
- `ALIGNED`, `UNALIGNED`: the alignment classes the GEMM config lists are keyed by.

Alignment classes. A launch on operands whose pointers are 16-byte aligned and
whose sizes and strides (other than 1) are multiples of 16 gets Triton's
divisibility specialization: 16-byte vector loads and asynchronous copies that
keep the tensor cores fed. Such launches, when their dot runs on the tensor cores
(fp16, bf16, or fp32 as TF32), are ALIGNED and take tensor-core-sized tiles; the
rest (odd shapes, offset views, fp32 on the CUDA cores, whose dot holds both
operand slices in registers) are UNALIGNED and take small tiles that compile
without spills in the worst case. Triton marks an integer only when it is a
multiple of 16 (a multiple of 8 is not enough), so the class asks for 16: then
the build launched is the build the compile tests check.
"""

import triton
import triton.language as tl

ALIGNED = "aligned"
UNALIGNED = "unaligned"


@triton.jit
def grouped_tile(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """The (tile row, tile column) of program `pid` over an `[M, N]` output.

    Row-major order would have consecutive programs sweep a whole row of tiles,
    each reading a different column block of the right operand. The grouped order
    (Triton's matrix-multiplication tutorial) fills a column of GROUP_M tiles
    before moving to the next column, so programs that run at the same time share
    GROUP_M row blocks of the left operand and a few column blocks of the right,
    and those stay in L2 instead of being read again from memory.

    `pid` should be int64, so the offsets built from the result are exact past
    2**31 elements.
    """
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    group_size_m = min(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + (pid % num_pid_in_group) % group_size_m
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def linear_tile(
    x_ptr,
    w_ptr,
    b_ptr,
    offs_m,
    offs_n,
    M,
    N,
    K,
    stride_xm,
    stride_xk,
    stride_wk,
    stride_wn,
    stride_b,
    HAS_BIAS: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
):
    """The `[BLOCK_M, BLOCK_N]` tile `x @ w + b` at rows `offs_m` and columns
    `offs_n`, as an fp32 accumulator still in registers.

    It walks along K in steps of BLOCK_K: a `[BLOCK_M, BLOCK_K]` tile of x and a
    `[BLOCK_K, BLOCK_N]` tile of w per step, their `tl.dot` added into the
    accumulator. Entries past M, N or K load as 0 and add nothing. The callers
    (the linear forward and the fused output layer) apply their epilogue to the
    result before anything is stored.
    """
    offs_k = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_n = offs_n < N
    x_ptrs = x_ptr + offs_m[:, None] * stride_xm + offs_k[None, :] * stride_xk
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn

    accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        mask_k = offs_k < K - k * BLOCK_K
        x = tl.load(x_ptrs, mask=mask_m[:, None] & mask_k[None, :], other=0.0)
        w = tl.load(w_ptrs, mask=mask_k[:, None] & mask_n[None, :], other=0.0)
        accumulator = tl.dot(x, w, accumulator, input_precision=INPUT_PRECISION)
        x_ptrs += BLOCK_K * stride_xk
        w_ptrs += BLOCK_K * stride_wk

    if HAS_BIAS:
        b = tl.load(b_ptr + offs_n * stride_b, mask=mask_n, other=0.0)
        accumulator += b.to(tl.float32)[None, :]
    return accumulator
