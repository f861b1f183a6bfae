"""Launcher of the row-wise softmax kernel (`tritonnet.kernels.softmax`)."""

from __future__ import annotations

import torch
import triton

from tritonnet import checks
from tritonnet.kernels.softmax import (
    INTERPRETER_MAX_BLOCK_COLS,
    MAX_BLOCK_COLS,
    softmax_blocks,
    softmax_kernel,
)
from tritonnet.triton_backend.common import interpreting

# What the kernels load and store; float64 runs on the reference backend.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def check_kernel_dtype(name: str, tensor: torch.Tensor) -> None:
    """Raise TypeError unless `tensor` has a dtype the kernels handle (KERNEL_DTYPES)."""
    if tensor.dtype not in KERNEL_DTYPES:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in KERNEL_DTYPES)
        raise TypeError(
            f"{name} must have dtype {allowed} on the triton backend, got {tensor.dtype}; "
            "use the reference backend for other dtypes"
        )


def softmax(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise softmax of x `[M, N]` (any strides), into `out` if given.

    Same contract as `tritonnet.reference.softmax`: stable for any logits, NaN for
    a row of all -inf, fp32 math for fp16 and bf16 inputs. `out` `[M, N]` of x's
    dtype is written in place and returned; it may be x itself.
    """
    x = checks.check_matrix("x", x)
    check_kernel_dtype("x", x)
    rows, cols = x.shape
    if out is None:
        out = torch.empty_like(x)
    else:
        out = checks.check_matrix("out", out, cols=cols, rows=rows)
        checks.check_same_device(x=x, out=out)
        checks.check_same_dtype(x=x, out=out)
    if x.numel() == 0:
        return out
    max_block_cols = INTERPRETER_MAX_BLOCK_COLS if interpreting() else MAX_BLOCK_COLS
    blocks = softmax_blocks(rows, cols, max_block_cols)
    grid = (triton.cdiv(rows, blocks["BLOCK_ROWS"]),)
    softmax_kernel[grid](x, out, rows, cols, *x.stride(), *out.stride(), **blocks)
    return out
