"""Launchers of the fused linear kernels (`tritonnet.kernels.linear_forward`,
`tritonnet.kernels.linear_backward`).

Same contract as `tritonnet.reference.linear_forward` and `linear_backward`. A
plan per launch key (`plans.Plans`) checks the arguments (the kernels trust
them) and skips the launches when there is nothing to compute; each call
allocates the outputs that were not given and launches. Each GEMM offers configs
per alignment class (tensor-core tiles for aligned operands, `alignment.py`).
The forward splits K where its tiles are far fewer than the SMs, in
`forward_split.py`.
The weight gradient's launch, split over the batch when it is large, is
`weight_gradient.py`'s; `linear_backward_sgd` runs the same plan with the SGD
step in that launch's epilogue, or all of a narrow layer's backward in one
launch (`backward_one_launch.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from tritonnet import checks, rocm
from tritonnet.kernels import linear_backward as backward_kernels
from tritonnet.kernels import linear_forward as forward_kernels
from tritonnet.reference import ACTIVATIONS
from tritonnet.triton_backend.backward_one_launch import OneLaunchPlan, one_launch_plan
from tritonnet.triton_backend.common import check_operands, check_scale
from tritonnet.triton_backend.forward_split import split_forward
from tritonnet.triton_backend.launch import Kernel, Launch, dot_precision
from tritonnet.triton_backend.plans import Plan, Plans
from tritonnet.triton_backend.sgd import check_parameter
from tritonnet.triton_backend.weight_gradient import WeightGradient


def _grouped_tiles(rows: str, cols: str):
    """The 1-D grid of a GEMM that maps programs onto `[rows, cols]` tiles in groups
    (`tritonnet.kernels.tiling.grouped_tile`), by the size arguments' names."""

    def grid(arguments: dict) -> tuple[int]:
        tile_rows = triton.cdiv(arguments[rows], arguments[f"BLOCK_{rows}"])
        return (tile_rows * triton.cdiv(arguments[cols], arguments[f"BLOCK_{cols}"]),)

    return grid


FORWARD = Kernel(forward_kernels.linear_forward_kernel, _grouped_tiles("M", "N"),
                 autotuned=forward_kernels.linear_forward_autotuned,
                 fixed=forward_kernels.LINEAR_FORWARD_FIXED_CONFIGS)
# AMD GPUs have a fixed config of their own (tritonnet.kernels.targets).
BACKWARD_INPUT = Kernel(backward_kernels.linear_backward_input_kernel, _grouped_tiles("M", "K"),
                        autotuned=backward_kernels.linear_backward_input_autotuned,
                        fixed=backward_kernels.LINEAR_BACKWARD_INPUT_AMD_FIXED_CONFIGS if rocm.hip_version()
                        else backward_kernels.LINEAR_BACKWARD_INPUT_FIXED_CONFIGS)


def check_vector(name: str, value: object, length: int) -> torch.Tensor:
    """A floating tensor of shape `(length,)`."""
    tensor = checks.check_float_tensor(name, value)
    if tensor.shape != (length,):
        raise ValueError(f"{name} must have shape ({length},), got {tuple(tensor.shape)}")
    return tensor


def check_layer(x: object, weight: object, bias: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x `[M, K]`, weight `[K, N]` and bias `[N]` or None, floating."""
    x = checks.check_matrix("x", x)
    weight = checks.check_matrix("weight", weight, rows=x.shape[1])
    if bias is not None:
        bias = check_vector("bias", bias, weight.shape[1])
    return x, weight, bias


def _plan_forward(x: object, weight: object, bias: object, activation: object, out: object, precision: str) -> Plan:
    x, weight, bias = check_layer(x, weight, bias)
    (rows, in_features), out_features = x.shape, weight.shape[1]
    activation = checks.check_choice("activation", activation, ACTIVATIONS)
    check_operands(x=x, weight=weight, bias=bias)
    out_strides = (out_features, 1)
    if out is not None:
        out = checks.check_matrix("out", out, cols=out_features, rows=rows)
        checks.check_same_device(x=x, out=out)
        if out.dtype not in (x.dtype, torch.float32):
            also = "" if x.dtype == torch.float32 else " or torch.float32"
            raise TypeError(f"out must have x's dtype {x.dtype}{also}, got {out.dtype}")
        out_strides = out.stride()
    sizes = (
        rows,
        out_features,
        in_features,
        *x.stride(),
        *weight.stride(),
        *out_strides,
        bias.stride(0) if bias is not None else 0,
    )
    launch = None
    if rows and out_features:
        constexprs = {
            "HAS_BIAS": bias is not None,
            "ACTIVATION": activation,
            "INPUT_PRECISION": dot_precision(x.dtype, precision),
        }
        # K split where the tiles would leave most SMs idle (forward_split.py);
        # unsplit, the split's arguments are not read.
        launch = split_forward(x, out_features, constexprs) or Launch(
            FORWARD, partials_ptr=None, counters_ptr=None, k_per_split=0, SPLIT_K=False, **constexprs
        )
    return Plan((rows, out_features), x.dtype, x.device, sizes, launch)


_forward_plans = Plans(_plan_forward)


def linear_forward(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str = "none",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`activation(x @ weight + bias)` for x `[M, K]`, weight `[K, N]`, bias `[N]` or None.

    Any strides (weight may be the transposed view of an `[N, K]` tensor).
    activation is "none" or "sigmoid". `out` `[M, N]`, if given, is written in
    place and returned; it has x's dtype, or float32 for fp16 and bf16 inputs,
    which keeps the fp32 accumulator unrounded (the wide output layer's logits).
    """
    plan = _forward_plans(x, weight, bias, activation, out, torch.get_float32_matmul_precision())
    out = plan.output(out)
    if plan.launch is not None:
        plan.launch(x, weight, bias, out, *plan.sizes)
    return out


@dataclass(frozen=True)
class _BackwardPlan:
    """What a launch key decides for `linear_backward`: which gradients are made,
    and each kernel's launch (None when it has nothing to compute) and sizes. With
    `sgd` (`linear_backward_sgd`), the weight and bias are stepped in place of
    grad_weight and grad_bias being written."""

    rows: int
    in_features: int
    out_features: int
    reads_output: bool
    need_grad_input: bool
    need_grad_bias: bool
    input_launch: Launch | None
    input_sizes: tuple
    weight_gradient: WeightGradient | None
    sgd: bool = False

    def run(self, grad_output, x, weight, output, scale, out_grad_input, out_grad_weight, out_grad_bias, lr=0.0):
        """(grad_input, grad_weight, grad_bias); with `sgd`, out_grad_weight and
        out_grad_bias are the weight and bias, stepped by `lr`."""
        output = output if self.reads_output else None  # the kernels read no output without the sigmoid
        grad_input = grad_bias = None
        if self.need_grad_input:
            grad_input = out_grad_input if out_grad_input is not None else x.new_empty(self.rows, self.in_features)
        # In the weight's memory layout, so that an SGD step can walk both as one run.
        grad_weight = out_grad_weight if out_grad_weight is not None else torch.empty_like(weight)
        if self.need_grad_bias:
            grad_bias = out_grad_bias if out_grad_bias is not None else x.new_empty(self.out_features)
        if self.rows == 0 and not self.sgd:
            # An empty batch: no rows to sum over (and no step to take).
            grad_weight.zero_()
            if grad_bias is not None:
                grad_bias.zero_()
        # Kernel 1 reads the weight that the SGD epilogue steps: launched first on
        # the same stream, it reads the weight from before the step.
        if self.input_launch is not None:
            self.input_launch(grad_output, output, weight, grad_input, *self.input_sizes)
        if self.weight_gradient is not None:
            self.weight_gradient(x, grad_output, output, grad_weight, grad_bias, scale, lr)
        return grad_input, grad_weight, grad_bias


def _plan_backward(
    grad_output, x, weight, output, activation, need_grad_input, need_grad_bias,
    out_grad_input, out_grad_weight, out_grad_bias, precision, sgd=False,
) -> _BackwardPlan:
    x = checks.check_matrix("x", x)
    rows, in_features = x.shape
    weight = checks.check_matrix("weight", weight, rows=in_features)
    out_features = weight.shape[1]
    grad_output = checks.check_matrix("grad_output", grad_output, cols=out_features, rows=rows)
    activation = checks.check_choice("activation", activation, ACTIVATIONS)
    if activation == "sigmoid":
        if output is None:
            raise ValueError("output (the saved forward output) is required for activation 'sigmoid', got None")
        output = checks.check_matrix("output", output, cols=out_features, rows=rows)
    else:
        output = None
    if out_grad_input is not None:
        out_grad_input = checks.check_matrix("out_grad_input", out_grad_input, cols=in_features, rows=rows)
    if out_grad_weight is not None:
        out_grad_weight = checks.check_matrix("out_grad_weight", out_grad_weight, cols=out_features, rows=in_features)
    if out_grad_bias is not None:
        out_grad_bias = check_vector("out_grad_bias", out_grad_bias, out_features)
    check_operands(
        grad_output=grad_output,
        x=x,
        weight=weight,
        output=output,
        out_grad_input=out_grad_input,
        out_grad_weight=out_grad_weight,
        out_grad_bias=out_grad_bias,
    )
    constexprs = {"ACTIVATION": activation, "INPUT_PRECISION": dot_precision(x.dtype, precision)}
    output_strides = output.stride() if output is not None else (0, 0)
    # The strides of the gradients made per call: grad_input contiguous,
    # grad_weight in the weight's layout (`torch.empty_like`).
    input_strides = out_grad_input.stride() if out_grad_input is not None else (in_features, 1)
    weight_like = out_grad_weight if out_grad_weight is not None else torch.empty_like(weight, device="meta")
    bias_stride = None
    if need_grad_bias:
        bias_stride = out_grad_bias.stride(0) if out_grad_bias is not None else 1
    input_launch = weight_gradient = None
    if need_grad_input and rows and in_features:
        input_launch = Launch(BACKWARD_INPUT, **constexprs)
    if rows and out_features:
        weight_gradient = WeightGradient(x, grad_output, output, weight_like.stride(), bias_stride, constexprs, sgd)
    return _BackwardPlan(
        rows,
        in_features,
        out_features,
        output is not None,
        bool(need_grad_input),
        bool(need_grad_bias),
        input_launch,
        (rows, out_features, in_features, *grad_output.stride(), *output_strides, *weight.stride(), *input_strides),
        weight_gradient,
        sgd,
    )


_backward_plans = Plans(_plan_backward)


def linear_backward(
    grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, output: torch.Tensor | None = None,
    activation: str = "none", scale: float = 1.0,
    *, need_grad_input: bool = True, need_grad_bias: bool = True,
    out_grad_input: torch.Tensor | None = None, out_grad_weight: torch.Tensor | None = None,
    out_grad_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Gradients of `output = activation(x @ weight + bias)`, from two fused kernels.

    With `dz = grad_output * output * (1 - output)` for the sigmoid (output is the
    saved forward result, required then) and `dz = grad_output` without:
    `grad_input = dz @ weight.T` if `need_grad_input` (else None),
    `grad_weight = scale * x.T @ dz`, `grad_bias = scale * dz.sum(0)` if
    `need_grad_bias` (else None). dz is never stored. Each `out_*` tensor given
    for a gradient that is computed is written in place and returned.
    """
    out_grad_input = out_grad_input if need_grad_input else None
    out_grad_bias = out_grad_bias if need_grad_bias else None
    plan = _backward_plans(
        grad_output, x, weight, output, activation, need_grad_input, need_grad_bias,
        out_grad_input, out_grad_weight, out_grad_bias, torch.get_float32_matmul_precision(),
    )
    return plan.run(grad_output, x, weight, output, check_scale(scale), out_grad_input, out_grad_weight, out_grad_bias)


def _plan_backward_sgd(
    grad_output, x, weight, bias, output, activation, need_grad_input, out_grad_input, precision,
) -> _BackwardPlan | OneLaunchPlan:
    """`_plan_backward` with the SGD epilogue: the weight and bias, checked under
    their own names, take the place of grad_weight and grad_bias; in one launch
    where `backward_one_launch` takes the call."""
    x = checks.check_matrix("x", x)
    weight = checks.check_matrix("weight", weight, rows=x.shape[1])
    check_parameter("weight", weight)
    if bias is not None:
        bias = check_vector("bias", bias, weight.shape[1])
        check_operands(weight=weight, bias=bias)
        check_parameter("bias", bias)
    plan = _plan_backward(
        grad_output, x, weight, output, activation, need_grad_input, bias is not None,
        out_grad_input, weight, bias, precision, sgd=True,
    )
    one_launch = one_launch_plan(
        grad_output, x, weight, bias, output, activation, need_grad_input, out_grad_input, precision
    )
    return one_launch or plan


_backward_sgd_plans = Plans(_plan_backward_sgd)


def linear_backward_sgd(
    grad_output: torch.Tensor, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None,
    output: torch.Tensor | None, activation: str, scale: float, lr: float,
    *, need_grad_input: bool = True, out_grad_input: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """`linear_backward` fused with the SGD step, as `tritonnet.reference.linear_backward_sgd`:
    `weight -= lr * grad_weight`, `bias -= lr * grad_bias` in place, the gradients
    never written. Returns grad_input (or None), from the weight before the step.

    One launch for a narrow layer at a small batch (`backward_one_launch.py`);
    otherwise two (one without grad_input): kernel 1, then kernel 2 with the step
    in its epilogue; when the weight gradient is split, kernel 3 takes the step.
    Each parameter must be contiguous or the transpose of a contiguous matrix,
    as for `sgd_update`.
    """
    out_grad_input = out_grad_input if need_grad_input else None
    plan = _backward_sgd_plans(
        grad_output, x, weight, bias, output, activation, need_grad_input, out_grad_input,
        torch.get_float32_matmul_precision(),
    )
    scale, lr = check_scale(scale), checks.check_learning_rate("lr", lr)
    return plan.run(grad_output, x, weight, output, scale, out_grad_input, weight, bias, lr)[0]
