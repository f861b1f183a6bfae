"""Launchers of the standalone sigmoid kernels (`tritonnet.kernels.sigmoid`)."""

from __future__ import annotations

import torch
import triton

from tritonnet import checks
from tritonnet.kernels.sigmoid import (
    SIGMOID_INTERPRETER_CONFIG,
    sigmoid_backward_autotuned,
    sigmoid_backward_kernel,
    sigmoid_forward_autotuned,
    sigmoid_forward_kernel,
)
from tritonnet.triton_backend.common import check_operands, fixed_configs, output_buffer


def _launch(autotuned, kernel, rows: int, cols: int, *args) -> None:
    """One launch over `[rows, cols]` tiles: autotuned, or the fixed config (`fixed_configs`)."""
    if fixed_configs():
        config = SIGMOID_INTERPRETER_CONFIG.all_kwargs()
        grid = (triton.cdiv(rows, config["BLOCK_M"]), triton.cdiv(cols, config["BLOCK_N"]))
        kernel[grid](*args, **config)
    else:
        def grid(meta):
            return (triton.cdiv(rows, meta["BLOCK_M"]), triton.cdiv(cols, meta["BLOCK_N"]))

        autotuned[grid](*args)


def sigmoid_forward(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """`1 / (1 + exp(-x))` of x `[M, N]` (any strides), into `out` if given (x itself too)."""
    x = checks.check_matrix("x", x)
    check_operands(x=x)
    rows, cols = x.shape
    out = output_buffer("out", out, rows, cols, "x", x)
    if x.numel() == 0:
        return out
    _launch(
        sigmoid_forward_autotuned, sigmoid_forward_kernel, rows, cols, x, out, rows, cols, *x.stride(), *out.stride()
    )
    return out


def sigmoid_backward(
    grad_output: torch.Tensor, output: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """`grad_output * output * (1 - output)` for the saved sigmoid `output` `[M, N]`.

    `out` may be grad_output itself.
    """
    output = checks.check_matrix("output", output)
    rows, cols = output.shape
    grad_output = checks.check_matrix("grad_output", grad_output, cols=cols, rows=rows)
    check_operands(grad_output=grad_output, output=output)
    out = output_buffer("out", out, rows, cols, "grad_output", grad_output)
    if output.numel() == 0:
        return out
    _launch(
        sigmoid_backward_autotuned,
        sigmoid_backward_kernel,
        rows,
        cols,
        grad_output,
        output,
        out,
        rows,
        cols,
        *grad_output.stride(),
        *output.stride(),
        *out.stride(),
    )
    return out
