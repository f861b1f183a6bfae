"""linear_cross_entropy against float64 torch (cross_entropy and autograd) on every
backend, and the compilation of its fused kernel.

Rows of up to FUSED_MAX_N classes take the fused kernel; wider rows the linear
forward kernel followed by the row-wise kernel of `cross_entropy`. The shapes
below cover both.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tritonnet.backend import interpreter_enabled, ops_for

pytest.importorskip("triton", reason="the kernel tests need the triton package")

from compile_check import (  # noqa: E402
    DOT_PRECISIONS,
    LOSS_MEAN_POINTERS,
    TARGETS,
    WEIGHT_UNIT_STRIDES,
    assert_compiled_without_spills,
    compile_cases,
    compile_job,
    compiled_by_default,
    config_id,
    dot_precisions_on,
    target_name,
)
from conftest import TEST_DEVICE, random_examples, requires_triton  # noqa: E402
from oracles import assert_cross_entropy_outputs, assert_no_rows  # noqa: E402
from oracles import check_out_of_range_targets, cross_entropy_oracle  # noqa: E402
from shapes import EXERCISE_LINEAR_SHAPES, ODD_LINEAR_SHAPES, ROW_SHAPES  # noqa: E402
from tritonnet.kernels.linear_cross_entropy import (  # noqa: E402
    FUSED_MAX_N,
    LINEAR_CROSS_ENTROPY_CONFIGS,
    LINEAR_CROSS_ENTROPY_INTERPRETER_CONFIG,
)

# (rows, in_features, classes): the exercise's output layer, the odd linear
# shapes, and the row shapes of the row-wise ops with 24 in_features.
SHAPES = [EXERCISE_LINEAR_SHAPES[-1]] + ODD_LINEAR_SHAPES + [(rows, 24, cols) for rows, cols in ROW_SHAPES]

# fp32 against float64. The logits are fp32 dot products of up to 1000 terms of
# O(1) values scaled by 1/sqrt(K): absolute errors of about 1e-6, which become
# relative errors of p of the same size; the softmax adds the 1e-5 of
# test_softmax. The loss is a difference of O(1) numbers: 1e-6 absolute. The
# gradient p - onehot inherits p's error, next to entries of size up to 1.
PROBABILITY_TOLERANCE = dict(rtol=1e-5, atol=1e-7)
LOSS_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
GRADIENT_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
# bf16/fp16 inputs: x and w are exact in float64, products are exact in fp32 and
# summed in fp32, so the loss (fp32) keeps the fp32 tolerance. p and the gradient
# are rounded to the input dtype: up to one ulp (2^-7 for bf16, 2^-10 for fp16;
# a whole ulp because Triton's CPU interpreter truncates to bf16).
LOW_PRECISION_RTOL = {torch.bfloat16: 8e-3, torch.float16: 1e-3}


def make_inputs(rows, in_features, classes, dtype=torch.float32, bias=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, in_features, generator=generator)
    weight = torch.randn(in_features, classes, generator=generator) / in_features**0.5
    b = torch.randn(classes, generator=generator) if bias else None
    target = torch.randint(0, classes, (rows,), generator=generator)

    def move(t):
        return None if t is None else t.to(device=TEST_DEVICE, dtype=dtype)

    return move(x), move(weight), move(b), target.to(TEST_DEVICE)


def expected_outputs(x, weight, bias, target, scale):
    """The oracle: float64 logits of exactly the given values, torch's softmax and
    cross_entropy, and the gradient of the summed loss by autograd, times scale."""
    logits = x.double() @ weight.double()
    if bias is not None:
        logits = logits + bias.double()
    return cross_entropy_oracle(logits, target, scale)


def assert_matches(outputs, expected, rtol_low_precision=None):
    if rtol_low_precision is None:
        tolerances = (PROBABILITY_TOLERANCE, GRADIENT_TOLERANCE)
    else:
        tolerances = (dict(rtol=rtol_low_precision, atol=1e-7),) * 2
    assert_cross_entropy_outputs(outputs, expected, LOSS_TOLERANCE, *tolerances)


@pytest.mark.parametrize(
    "rows,in_features,classes,bias",
    [shape + (True,) for shape in SHAPES] + [(64, 128, 10, False), (3, 24, 1000, False)],
)
def test_linear_cross_entropy_matches_float64(backend, rows, in_features, classes, bias):
    x, weight, b, target = make_inputs(rows, in_features, classes, bias=bias)
    scale = 1.0 / rows
    outputs = ops_for(x).linear_cross_entropy(x, weight, b, target, scale)
    assert outputs[0].shape == outputs[2].shape == (rows, classes)
    assert_matches(outputs, expected_outputs(x, weight, b, target, scale))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("rows,in_features,classes", [(64, 128, 10), (3, 24, 1000)])
def test_linear_cross_entropy_low_precision(backend, dtype, rows, in_features, classes):
    if backend == "triton" and dtype == torch.bfloat16 and interpreter_enabled():
        pytest.skip(
            "Triton's CPU interpreter multiplies the raw bit patterns of bf16 tl.dot operands "
            "(triton-lang/triton#11584, not supported upstream); both paths' bf16 dots run on GPUs only"
        )
    x, weight, b, target = make_inputs(rows, in_features, classes, dtype=dtype)
    probabilities, loss, grad_logits = ops_for(x).linear_cross_entropy(x, weight, b, target)
    assert probabilities.dtype == grad_logits.dtype == dtype
    assert_matches(
        (probabilities, loss, grad_logits),
        expected_outputs(x, weight, b, target, 1.0),
        rtol_low_precision=LOW_PRECISION_RTOL[dtype],
    )


@pytest.mark.parametrize("classes", [10, 300])  # fused, and linear + row kernel
def test_linear_cross_entropy_strided_operands_and_outputs(backend, classes):
    rows, in_features = 33, 40
    x = torch.randn(rows, 2 * in_features, device=TEST_DEVICE)[:, ::2]
    weight = torch.randn(classes, in_features, device=TEST_DEVICE).t() / in_features**0.5
    bias = torch.randn(2 * classes, device=TEST_DEVICE)[::2]
    target = torch.randint(0, classes, (2 * rows,), device=TEST_DEVICE)[::2]
    out_probabilities = torch.full((classes, rows), float("nan"), device=TEST_DEVICE).t()
    out_grad_logits = torch.full((classes, rows), float("nan"), device=TEST_DEVICE).t()
    outputs = ops_for(x).linear_cross_entropy(
        x, weight, bias, target, 0.25, out_probabilities=out_probabilities, out_grad_logits=out_grad_logits
    )
    assert outputs[0] is out_probabilities and outputs[2] is out_grad_logits
    assert_matches(outputs, expected_outputs(x, weight, bias, target, 0.25))


@pytest.mark.parametrize("classes", [10, 300])
def test_linear_cross_entropy_extreme_logits(backend, classes):
    x, weight, _, target = make_inputs(8, 16, classes)
    bias = torch.zeros(classes, device=TEST_DEVICE)
    bias[0], bias[1], bias[2] = 1e4, -1e4, float("-inf")  # exp(1e4) overflows unshifted
    target[target == 2] = 3  # the -inf class is the target of no row, for now
    target[0], target[1] = 0, 1
    outputs = ops_for(x).linear_cross_entropy(x, weight, bias, target)
    assert torch.isfinite(outputs[1])
    assert (outputs[0][:, 2] == 0).all() and (outputs[2][:, 2] == 0).all()
    assert_matches(outputs, expected_outputs(x, weight, bias, target, 1.0))

    target[4] = 2  # the class of the -inf logit: -log(0), an infinite loss, as torch
    assert ops_for(x).linear_cross_entropy(x, weight, bias, target)[1] == float("inf")


@pytest.mark.parametrize("classes", [10, 300])
def test_target_out_of_range(backend, classes):
    """The Triton kernels give a NaN loss row; the reference trusts its arguments."""
    x, weight, bias, target = make_inputs(6, 16, classes)
    check_out_of_range_targets(
        backend,
        lambda target, *scale: ops_for(x).linear_cross_entropy(x, weight, bias, target, *scale),
        x.double() @ weight.double() + bias.double(),
        target,
        classes,
        (PROBABILITY_TOLERANCE, GRADIENT_TOLERANCE),
    )


def test_linear_cross_entropy_no_rows(backend):
    x, weight, bias, _ = make_inputs(0, 16, 10)
    target = torch.empty(0, dtype=torch.int64, device=TEST_DEVICE)
    assert_no_rows(ops_for(x).linear_cross_entropy(x, weight, bias, target), 10)


@random_examples
@given(
    rows=st.integers(1, 40),
    in_features=st.integers(1, 40),
    classes=st.integers(1, 2 * FUSED_MAX_N),
    bias=st.booleans(),
    seed=st.integers(0, 2**31 - 1),
)
def test_linear_cross_entropy_random_shapes(backend, rows, in_features, classes, bias, seed):
    x, weight, b, target = make_inputs(rows, in_features, classes, bias=bias, seed=seed)
    outputs = ops_for(x).linear_cross_entropy(x, weight, b, target, 1.0 / rows)
    assert_matches(outputs, expected_outputs(x, weight, b, target, 1.0 / rows))


@requires_triton
def test_linear_cross_entropy_launcher_rejects_bad_arguments():
    from tritonnet.triton_backend.linear_cross_entropy import linear_cross_entropy

    x, weight, bias, target = make_inputs(4, 8, 10)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        linear_cross_entropy([[1.0]], weight, bias, target)
    with pytest.raises(ValueError, match=r"weight must have 8 rows, got shape \(9, 10\)"):
        linear_cross_entropy(x, weight.new_zeros(9, 10), bias, target)
    with pytest.raises(ValueError, match=r"bias must have shape \(10,\), got \(11,\)"):
        linear_cross_entropy(x, weight, bias.new_zeros(11), target)
    with pytest.raises(TypeError, match="target must hold integer class indices, got dtype torch.float32"):
        linear_cross_entropy(x, weight, bias, target.float())
    with pytest.raises(ValueError, match=r"target must have shape \(4,\), got \(5,\)"):
        linear_cross_entropy(x, weight, bias, target.new_zeros(5))
    with pytest.raises(TypeError, match="x torch.float32, weight torch.float16"):
        linear_cross_entropy(x, weight.half(), bias, target)
    with pytest.raises(TypeError, match="x must have dtype float32, float16, bfloat16 .* got torch.float64"):
        linear_cross_entropy(x.double(), weight.double(), bias.double(), target)
    with pytest.raises(ValueError, match=r"out_probabilities must have 10 columns, got shape \(4, 9\)"):
        linear_cross_entropy(x, weight, bias, target, out_probabilities=x.new_zeros(4, 9))
    with pytest.raises(TypeError, match="scale must be a real number, got str"):
        linear_cross_entropy(x, weight, bias, target, "1")
    on_meta = [tensor.to("meta") for tensor in (x, weight, bias, target)]
    with pytest.raises(ValueError, match="x must be a CUDA tensor .* got device meta"):
        linear_cross_entropy(*on_meta)


# --- compilation for real GPUs -------------------------------------------------
# The fused kernel; the row-wise kernel of the wide path is compiled in
# test_cross_entropy.py.

# The exercise's 10 classes (BLOCK_N 16) and the widest fused row (BLOCK_N 64).
FUSED_BLOCK_N = [16, FUSED_MAX_N]

FUSED_CASES = [
    (config, block_n, layout, dtype, precision, arch)
    for config in LINEAR_CROSS_ENTROPY_CONFIGS
    for block_n in FUSED_BLOCK_N
    for layout in WEIGHT_UNIT_STRIDES
    for arch in TARGETS
    for dtype, precision in dot_precisions_on(arch, DOT_PRECISIONS)
    if compiled_by_default(arch, layout=layout, dtype=dtype, precision=precision)
]


def _fused_case_id(case) -> str:
    config, block_n, layout, dtype, precision, arch = case
    return f"{config_id(config)}-n{block_n}-{layout}-{dtype}-{precision}-{target_name(arch)}"


@pytest.fixture(scope="module")
def fused_compiled() -> dict:
    from tritonnet.kernels.linear_cross_entropy import linear_cross_entropy_kernel

    def job(config, block_n, layout, dtype, precision, arch):
        return compile_job(
            linear_cross_entropy_kernel,
            arch,
            dtype=dtype,
            pointers={"target_ptr": "*i64", **LOSS_MEAN_POINTERS},
            constexprs={"HAS_BIAS": True, "INPUT_PRECISION": precision, "BLOCK_N": block_n},
            config=config,
            unit_strides=(
                "stride_xk", WEIGHT_UNIT_STRIDES[layout], "stride_b", "stride_target", "stride_pn", "stride_gn"
            ),
            floats=("scale",),
        )

    return compile_cases(FUSED_CASES, _fused_case_id, job)


def test_interpreter_config_is_among_the_compiled_ones():
    assert any(config is LINEAR_CROSS_ENTROPY_INTERPRETER_CONFIG for config in LINEAR_CROSS_ENTROPY_CONFIGS)


@pytest.mark.parametrize("case", FUSED_CASES, ids=_fused_case_id)
def test_fused_kernel_compiles_without_spills(fused_compiled, case, record_property):
    assert_compiled_without_spills(fused_compiled[_fused_case_id(case)], record_property)
