"""`linear_backward_sgd` (the SGD step in the weight gradient's epilogue) on every
backend against float64 torch.autograd; on Triton, the order and the number of
its launches, per call and per training step, and its autotuning, which must not
step the weights once per timing run.

On Triton, a narrow layer at a small batch takes one launch
(`kernels/linear_backward_sgd.py`) where the rest take two. The `route` fixture
keeps every test here on the two launches unless it asks for both routes;
test_linear_backward_sgd_one_launch.py has what only the one launch has.

The oracle is test_linear_backward's: the gradients by autograd in float64, from
the weights before the step; the stepped weight is `weight - lr * grad_weight`.
Its bound adds to the gradient's the one rounding of the gradient to the
parameters' dtype before the step (the numbers of a stored gradient) and the one
rounding of the result.
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import tritonnet
from conftest import TEST_DEVICE, requires_triton, triton_runnable
from test_linear_backward import (  # noqa: F401 (forced_split: a fixture)
    OPERAND_UNIT,
    backward_oracle,
    forced_split,
    make_backward_inputs,
)
from test_linear_forward import ACTIVATIONS, assert_within_error_bound, skip_bf16_in_interpreter
from tritonnet.backend import interpreter_enabled, ops_for, use_backend
from tritonnet.layers import GRAD_SCALES, gradient_scale

ROWS, IN_FEATURES, OUT_FEATURES = 33, 45, 19

ROUTES = ["two-launch", "one-launch"]
both_routes = pytest.mark.parametrize("route", ROUTES, indirect=True)


@pytest.fixture(autouse=True)
def route(request, monkeypatch):
    """On Triton, the two-launch backward, or with `both_routes` each route in
    turn (the one launch where its rule takes the shape, as at ROWS x IN_FEATURES
    x OUT_FEATURES). The reference has one route: it runs once per route."""
    chosen = getattr(request, "param", "two-launch")
    if chosen == "two-launch" and triton_runnable():
        from tritonnet.kernels import linear_backward_sgd as one_launch_kernels
        from tritonnet.triton_backend import plans

        monkeypatch.setattr(one_launch_kernels, "backward_in_one_launch", lambda *_: False)
        plans.clear_caches()  # a plan takes its route once per launch key
        yield chosen
        plans.clear_caches()
        return
    yield chosen


def make_step_inputs(rows, in_features, out_features, activation, dtype=torch.float32, bias=True, **layout):
    """grad_output, x, weight, bias (or None) and the saved output, as make_backward_inputs."""
    grad_output, x, weight, output = make_backward_inputs(rows, in_features, out_features, activation, dtype, **layout)
    bias_tensor = (torch.randn(out_features, device=TEST_DEVICE) * in_features**-0.5).to(dtype) if bias else None
    return grad_output, x, weight, bias_tensor, output


def check_step(grad_output, x, weight, bias, output, activation, scale, lr, need_grad_input=True):
    """One `linear_backward_sgd` call against the float64 oracle; returns grad_input."""
    weight_before = weight.clone()
    bias_before = bias.clone() if bias is not None else None
    grad_input = ops_for(x).linear_backward_sgd(
        grad_output, x, weight, bias, output, activation, scale, lr, need_grad_input=need_grad_input
    )
    (expected_input, grad_weight, grad_bias), (input_sum, weight_sum, bias_sum) = backward_oracle(
        grad_output, x, weight_before, output, activation, scale
    )
    rows = x.shape[0]
    operand_unit = OPERAND_UNIT[x.dtype]
    if need_grad_input:
        assert grad_input.dtype == x.dtype
        assert_within_error_bound(grad_input, expected_input, input_sum, weight.shape[1], operand_unit)
    else:
        assert grad_input is None
    # The gradient rounded to the dtype before the step: one more operand unit of lr * grad.
    assert_within_error_bound(
        weight, weight_before.double() - lr * grad_weight, lr * weight_sum + weight_before.abs(), rows, 2 * operand_unit
    )
    if bias is not None:
        assert_within_error_bound(
            bias, bias_before.double() - lr * grad_bias, lr * bias_sum + bias_before.abs(), rows, operand_unit
        )
    return grad_input


@both_routes
@pytest.mark.parametrize("need_grad_input", [True, False], ids=["grad-input", "no-grad-input"])
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_backward_sgd_matches_oracle(backend, activation, bias, need_grad_input):
    inputs = make_step_inputs(ROWS, IN_FEATURES, OUT_FEATURES, activation, bias=bias)
    check_step(*inputs, activation, 1.0 / ROWS, 0.5, need_grad_input)


@both_routes
@pytest.mark.parametrize("grad_scale", GRAD_SCALES)
def test_linear_backward_sgd_at_every_grad_scale(backend, grad_scale):
    """The scales a training step passes (`gradient_scale`), the MLP's CPU layout."""
    inputs = make_step_inputs(ROWS, IN_FEATURES, OUT_FEATURES, "sigmoid", weight_transposed=True)
    check_step(*inputs, "sigmoid", gradient_scale(grad_scale, ROWS, IN_FEATURES), 0.25)


@both_routes
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_linear_backward_sgd_half_precision(backend, dtype):
    skip_bf16_in_interpreter(dtype, backend)
    check_step(*make_step_inputs(65, 48, 32, "sigmoid", dtype=dtype), "sigmoid", 1.0 / 65, 0.5)


@both_routes
def test_linear_backward_sgd_reads_the_weight_before_the_step(backend):
    """A learning rate that moves the weight far: grad_input from the stepped
    weight would miss the bound by orders of magnitude."""
    inputs = make_step_inputs(ROWS, IN_FEATURES, OUT_FEATURES, "none")
    weight_before = inputs[2].clone()
    check_step(*inputs, "none", 1.0, 100.0)
    assert (inputs[2] - weight_before).abs().max() > 1.0


@both_routes
def test_linear_backward_sgd_with_zero_learning_rate_changes_nothing(backend):
    grad_output, x, weight, bias, output = make_step_inputs(ROWS, IN_FEATURES, OUT_FEATURES, "sigmoid")
    weight_before, bias_before = weight.clone(), bias.clone()
    ops_for(x).linear_backward_sgd(grad_output, x, weight, bias, output, "sigmoid", 0.5, 0.0)
    assert torch.equal(weight, weight_before) and torch.equal(bias, bias_before)


@pytest.mark.parametrize("rows,in_features", [(0, 31), (5, 0)], ids=["empty-batch", "no-inputs"])
def test_linear_backward_sgd_without_rows_or_inputs(backend, rows, in_features):
    # No rows: nothing to sum, no step. No inputs: the weight is empty, the bias still steps.
    def random(*shape):
        return torch.randn(*shape, device=TEST_DEVICE)

    grad_output, x, weight, bias = random(rows, 19), random(rows, in_features), random(in_features, 19), random(19)
    check_step(grad_output, x, weight, bias, torch.rand(rows, 19, device=TEST_DEVICE), "sigmoid", 0.5, 0.5)


@requires_triton
@pytest.mark.parametrize(
    "activation,bias,weight_transposed",
    [("sigmoid", True, False), ("sigmoid", False, True), ("none", True, True), ("none", False, False)],
)
def test_linear_backward_sgd_split_matches_oracle(forced_split, activation, bias, weight_transposed):
    """Split: kernel 3 takes the step; 129 rows are 5 splits of 32 in the interpreter."""
    assert forced_split(129, 31, 19) > 2
    inputs = make_step_inputs(129, 31, 19, activation, bias=bias, weight_transposed=weight_transposed)
    check_step(*inputs, activation, 1.0 / 129, 0.5)


@requires_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_linear_backward_sgd_split_half_precision(forced_split, dtype):
    skip_bf16_in_interpreter(dtype, "triton")
    assert forced_split(96, 32, 48) > 2
    check_step(*make_step_inputs(96, 32, 48, "sigmoid", dtype=dtype), "sigmoid", 1.0 / 96, 0.5)


@requires_triton
@pytest.mark.skipif(
    not interpreter_enabled(),
    reason="bit for bit in the interpreter; on a GPU ptxas may contract the step's multiply and subtraction "
    "differently in the two kernels",
)
@pytest.mark.parametrize("split", [False, True], ids=["unsplit", "split"])
def test_linear_backward_sgd_gives_the_numbers_of_the_separate_step(forced_split, split):
    """The same bits as `linear_backward` then `sgd_update`, the path it replaces."""
    from tritonnet.triton_backend import linear_backward, linear_backward_sgd, sgd_update

    rows = 129 if split else 15
    assert (forced_split(rows, 31, 19) > 1) == split
    grad_output, x, weight, bias, output = make_step_inputs(rows, 31, 19, "sigmoid", dtype=torch.float16)
    separate_weight, separate_bias = weight.clone(), bias.clone()
    _, grad_weight, grad_bias = linear_backward(grad_output, x, separate_weight, output, "sigmoid", 1.0 / rows)
    sgd_update(separate_weight, separate_bias, grad_weight, grad_bias, 0.5)
    linear_backward_sgd(grad_output, x, weight, bias, output, "sigmoid", 1.0 / rows, 0.5)
    assert torch.equal(weight, separate_weight) and torch.equal(bias, separate_bias)


@requires_triton
def test_linear_backward_sgd_rejects_bad_arguments():
    from tritonnet.triton_backend import linear_backward_sgd

    grad_output, x, weight, bias, output = make_step_inputs(4, 6, 5, "sigmoid")
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\), got \(6,\)"):
        linear_backward_sgd(grad_output, x, weight, torch.zeros(6, device=TEST_DEVICE), output, "sigmoid", 1.0, 0.1)
    with pytest.raises(TypeError, match="weight torch.float32, bias torch.float16"):
        linear_backward_sgd(grad_output, x, weight, bias.half(), output, "sigmoid", 1.0, 0.1)
    with pytest.raises(ValueError, match="weight must be contiguous or the transpose of a contiguous matrix"):
        wide = torch.zeros(6, 10, device=TEST_DEVICE)
        linear_backward_sgd(grad_output, x, wide[:, :5], bias, output, "sigmoid", 1.0, 0.1)
    with pytest.raises(ValueError, match="bias must be contiguous"):
        strided_bias = torch.zeros(10, device=TEST_DEVICE)[::2]
        linear_backward_sgd(grad_output, x, weight, strided_bias, output, "sigmoid", 1.0, 0.1)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -0.1"):
        linear_backward_sgd(grad_output, x, weight, bias, output, "sigmoid", 1.0, -0.1)
    with pytest.raises(ValueError, match="scale must be finite, got nan"):
        linear_backward_sgd(grad_output, x, weight, bias, output, "sigmoid", float("nan"), 0.1)
    with pytest.raises(ValueError, match=r"output \(the saved forward output\) is required"):
        linear_backward_sgd(grad_output, x, weight, bias, None, "sigmoid", 1.0, 0.1)


# --- launches --------------------------------------------------------------------

counts_interpreted_launches = pytest.mark.skipif(
    not interpreter_enabled(), reason="counts interpreted launches; on a GPU the autotuner adds trial runs"
)


@pytest.fixture
def launches(monkeypatch):
    """The kernels launched, by name, in order (every kernel runs through
    InterpretedFunction.run in the interpreter)."""
    from triton.runtime.interpreter import InterpretedFunction

    names = []
    run = InterpretedFunction.run

    def counting_run(self, *args, **kwargs):
        names.append(self.fn.__name__)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", counting_run)
    return names


@requires_triton
@counts_interpreted_launches
@pytest.mark.parametrize("split", [False, True], ids=["unsplit", "split"])
@pytest.mark.parametrize("need_grad_input", [True, False], ids=["grad-input", "no-grad-input"])
def test_linear_backward_sgd_launches(forced_split, launches, need_grad_input, split):
    """Kernel 1 first (it reads the weight before the step), then the weight
    gradient's kernel with the step: 2 launches, 1 without grad_input; split, the
    reduction too. No separate SGD launch."""
    from tritonnet.triton_backend import linear_backward_sgd

    rows = 129 if split else 15
    assert (forced_split(rows, 31, 19) > 1) == split
    inputs = make_step_inputs(rows, 31, 19, "sigmoid")
    for _ in range(2):  # the call that makes the plan, and one that reuses it
        launches.clear()
        linear_backward_sgd(*inputs, "sigmoid", 1.0 / rows, 0.1, need_grad_input=need_grad_input)
        expected = ["linear_backward_input_kernel"] if need_grad_input else []
        expected.append("linear_backward_weight_kernel")
        if split:
            expected.append("linear_weight_gradient_reduce_kernel")
        assert launches == expected


@requires_triton
@counts_interpreted_launches
def test_a_training_step_launches_no_sgd_kernel(launches):
    """The fused step of a 3-layer MLP, as the exercise's: its backward is 5
    launches (2 + 2 + 1, the first layer needing no grad_input), where a
    separate SGD step per layer made it 8."""
    from tritonnet.fused_step import FusedStep

    torch.manual_seed(0)
    model = tritonnet.MLP(8, 0.5, (12, 10, 6, 3))
    x, labels = torch.rand(8, 12), torch.randint(0, 3, (8,))
    with use_backend("triton"):
        step = FusedStep(model)
        for _ in range(2):
            launches.clear()
            step(x, labels)
            counts = Counter(launches)
            assert counts["linear_backward_input_kernel"] == 2
            assert counts["linear_backward_weight_kernel"] == 3
            assert "sgd_update_kernel" not in counts and "linear_weight_gradient_reduce_kernel" not in counts


# --- autotuning ------------------------------------------------------------------------


@both_routes
@requires_triton
@counts_interpreted_launches
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_autotuning_steps_the_weights_once(monkeypatch, bias, route):
    """Triton's autotuner runs every config on the real arguments before the real
    launch; it restores the weight and bias after each of those runs, so only the
    real launch steps them. Run through the launch path as on a GPU without a
    tuned table, each config timed by three runs. No restored argument is None:
    triton 3.6's autotuner would fail cloning it."""
    from triton.runtime.autotuner import Autotuner

    from tritonnet.kernels import linear_backward as backward_kernels
    from tritonnet.kernels import linear_backward_sgd as one_launch_kernels
    from tritonnet.kernels import targets
    from tritonnet.triton_backend import launch, plans

    trial_runs = []

    def three_runs(kernel_call, quantiles):
        for _ in range(3):
            kernel_call()
            trial_runs.append(kernel_call)
        return [1.0, 1.0, 1.0]

    monkeypatch.setattr(launch, "fixed_configs", lambda: False)
    for tuner in [*backward_kernels.linear_backward_input_autotuned.values(),
                  *backward_kernels.linear_backward_weight_sgd_autotuned.values(),
                  *one_launch_kernels.linear_backward_sgd_autotuned.values()]:
        monkeypatch.setattr(tuner, "cache", {})  # what an earlier test chose: no timing runs
    monkeypatch.setattr(targets, "current_backend", lambda: "cuda")  # kernel 1's lists are per GPU vendor
    monkeypatch.setattr(Autotuner, "do_bench", property(lambda self: three_runs))
    run = Autotuner.run

    def checked_run(self, *args, **kwargs):
        named = dict(zip(self.arg_names, args))
        assert all(named[name] is not None for name in self.restore_value)
        return run(self, *args, **kwargs)

    monkeypatch.setattr(Autotuner, "run", checked_run)
    plans.clear_caches()
    try:
        inputs = make_step_inputs(ROWS, IN_FEATURES, OUT_FEATURES, "sigmoid", bias=bias)
        check_step(*inputs, "sigmoid", 1.0 / ROWS, 0.5)
    finally:
        plans.clear_caches()
    assert len(trial_runs) >= 6  # every config of the kernels launched was timed
