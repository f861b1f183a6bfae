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


def _launch_gemm(x, grad_output, output, partial_weight, partial_bias, split_strides, rows_per_split, splits,
                 scale, activation, precision) -> None:
    """Kernel 2 over `splits` runs of `rows_per_split` rows into `partial_weight`
    `[K, N]` and `partial_bias` `[N]` (None without a bias) at split 0, the next
    splits `split_strides` (weight, bias) elements further on."""
    rows, in_features = x.shape
    out_features = grad_output.shape[1]
    output_strides = output.stride() if output is not None else (0, 0)
    args = (
        x,
        grad_output,
        output,
        partial_weight,
        partial_bias,
        rows,
        out_features,
        in_features,
        *x.stride(),
        *grad_output.stride(),
        *output_strides,
        split_strides[0],
        *partial_weight.stride(),
        split_strides[1],
        partial_bias.stride(0) if partial_bias is not None else 0,
        rows_per_split,
        scale,
    )
    constexprs = dict(HAS_BIAS=partial_bias is not None, ACTIVATION=activation, INPUT_PRECISION=precision)

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
        _launch_gemm(
            x, grad_output, output, grad_weight, grad_bias, (0, 0), rows, 1, scale, activation, precision
        )
        return

    # Rows 0 to K - 1 of each split hold dw's partial sums, row K db's.
    partials = torch.empty(splits, in_features + 1, out_features, dtype=torch.float32, device=x.device)
    split_stride = partials.stride(0)
    partial_bias = partials[0, in_features] if grad_bias is not None else None
    _launch_gemm(
        x, grad_output, output, partials[0, :in_features], partial_bias, (split_stride, split_stride),
        rows_per_split, splits, 1.0, activation, precision,
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
