"""A narrow layer's backward and SGD step in one launch
(`kernels/linear_backward_sgd.py`): which calls take it, its results against
float64 autograd at the layouts and block remainders the two-launch tests do not
reach, the fused training step's launch count at the exercise's sizes, and its
builds for real GPUs.

test_linear_backward_sgd.py runs its oracle tests on both routes (`both_routes`);
the oracle and its bound are there (`check_step`).
"""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import tritonnet
from compile_check import (
    DOT_PRECISIONS, TARGETS, TENSOR_CORE_PRECISIONS, WEIGHT_UNIT_STRIDES, assert_config_compiled, compile_cases,
    compiled_by_default, config_id, dot_precisions_on, target_name, vendor,
)
from conftest import TEST_DEVICE, requires_triton, triton_runnable
from test_linear_backward_sgd import check_step, counts_interpreted_launches, launches, make_step_inputs  # noqa: F401
from test_linear_forward import alignment_classes  # noqa: F401 (a fixture)
from tritonnet.backend import use_backend

ONE_LAUNCH = ["linear_backward_sgd_kernel"]
TWO_LAUNCHES = ["linear_backward_input_kernel", "linear_backward_weight_kernel"]


@pytest.fixture
def triton_backend():
    from tritonnet.triton_backend import plans

    plans.clear_caches()  # a plan takes its route once per launch key
    with use_backend("triton"):
        yield
    plans.clear_caches()


@requires_triton
@counts_interpreted_launches
@pytest.mark.parametrize(
    "rows,in_features,out_features,need_grad_input,expected",
    [
        (33, 45, 19, True, ONE_LAUNCH),
        (33, 16, 128, True, ONE_LAUNCH),  # the widest layer it takes
        (256, 16, 10, True, ONE_LAUNCH),  # the largest batch it takes
        (33, 16, 129, True, TWO_LAUNCHES),
        (257, 16, 10, True, TWO_LAUNCHES),
        (33, 45, 19, False, ["linear_backward_weight_kernel"]),  # no grad_input: one launch already
    ],
    ids=["odd", "widest", "largest-batch", "too-wide", "batch-too-large", "no-grad-input"],
)
def test_which_calls_take_one_launch(triton_backend, launches, rows, in_features, out_features, need_grad_input,
                                     expected):
    """The rule's edges (`backward_in_one_launch`), each call still matching the oracle."""
    from tritonnet.kernels import linear_backward_sgd as kernels

    assert (kernels.MAX_ROWS, kernels.MAX_BLOCK_N) == (256, 128)  # the edges the cases sit on
    inputs = make_step_inputs(rows, in_features, out_features, "sigmoid")
    check_step(*inputs, "sigmoid", 1.0 / rows, 0.5, need_grad_input)
    assert launches == expected


@requires_triton
@counts_interpreted_launches
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("activation", ["sigmoid", "none"])
def test_several_programs_and_partial_blocks(triton_backend, launches, activation, bias):
    """45 rows of w are 3 row blocks of 16, the last partial, and 33 rows of the
    batch 3 steps of 16, the last of one row: each program owns its rows, only the
    first steps the bias."""
    from tritonnet.kernels import linear_backward_sgd as kernels

    config = kernels.LINEAR_BACKWARD_SGD_FIXED_CONFIGS["unaligned"].kwargs
    assert 45 % config["BLOCK_K"] and 45 > 2 * config["BLOCK_K"] and 33 % config["BLOCK_M"]
    inputs = make_step_inputs(33, 45, 19, activation, bias=bias)
    check_step(*inputs, activation, 1.0 / 33, 0.5)
    assert launches == ONE_LAUNCH


@requires_triton
@pytest.mark.parametrize("activation", ["sigmoid", "none"])
def test_one_launch_at_any_strides(triton_backend, activation):
    """Transposed weight, strided x, grad_output and output with strides (1, rows),
    grad_input written into a slice of a NaN buffer and nowhere else."""
    grad_output, x, weight, bias, output = make_step_inputs(
        17, 31, 19, activation, weight_transposed=True, x_strided=True
    )
    grad_output = grad_output.t().contiguous().t()
    if output is not None:
        output = output.t().contiguous().t()
    buffer = torch.full((17, 40), float("nan"), device=TEST_DEVICE)
    weight_before, bias_before = weight.clone(), bias.clone()
    from tritonnet.triton_backend import linear_backward_sgd

    grad_input = linear_backward_sgd(
        grad_output, x, weight, bias, output, activation, 0.25, 0.5, out_grad_input=buffer[:, 5:36]
    )
    assert grad_input.data_ptr() == buffer[:, 5:36].data_ptr()
    assert buffer[:, :5].isnan().all() and buffer[:, 36:].isnan().all()
    # The same call on fresh copies of the parameters, through the oracle.
    weight_again, bias_again = weight_before.clone(), bias_before.clone()  # clone keeps the strides
    expected_input = check_step(grad_output, x, weight_again, bias_again, output, activation, 0.25, 0.5)
    torch.testing.assert_close(grad_input, expected_input)
    torch.testing.assert_close(weight, weight_again)
    torch.testing.assert_close(bias, bias_again)


@requires_triton
def test_one_launch_aligned_operands(alignment_classes):
    """fp16 at sizes and strides that are multiples of 16: the tensor-core configs."""
    inputs = make_step_inputs(64, 48, 32, "sigmoid", dtype=torch.float16)
    check_step(*inputs, "sigmoid", 1.0 / 64, 0.5)
    assert alignment_classes == ["aligned"]


@requires_triton
@counts_interpreted_launches
def test_the_exercise_step_launches_six_kernels(launches):
    """FusedStep on 784-512-128-10: 2 forward layers, the output layer with its
    loss, the 10- and 128-wide layers' backward and step in one launch each, the
    first layer's weight gradient with its step (no input gradient). Its weights
    after the step are the reference backend's."""
    from tritonnet.fused_step import FusedStep
    from tritonnet.triton_backend import plans

    sizes, batch = (784, 512, 128, 10), 4

    def one_step(backend):
        torch.manual_seed(0)
        model = tritonnet.MLP(batch, 0.5, sizes)
        x, labels = torch.rand(batch, sizes[0]), torch.randint(0, sizes[-1], (batch,))
        with use_backend(backend):
            FusedStep(model)(x, labels)
        return model

    plans.clear_caches()
    launches.clear()
    model = one_step("triton")
    assert Counter(launches) == {
        "linear_forward_kernel": 2,
        "linear_cross_entropy_kernel": 1,
        "linear_backward_sgd_kernel": 2,
        "linear_backward_weight_kernel": 1,
    }
    assert launches[-3:] == [*ONE_LAUNCH, *ONE_LAUNCH, "linear_backward_weight_kernel"]
    for name, value in one_step("reference").state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)


# --- compilation for real GPUs -------------------------------------------------

UNIT_STRIDES = ("stride_xk", "stride_b", "stride_dyn", "stride_yn", "stride_dxk")
# The output layer's column block and the widest one (kernels.MAX_BLOCK_N).
BLOCK_NS = (16, 128)


def _compile_cases() -> list:
    """(alignment, config, weight layout, dtype, precision, BLOCK_N, arch): every
    config of each target's lists at the precisions its class serves, at the
    widest column block (the most registers) with w in either layout, and the
    fixed configs at the narrowest too; on AMD a sample unless all are asked for."""
    from tritonnet.kernels import linear_backward_sgd as kernels
    from tritonnet.kernels.tiling import ALIGNED, UNALIGNED

    precisions = {ALIGNED: TENSOR_CORE_PRECISIONS, UNALIGNED: DOT_PRECISIONS}
    lists = {"cuda": kernels.LINEAR_BACKWARD_SGD_CONFIGS, "hip": kernels.LINEAR_BACKWARD_SGD_AMD_CONFIGS}
    return [
        (alignment, config, layout, dtype, precision, block_n, arch)
        for arch in TARGETS
        for alignment, configs in lists[vendor(arch)].items()
        for config in configs
        for layout in WEIGHT_UNIT_STRIDES
        for dtype, precision in dot_precisions_on(arch, precisions[alignment])
        for block_n in BLOCK_NS
        if block_n == max(BLOCK_NS)
        or (layout == "w" and config is kernels.LINEAR_BACKWARD_SGD_FIXED_CONFIGS[alignment])
        if compiled_by_default(arch, alignment=alignment, layout=layout, dtype=dtype, precision=precision)
    ]


COMPILE_CASES = _compile_cases() if triton_runnable() else []


def case_id(case) -> str:
    alignment, config, layout, dtype, precision, block_n, arch = case
    return f"{alignment}-{config_id(config)}-n{block_n}-{layout}-{precision}-{dtype}-{target_name(arch)}"


def _job(alignment, config, layout, dtype, precision, block_n, arch) -> dict:
    from compile_check import compile_job
    from tritonnet.kernels import linear_backward_sgd as kernels

    return compile_job(
        kernels.linear_backward_sgd_kernel,
        arch,
        dtype=dtype,
        config=config,
        # Sigmoid and bias on: the most work.
        constexprs={"HAS_BIAS": True, "ACTIVATION": "sigmoid", "INPUT_PRECISION": precision, "BLOCK_N": block_n},
        unit_strides=UNIT_STRIDES + (WEIGHT_UNIT_STRIDES[layout],),
        floats=("scale", "lr"),
        aligned=alignment == "aligned",
        count_instructions=alignment == "aligned",
    )


@pytest.fixture(scope="module")
def compiled() -> dict:
    return compile_cases(COMPILE_CASES, case_id, _job)


@requires_triton
@pytest.mark.parametrize("case", COMPILE_CASES, ids=case_id)
def test_one_launch_kernel_compiles_without_spills(compiled, case, record_property):
    assert_config_compiled(compiled[case_id(case)], case[0], case[-1], record_property)


@requires_triton
def test_one_launch_fixed_configs_are_compiled():
    """Each class's fixed config (interpreter, TRITONNET_AUTOTUNE=0) is in both
    vendors' lists, so the compile tests above cover it on every target."""
    from tritonnet.kernels import linear_backward_sgd as kernels

    for alignment, config in kernels.LINEAR_BACKWARD_SGD_FIXED_CONFIGS.items():
        for lists in (kernels.LINEAR_BACKWARD_SGD_CONFIGS, kernels.LINEAR_BACKWARD_SGD_AMD_CONFIGS):
            assert any(config is candidate for candidate in lists[alignment])
