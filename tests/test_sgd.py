"""sgd_update against a float64 oracle on every backend, its single launch, and the
compilation of its kernel."""

from __future__ import annotations

import pytest
import torch

from tritonnet.backend import interpreter_enabled, ops_for

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
from conftest import TEST_DEVICE, requires_triton  # noqa: E402
from shapes import LINEAR_SHAPES  # noqa: E402
from tritonnet.kernels.sgd import SGD_CONFIGS, SGD_INTERPRETER_CONFIG  # noqa: E402

# fp32: `w - lr * g` is one rounding of the product and one of the difference (or
# a single one, fused): at most 2 ulp of the O(1) operands, 2.4e-7, also where the
# two cancel; atol 1e-6 covers that, rtol the larger results.
FP32_TOLERANCE = dict(rtol=1e-6, atol=1e-6)
# bf16: the fp32 result is rounded once to bf16, up to one ulp (2^-7) of the
# result (a whole ulp because Triton's CPU interpreter truncates to bf16).
BF16_TOLERANCE = dict(rtol=8e-3, atol=1e-6)

# (in_features, out_features) of every linear shape of interest: the weights.
WEIGHT_SHAPES = sorted({(in_features, out_features) for _, in_features, out_features in LINEAR_SHAPES})


def make_parameters(in_features, out_features, dtype=torch.float32, bias=True):
    def random(*shape):
        return torch.randn(*shape, device=TEST_DEVICE).to(dtype)

    weight, grad_weight = random(in_features, out_features), random(in_features, out_features)
    if not bias:
        return weight, None, grad_weight, None
    return weight, random(out_features), grad_weight, random(out_features)


def expected_update(parameter, grad, lr):
    return parameter.double() - lr * grad.double()


@pytest.mark.parametrize("in_features,out_features", WEIGHT_SHAPES)
def test_sgd_update_matches_float64(backend, in_features, out_features):
    weight, bias, grad_weight, grad_bias = make_parameters(in_features, out_features)
    expected_weight = expected_update(weight, grad_weight, 0.1)
    expected_bias = expected_update(bias, grad_bias, 0.1)
    assert ops_for(weight).sgd_update(weight, bias, grad_weight, grad_bias, 0.1) is None
    torch.testing.assert_close(weight.double(), expected_weight, **FP32_TOLERANCE)
    torch.testing.assert_close(bias.double(), expected_bias, **FP32_TOLERANCE)


def test_sgd_update_of_a_weight_stored_transposed(backend):
    """The MLP's CPU layout: `[in, out]` views of `[out, in]` tensors, gradients alike."""
    weight, bias, grad_weight, grad_bias = make_parameters(37, 129)
    weight, grad_weight = weight.t().contiguous().t(), grad_weight.t().contiguous().t()
    expected_weight = expected_update(weight, grad_weight, 0.25)
    ops_for(weight).sgd_update(weight, bias, grad_weight, grad_bias, 0.25)
    torch.testing.assert_close(weight.double(), expected_weight, **FP32_TOLERANCE)
    assert weight.stride() == (1, 37)


def test_sgd_update_without_bias(backend):
    weight, _, grad_weight, _ = make_parameters(129, 33, bias=False)
    expected_weight = expected_update(weight, grad_weight, 0.5)
    ops_for(weight).sgd_update(weight, None, grad_weight, None, 0.5)
    torch.testing.assert_close(weight.double(), expected_weight, **FP32_TOLERANCE)


def test_sgd_update_bf16(backend):
    weight, bias, grad_weight, grad_bias = make_parameters(64, 10, dtype=torch.bfloat16)
    expected_weight = expected_update(weight, grad_weight, 0.25)
    expected_bias = expected_update(bias, grad_bias, 0.25)
    ops_for(weight).sgd_update(weight, bias, grad_weight, grad_bias, 0.25)
    assert weight.dtype == bias.dtype == torch.bfloat16
    torch.testing.assert_close(weight.double(), expected_weight, **BF16_TOLERANCE)
    torch.testing.assert_close(bias.double(), expected_bias, **BF16_TOLERANCE)


def test_sgd_update_with_zero_learning_rate_changes_nothing(backend):
    weight, bias, grad_weight, grad_bias = make_parameters(17, 19)
    weight_before, bias_before = weight.clone(), bias.clone()
    ops_for(weight).sgd_update(weight, bias, grad_weight, grad_bias, 0.0)
    assert torch.equal(weight, weight_before) and torch.equal(bias, bias_before)


@requires_triton
@pytest.mark.skipif(
    not interpreter_enabled(), reason="counts interpreted launches; on a GPU the autotuner adds trial runs"
)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
def test_sgd_update_is_one_launch(monkeypatch, bias):
    from tritonnet.kernels import sgd as sgd_kernels
    from tritonnet.triton_backend.sgd import sgd_update

    launches = []
    run = sgd_kernels.sgd_update_kernel.run

    def counting_run(*args, **kwargs):
        launches.append(kwargs["grid"])
        return run(*args, **kwargs)

    monkeypatch.setattr(sgd_kernels.sgd_update_kernel, "run", counting_run)
    # Sizes that are no multiple of the block, so that both tensors end in a partial block.
    weight, bias_tensor, grad_weight, grad_bias = make_parameters(300, 17, bias=bias)
    expected_weight = expected_update(weight, grad_weight, 0.1)
    sgd_update(weight, bias_tensor, grad_weight, grad_bias, 0.1)
    assert len(launches) == 1
    torch.testing.assert_close(weight.double(), expected_weight, **FP32_TOLERANCE)


@requires_triton
def test_sgd_launcher_rejects_bad_arguments():
    from tritonnet.triton_backend.sgd import sgd_update

    weight, bias, grad_weight, grad_bias = make_parameters(4, 3)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor, got list"):
        sgd_update([1.0], bias, grad_weight, grad_bias, 0.1)
    with pytest.raises(ValueError, match=r"grad_weight must have the shape of weight, \(4, 3\), got \(3, 4\)"):
        sgd_update(weight, bias, grad_weight.t().contiguous(), grad_bias, 0.1)
    with pytest.raises(ValueError, match=r"grad_weight must have the strides of weight, \(3, 1\), got \(1, 4\)"):
        sgd_update(weight, bias, torch.randn(3, 4, device=TEST_DEVICE).t(), grad_bias, 0.1)
    with pytest.raises(ValueError, match=r"weight must be contiguous or the transpose of a contiguous matrix"):
        sgd_update(weight[:, :2], bias[:2], grad_weight[:, :2], grad_bias[:2], 0.1)
    with pytest.raises(ValueError, match="bias and grad_bias must both be tensors or both be None"):
        sgd_update(weight, bias, grad_weight, None, 0.1)
    with pytest.raises(TypeError, match="weight torch.float32, grad_weight torch.float16"):
        sgd_update(weight, bias, grad_weight.half(), grad_bias, 0.1)
    with pytest.raises(TypeError, match="weight must have dtype float32, float16, bfloat16 .* got torch.float64"):
        sgd_update(weight.double(), bias.double(), grad_weight.double(), grad_bias.double(), 0.1)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -0.1"):
        sgd_update(weight, bias, grad_weight, grad_bias, -0.1)
    on_meta = [tensor.to("meta") for tensor in (weight, bias, grad_weight, grad_bias)]
    with pytest.raises(ValueError, match="weight must be a CUDA tensor .* got device meta"):
        sgd_update(*on_meta, 0.1)


# --- compilation for real GPUs -------------------------------------------------

SGD_COMPILE_CASES = [
    (config, dtype, arch)
    for config in SGD_CONFIGS + [SGD_INTERPRETER_CONFIG]
    for dtype in ("fp32", "bf16")
    for arch in TARGETS
    if compiled_by_default(arch, dtype=dtype)
]


def _case_id(case) -> str:
    config, dtype, arch = case
    return f"{config_id(config)}-{dtype}-{target_name(arch)}"


@pytest.fixture(scope="module")
def sgd_compiled() -> dict:
    from tritonnet.kernels.sgd import sgd_update_kernel

    return compile_cases(
        SGD_COMPILE_CASES,
        _case_id,
        lambda config, dtype, arch: compile_job(sgd_update_kernel, arch, dtype=dtype, config=config, floats=("lr",)),
    )


@pytest.mark.parametrize("case", SGD_COMPILE_CASES, ids=_case_id)
def test_sgd_kernel_compiles_without_spills(sgd_compiled, case, record_property):
    assert_compiled_without_spills(sgd_compiled[_case_id(case)], record_property)
