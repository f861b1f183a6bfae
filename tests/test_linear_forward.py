"""`linear_forward` on every backend against float64 torch, and the forward
kernel compiled for real GPUs.

The oracle is the same layer computed in float64 from the very inputs the
backend gets (already rounded to their dtype). The tolerance is not a guess: it
is the rounding error bound of the computation (see `assert_within_error_bound`),
so it grows with the length of each sum and the size of its terms, and stays far
below what a wrong index, a missing tile or a lost bias would cost.

This module also holds the helpers that test_linear_backward.py shares: the
error bound and the compile-in-a-child-process machinery.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import TEST_DEVICE, requires_triton, triton_runnable
from shapes import LINEAR_SHAPES
from tritonnet.backend import interpreter_enabled, ops_for

ACTIVATIONS = ("none", "sigmoid")

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

# More than one group of GROUP_M = 8 row blocks at every BLOCK_M of the configs
# (9 blocks of 128 rows, 35 of 32), the last group partial, and several column
# blocks: the grouped program order must still cover every tile once.
GROUPED_ORDER_SHAPE = (1100, 5, 130)


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


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    rows=st.integers(1, 40),
    in_features=st.integers(1, 40),
    out_features=st.integers(1, 40),
    activation=st.sampled_from(ACTIVATIONS),
    with_bias=st.booleans(),
    weight_transposed=st.booleans(),
)
def test_linear_forward_random_shapes(
    backend, rows, in_features, out_features, activation, with_bias, weight_transposed
):
    # `backend` only selects the backend for the test; it holds no per-example state.
    inputs = make_linear_inputs(
        rows, in_features, out_features, with_bias=with_bias, weight_transposed=weight_transposed
    )
    check_forward(*inputs, activation)


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


# --- compilation for real GPUs -------------------------------------------------

_TESTS = Path(__file__).resolve().parent

# Runs in the child: compiles each job read as JSON from stdin, one after the
# other, and prints the results as JSON.
_COMPILE_CHILD = r"""
import dataclasses, importlib, json, sys
from compile_check import compile_kernel

def compile_job(job):
    kernel = getattr(importlib.import_module(job.pop("module")), job.pop("kernel"))
    try:
        return dataclasses.asdict(compile_kernel(kernel, **job))
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}

print(json.dumps([compile_job(job) for job in json.load(sys.stdin)]))
"""


def compile_in_child(jobs: list[dict]) -> list[dict]:
    """Compile kernels for real GPUs (tests/compile_check.py) in a child process.

    Why a child: under TRITON_INTERPRET=1, which conftest sets on a machine
    without CUDA, `@triton.jit` returns InterpretedFunctions, and it did so for
    triton.language's own jit helpers (tl.cdiv, tl.zeros, tl.sigmoid) when
    triton was first imported; the compiler cannot call those. A process that
    imports triton without the interpreter gets real JITFunctions throughout.

    Each job is a dict with "module" and "kernel" (where the @triton.jit
    function is) and the arguments of `compile_check.compile_kernel`:
    "signature", "constexprs", "arch", "num_warps", "num_stages". Returns, for
    each job, `compile_check.Resources` as a dict, or {"error": message}.
    """
    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    child = subprocess.run(
        [sys.executable, "-c", _COMPILE_CHILD],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        cwd=_TESTS,
        env=environment,
        timeout=600,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the compile child failed:\n{child.stderr[-4000:]}")
    return json.loads(child.stdout)


# (input_precision, pointer dtype): fp32 on the CUDA cores ("ieee", torch's
# default) and on the tensor cores ("tf32"), and bf16 (whose dots ignore it).
PRECISIONS = [("ieee", "fp32"), ("tf32", "fp32"), ("ieee", "bf16")]
ARCHITECTURES = (90, 80)


def kernel_compile_job(
    module: str, kernel, config, precision: str, dtype: str, arch: int, constexprs: dict, unit_strides
) -> dict:
    """A compile job for `kernel` under one config, precision and architecture.

    The strides in `unit_strides` are compiled as the constant 1, as Triton
    specializes them for contiguous tensors, which is what the library runs.
    No argument is marked 16-byte aligned: that is the case of the odd shapes
    and the one with the most registers (no vector loads).
    """
    constexprs = {**constexprs, **config.kwargs, "INPUT_PRECISION": precision}
    constexprs.update({name: 1 for name in unit_strides})

    def type_of(name: str) -> str:
        if name in constexprs:
            return "constexpr"
        if name.endswith("_ptr"):
            return f"*{dtype}"
        return "fp32" if name == "scale" else "i32"

    return {
        "module": module,
        "kernel": kernel.__name__,
        "signature": {name: type_of(name) for name in kernel.arg_names},
        "constexprs": constexprs,
        "arch": arch,
        "num_warps": config.num_warps,
        "num_stages": config.num_stages,
    }


def config_id(config) -> str:
    blocks = "x".join(str(value) for name, value in config.kwargs.items() if name.startswith("BLOCK"))
    return f"{blocks}-w{config.num_warps}-s{config.num_stages}"


def unique_configs(*groups) -> list:
    """The configs of the autotune lists and the interpreter, each once."""
    configs = []
    for config in (config for group in groups for config in group):
        if all(config is not seen for seen in configs):
            configs.append(config)
    return configs


def assert_compiled_without_spills(result: dict) -> None:
    assert "error" not in result, result.get("error")
    assert result["spill_stores"] == 0 and result["spill_loads"] == 0, f"spills: {result}"


def _forward_configs() -> list:
    from tritonnet.kernels import linear_forward as kernels

    return unique_configs(kernels.LINEAR_FORWARD_CONFIGS, [kernels.LINEAR_FORWARD_INTERPRETER_CONFIG])


FORWARD_COMPILE_CASES = [
    (config, precision, dtype, arch)
    for config in (_forward_configs() if triton_runnable() else [])
    for precision, dtype in PRECISIONS
    for arch in ARCHITECTURES
]


def forward_case_id(case) -> str:
    config, precision, dtype, arch = case
    return f"{config_id(config)}-{precision}-{dtype}-sm{arch}"


@pytest.fixture(scope="module")
def forward_compiled() -> dict:
    from tritonnet.kernels.linear_forward import linear_forward_kernel

    # Bias and sigmoid on: the variant with the most work in its epilogue.
    constexprs = {"HAS_BIAS": True, "ACTIVATION": "sigmoid"}
    unit_strides = ("stride_xk", "stride_wn", "stride_yn", "stride_b")
    jobs = [
        kernel_compile_job(
            "tritonnet.kernels.linear_forward", linear_forward_kernel, config, precision, dtype, arch,
            constexprs, unit_strides,
        )
        for config, precision, dtype, arch in FORWARD_COMPILE_CASES
    ]
    ids = [forward_case_id(case) for case in FORWARD_COMPILE_CASES]
    return dict(zip(ids, compile_in_child(jobs)))


@requires_triton
@pytest.mark.parametrize("case", FORWARD_COMPILE_CASES, ids=forward_case_id)
def test_linear_forward_kernel_compiles_without_spills(forward_compiled, case):
    assert_compiled_without_spills(forward_compiled[forward_case_id(case)])
