"""Row-wise softmax, numerically stable, for rows of any width.

Math. For x `[M, N]`, each row is shifted by its maximum before the exponential,

    y[m, n] = exp(x[m, n] - max_j x[m, j]) / sum_j exp(x[m, j] - max_j x[m, j]),

which equals `exp(x) / sum(exp(x))` but never overflows: the largest exponent is 0.
A row whose entries are all -inf gives NaN (its maximum is -inf, and
`-inf - -inf` is NaN), as torch.softmax does. fp16 and bf16 inputs are computed
in fp32 and rounded once, at the store.

Why it is fast. Softmax is memory-bound: each element is read once and written
once, and the work in between is a handful of instructions. A naive version in
PyTorch reads x three times (max, sum, normalize) and writes two temporaries; this
kernel, like Triton's fused-softmax tutorial, keeps a row in registers between
the three steps, so it reads x once and writes y once.

Blocks and programs. Each program owns BLOCK_ROWS consecutive rows and walks
their columns in blocks of BLOCK_COLS:
- Narrow rows (the exercise's 10 classes) would leave most threads of a program
  idle if it held one row, so `softmax_blocks` packs several rows into one tile.
- A row that fits one block (SINGLE_PASS) is loaded once, reduced and stored:
  one row per program up to SOFTMAX_MAX_BLOCK_COLS, with up to 32 warps, so that
  wide rows move at the memory's speed, one read and one write.
- A row wider than one block cannot stay in registers. The kernel then makes two
  passes over memory: the first keeps a running maximum and a running sum, rescaling
  the sum whenever the maximum grows (the "online softmax" of Milakov and
  Gimelshein, 2018); the second reads the row again, normalizes and stores it.

`load_row_block` and `online_row_statistics` are shared with the row-wise
cross-entropy kernel in `cross_entropy.py`.
"""

import triton
import triton.language as tl

# Widest block a program of the row-wise cross-entropy kernel holds in registers,
# where p and its gradient sit beside each value of x; wider rows take two passes.
MAX_BLOCK_COLS = 4096

# The softmax keeps fewer temporaries per value: a whole row of up to 16384 values
# stays in registers (16 per thread of 32 warps, 39 registers), read once; only
# wider rows take the two-pass path, which reads x twice.
SOFTMAX_MAX_BLOCK_COLS = 16384

# The CPU interpreter handles any block, but a narrow cap sends the small rows of
# the tests (1000 or 257 columns) through the two-pass path, so that both paths
# run without a GPU.
INTERPRETER_MAX_BLOCK_COLS = 128

# Fewest elements a tile should hold: 8 per thread of a 4-warp program.
MIN_TILE_ELEMENTS = 1024

# Values of a tile each thread holds: the warps grow with the tile to keep it so.
VALUES_PER_THREAD = 16

# The most threads a program may have: a CUDA block's and an AMD workgroup's limit.
MAX_THREADS = 1024


def softmax_blocks(rows: int, cols: int, max_block_cols: int = MAX_BLOCK_COLS, warp_size: int = 32) -> dict:
    """Block sizes and warps for a row-wise kernel over `[rows, cols]`.

    Rows are packed into one tile until it holds MIN_TILE_ELEMENTS, so that narrow
    rows (10 classes) keep a program's threads busy; a tile is never taller than
    the rows there are, nor wider than `max_block_cols`. Warps: 4, or one per
    `warp_size` x VALUES_PER_THREAD elements of the tile, at most MAX_THREADS
    threads, so a wide row is spread over more threads instead of more registers
    per thread. `warp_size` is 32 on NVIDIA and 64 on AMD, whose `num_warps`
    counts 64-lane wavefronts: the same tile takes half the warps there.
    docs/kernels.md has how this was derived.
    """
    block_cols = min(triton.next_power_of_2(max(cols, 1)), max_block_cols)
    block_rows = min(max(MIN_TILE_ELEMENTS // block_cols, 1), triton.next_power_of_2(max(rows, 1)))
    warps = block_rows * block_cols // (warp_size * VALUES_PER_THREAD)
    return {
        "BLOCK_ROWS": block_rows,
        "BLOCK_COLS": block_cols,
        "SINGLE_PASS": cols <= block_cols,
        "num_warps": min(max(warps, 4), MAX_THREADS // warp_size),
    }


@triton.jit
def load_row_block(x_ptr, offs_row, mask_row, col_start, cols, stride_xm, stride_xn, BLOCK_COLS: tl.constexpr):
    """The `[len(offs_row), BLOCK_COLS]` tile of x from column `col_start`, in fp32.

    Entries outside the matrix load as -inf: they add exp(-inf) = 0 to the sums
    and never win a maximum.
    """
    offs_col = col_start + tl.arange(0, BLOCK_COLS)
    mask = mask_row[:, None] & (offs_col < cols)[None, :]
    x_ptrs = x_ptr + offs_row[:, None] * stride_xm + offs_col[None, :] * stride_xn
    return tl.load(x_ptrs, mask=mask, other=float("-inf")).to(tl.float32)


@triton.jit
def online_row_statistics(
    x_ptr,
    offs_row,
    mask_row,
    cols,
    stride_xm,
    stride_xn,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
):
    """The maximum and `sum(exp(x - maximum))` of each row, in one pass over x.

    When a block raises a row's maximum from m to m', the sum so far is rescaled by
    exp(m - m'). While a row has seen only -inf, its maximum is -inf and the shift
    would be `-inf - -inf` = NaN; shifting such rows by 0 keeps their sum at 0, so
    a row of leading -inf entries followed by finite ones still comes out right.
    """
    row_max = tl.full((BLOCK_ROWS,), float("-inf"), dtype=tl.float32)
    row_sum = tl.zeros((BLOCK_ROWS,), dtype=tl.float32)
    for col_start in range(0, cols, BLOCK_COLS):
        x = load_row_block(x_ptr, offs_row, mask_row, col_start, cols, stride_xm, stride_xn, BLOCK_COLS)
        new_max = tl.maximum(row_max, tl.max(x, axis=1))
        shift = tl.where(new_max == float("-inf"), 0.0, new_max)
        row_sum = row_sum * tl.exp(row_max - shift) + tl.sum(tl.exp(x - shift[:, None]), axis=1)
        row_max = new_max
    return row_max, row_sum


@triton.jit
def softmax_kernel(
    x_ptr,
    y_ptr,
    rows,
    cols,
    stride_xm,
    stride_xn,
    stride_ym,
    stride_yn,
    BLOCK_ROWS: tl.constexpr,
    BLOCK_COLS: tl.constexpr,
    SINGLE_PASS: tl.constexpr,
):
    """Softmax of BLOCK_ROWS rows of x into y.

    Args:
        x_ptr: x `[rows, cols]`, strides `(stride_xm, stride_xn)`; fp32, fp16 or bf16.
        y_ptr: y `[rows, cols]`, strides `(stride_ym, stride_yn)`; written in its own dtype.
        BLOCK_ROWS, BLOCK_COLS: the tile; from `softmax_blocks`.
        SINGLE_PASS: `cols <= BLOCK_COLS`: one load per element instead of two.
    """
    # int64 row offsets keep the addresses exact past 2**31 elements.
    row_block = tl.program_id(axis=0).to(tl.int64)
    offs_row = row_block * BLOCK_ROWS + tl.arange(0, BLOCK_ROWS)
    mask_row = offs_row < rows

    if SINGLE_PASS:
        x = load_row_block(x_ptr, offs_row, mask_row, 0, cols, stride_xm, stride_xn, BLOCK_COLS)
        numerator = tl.exp(x - tl.max(x, axis=1)[:, None])
        y = numerator / tl.sum(numerator, axis=1)[:, None]
        offs_col = tl.arange(0, BLOCK_COLS)
        y_ptrs = y_ptr + offs_row[:, None] * stride_ym + offs_col[None, :] * stride_yn
        tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask_row[:, None] & (offs_col < cols)[None, :])
    else:
        row_max, row_sum = online_row_statistics(
            x_ptr, offs_row, mask_row, cols, stride_xm, stride_xn, BLOCK_ROWS, BLOCK_COLS
        )
        for col_start in range(0, cols, BLOCK_COLS):
            x = load_row_block(x_ptr, offs_row, mask_row, col_start, cols, stride_xm, stride_xn, BLOCK_COLS)
            y = tl.exp(x - row_max[:, None]) / row_sum[:, None]
            offs_col = col_start + tl.arange(0, BLOCK_COLS)
            y_ptrs = y_ptr + offs_row[:, None] * stride_ym + offs_col[None, :] * stride_yn
            tl.store(y_ptrs, y.to(y_ptr.dtype.element_ty), mask=mask_row[:, None] & (offs_col < cols)[None, :])
