"""sigmoid_forward and sigmoid_backward against float64 torch on every backend, the
exercise's `tritonnet.Sigmoid` layer against float64 autograd, and the
compilation of both kernels."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tritonnet.backend import ops_for

pytest.importorskip("triton", reason="the kernel tests need the triton package")

from compile_check import (  # noqa: E402
    TARGETS,
    assert_compiled_without_spills,
    compile_cases,
    compile_job,
    compiled_by_default,
    config_id,
    target_name,
)
from conftest import TEST_DEVICE, assert_rejects_bad_x, random_examples, requires_triton  # noqa: E402
from oracles import sigmoid_layer_against_autograd  # noqa: E402
from shapes import ROW_SHAPES  # noqa: E402
from tritonnet.kernels.sigmoid import SIGMOID_CONFIGS, SIGMOID_INTERPRETER_CONFIG  # noqa: E402

# The exercise's hidden layers, then the shapes of the row-wise ops.
SHAPES = [(64, 512), (64, 128)] + ROW_SHAPES

# fp32 against float64: exp(-x) carries a few ulp, 1 + e and the division one or
# two more (a GPU divides approximately, within 2 ulp): about 5e-7 relative. The
# backward's three products are three roundings. fp32 underflows sigmoid(x) to 0
# below x = -88 (exp(88) overflows): the atol absorbs those tiny values.
FP32_TOLERANCE = dict(rtol=2e-6, atol=1e-12)
# Results rounded to fp16/bf16: up to one ulp (2^-10, 2^-7), a whole one because
# Triton's CPU interpreter truncates to bf16; fp16 subnormals step by 6e-8.
LOW_PRECISION_TOLERANCE = {
    torch.float16: dict(rtol=1e-3, atol=6e-8),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-12),
}


def expected_backward(grad_output, output):
    """The oracle: float64 `g * y * (1 - y)` from exactly the given g and y."""
    y = output.double()
    return grad_output.double() * y * (1 - y)


@pytest.mark.parametrize("rows,cols", SHAPES)
def test_sigmoid_matches_float64(backend, rows, cols):
    x = torch.randn(rows, cols, device=TEST_DEVICE) * 4
    grad_output = torch.randn(rows, cols, device=TEST_DEVICE)
    ops = ops_for(x)
    y = ops.sigmoid_forward(x)
    torch.testing.assert_close(y.double(), torch.sigmoid(x.double()), **FP32_TOLERANCE)
    grad_input = ops.sigmoid_backward(grad_output, y)
    torch.testing.assert_close(grad_input.double(), expected_backward(grad_output, y), **FP32_TOLERANCE)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_sigmoid_low_precision(backend, dtype):
    x = (torch.randn(33, 70, device=TEST_DEVICE) * 4).to(dtype)
    grad_output = torch.randn(33, 70, device=TEST_DEVICE).to(dtype)
    ops = ops_for(x)
    y = ops.sigmoid_forward(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), torch.sigmoid(x.double()), **LOW_PRECISION_TOLERANCE[dtype])
    grad_input = ops.sigmoid_backward(grad_output, y)
    assert grad_input.dtype == dtype
    torch.testing.assert_close(
        grad_input.double(), expected_backward(grad_output, y), **LOW_PRECISION_TOLERANCE[dtype]
    )


def test_sigmoid_strided_operands_and_outputs(backend):
    x = torch.randn(70, 33, device=TEST_DEVICE).t()
    grad_output = torch.randn(33, 140, device=TEST_DEVICE)[:, ::2]
    ops = ops_for(x)
    out = torch.full((70, 33), float("nan"), device=TEST_DEVICE).t()
    assert ops.sigmoid_forward(x, out=out) is out
    torch.testing.assert_close(out.double(), torch.sigmoid(x.double()), **FP32_TOLERANCE)
    grad_out = torch.full((33, 140), float("nan"), device=TEST_DEVICE)[:, 1::2]
    assert ops.sigmoid_backward(grad_output, out, out=grad_out) is grad_out
    torch.testing.assert_close(grad_out.double(), expected_backward(grad_output, out), **FP32_TOLERANCE)


def test_sigmoid_in_place(backend):
    x = torch.randn(20, 300, device=TEST_DEVICE)
    grad_output = torch.randn(20, 300, device=TEST_DEVICE)
    expected_y = torch.sigmoid(x.double())
    ops = ops_for(x)
    assert ops.sigmoid_forward(x, out=x) is x
    torch.testing.assert_close(x.double(), expected_y, **FP32_TOLERANCE)
    expected_grad = expected_backward(grad_output, x)
    assert ops.sigmoid_backward(grad_output, x, out=grad_output) is grad_output
    torch.testing.assert_close(grad_output.double(), expected_grad, **FP32_TOLERANCE)


def test_sigmoid_extreme_inputs(backend):
    values = [-1e4, -100.0, -88.0, 0.0, 88.0, 100.0, 1e4, float("inf"), float("-inf")]
    x = torch.tensor([values], device=TEST_DEVICE)
    y = ops_for(x).sigmoid_forward(x)
    assert not torch.isnan(y).any()
    torch.testing.assert_close(y.double(), torch.sigmoid(x.double()), **FP32_TOLERANCE)


def test_sigmoid_no_rows(backend):
    x = torch.empty(0, 5, device=TEST_DEVICE)
    ops = ops_for(x)
    assert ops.sigmoid_forward(x).shape == (0, 5)
    assert ops.sigmoid_backward(x, x).shape == (0, 5)


@random_examples
@given(rows=st.integers(1, 80), cols=st.integers(1, 300), seed=st.integers(0, 2**31 - 1))
def test_sigmoid_random_shapes(backend, rows, cols, seed):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, cols, generator=generator) * 6).to(TEST_DEVICE)
    grad_output = torch.randn(rows, cols, generator=generator).to(TEST_DEVICE)
    ops = ops_for(x)
    y = ops.sigmoid_forward(x)
    torch.testing.assert_close(y.double(), torch.sigmoid(x.double()), **FP32_TOLERANCE)
    grad_input = ops.sigmoid_backward(grad_output, y)
    torch.testing.assert_close(grad_input.double(), expected_backward(grad_output, y), **FP32_TOLERANCE)


@pytest.mark.parametrize("rows,features", [(64, 512), (7, 3)])
def test_exercise_sigmoid_layer_against_autograd(backend, rows, features):
    output, grad_input, expected_output, expected_grad = sigmoid_layer_against_autograd(rows, features)
    torch.testing.assert_close(output.double(), expected_output, **FP32_TOLERANCE)
    # The layer differentiates from its fp32 output, autograd from the float64
    # one. y's rounding, up to 6e-8 absolute (y <= 1), is an absolute error of
    # 1 - y, which is tiny where y is near 1: it stays an absolute error of the
    # gradient, times |grad_output| (< 6 here), hence the atol.
    torch.testing.assert_close(grad_input.double(), expected_grad, rtol=1e-5, atol=4e-7)


@requires_triton
def test_sigmoid_launchers_reject_bad_arguments():
    from tritonnet.triton_backend.sigmoid import sigmoid_backward, sigmoid_forward

    assert_rejects_bad_x(sigmoid_forward)
    x = torch.randn(4, 5, device=TEST_DEVICE)
    with pytest.raises(ValueError, match=r"out must have 4 rows, got shape \(3, 5\)"):
        sigmoid_forward(x, out=torch.empty(3, 5, device=TEST_DEVICE))
    with pytest.raises(ValueError, match=r"grad_output must have 5 columns, got shape \(4, 6\)"):
        sigmoid_backward(torch.randn(4, 6, device=TEST_DEVICE), x)
    with pytest.raises(TypeError, match="grad_output torch.float16, output torch.float32"):
        sigmoid_backward(x.half(), x)
    with pytest.raises(ValueError, match="grad_output must be a CUDA tensor .* got device meta"):
        sigmoid_backward(x.to("meta"), x.to("meta"))


# --- compilation for real GPUs -------------------------------------------------

# Each kernel's strides along rows, compiled as 1 (see compile_job).
UNIT_STRIDES = {
    "sigmoid_forward_kernel": ("stride_xn", "stride_yn"),
    "sigmoid_backward_kernel": ("stride_gyn", "stride_yn", "stride_gxn"),
}

SIGMOID_COMPILE_CASES = [
    (kernel, config, dtype, arch)
    for kernel in UNIT_STRIDES
    for config in SIGMOID_CONFIGS + [SIGMOID_INTERPRETER_CONFIG]
    for dtype in ("fp32", "bf16")
    for arch in TARGETS
    if compiled_by_default(arch, dtype=dtype)
]


def _case_id(case) -> str:
    kernel, config, dtype, arch = case
    return f"{kernel.removesuffix('_kernel')}-{config_id(config)}-{dtype}-{target_name(arch)}"


@pytest.fixture(scope="module")
def sigmoid_compiled() -> dict:
    from tritonnet.kernels import sigmoid as sigmoid_kernels

    def job(kernel, config, dtype, arch):
        return compile_job(
            getattr(sigmoid_kernels, kernel), arch, dtype=dtype, config=config, unit_strides=UNIT_STRIDES[kernel]
        )

    return compile_cases(SIGMOID_COMPILE_CASES, _case_id, job)


@pytest.mark.parametrize("case", SIGMOID_COMPILE_CASES, ids=_case_id)
def test_sigmoid_kernels_compile_without_spills(sigmoid_compiled, case, record_property):
    assert_compiled_without_spills(sigmoid_compiled[_case_id(case)], record_property)
