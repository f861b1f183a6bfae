"""Launcher of the weight-gradient GEMM (kernel 2 of `tritonnet.kernels.linear_backward`),
split over the batch when it is large (split-K), with its reduction pass (kernel 3).

`linear.linear_backward` calls it once its arguments are checked and its outputs
allocated. Unsplit, kernel 2 writes the gradients itself. Split, it writes fp32
partial sums per run of the batch into a workspace, and kernel 3 adds them in a
fixed order and applies the scale: the result does not depend on the order the
programs finish in, as it would with atomics.
"""

from __future__ import annotations

import functools

import torch
import triton

from tritonnet.kernels import linear_backward as kernels
from tritonnet.triton_backend.alignment import launch_gemm

# The CPU interpreter has no SMs; this many lets a test force a split with a small
# SPLIT_MIN_ROWS at its small shapes.
INTERPRETER_PROCESSORS = 8


@functools.lru_cache(maxsize=None)
def _cuda_processors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def processors(device: torch.device) -> int:
    """The SMs of a CUDA device (read once per device, not at import), or
    INTERPRETER_PROCESSORS where the interpreter runs the kernels."""
    if device.type == "cuda":
        return _cuda_processors(device.index if device.index is not None else torch.cuda.current_device())
    return INTERPRETER_PROCESSORS


def _launch_gemm(
    x, grad_output, output, activation, precision, scale, weight_out, bias_out, *,
    splits=1, rows_per_split=None, split_stride=0,
) -> None:
    """Kernel 2 into `weight_out` `[K, N]` and `bias_out` `[N]` (None without a
    bias): unsplit, or over `splits` runs of `rows_per_split` rows, split s
    writing `s * split_stride` elements past them."""
    rows, in_features = x.shape
    out_features = grad_output.shape[1]
    output_strides = output.stride() if output is not None else (0, 0)
    args = (
        x,
        grad_output,
        output,
        weight_out,
        bias_out,
        rows,
        out_features,
        in_features,
        *x.stride(),
        *grad_output.stride(),
        *output_strides,
        split_stride,
        *weight_out.stride(),
        split_stride,
        bias_out.stride(0) if bias_out is not None else 0,
        rows if rows_per_split is None else rows_per_split,
        scale,
    )
    constexprs = dict(HAS_BIAS=bias_out is not None, ACTIVATION=activation, INPUT_PRECISION=precision)

    def grid(meta):
        # At least one row of programs: with in_features == 0, grad_weight is
        # empty but grad_bias still has to be computed by the first row.
        tile_rows = max(triton.cdiv(in_features, meta["BLOCK_K"]), 1)
        return (tile_rows, triton.cdiv(out_features, meta["BLOCK_N"]), splits)

    launch_gemm(
        kernels.linear_backward_weight_autotuned, kernels.LINEAR_BACKWARD_WEIGHT_FIXED_CONFIGS, grid, args, constexprs
    )


def launch_weight_gradient(x, grad_output, output, activation, scale, precision, grad_weight, grad_bias) -> None:
    """`grad_weight = scale * x.T @ dz` and, if `grad_bias` is given,
    `grad_bias = scale * dz.sum(0)`, into the given tensors (any strides), with dz
    formed from grad_output and the saved output as `linear_backward` says.

    The batch is split when `kernels.weight_gradient_splits` says so for this
    device; the partial sums then take `splits * (in_features + 1) * out_features`
    fp32 values of workspace.
    """
    rows, in_features = x.shape
    out_features = grad_output.shape[1]
    splits, rows_per_split = kernels.weight_gradient_splits(rows, in_features, out_features, processors(x.device))
    if splits == 1:
        _launch_gemm(x, grad_output, output, activation, precision, scale, grad_weight, grad_bias)
        return

    # Rows 0 to K - 1 of each split hold dw's partial sums, row K db's; unscaled.
    partials = torch.empty(splits, in_features + 1, out_features, dtype=torch.float32, device=x.device)
    _launch_gemm(
        x, grad_output, output, activation, precision, 1.0,
        partials[0, :in_features], partials[0, in_features] if grad_bias is not None else None,
        splits=splits, rows_per_split=rows_per_split, split_stride=partials.stride(0),
    )
    config = kernels.WEIGHT_GRADIENT_REDUCE_CONFIG.all_kwargs()
    bias_numel = out_features if grad_bias is not None else 0
    grid = (triton.cdiv(in_features * out_features, config["BLOCK"]) + triton.cdiv(bias_numel, config["BLOCK"]),)
    kernels.linear_weight_gradient_reduce_kernel[grid](
        partials,
        grad_weight,
        grad_bias,
        in_features,
        out_features,
        splits,
        *grad_weight.stride(),
        grad_bias.stride(0) if grad_bias is not None else 0,
        scale,
        HAS_BIAS=grad_bias is not None,
        **config,
    )
