"""Launcher of a layer's backward and SGD step in one kernel
(`tritonnet.kernels.linear_backward_sgd`).

`linear.linear_backward_sgd`'s plan is checked and made as always; where the
kernel module's rule (`backward_in_one_launch`) holds for a call that needs the
input gradient, `one_launch_plan` replaces it by a `OneLaunchPlan`, which runs
the same contract in one launch instead of two. The rule sits in the kernel
module so that a benchmark can switch it off (`bench_step_variants.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from tritonnet.kernels import linear_backward_sgd as kernels
from tritonnet.triton_backend.launch import Kernel, Launch, dot_precision


def _row_blocks(arguments: dict) -> tuple[int]:
    return (triton.cdiv(arguments["K"], arguments["BLOCK_K"]),)


ONE_LAUNCH = Kernel(
    kernels.linear_backward_sgd_kernel,
    _row_blocks,
    autotuned=kernels.linear_backward_sgd_autotuned,
    fixed=kernels.LINEAR_BACKWARD_SGD_FIXED_CONFIGS,
)


@dataclass(frozen=True)
class OneLaunchPlan:
    """`linear_backward_sgd` with grad_input, for one launch key, in one launch.
    `run` has the signature of `linear._BackwardPlan.run` with `sgd`."""

    rows: int
    in_features: int
    reads_output: bool
    launch: Launch
    sizes: tuple

    def run(self, grad_output, x, weight, output, scale, out_grad_input, _weight, bias, lr):
        """(grad_input, None, None): the weight and bias are stepped by `lr` in place."""
        output = output if self.reads_output else None  # read only for the sigmoid
        grad_input = out_grad_input if out_grad_input is not None else x.new_empty(self.rows, self.in_features)
        # The autotuner restores b_ptr, and triton 3.6 clones it unchecked: without
        # a bias the weight stands in, never written through b_ptr then.
        self.launch(x, weight, weight if bias is None else bias, grad_output, output, grad_input,
                    *self.sizes, scale, lr)
        return grad_input, None, None


def one_launch_plan(
    grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    output: torch.Tensor | None, activation: str, need_grad_input: bool, out_grad_input: torch.Tensor | None,
    precision: str,
) -> OneLaunchPlan | None:
    """The one-launch plan of `linear_backward_sgd`'s arguments, already checked,
    or None where the rule says two launches."""
    rows, in_features = x.shape
    out_features = weight.shape[1]
    if not need_grad_input or not kernels.backward_in_one_launch(rows, in_features, out_features):
        return None
    reads_output = activation == "sigmoid"
    output_strides = output.stride() if reads_output else (0, 0)
    input_strides = out_grad_input.stride() if out_grad_input is not None else (in_features, 1)
    launch = Launch(
        ONE_LAUNCH,
        HAS_BIAS=bias is not None,
        ACTIVATION=activation,
        INPUT_PRECISION=dot_precision(x.dtype, precision),
        BLOCK_N=kernels.column_block(out_features),
    )
    sizes = (
        rows, out_features, in_features,
        *x.stride(), *weight.stride(), bias.stride(0) if bias is not None else 0,
        *grad_output.stride(), *output_strides, *input_strides,
    )
    return OneLaunchPlan(rows, in_features, reads_output, launch, sizes)
