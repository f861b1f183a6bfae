"""cross_entropy on logits against float64 torch (cross_entropy and autograd) on every
backend, and the compilation of its row-wise kernel.

The kernel also serves linear_cross_entropy for rows wider than its fused kernel
holds (fp32 logits, outputs in the input dtype); the compile cases cover that too.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from tritonnet.backend import ops_for

pytest.importorskip("triton", reason="the kernel tests need the triton package")

from compile_check import LOSS_MEAN_POINTERS, TARGETS, assert_compiled_without_spills, compile_cases  # noqa: E402
from compile_check import compile_job  # noqa: E402
from compile_check import compiled_by_default, target_name, warp_size  # noqa: E402
from conftest import TEST_DEVICE, random_examples, requires_triton  # noqa: E402
from oracles import assert_cross_entropy_outputs, assert_no_rows  # noqa: E402
from oracles import check_out_of_range_targets, cross_entropy_oracle  # noqa: E402
from shapes import ROW_SHAPES  # noqa: E402
from tritonnet.kernels.linear_cross_entropy import FUSED_MAX_N  # noqa: E402
from tritonnet.kernels.softmax import INTERPRETER_MAX_BLOCK_COLS, MAX_BLOCK_COLS, softmax_blocks  # noqa: E402

# fp32 against float64, for logits of size up to ~10 (randn * 3). p: as in
# test_softmax, a few ulp from exp and its argument's rounding, log2(N) from the
# row sum; 1e-5 covers that with room, a wrong formula is off by O(1). The loss,
# `log(sum) - (z[t] - max)`, is a difference of numbers up to ~40 in fp32: about
# 1e-6 absolute. The gradient p - onehot inherits p's error next to entries of
# size up to 1.
PROBABILITY_TOLERANCE = dict(rtol=1e-5, atol=1e-12)
LOSS_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
GRADIENT_TOLERANCE = dict(rtol=1e-5, atol=1e-6)
# fp16/bf16 logits: exact in float64 and computed in fp32, so the loss (fp32)
# keeps the fp32 tolerance. p and the gradient are rounded once to the dtype: up to
# one ulp (2^-10, 2^-7; a whole one because Triton's CPU interpreter truncates to
# bf16); fp16 turns values below 6e-8 into subnormals of step 6e-8.
LOW_PRECISION_TOLERANCE = {
    torch.float16: dict(rtol=1e-3, atol=6e-8),
    torch.bfloat16: dict(rtol=8e-3, atol=1e-12),
}


def make_inputs(rows, classes, dtype=torch.float32, seed=0):
    generator = torch.Generator().manual_seed(seed)
    logits = torch.randn(rows, classes, generator=generator) * 3
    target = torch.randint(0, max(classes, 1), (rows,), generator=generator)
    return logits.to(device=TEST_DEVICE, dtype=dtype), target.to(TEST_DEVICE)


expected_outputs = cross_entropy_oracle


def assert_matches(outputs, expected, tolerance=None):
    """`tolerance`: of p and the gradient for half-precision outputs (fp32 ones otherwise)."""
    assert_cross_entropy_outputs(
        outputs,
        expected,
        LOSS_TOLERANCE,
        tolerance or PROBABILITY_TOLERANCE,
        tolerance or GRADIENT_TOLERANCE,
    )


@pytest.mark.parametrize("rows,classes", ROW_SHAPES)
def test_cross_entropy_matches_float64(backend, rows, classes):
    logits, target = make_inputs(rows, classes)
    outputs = ops_for(logits, target).cross_entropy(logits, target, 1.0 / rows)
    assert outputs[0].shape == outputs[2].shape == (rows, classes)
    assert outputs[0].dtype == outputs[2].dtype == torch.float32
    assert_matches(outputs, expected_outputs(logits, target, 1.0 / rows))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("rows,classes", [(64, 10), (129, 257)])
def test_cross_entropy_low_precision(backend, dtype, rows, classes):
    logits, target = make_inputs(rows, classes, dtype=dtype)
    probabilities, loss, grad_logits = ops_for(logits).cross_entropy(logits, target)
    assert probabilities.dtype == grad_logits.dtype == dtype
    assert_matches(
        (probabilities, loss, grad_logits),
        expected_outputs(logits, target, 1.0),
        tolerance=LOW_PRECISION_TOLERANCE[dtype],
    )


@pytest.mark.parametrize("classes", [10, 300])  # one block, and two when interpreted
def test_cross_entropy_strided_operands_and_outputs(backend, classes):
    rows = 33
    transposed = torch.randn(classes, rows, device=TEST_DEVICE).t() * 3
    every_other_column = torch.randn(rows, 2 * classes, device=TEST_DEVICE)[:, ::2] * 3
    target = torch.randint(0, classes, (2 * rows,), device=TEST_DEVICE)[::2]
    for logits in (transposed, every_other_column):
        out_probabilities = torch.full((classes, rows), float("nan"), device=TEST_DEVICE).t()
        out_grad_logits = torch.full((classes, rows), float("nan"), device=TEST_DEVICE).t()
        outputs = ops_for(logits).cross_entropy(
            logits, target, 0.25, out_probabilities=out_probabilities, out_grad_logits=out_grad_logits
        )
        assert outputs[0] is out_probabilities and outputs[2] is out_grad_logits
        assert_matches(outputs, expected_outputs(logits, target, 0.25))


@pytest.mark.parametrize("classes", [10, 300])
def test_cross_entropy_extreme_logits(backend, classes):
    logits, target = make_inputs(8, classes)
    logits[0, 0], logits[1, 1], logits[:, 2] = 1e4, -1e4, float("-inf")  # exp(1e4) overflows unshifted
    target[target == 2] = 3  # the -inf class is the target of no row, for now
    target[0], target[1] = 0, 1  # a target of 1e4, and one whose probability underflows to 0
    outputs = ops_for(logits).cross_entropy(logits, target)
    assert torch.isfinite(outputs[1])
    assert (outputs[0][:, 2] == 0).all() and (outputs[2][:, 2] == 0).all()
    assert_matches(outputs, expected_outputs(logits, target, 1.0))

    target[4] = 2  # the class of the -inf logit: -log(0), an infinite loss, as torch
    assert ops_for(logits).cross_entropy(logits, target)[1] == float("inf")


@pytest.mark.parametrize("classes", [10, 300])
def test_target_out_of_range(backend, classes):
    """The Triton kernel gives a NaN loss row; the reference trusts its arguments."""
    logits, target = make_inputs(6, classes)
    check_out_of_range_targets(
        backend,
        lambda target, *scale: ops_for(logits).cross_entropy(logits, target, *scale),
        logits,
        target,
        classes,
        (PROBABILITY_TOLERANCE, GRADIENT_TOLERANCE),
    )


def test_cross_entropy_no_rows(backend):
    logits, target = make_inputs(0, 10)
    assert_no_rows(ops_for(logits).cross_entropy(logits, target), 10)


@random_examples
@given(
    rows=st.integers(1, 24),
    classes=st.integers(1, 700),
    scale=st.sampled_from([1.0, 0.1]),
    seed=st.integers(0, 2**31 - 1),
)
def test_cross_entropy_random_shapes(backend, rows, classes, scale, seed):
    logits, target = make_inputs(rows, classes, seed=seed)
    outputs = ops_for(logits).cross_entropy(logits, target, scale)
    assert_matches(outputs, expected_outputs(logits, target, scale))


@requires_triton
def test_cross_entropy_launcher_rejects_bad_arguments():
    from tritonnet.triton_backend import cross_entropy

    logits, target = make_inputs(4, 10)
    with pytest.raises(TypeError, match="logits must be a torch.Tensor, got list"):
        cross_entropy([[1.0]], target)
    with pytest.raises(ValueError, match=r"logits must be 2-D .* got shape \(10,\)"):
        cross_entropy(logits[0], target)
    with pytest.raises(TypeError, match="logits must have dtype float32, float16, bfloat16 .* got torch.float64"):
        cross_entropy(logits.double(), target)
    with pytest.raises(TypeError, match="target must hold integer class indices, got dtype torch.float32"):
        cross_entropy(logits, target.float())
    with pytest.raises(ValueError, match=r"target must have shape \(4,\), got \(5,\)"):
        cross_entropy(logits, target.new_zeros(5))
    with pytest.raises(TypeError, match="logits torch.float32, out_grad_logits torch.float16"):
        cross_entropy(logits, target, out_grad_logits=logits.half())
    with pytest.raises(ValueError, match=r"out_probabilities must have 10 columns, got shape \(4, 9\)"):
        cross_entropy(logits, target, out_probabilities=logits.new_zeros(4, 9))
    with pytest.raises(TypeError, match="scale must be a real number, got str"):
        cross_entropy(logits, target, "1")
    with pytest.raises(ValueError, match="logits must be a CUDA tensor .* got device meta"):
        cross_entropy(logits.to("meta"), target.to("meta"))


# --- compilation for real GPUs -------------------------------------------------


def _row_block_configs(arch) -> list[dict]:
    """The configs `softmax_blocks` picks on `arch` for the exercise's 10 classes,
    rows just past the fused output layer's width, 1000 classes, and one-block and
    two-block rows at the cap, on a GPU and in the interpreter (the kernel ignores
    SINGLE_PASS: it always makes two passes)."""
    configs = []
    for max_block_cols in (MAX_BLOCK_COLS, INTERPRETER_MAX_BLOCK_COLS):
        for cols in (10, FUSED_MAX_N + 1, 1000, MAX_BLOCK_COLS, MAX_BLOCK_COLS + 1):
            blocks = softmax_blocks(1 << 20, cols, max_block_cols, warp_size(arch))
            blocks.pop("SINGLE_PASS")
            if blocks not in configs:
                configs.append(blocks)
    return configs


# (logits dtype, probabilities' and gradient's dtype): the standalone op, whose
# outputs take the logits' dtype, and the output layer's wide path (fp32 logits).
ROW_DTYPES = [("fp32", "fp32"), ("bf16", "bf16"), ("fp32", "bf16")]

ROW_CASES = [
    (blocks, logits_dtype, output_dtype, arch)
    for arch in TARGETS
    for blocks in _row_block_configs(arch)
    for logits_dtype, output_dtype in ROW_DTYPES
    if compiled_by_default(arch, dtype=output_dtype)
]


def _row_case_id(case) -> str:
    blocks, logits_dtype, output_dtype, arch = case
    tile = f"{blocks['BLOCK_ROWS']}x{blocks['BLOCK_COLS']}-w{blocks['num_warps']}"
    return f"{tile}-{logits_dtype}-to-{output_dtype}-{target_name(arch)}"


@pytest.fixture(scope="module")
def cross_entropy_compiled() -> dict:
    from tritonnet.kernels.cross_entropy import cross_entropy_kernel

    def job(blocks, logits_dtype, output_dtype, arch):
        return compile_job(
            cross_entropy_kernel,
            arch,
            dtype=output_dtype,
            pointers={"z_ptr": f"*{logits_dtype}", "target_ptr": "*i64", **LOSS_MEAN_POINTERS},
            constexprs={"BLOCK_ROWS": blocks["BLOCK_ROWS"], "BLOCK_COLS": blocks["BLOCK_COLS"]},
            unit_strides=("stride_zn", "stride_target", "stride_pn", "stride_gn"),
            floats=("scale",),
            num_warps=blocks["num_warps"],
        )

    return compile_cases(ROW_CASES, _row_case_id, job)


@pytest.mark.parametrize("case", ROW_CASES, ids=_row_case_id)
def test_cross_entropy_kernel_compiles_without_spills(cross_entropy_compiled, case, record_property):
    assert_compiled_without_spills(cross_entropy_compiled[_row_case_id(case)], record_property)
