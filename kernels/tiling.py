"""How the GEMM kernels map program ids onto output tiles: the grouped order.

Shared by the linear forward and the input-gradient kernel, which both walk the
tiles of an `[M, N]` output with a 1-D grid.
"""

import triton
import triton.language as tl


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
