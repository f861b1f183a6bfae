"""Launcher of the row-wise softmax kernel (`tritonnet.kernels.softmax`)."""

from __future__ import annotations

import torch
import triton

from tritonnet import checks
from tritonnet.kernels.softmax import (
    INTERPRETER_MAX_BLOCK_COLS,
    MAX_BLOCK_COLS,
    SOFTMAX_MAX_BLOCK_COLS,
    softmax_blocks,
    softmax_kernel,
)
from tritonnet.triton_backend.common import check_operands, interpreting, output_buffer


def row_blocks(rows: int, cols: int, max_block_cols: int = MAX_BLOCK_COLS) -> dict:
    """The tile and warps of a row-wise kernel (softmax, cross-entropy) over `[rows, cols]`,
    its blocks at most `max_block_cols` wide.

    The interpreter gets a narrow cap, so that the tests' small rows also take the
    two-pass path without a GPU (see `tritonnet.kernels.softmax`).
    """
    return softmax_blocks(rows, cols, INTERPRETER_MAX_BLOCK_COLS if interpreting() else max_block_cols)


def softmax(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise softmax of x `[M, N]` (any strides), into `out` if given.

    Same contract as `tritonnet.reference.softmax`: stable for any logits, NaN for
    a row of all -inf, fp32 math for fp16 and bf16 inputs. `out` `[M, N]` of x's
    dtype is written in place and returned; it may be x itself.
    """
    x = checks.check_matrix("x", x)
    check_operands(x=x)
    rows, cols = x.shape
    out = output_buffer("out", out, rows, cols, "x", x)
    if x.numel() == 0:
        return out
    blocks = row_blocks(rows, cols, SOFTMAX_MAX_BLOCK_COLS)
    grid = (triton.cdiv(rows, blocks["BLOCK_ROWS"]),)
    softmax_kernel[grid](x, out, rows, cols, *x.stride(), *out.stride(), **blocks)
    return out
