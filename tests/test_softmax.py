"""softmax against float64 torch.softmax on every backend, and the kernel's compilation.

Also the exercise-level `tritonnet.Softmax`, with its loss gradient, against
float64 autograd.
"""

from __future__ import annotations

import importlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import tritonnet
from tritonnet.backend import ops_for

pytest.importorskip("triton", reason="the kernel tests need the triton package")

from compile_check import TARGETS, assert_compiled_without_spills, compile_cases, compile_job  # noqa: E402
from compile_check import compiled_by_default, target_name, warp_size  # noqa: E402
from conftest import TEST_DEVICE, assert_rejects_bad_x, random_examples, requires_triton  # noqa: E402
from shapes import ROW_SHAPES  # noqa: E402
from tritonnet.kernels.softmax import (  # noqa: E402
    INTERPRETER_MAX_BLOCK_COLS,
    SOFTMAX_MAX_BLOCK_COLS,
    softmax_blocks,
)

# fp32 against float64: exp has an error of a few ulp, and its argument x - max a
# rounding of |x - max| * 6e-8, which becomes a relative error of the result (for
# the |x - max| <= ~40 of these inputs, 2.4e-6); the row sum adds log2(N) ulp.
# 1e-5 covers that with room; a wrong formula is off by O(1). The atol only
# matters for values below 1e-7 x rtol.
FP32_TOLERANCE = dict(rtol=1e-5, atol=1e-12)
# fp16/bf16 outputs: the fp32 result is rounded once to the output dtype, which
# costs up to one ulp (2^-10 relative for fp16, 2^-7 for bf16): half an ulp on a
# GPU, which rounds to nearest, a whole one in Triton's CPU interpreter, which
# truncates to bf16. fp16 turns values below 6e-8 into subnormals of step 6e-8.
LOW_PRECISION_TOLERANCE = {
    torch.float16: dict(rtol=1e-3, atol=6e-8),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-12),
}


def expected_softmax(x: torch.Tensor) -> torch.Tensor:
    """The oracle: float64 torch.softmax of exactly the values in x."""
    return torch.softmax(x.double(), dim=1)


@pytest.mark.parametrize("rows,cols", ROW_SHAPES)
def test_softmax_matches_float64(backend, rows, cols):
    x = torch.randn(rows, cols, device=TEST_DEVICE) * 3
    y = ops_for(x).softmax(x)
    assert y.shape == x.shape and y.dtype == x.dtype
    torch.testing.assert_close(y.double(), expected_softmax(x), **FP32_TOLERANCE)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize("rows,cols", [(64, 10), (129, 257)])
def test_softmax_low_precision(backend, dtype, rows, cols):
    x = (torch.randn(rows, cols, device=TEST_DEVICE) * 3).to(dtype)
    y = ops_for(x).softmax(x)
    assert y.dtype == dtype
    torch.testing.assert_close(y.double(), expected_softmax(x), **LOW_PRECISION_TOLERANCE[dtype])


@pytest.mark.parametrize("cols", [10, 1000])  # one block, and two passes when interpreted
def test_softmax_strided_input_and_output(backend, cols):
    transposed = torch.randn(cols, 33, device=TEST_DEVICE).t()
    every_other_column = torch.randn(33, 2 * cols, device=TEST_DEVICE)[:, ::2]
    for x in (transposed, every_other_column):
        out = torch.full((cols, 33), float("nan"), device=TEST_DEVICE).t()
        y = ops_for(x).softmax(x, out=out)
        assert y is out
        torch.testing.assert_close(out.double(), expected_softmax(x), **FP32_TOLERANCE)


def test_softmax_in_place(backend):
    x = torch.randn(20, 300, device=TEST_DEVICE)
    expected = expected_softmax(x)
    assert ops_for(x).softmax(x, out=x) is x
    torch.testing.assert_close(x.double(), expected, **FP32_TOLERANCE)


@pytest.mark.parametrize("cols", [10, 300])  # 300: -inf blocks before finite ones when interpreted
def test_softmax_extreme_logits(backend, cols):
    x = torch.randn(6, cols, device=TEST_DEVICE)
    x[0, :] = float("-inf")  # all -inf: NaN, as torch gives
    x[1, 0] = 1e4  # the exercise's exp(x) would overflow
    x[2, 1] = -1e4
    x[3, :-1] = float("-inf")  # one finite entry, last: probability 1
    x[4, 2] = float("-inf")  # one -inf column: probability 0
    x[5, :] = 1e4
    x[5, -1] = 1e4 - 1
    y = ops_for(x).softmax(x)
    expected = expected_softmax(x)
    assert torch.isnan(y[0]).all()
    assert not torch.isnan(y[1:]).any()
    torch.testing.assert_close(y.double(), expected, equal_nan=True, **FP32_TOLERANCE)


def test_softmax_no_rows(backend):
    x = torch.empty(0, 7, device=TEST_DEVICE)
    assert ops_for(x).softmax(x).shape == (0, 7)


@random_examples
@given(
    rows=st.integers(1, 24),
    cols=st.integers(1, 700),
    scale=st.sampled_from([0.1, 3.0, 30.0]),
    seed=st.integers(0, 2**31 - 1),
)
def test_softmax_random_shapes(backend, rows, cols, scale, seed):
    generator = torch.Generator().manual_seed(seed)
    x = (torch.randn(rows, cols, generator=generator) * scale).to(TEST_DEVICE)
    # At scale 30, |x - max| reaches ~250: 250 * 6e-8 = 1.5e-5 of argument rounding.
    torch.testing.assert_close(ops_for(x).softmax(x).double(), expected_softmax(x), rtol=3e-5, atol=1e-12)


@requires_triton
@pytest.mark.parametrize("rows,cols", [(3, SOFTMAX_MAX_BLOCK_COLS), (2, SOFTMAX_MAX_BLOCK_COLS + 5)])
def test_softmax_wide_rows_as_on_a_gpu(monkeypatch, rows, cols):
    """The GPU's blocks in the interpreter too: a row of SOFTMAX_MAX_BLOCK_COLS in
    one block, read once; a wider one in two passes of such blocks."""
    # The module, which the package's `softmax` function shadows as an attribute.
    launcher = importlib.import_module("tritonnet.triton_backend.softmax")
    monkeypatch.setattr(launcher, "INTERPRETER_MAX_BLOCK_COLS", SOFTMAX_MAX_BLOCK_COLS)
    blocks = launcher.row_blocks(rows, cols, SOFTMAX_MAX_BLOCK_COLS)
    assert blocks["BLOCK_COLS"] == SOFTMAX_MAX_BLOCK_COLS and blocks["BLOCK_ROWS"] == 1
    assert blocks["SINGLE_PASS"] == (cols <= SOFTMAX_MAX_BLOCK_COLS)
    x = torch.randn(rows, cols, device=TEST_DEVICE) * 3
    torch.testing.assert_close(launcher.softmax(x).double(), expected_softmax(x), **FP32_TOLERANCE)


def test_exercise_softmax_and_its_loss_gradient(backend):
    """`tritonnet.Softmax` and `compute_gradient(t, Softmax(z))` = d(summed loss)/dz."""
    logits = torch.randn(64, 10, device=TEST_DEVICE) * 2
    labels = torch.randint(0, 10, (64,), device=TEST_DEVICE)
    target = torch.nn.functional.one_hot(labels, 10).to(logits.dtype)
    logits64 = logits.double().requires_grad_()
    probabilities64 = torch.softmax(logits64, dim=1)
    (-(target.double() * probabilities64.log()).sum()).backward()

    probabilities = tritonnet.Softmax(logits)
    torch.testing.assert_close(probabilities.double(), probabilities64.detach(), **FP32_TOLERANCE)
    gradient = tritonnet.compute_gradient(target, probabilities)
    # p - t: the rtol of p, applied to entries of size up to 1.
    torch.testing.assert_close(gradient.double(), logits64.grad, rtol=1e-5, atol=1e-6)


@requires_triton
def test_softmax_launcher_rejects_bad_arguments():
    from tritonnet.triton_backend.softmax import softmax

    assert_rejects_bad_x(softmax)
    x = torch.randn(4, 5, device=TEST_DEVICE)
    with pytest.raises(TypeError, match="x must have a floating dtype"):
        softmax(x.long())
    with pytest.raises(ValueError, match=r"out must have 5 columns, got shape \(4, 6\)"):
        softmax(x, out=torch.empty(4, 6, device=TEST_DEVICE))
    with pytest.raises(TypeError, match="x torch.float32, out torch.float16"):
        softmax(x, out=torch.empty(4, 5, device=TEST_DEVICE, dtype=torch.float16))


# --- compilation for real GPUs -------------------------------------------------


def _softmax_block_configs(arch) -> list[dict]:
    """Every config `softmax_blocks` picks on `arch` for the exercise's 10 classes,
    one-block rows up to the widest, and a two-pass row, on a GPU and in the
    interpreter."""
    configs = []
    for max_block_cols in (SOFTMAX_MAX_BLOCK_COLS, INTERPRETER_MAX_BLOCK_COLS):
        for cols in (10, 1000, 4096, 8192, SOFTMAX_MAX_BLOCK_COLS, SOFTMAX_MAX_BLOCK_COLS + 1):
            blocks = softmax_blocks(1 << 20, cols, max_block_cols, warp_size(arch))
            if blocks not in configs:
                configs.append(blocks)
    return configs


SOFTMAX_COMPILE_CASES = [
    (blocks, dtype, arch)
    for arch in TARGETS
    for blocks in _softmax_block_configs(arch)
    for dtype in ("fp32", "bf16")
    if compiled_by_default(arch, dtype=dtype)
]


def _softmax_case_id(case) -> str:
    blocks, dtype, arch = case
    single = "single" if blocks["SINGLE_PASS"] else "two-pass"
    return f"{blocks['BLOCK_ROWS']}x{blocks['BLOCK_COLS']}-{single}-w{blocks['num_warps']}-{dtype}-{target_name(arch)}"


@pytest.fixture(scope="module")
def softmax_compiled() -> dict:
    from tritonnet.kernels.softmax import softmax_kernel

    def job(blocks, dtype, arch):
        return compile_job(
            softmax_kernel,
            arch,
            dtype=dtype,
            constexprs={name: value for name, value in blocks.items() if name != "num_warps"},
            unit_strides=("stride_xn", "stride_yn"),
            num_warps=blocks["num_warps"],
        )

    return compile_cases(SOFTMAX_COMPILE_CASES, _softmax_case_id, job)


@pytest.mark.parametrize("case", SOFTMAX_COMPILE_CASES, ids=_softmax_case_id)
def test_softmax_kernel_compiles_without_spills(softmax_compiled, case, record_property):
    assert_compiled_without_spills(softmax_compiled[_softmax_case_id(case)], record_property)
