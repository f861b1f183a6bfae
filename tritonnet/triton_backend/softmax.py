"""Launcher of the row-wise softmax kernel (`tritonnet.kernels.softmax`)."""

from __future__ import annotations

import torch
import triton

from tritonnet import checks, rocm
from tritonnet.environment import interpreter_enabled
from tritonnet.kernels.softmax import (
    INTERPRETER_MAX_BLOCK_COLS,
    MAX_BLOCK_COLS,
    SOFTMAX_MAX_BLOCK_COLS,
    softmax_blocks,
    softmax_kernel,
)
from tritonnet.triton_backend.common import check_operands, output_strides
from tritonnet.triton_backend.launch import Kernel, Launch
from tritonnet.triton_backend.plans import Plan, Plans

SOFTMAX = Kernel(softmax_kernel, lambda arguments: (triton.cdiv(arguments["rows"], arguments["BLOCK_ROWS"]),))


def row_blocks(rows: int, cols: int, max_block_cols: int = MAX_BLOCK_COLS) -> dict:
    """The tile and warps of a row-wise kernel (softmax, cross-entropy) over `[rows, cols]`,
    its blocks at most `max_block_cols` wide.

    The interpreter gets a narrow cap, so that the tests' small rows also take the
    two-pass path without a GPU (see `tritonnet.kernels.softmax`). On a GPU the
    warps follow its warp size (64 lanes on AMD).
    """
    if interpreter_enabled():
        return softmax_blocks(rows, cols, INTERPRETER_MAX_BLOCK_COLS)
    return softmax_blocks(rows, cols, max_block_cols, rocm.warp_size())


def row_config(blocks: dict, *constexprs: str) -> triton.Config:
    """`row_blocks`' tile as a launch config, with the named constexprs it also gives."""
    names = ("BLOCK_ROWS", "BLOCK_COLS", *constexprs)
    return triton.Config({name: blocks[name] for name in names}, num_warps=blocks["num_warps"])


def _plan(x: object, out: object) -> Plan:
    x = checks.check_matrix("x", x)
    check_operands(x=x)
    rows, cols = x.shape
    sizes = (rows, cols, *x.stride(), *output_strides("out", out, rows, cols, "x", x))
    launch = None
    if x.numel():
        launch = Launch(SOFTMAX, row_config(row_blocks(rows, cols, SOFTMAX_MAX_BLOCK_COLS), "SINGLE_PASS"))
    return Plan((rows, cols), x.dtype, x.device, sizes, launch)


_plans = Plans(_plan)


def softmax(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise softmax of x `[M, N]` (any strides), into `out` if given.

    Same contract as `tritonnet.reference.softmax`: stable for any logits, NaN for
    a row of all -inf, fp32 math for fp16 and bf16 inputs. `out` `[M, N]` of x's
    dtype is written in place and returned; it may be x itself.
    """
    plan = _plans(x, out)
    out = plan.output(out)
    if plan.launch is not None:
        plan.launch(x, out, *plan.sizes)
    return out
