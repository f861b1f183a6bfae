"""Launcher of the weight-gradient GEMM (kernel 2 of `tritonnet.kernels.linear_backward`),
split over the batch when it is large (split-K), with its reduction pass (kernel 3).

`linear.linear_backward`'s plan makes a `WeightGradient` once its arguments are
checked. Unsplit, kernel 2 writes the gradients itself. Split, it writes fp32
partial sums per run of the batch into a workspace, and kernel 3 adds them in a
fixed order and applies the scale: the result does not depend on the order the
programs finish in, as it would with atomics.

`linear_backward_sgd`'s `WeightGradient(sgd=True)` takes the SGD step where the
gradients would be written (the kernels' EPILOGUE "sgd"): in kernel 2 unsplit,
in kernel 3 split; it is handed the weight and bias in place of the gradients.
"""

from __future__ import annotations

import functools

import torch
import triton

from tritonnet.kernels import linear_backward as kernels
from tritonnet.triton_backend.launch import Kernel, Launch

# The CPU interpreter has no SMs; this many lets a test force a split with a small
# SPLIT_MIN_ROWS at its small shapes.
INTERPRETER_PROCESSORS = 8


def _gemm_tiles(arguments: dict) -> tuple[int, int, int]:
    # At least one row of programs: with K == 0, grad_weight is empty but
    # grad_bias still has to be computed by the first row. One layer of programs
    # per run of the batch.
    tile_rows = max(triton.cdiv(arguments["K"], arguments["BLOCK_K"]), 1)
    runs = triton.cdiv(arguments["M"], arguments["rows_per_split"])
    return (tile_rows, triton.cdiv(arguments["N"], arguments["BLOCK_N"]), runs)


def _reduce_blocks(arguments: dict) -> tuple[int]:
    bias_numel = arguments["N"] if arguments["HAS_BIAS"] else 0
    block = arguments["BLOCK"]
    return (triton.cdiv(arguments["K"] * arguments["N"], block) + triton.cdiv(bias_numel, block),)


GEMM = Kernel(
    kernels.linear_backward_weight_kernel,
    _gemm_tiles,
    autotuned=kernels.linear_backward_weight_autotuned,
    fixed=kernels.LINEAR_BACKWARD_WEIGHT_FIXED_CONFIGS,
)
# The same kernel with the SGD epilogue, whose autotuner restores the parameters
# after each timing run.
GEMM_SGD = Kernel(
    kernels.linear_backward_weight_kernel,
    _gemm_tiles,
    autotuned=kernels.linear_backward_weight_sgd_autotuned,
    fixed=kernels.LINEAR_BACKWARD_WEIGHT_FIXED_CONFIGS,
)
REDUCE = Kernel(kernels.linear_weight_gradient_reduce_kernel, _reduce_blocks)


@functools.lru_cache(maxsize=None)
def _cuda_processors(index: int) -> int:
    return torch.cuda.get_device_properties(index).multi_processor_count


def processors(device: torch.device) -> int:
    """The SMs of a CUDA device (read once per device, not at import), or
    INTERPRETER_PROCESSORS where the interpreter runs the kernels."""
    if device.type == "cuda":
        return _cuda_processors(device.index if device.index is not None else torch.cuda.current_device())
    return INTERPRETER_PROCESSORS


class WeightGradient:
    """`grad_weight = scale * x.T @ dz` and, with a bias, `grad_bias = scale * dz.sum(0)`,
    for one launch key of `linear_backward` with rows, in_features and out_features > 0;
    with `sgd`, the step `weight -= lr * grad_weight`, `bias -= lr * grad_bias`
    instead, for `linear_backward_sgd`.

    Made from the checked arguments: x `[M, K]`, grad_output and the saved output
    (None without the sigmoid) `[M, N]`, the strides of the grad_weight `[K, N]`
    written per call (the weight's, with `sgd`), and of grad_bias (None without
    one). The batch is split when `kernels.weight_gradient_splits` says so for
    this device; the partial sums then take `splits * (K + 1) * N` fp32 values of
    workspace per call.
    """

    def __init__(
        self, x, grad_output, output, weight_strides, bias_stride, constexprs: dict, sgd: bool = False
    ) -> None:
        rows, in_features = x.shape
        out_features = grad_output.shape[1]
        has_bias = bias_stride is not None
        splits, rows_per_split = kernels.weight_gradient_splits(rows, in_features, out_features, processors(x.device))
        output_strides = output.stride() if output is not None else (0, 0)
        inputs = (rows, out_features, in_features, *x.stride(), *grad_output.stride(), *output_strides)
        epilogue = "sgd" if sgd else "gradient"
        self.sgd = sgd
        self.in_features = in_features
        if splits == 1:
            self.gemm = Launch(GEMM_SGD if sgd else GEMM, HAS_BIAS=has_bias, EPILOGUE=epilogue, **constexprs)
            self.partials_shape = None
            self.sizes = (*inputs, 0, *weight_strides, 0, bias_stride or 0, rows)
            return
        # Rows 0 to K - 1 of each split hold dw's partial sums, row K db's; unscaled.
        self.gemm = Launch(GEMM, HAS_BIAS=has_bias, EPILOGUE="gradient", **constexprs)
        self.partials_shape = (splits, in_features + 1, out_features)
        split_stride = (in_features + 1) * out_features
        self.sizes = (*inputs, split_stride, out_features, 1, split_stride, int(has_bias), rows_per_split)
        self.reduce = Launch(REDUCE, kernels.WEIGHT_GRADIENT_REDUCE_CONFIG, HAS_BIAS=has_bias, EPILOGUE=epilogue)
        self.reduce_sizes = (in_features, out_features, splits, *weight_strides, bias_stride or 0)

    def __call__(self, x, grad_output, output, grad_weight, grad_bias, scale: float, lr: float = 0.0) -> None:
        """Writes grad_weight and grad_bias; with `sgd`, steps the weight and bias
        passed in their place by `lr`."""
        if self.partials_shape is None:
            if grad_bias is None and self.sgd:
                # The autotuner restores db_ptr, and triton 3.6 clones it unchecked:
                # the weight stands in, never written without a bias.
                grad_bias = grad_weight
            self.gemm(x, grad_output, output, grad_weight, grad_bias, *self.sizes, scale, lr)
            return
        partials = torch.empty(self.partials_shape, dtype=torch.float32, device=x.device)
        weight_partials = partials[0, : self.in_features]
        bias_partials = partials[0, self.in_features] if grad_bias is not None else None
        self.gemm(x, grad_output, output, weight_partials, bias_partials, *self.sizes, 1.0, 0.0)
        self.reduce(partials, grad_weight, grad_bias, *self.reduce_sizes, scale, lr)
