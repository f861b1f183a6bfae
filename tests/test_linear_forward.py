"""`linear_forward` on every backend against float64 torch, and the forward
kernel compiled for real GPUs.

The oracle is the same layer computed in float64 from the very inputs the
backend gets (already rounded to their dtype). The tolerance is not a guess: it
is the rounding error bound of the computation (see `assert_within_error_bound`),
so it grows with the length of each sum and the size of its terms, and stays far
below what a wrong index, a missing tile or a lost bias would cost.

This module also holds the helpers that test_linear_backward.py shares: the
error bound, the inputs and the forward oracle.
"""

from __future__ import annotations

import contextlib

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from compile_check import (
    ARCHITECTURES,
    DOT_PRECISIONS,
    TARGETS,
    TENSOR_CORE_PRECISIONS,
    WEIGHT_UNIT_STRIDES,
    assert_config_compiled,
    compile_cases,
    compile_job,
    compiled_by_default,
    config_id,
    dot_precisions_on,
    target_name,
    vendor,
)
from conftest import TEST_DEVICE, random_examples, requires_triton, triton_runnable
from shapes import GROUPED_ORDER_SHAPE, LINEAR_SHAPES
from tritonnet.backend import interpreter_enabled, ops_for, use_backend

ACTIVATIONS = ("none", "sigmoid")


def given_random_layers(**strategies):
    """Hypothesis' examples of a layer of random shape (rows, in_features and
    out_features up to 40), with each activation and both weight layouts, plus
    `strategies`: for the random-shape tests of the forward and the backward."""
    return lambda test: random_examples(
        given(
            rows=st.integers(1, 40),
            in_features=st.integers(1, 40),
            out_features=st.integers(1, 40),
            activation=st.sampled_from(ACTIVATIONS),
            weight_transposed=st.booleans(),
            **strategies,
        )(test)
    )


# Unit roundoff (half an ulp at 1) of fp32, where every kernel accumulates.
FP32_UNIT = 2.0**-24

# Unit roundoff of each dtype a result is stored in (one rounding, to nearest).
OUTPUT_UNIT = {torch.float32: 2.0**-24, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}

# triton-lang/triton#11584: Triton's interpreter keeps bf16 as uint16 and its
# tl.dot multiplies the bit patterns (results near 1e10); the maintainers do not
# support bf16 dots there yet. fp16 runs the same half-precision code paths in
# the interpreter; bf16 kernels are checked on a GPU.
BF16_INTERPRETER_SKIP = (
    "Triton's interpreter multiplies bf16 bit patterns in tl.dot (triton-lang/triton#11584)"
)

TF32_SKIP = "TF32 needs a GPU's tensor cores; the interpreter's tl.dot is exact fp32"

def skip_bf16_in_interpreter(dtype: torch.dtype, backend: str) -> None:
    if dtype == torch.bfloat16 and backend == "triton" and interpreter_enabled():
        pytest.skip(BF16_INTERPRETER_SKIP)


def assert_within_error_bound(
    actual: torch.Tensor,
    expected: torch.Tensor,
    magnitude: torch.Tensor,
    terms: int,
    operand_unit: float = 0.0,
) -> None:
    """Assert `|actual - expected| <= bound`, elementwise, for a sum of products.

    `expected` is the exact result (float64), `magnitude` the same sum taken over
    absolute values (`|a| @ |b| + |c|`), `terms` the number of products in each
    sum. For a sum of `terms` products accumulated in fp32 in any order the
    rounding error is at most `terms * FP32_UNIT * magnitude` (the standard
    bound for dot products); 16 more units cover the few operations around the
    sum (bias, scale, the sigmoid's exp and division, dz's three products).
    `operand_unit` adds the rounding of an operand before the dot (dz rounded to
    fp16/bf16, or TF32 inputs), and the last term the one rounding of the result
    to its dtype, plus 8 fp32 units of slack for the activation's evaluation.
    """
    expected = expected.double()
    bound = ((terms + 16) * FP32_UNIT + operand_unit) * magnitude.double() + (
        OUTPUT_UNIT[actual.dtype] + 8 * FP32_UNIT
    ) * expected.abs()
    error = (actual.double() - expected).abs()
    assert actual.shape == expected.shape
    assert torch.isfinite(actual).all(), "non-finite values in the result"
    excess = error - bound
    worst = int(excess.argmax()) if excess.numel() else 0
    assert (excess <= 0).all(), (
        f"{int((excess > 0).sum())} of {excess.numel()} entries exceed the rounding bound; "
        f"worst at flat index {worst}: got {actual.flatten()[worst].item()}, "
        f"expected {expected.flatten()[worst].item()}, bound {bound.flatten()[worst].item():.3g}"
    )


def make_linear_inputs(
    rows: int,
    in_features: int,
    out_features: int,
    dtype: torch.dtype = torch.float32,
    with_bias: bool = True,
    weight_transposed: bool = False,
    x_strided: bool = False,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x, weight, bias on TEST_DEVICE, scaled as the exercise's layers are.

    weight_transposed: weight is `w.t()` of an `[out, in]` tensor (nn.Linear's
    layout), a view with strides (1, in_features). x_strided: x is every other
    column of a wider tensor, so neither of its strides is its width.
    """
    scale = in_features**-0.5
    if x_strided:
        x = torch.randn(rows, 2 * in_features, device=TEST_DEVICE, dtype=dtype)[:, ::2]
    else:
        x = torch.randn(rows, in_features, device=TEST_DEVICE, dtype=dtype)
    if weight_transposed:
        weight = (torch.randn(out_features, in_features, device=TEST_DEVICE) * scale).to(dtype).t()
    else:
        weight = (torch.randn(in_features, out_features, device=TEST_DEVICE) * scale).to(dtype)
    bias = (torch.randn(out_features, device=TEST_DEVICE) * scale).to(dtype) if with_bias else None
    return x, weight, bias


def forward_oracle(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str
) -> tuple[torch.Tensor, torch.Tensor]:
    """The layer's output in float64 and the magnitude `|x| @ |w| + |b|` of its sums."""
    x64, weight64 = x.double(), weight.double()
    z = x64 @ weight64
    magnitude = x64.abs() @ weight64.abs()
    if bias is not None:
        z = z + bias.double()
        magnitude = magnitude + bias.double().abs()
    output = torch.sigmoid(z) if activation == "sigmoid" else z
    return output, magnitude


def check_forward(x, weight, bias, activation, out=None) -> torch.Tensor:
    result = ops_for(x, weight, bias).linear_forward(x, weight, bias, activation, out=out)
    expected, magnitude = forward_oracle(x, weight, bias, activation)
    assert result.dtype == x.dtype
    assert_within_error_bound(result, expected, magnitude, terms=x.shape[1])
    return result


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("rows,in_features,out_features", LINEAR_SHAPES)
def test_linear_forward_matches_oracle(backend, rows, in_features, out_features, activation):
    check_forward(*make_linear_inputs(rows, in_features, out_features), activation)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(
    "weight_transposed,x_strided", [(True, False), (False, True)], ids=["weight.t()", "strided-x"]
)
def test_linear_forward_layouts(backend, weight_transposed, x_strided, with_bias, activation):
    inputs = make_linear_inputs(
        17, 31, 19, with_bias=with_bias, weight_transposed=weight_transposed, x_strided=x_strided
    )
    check_forward(*inputs, activation)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_forward_half_precision(backend, dtype, activation):
    # The bound's output term (one rounding to the dtype, 2^-11 or 2^-8 relative)
    # is what loosens the comparison here: the inputs are already in the dtype.
    skip_bf16_in_interpreter(dtype, backend)
    check_forward(*make_linear_inputs(129, 257, 33, dtype=dtype), activation)


@requires_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_linear_forward_writes_fp32_out_for_half_inputs(dtype):
    """The Triton launcher stores the fp32 accumulator unrounded into an fp32 `out`
    (the wide output layer's logits)."""
    from tritonnet.triton_backend import linear_forward

    skip_bf16_in_interpreter(dtype, "triton")
    x, weight, bias = make_linear_inputs(129, 257, 33, dtype=dtype)
    out = torch.full((129, 33), float("nan"), device=TEST_DEVICE)
    assert linear_forward(x, weight, bias, "none", out=out) is out
    expected, magnitude = forward_oracle(x, weight, bias, "none")
    # The bound's output term is fp32's (2^-24): a result rounded to the inputs'
    # dtype first (2^-11 or 2^-8 relative) would exceed it.
    assert_within_error_bound(out, expected, magnitude, terms=x.shape[1])


def test_linear_forward_grouped_order_covers_every_tile(backend):
    check_forward(*make_linear_inputs(*GROUPED_ORDER_SHAPE), "sigmoid")


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_forward_writes_into_out(backend, activation):
    x, weight, bias = make_linear_inputs(17, 31, 19)
    # A column slice of a wider buffer: out's row stride is not its width. NaN
    # everywhere shows that every entry of out is written and none is read.
    buffer = torch.full((17, 40), float("nan"), device=TEST_DEVICE)
    out = buffer[:, 3:22]
    result = check_forward(x, weight, bias, activation, out=out)
    assert result is out
    assert buffer[:, :3].isnan().all() and buffer[:, 22:].isnan().all()


def test_linear_forward_empty_batch(backend):
    x, weight, bias = make_linear_inputs(0, 31, 19)
    result = ops_for(x).linear_forward(x, weight, bias, "sigmoid")
    assert result.shape == (0, 19)


@pytest.mark.parametrize("in_features,out_features", [(0, 3), (4, 0)])
def test_linear_forward_without_features(backend, in_features, out_features):
    # No inputs: the output is the activation of the bias. No outputs: nothing to do.
    x = torch.randn(5, in_features, device=TEST_DEVICE)
    weight = torch.randn(in_features, out_features, device=TEST_DEVICE)
    check_forward(x, weight, torch.randn(out_features, device=TEST_DEVICE), "sigmoid")


@given_random_layers(with_bias=st.booleans())
def test_linear_forward_random_shapes(
    backend, rows, in_features, out_features, activation, with_bias, weight_transposed
):
    # `backend` only selects the backend for the test; it holds no per-example state.
    inputs = make_linear_inputs(
        rows, in_features, out_features, with_bias=with_bias, weight_transposed=weight_transposed
    )
    check_forward(*inputs, activation)


@pytest.fixture
def alignment_classes(monkeypatch):
    """The alignment class of every GEMM launch while the test runs, in order,
    on the triton backend."""
    from tritonnet.triton_backend import alignment, plans

    plans.clear_caches()  # a launch asks for its class when its launch key is new
    seen = []

    def recording(*args, **kwargs):
        seen.append(real(*args, **kwargs))
        return seen[-1]

    real = alignment.alignment_class
    monkeypatch.setattr(alignment, "alignment_class", recording)
    with use_backend("triton"):
        yield seen


@contextlib.contextmanager
def matmul_precision(precision: str):
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


# Tensor-core dots on aligned operands: fp16 (bf16 only on a GPU), and fp32 as
# TF32 (exact in the interpreter; 10 mantissa bits of each operand on a GPU).
ALIGNED_MODES = {"fp16": (torch.float16, "highest", 0.0), "tf32": (torch.float32, "high", 2.0**-9)}


@requires_triton
@pytest.mark.parametrize("mode", ALIGNED_MODES)
def test_linear_forward_aligned_operands(alignment_classes, mode):
    """Sizes and strides multiples of 16 take the tensor-core configs; an offset
    view of the same x, two elements past a 16-byte boundary, takes the small ones."""
    dtype, precision, operand_unit = ALIGNED_MODES[mode]
    x, weight, bias = make_linear_inputs(96, 64, 48, dtype=dtype)
    offset_x = torch.empty(96 * 64 + 2, dtype=dtype, device=TEST_DEVICE)[2:].view(96, 64).copy_(x)
    with matmul_precision(precision):
        aligned = ops_for(x).linear_forward(x, weight, bias, "sigmoid")
        unaligned = ops_for(x).linear_forward(offset_x, weight, bias, "sigmoid")
    assert alignment_classes == ["aligned", "unaligned"]
    expected, magnitude = forward_oracle(x, weight, bias, "sigmoid")
    for result in (aligned, unaligned):
        assert_within_error_bound(result, expected, magnitude, 64, operand_unit)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=TF32_SKIP)
def test_linear_forward_follows_tf32_setting(backend):
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        x, weight, bias = make_linear_inputs(129, 257, 33)
        result = ops_for(x).linear_forward(x, weight, bias, "sigmoid")
    finally:
        torch.set_float32_matmul_precision(previous)
    expected, magnitude = forward_oracle(x, weight, bias, "sigmoid")
    # TF32 keeps 10 mantissa bits of each operand (rounded or truncated, 2^-10
    # relative at most), so each product may be off by 2 * 2^-10 = 2^-9.
    assert_within_error_bound(result, expected, magnitude, terms=257, operand_unit=2.0**-9)


@requires_triton
def test_linear_forward_rejects_bad_arguments():
    from tritonnet.triton_backend import linear_forward

    x, weight, bias = make_linear_inputs(4, 6, 5)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        linear_forward([[1.0]], weight, bias)
    with pytest.raises(ValueError, match=r"weight must have 6 rows, got shape \(7, 5\)"):
        linear_forward(x, torch.zeros(7, 5, device=TEST_DEVICE), bias)
    with pytest.raises(ValueError, match=r"bias must have shape \(5,\), got \(4,\)"):
        linear_forward(x, weight, bias[:4])
    with pytest.raises(ValueError, match="activation must be one of"):
        linear_forward(x, weight, bias, "relu")
    with pytest.raises(TypeError, match="x torch.float32, weight torch.float16"):
        linear_forward(x, weight.half(), bias)
    with pytest.raises(TypeError, match="x must have dtype float32, float16, bfloat16 .* got torch.float64"):
        linear_forward(x.double(), weight.double(), bias.double())
    with pytest.raises(ValueError, match=r"out must have 5 columns, got shape \(4, 6\)"):
        linear_forward(x, weight, bias, out=torch.empty(4, 6, device=TEST_DEVICE))
    with pytest.raises(TypeError, match="out must have x's dtype torch.float32, got torch.float16"):
        linear_forward(x, weight, bias, out=torch.empty(4, 5, device=TEST_DEVICE, dtype=torch.float16))
    with pytest.raises(TypeError, match="out must have x's dtype torch.float16 or torch.float32, got torch.bfloat16"):
        linear_forward(
            x.half(), weight.half(), bias.half(), out=torch.empty(4, 5, device=TEST_DEVICE, dtype=torch.bfloat16)
        )
    with pytest.raises(ValueError, match="x must be a CUDA tensor .* got device meta"):
        linear_forward(x.to("meta"), weight.to("meta"), bias.to("meta"))


# --- compilation for real GPUs -------------------------------------------------


def _forward_cases() -> list:
    """(alignment, config, weight layout, dtype, precision, arch): each class's
    configs for each target at the precisions it serves, unaligned ones at all of
    them; on AMD the AMD lists, and a sample unless all are asked for."""
    from tritonnet.kernels import linear_forward as kernels
    from tritonnet.kernels.tiling import ALIGNED, UNALIGNED

    precisions = {ALIGNED: TENSOR_CORE_PRECISIONS, UNALIGNED: DOT_PRECISIONS}
    lists = {"cuda": kernels.LINEAR_FORWARD_CONFIGS, "hip": kernels.LINEAR_FORWARD_AMD_CONFIGS}
    return [
        (alignment, config, layout, dtype, precision, arch)
        for arch in TARGETS
        for alignment, configs in lists[vendor(arch)].items()
        for config in configs
        for layout in WEIGHT_UNIT_STRIDES
        for dtype, precision in dot_precisions_on(arch, precisions[alignment])
        if compiled_by_default(arch, alignment=alignment, layout=layout, dtype=dtype, precision=precision)
    ]


FORWARD_COMPILE_CASES = _forward_cases() if triton_runnable() else []


def _split_cases() -> list:
    """(alignment, config, weight layout, dtype, precision, arch) of the split-K
    kernel: its configs in each class, as above, on the CUDA targets only: AMD
    GPUs keep K whole (forward_split.split_forward), as the split kernel's AMD
    builds spilled scalar registers (docs/kernels.md)."""
    from tritonnet.kernels import linear_forward as kernels
    from tritonnet.kernels.tiling import ALIGNED, UNALIGNED

    precisions = {ALIGNED: TENSOR_CORE_PRECISIONS, UNALIGNED: DOT_PRECISIONS}
    return [
        (alignment, config, layout, dtype, precision, arch)
        for arch in ARCHITECTURES
        for alignment in (ALIGNED, UNALIGNED)
        for config in kernels.LINEAR_FORWARD_SPLIT_CONFIGS
        for layout in WEIGHT_UNIT_STRIDES
        for dtype, precision in dot_precisions_on(arch, precisions[alignment])
        if compiled_by_default(arch, alignment=alignment, layout=layout, dtype=dtype, precision=precision)
    ]


SPLIT_COMPILE_CASES = _split_cases() if triton_runnable() else []


def forward_case_id(case) -> str:
    alignment, config, layout, dtype, precision, arch = case
    return f"{alignment}-{config_id(config)}-{layout}-{precision}-{dtype}-{target_name(arch)}"


def _forward_job(split_k: bool):
    """The compile job of a forward case, unsplit (the split's pointers None, as
    the launcher passes them) or split (SPLIT_K)."""
    from tritonnet.kernels.linear_forward import linear_forward_kernel

    split = {"SPLIT_K": split_k} if split_k else {"SPLIT_K": False, "partials_ptr": None, "counters_ptr": None}

    def job(alignment, config, layout, dtype, precision, arch):
        return compile_job(
            linear_forward_kernel,
            arch,
            dtype=dtype,
            pointers={"partials_ptr": "*fp32", "counters_ptr": "*i32"},
            config=config,
            # Bias and sigmoid on: the variant with the most work in its epilogue.
            constexprs={"HAS_BIAS": True, "ACTIVATION": "sigmoid", "INPUT_PRECISION": precision, **split},
            unit_strides=("stride_xk", WEIGHT_UNIT_STRIDES[layout], "stride_yn", "stride_b"),
            aligned=alignment == "aligned",
            count_instructions=alignment == "aligned",
        )

    return job


def split_case_id(case) -> str:
    return f"split-k-{forward_case_id(case)}"


@pytest.fixture(scope="module")
def forward_compiled() -> dict:
    """Every build of both case lists, by test id."""
    return {
        **compile_cases(FORWARD_COMPILE_CASES, forward_case_id, _forward_job(split_k=False)),
        **compile_cases(SPLIT_COMPILE_CASES, split_case_id, _forward_job(split_k=True)),
    }


@requires_triton
@pytest.mark.parametrize(
    "case_id,case",
    [pytest.param(forward_case_id(case), case, id=forward_case_id(case)) for case in FORWARD_COMPILE_CASES]
    + [pytest.param(split_case_id(case), case, id=split_case_id(case)) for case in SPLIT_COMPILE_CASES],
)
def test_linear_forward_kernel_compiles_without_spills(forward_compiled, case_id, case, record_property):
    """No spills, and tensor cores for the aligned configs, unsplit and split-K: one
    test per build, whose name the GPU check's `-k "not without_spills"` leaves to CI."""
    assert_config_compiled(forward_compiled[case_id], case[0], case[-1], record_property)


@requires_triton
def test_linear_forward_fixed_configs_are_compiled():
    """Each class's fixed config (interpreter, TRITONNET_AUTOTUNE=0) is one of its
    list, so the compile tests above cover it."""
    from tritonnet.kernels import linear_forward as kernels

    for lists in (kernels.LINEAR_FORWARD_CONFIGS, kernels.LINEAR_FORWARD_AMD_CONFIGS):
        for alignment, config in kernels.LINEAR_FORWARD_FIXED_CONFIGS.items():
            assert any(config is listed for listed in lists[alignment])


# --- split-K ------------------------------------------------------------------


@pytest.fixture
def small_splits(monkeypatch):
    """Split K from 16 features a split, so that small shapes split on the
    interpreter's 8 "processors" (weight_gradient.INTERPRETER_PROCESSORS); fresh
    plans, which decide the split."""
    from tritonnet.kernels import linear_forward as kernels
    from tritonnet.triton_backend import plans

    monkeypatch.setattr(kernels, "SPLIT_MIN_K", 16)
    plans.clear_caches()
    yield
    plans.clear_caches()


# (rows, in_features, out_features, splits): 2 splits of 32; 3 with the last 6
# features long; 4 over two row tiles (two ticket counters).
SPLIT_SHAPES = [(20, 64, 30, 2), (5, 70, 60, 3), (40, 100, 30, 4)]


@requires_triton
@pytest.mark.skipif(not interpreter_enabled(), reason="the split counts are the interpreter's 8 processors'")
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("with_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("layout", ["contiguous", "w.t()", "x strided"])
@pytest.mark.parametrize("rows,in_features,out_features,splits", SPLIT_SHAPES)
def test_linear_forward_split_k_matches_oracle(
    small_splits, rows, in_features, out_features, splits, layout, with_bias, activation
):
    from tritonnet.triton_backend.forward_split import ForwardSplit
    from tritonnet.triton_backend.linear import _forward_plans

    x, weight, bias = make_linear_inputs(
        rows, in_features, out_features, with_bias=with_bias,
        weight_transposed=layout == "w.t()", x_strided=layout == "x strided",
    )
    with use_backend("triton"):
        result = check_forward(x, weight, bias, activation)
        (plan,) = _forward_plans.entries.values()
        assert isinstance(plan.launch, ForwardSplit) and plan.launch.partials_shape[0] == splits
        assert not plan.launch.counters.any(), "each tile's last split resets its counter"
        again = ops_for(x).linear_forward(x, weight, bias, activation)
    assert torch.equal(again, result), "the same bits on a second call"


@random_examples
@given(
    rows=st.integers(1, 5000),
    in_features=st.integers(1, 4096),
    out_features=st.integers(1, 2048),
    processors=st.integers(1, 200),
)
def test_forward_splits_cover_k(rows, in_features, out_features, processors):
    """Splits only where the tiles are at most 1 / SPLIT_FAR_BELOW of the
    processors; then runs of whole SPLIT_K_STEPs, at least SPLIT_MIN_K long, none
    empty, that cover K."""
    from tritonnet.kernels import linear_forward as kernels

    splits, k_per_split = kernels.forward_splits(rows, in_features, out_features, processors)
    if splits == 1:
        assert k_per_split == in_features
        return
    tiles = -(-rows // kernels.SPLIT_BLOCK_M) * -(-out_features // kernels.SPLIT_BLOCK_N)
    assert tiles * kernels.SPLIT_FAR_BELOW <= processors
    assert k_per_split % kernels.SPLIT_K_STEP == 0 and k_per_split >= kernels.SPLIT_MIN_K
    assert (splits - 1) * k_per_split < in_features <= splits * k_per_split
    for config in kernels.LINEAR_FORWARD_SPLIT_CONFIGS:
        assert kernels.SPLIT_K_STEP % config.kwargs["BLOCK_K"] == 0
        assert (config.kwargs["BLOCK_M"], config.kwargs["BLOCK_N"]) == (kernels.SPLIT_BLOCK_M, kernels.SPLIT_BLOCK_N)
