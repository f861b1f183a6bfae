"""`linear_backward` on every backend against float64 torch.autograd, and the
backward kernels compiled for real GPUs.

The oracle differentiates the linear map `z = x @ weight + bias` in float64 with
torch.autograd, fed the upstream gradient `dz = grad_output * y * (1 - y)` for the
sigmoid. `y` is the saved forward output the backend gets, rounded to its dtype,
as the contract says (the derivative is taken from the saved output); with the
exact float64 sigmoid instead, a bf16 `y` near 1 would make `1 - y` wrong by
tens of percent and no tolerance would be meaningful. The tolerance is the
rounding error bound of each gradient (test_linear_forward.assert_within_error_bound).
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from compile_check import (
    DOT_PRECISIONS,
    TARGETS,
    TENSOR_CORE_PRECISIONS,
    WEIGHT_UNIT_STRIDES,
    assert_compiled_without_spills,
    assert_config_compiled,
    compile_in_child,
    compile_job,
    compiled_by_default,
    config_id,
    dot_precisions_on,
    target_name,
    vendor,
)
from conftest import TEST_DEVICE, requires_triton, triton_runnable
from shapes import GROUPED_ORDER_SHAPE, LINEAR_SHAPES
from test_linear_forward import (  # noqa: F401 (alignment_classes: a fixture)
    ACTIVATIONS,
    ALIGNED_MODES,
    TF32_SKIP,
    alignment_classes,
    assert_within_error_bound,
    forward_oracle,
    given_random_layers,
    make_linear_inputs,
    matmul_precision,
    skip_bf16_in_interpreter,
)
from tritonnet.backend import ops_for, use_backend

# Unit roundoff of the operand dtype: dz is rounded to it before each dot.
OPERAND_UNIT = {torch.float32: 0.0, torch.float16: 2.0**-11, torch.bfloat16: 2.0**-8}


def make_backward_inputs(rows, in_features, out_features, activation, dtype=torch.float32, **layout):
    """grad_output, x, weight and the saved output (the forward's, in dtype; None
    without activation), with `layout` as in make_linear_inputs."""
    x, weight, bias = make_linear_inputs(rows, in_features, out_features, dtype=dtype, **layout)
    output = None
    if activation == "sigmoid":
        output = forward_oracle(x, weight, bias, activation)[0].to(dtype)
    grad_output = torch.randn(rows, out_features, device=TEST_DEVICE, dtype=dtype)
    return grad_output, x, weight, output


def backward_oracle(grad_output, x, weight, output, activation, scale):
    """Gradients in float64 by autograd, and the magnitudes of their sums."""
    grad_output64 = grad_output.double()
    if activation == "sigmoid":
        y = output.double()
        dz = grad_output64 * y * (1.0 - y)
    else:
        dz = grad_output64
    x64 = x.double().requires_grad_()
    weight64 = weight.double().requires_grad_()
    bias64 = torch.zeros(weight.shape[1], dtype=torch.float64, device=x.device, requires_grad=True)
    torch.addmm(bias64, x64, weight64).backward(dz)
    gradients = (x64.grad, weight64.grad * scale, bias64.grad * scale)
    magnitudes = (
        dz.abs() @ weight64.detach().abs().t(),
        x64.detach().abs().t() @ dz.abs() * abs(scale),
        dz.abs().sum(dim=0) * abs(scale),
    )
    return gradients, magnitudes


def check_backward(
    grad_output,
    x,
    weight,
    output,
    activation,
    scale,
    need_grad_input=True,
    need_grad_bias=True,
    **out_buffers,
):
    result = ops_for(grad_output, x, weight).linear_backward(
        grad_output,
        x,
        weight,
        output,
        activation,
        scale,
        need_grad_input=need_grad_input,
        need_grad_bias=need_grad_bias,
        **out_buffers,
    )
    (grad_input, grad_weight, grad_bias), (input_sum, weight_sum, bias_sum) = backward_oracle(
        grad_output, x, weight, output, activation, scale
    )
    rows, in_features = x.shape
    operand_unit = OPERAND_UNIT[x.dtype]
    if need_grad_input:
        assert result[0].dtype == x.dtype
        assert_within_error_bound(result[0], grad_input, input_sum, weight.shape[1], operand_unit)
    else:
        assert result[0] is None
    assert result[1].dtype == weight.dtype
    assert_within_error_bound(result[1], grad_weight, weight_sum, rows, operand_unit)
    if need_grad_bias:
        assert result[2].dtype == weight.dtype
        assert_within_error_bound(result[2], grad_bias, bias_sum, rows)
    else:
        assert result[2] is None
    return result


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("rows,in_features,out_features", LINEAR_SHAPES)
def test_linear_backward_matches_oracle(backend, rows, in_features, out_features, activation):
    inputs = make_backward_inputs(rows, in_features, out_features, activation)
    check_backward(*inputs, activation, scale=1.0 / rows)


@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize(
    "weight_transposed,x_strided", [(True, False), (False, True)], ids=["weight.t()", "strided-x"]
)
def test_linear_backward_layouts(backend, weight_transposed, x_strided, activation):
    inputs = make_backward_inputs(
        17, 31, 19, activation, weight_transposed=weight_transposed, x_strided=x_strided
    )
    check_backward(*inputs, activation, scale=0.25)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_backward_strided_gradient_and_output(backend, activation):
    grad_output, x, weight, output = make_backward_inputs(17, 31, 19, activation)
    # Transposed copies: grad_output and output with strides (1, rows).
    grad_output = grad_output.t().contiguous().t()
    if output is not None:
        output = output.t().contiguous().t()
    check_backward(grad_output, x, weight, output, activation, scale=0.25)


@pytest.mark.parametrize("need_grad_bias", [True, False], ids=["grad-bias", "no-grad-bias"])
@pytest.mark.parametrize("need_grad_input", [True, False], ids=["grad-input", "no-grad-input"])
def test_linear_backward_skips_what_is_not_needed(backend, need_grad_input, need_grad_bias):
    inputs = make_backward_inputs(33, 45, 19, "sigmoid")
    check_backward(
        *inputs, "sigmoid", 0.5, need_grad_input=need_grad_input, need_grad_bias=need_grad_bias
    )


@pytest.mark.parametrize("scale", [1.0, 1 / 64, 1 / 784, 0.0, -3.0])
def test_linear_backward_scale(backend, scale):
    # The gradient normalizations (none, batch, features), zero and a negative.
    check_backward(*make_backward_inputs(64, 40, 10, "sigmoid"), "sigmoid", scale)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_backward_half_precision(backend, dtype, activation):
    # Looser than fp32 through the bound's operand term (dz rounded to the dtype
    # before each dot, 2^-11 or 2^-8 relative) and its output term (one rounding
    # of each gradient to the dtype).
    skip_bf16_in_interpreter(dtype, backend)
    inputs = make_backward_inputs(129, 257, 33, activation, dtype=dtype)
    check_backward(*inputs, activation, scale=1.0 / 129)


def test_linear_backward_grouped_order_covers_every_tile(backend):
    # dx has several groups of row blocks and several column blocks, dw several
    # tile rows, of which only the first computes grad_bias.
    rows, out_features, in_features = GROUPED_ORDER_SHAPE
    check_backward(*make_backward_inputs(rows, in_features, out_features, "sigmoid"), "sigmoid", 1.0 / rows)


@pytest.mark.parametrize("activation", ACTIVATIONS)
def test_linear_backward_writes_into_out_buffers(backend, activation):
    grad_output, x, weight, output = make_backward_inputs(17, 31, 19, activation)
    # Slices of NaN-filled buffers, grad_weight as a transposed view: every entry
    # must be written, none read, nothing outside the views touched.
    input_buffer = torch.full((17, 40), float("nan"), device=TEST_DEVICE)
    weight_buffer = torch.full((19, 31), float("nan"), device=TEST_DEVICE)
    bias_buffer = torch.full((40,), float("nan"), device=TEST_DEVICE)
    buffers = dict(
        out_grad_input=input_buffer[:, 5:36],
        out_grad_weight=weight_buffer.t(),
        out_grad_bias=bias_buffer[::2][:19],
    )
    result = check_backward(grad_output, x, weight, output, activation, 0.5, **buffers)
    assert all(got is given for got, given in zip(result, buffers.values()))
    assert input_buffer[:, :5].isnan().all() and input_buffer[:, 36:].isnan().all()
    assert bias_buffer[1::2].isnan().all() and bias_buffer[38:].isnan().all()


def test_linear_backward_empty_batch(backend):
    grad_output, x, weight, output = make_backward_inputs(0, 31, 19, "sigmoid")
    buffers = dict(
        out_grad_weight=torch.full((31, 19), float("nan"), device=TEST_DEVICE),
        out_grad_bias=torch.full((19,), float("nan"), device=TEST_DEVICE),
    )
    grad_input, grad_weight, grad_bias = ops_for(x).linear_backward(
        grad_output, x, weight, output, "sigmoid", 1.0, **buffers
    )
    assert grad_input.shape == (0, 31)
    # A sum over no rows is zero, whatever the buffers held.
    assert grad_weight is buffers["out_grad_weight"] and (grad_weight == 0).all()
    assert grad_bias is buffers["out_grad_bias"] and (grad_bias == 0).all()


@pytest.mark.parametrize("in_features,out_features", [(0, 3), (4, 0)])
def test_linear_backward_without_features(backend, in_features, out_features):
    # No inputs: grad_weight is empty, but grad_bias still sums dz. No outputs:
    # dz is empty, so grad_input is zero.
    grad_output = torch.randn(5, out_features, device=TEST_DEVICE)
    x = torch.randn(5, in_features, device=TEST_DEVICE)
    weight = torch.randn(in_features, out_features, device=TEST_DEVICE)
    output = torch.rand(5, out_features, device=TEST_DEVICE)
    check_backward(grad_output, x, weight, output, "sigmoid", 0.5)


@given_random_layers(
    need_grad_input=st.booleans(),
    need_grad_bias=st.booleans(),
    scale=st.sampled_from([1.0, 0.5, 1 / 3]),
)
def test_linear_backward_random_shapes(
    backend,
    rows,
    in_features,
    out_features,
    activation,
    weight_transposed,
    need_grad_input,
    need_grad_bias,
    scale,
):
    # `backend` only selects the backend for the test; it holds no per-example state.
    inputs = make_backward_inputs(
        rows, in_features, out_features, activation, weight_transposed=weight_transposed
    )
    check_backward(
        *inputs, activation, scale, need_grad_input=need_grad_input, need_grad_bias=need_grad_bias
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason=TF32_SKIP)
def test_linear_backward_follows_tf32_setting(backend):
    inputs = make_backward_inputs(129, 257, 33, "sigmoid")
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("high")
    try:
        result = ops_for(inputs[1]).linear_backward(*inputs, "sigmoid", 0.5)
    finally:
        torch.set_float32_matmul_precision(previous)
    (grad_input, grad_weight, grad_bias), (input_sum, weight_sum, bias_sum) = backward_oracle(
        *inputs, "sigmoid", 0.5
    )
    # TF32 keeps 10 mantissa bits of each operand: each product may be off by
    # 2 * 2^-10 = 2^-9. grad_bias is summed in fp32 outside the dot.
    assert_within_error_bound(result[0], grad_input, input_sum, 33, operand_unit=2.0**-9)
    assert_within_error_bound(result[1], grad_weight, weight_sum, 129, operand_unit=2.0**-9)
    assert_within_error_bound(result[2], grad_bias, bias_sum, 129)


@requires_triton
def test_linear_backward_rejects_bad_arguments():
    from tritonnet.triton_backend import linear_backward

    grad_output, x, weight, output = make_backward_inputs(4, 6, 5, "sigmoid")
    with pytest.raises(ValueError, match=r"output \(the saved forward output\) is required"):
        linear_backward(grad_output, x, weight, None, "sigmoid")
    with pytest.raises(ValueError, match=r"grad_output must have 5 columns, got shape \(4, 6\)"):
        linear_backward(x, x, weight, output, "sigmoid")
    with pytest.raises(ValueError, match=r"grad_output must have 4 rows, got shape \(3, 5\)"):
        linear_backward(grad_output[:3], x, weight, output, "sigmoid")
    with pytest.raises(ValueError, match=r"output must have 4 rows, got shape \(3, 5\)"):
        linear_backward(grad_output, x, weight, output[:3], "sigmoid")
    with pytest.raises(TypeError, match="scale must be a real number, got str"):
        linear_backward(grad_output, x, weight, output, "sigmoid", "batch")
    with pytest.raises(ValueError, match="scale must be finite, got nan"):
        linear_backward(grad_output, x, weight, output, "sigmoid", float("nan"))
    with pytest.raises(TypeError, match="grad_output torch.float16, x torch.float32"):
        linear_backward(grad_output.half(), x, weight, output, "sigmoid")
    with pytest.raises(ValueError, match=r"out_grad_weight must have 5 columns, got shape \(6, 4\)"):
        linear_backward(
            grad_output, x, weight, output, "sigmoid", out_grad_weight=torch.empty(6, 4, device=TEST_DEVICE)
        )
    with pytest.raises(ValueError, match=r"out_grad_bias must have shape \(5,\), got \(6,\)"):
        linear_backward(
            grad_output, x, weight, output, "sigmoid", out_grad_bias=torch.empty(6, device=TEST_DEVICE)
        )
    on_meta = [tensor.to("meta") for tensor in (grad_output, x, weight, output)]
    with pytest.raises(ValueError, match="grad_output must be a CUDA tensor .* got device meta"):
        linear_backward(*on_meta, "sigmoid")


@requires_triton
@pytest.mark.parametrize("mode", ALIGNED_MODES)
def test_linear_backward_aligned_operands(alignment_classes, mode):
    """Sizes and strides multiples of 16: both gradient kernels take the
    tensor-core configs."""
    dtype, precision, operand_unit = ALIGNED_MODES[mode]
    inputs = make_backward_inputs(96, 64, 48, "sigmoid", dtype=dtype)
    with matmul_precision(precision):
        result = ops_for(inputs[1]).linear_backward(*inputs, "sigmoid", 1.0 / 96)
    assert alignment_classes == ["aligned", "aligned"]
    (grad_input, grad_weight, grad_bias), (input_sum, weight_sum, bias_sum) = backward_oracle(
        *inputs, "sigmoid", 1.0 / 96
    )
    operand_unit += OPERAND_UNIT[dtype]
    assert_within_error_bound(result[0], grad_input, input_sum, 48, operand_unit)
    assert_within_error_bound(result[1], grad_weight, weight_sum, 96, operand_unit)
    assert_within_error_bound(result[2], grad_bias, bias_sum, 96)


# --- split-K of the weight gradient ------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    rows=st.integers(0, 1 << 16),
    in_features=st.integers(0, 2048),
    out_features=st.integers(0, 2048),
    processors=st.integers(1, 200),
)
def test_weight_gradient_splits_cover_the_batch(rows, in_features, out_features, processors):
    """Every row in exactly one split, no split empty, each split whole steps of
    every BLOCK_M and at least SPLIT_MIN_ROWS long."""
    from tritonnet.kernels import linear_backward as kernels

    splits, rows_per_split = kernels.weight_gradient_splits(rows, in_features, out_features, processors)
    if splits == 1:
        assert rows_per_split == rows
        return
    assert rows_per_split % kernels.SPLIT_ROWS_MULTIPLE == 0
    assert rows_per_split >= kernels.SPLIT_MIN_ROWS
    assert (splits - 1) * rows_per_split < rows <= splits * rows_per_split


def test_weight_gradient_splits_at_the_exercise_shapes():
    """On an H200 (132 SMs) the first layer's gradient splits at large batches
    only, and the 10-class layer's, whose one tile leaves most SMs idle, most."""
    from tritonnet.kernels import linear_backward as kernels

    def splits(rows, in_features, out_features):
        return kernels.weight_gradient_splits(rows, in_features, out_features, 132)[0]

    assert splits(64, 784, 512) == splits(512, 784, 512) == 1
    assert 1 < splits(4096, 784, 512) <= splits(16384, 784, 512) <= 132 // 28 + 1
    assert splits(16384, 128, 10) > splits(16384, 784, 512)


@pytest.fixture
def forced_split(monkeypatch):
    """Splits whose rows are multiples of 16 (whole BLOCK_M steps of no config) at
    the tests' small shapes, in the interpreter or on a GPU; yields the split
    count the launcher takes for a shape."""
    from tritonnet.kernels import linear_backward as kernels
    from tritonnet.triton_backend import plans
    from tritonnet.triton_backend.weight_gradient import processors

    monkeypatch.setattr(kernels, "SPLIT_MIN_ROWS", 16)
    monkeypatch.setattr(kernels, "SPLIT_ROWS_MULTIPLE", 16)
    plans.clear_caches()  # a plan splits or not once per launch key

    def split_count(rows, in_features, out_features):
        return kernels.weight_gradient_splits(rows, in_features, out_features, processors(torch.device(TEST_DEVICE)))[0]

    with use_backend("triton"):
        yield split_count
    plans.clear_caches()


@requires_triton
@pytest.mark.parametrize("need_grad_bias", [True, False], ids=["grad-bias", "no-grad-bias"])
@pytest.mark.parametrize("activation", ACTIVATIONS)
@pytest.mark.parametrize("weight_transposed", [False, True], ids=["weight", "weight.t()"])
def test_linear_backward_split_matches_oracle(forced_split, weight_transposed, activation, need_grad_bias):
    # 129 rows: 5 splits of 32 in the interpreter, the last of one row.
    assert forced_split(129, 31, 19) > 2
    inputs = make_backward_inputs(129, 31, 19, activation, weight_transposed=weight_transposed)
    check_backward(*inputs, activation, 1.0 / 129, need_grad_bias=need_grad_bias)


@requires_triton
def test_linear_backward_split_writes_into_out_buffers(forced_split):
    grad_output, x, weight, output = make_backward_inputs(100, 31, 19, "sigmoid")
    assert forced_split(100, 31, 19) > 2
    # NaN-filled views with odd strides: the reduction pass writes every entry.
    weight_buffer = torch.full((19, 31), float("nan"), device=TEST_DEVICE)
    bias_buffer = torch.full((40,), float("nan"), device=TEST_DEVICE)
    buffers = dict(out_grad_weight=weight_buffer.t(), out_grad_bias=bias_buffer[::2][:19])
    result = check_backward(grad_output, x, weight, output, "sigmoid", 0.5, **buffers)
    assert result[1] is buffers["out_grad_weight"] and result[2] is buffers["out_grad_bias"]
    assert bias_buffer[1::2].isnan().all() and bias_buffer[38:].isnan().all()


@requires_triton
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["fp16", "bf16"])
def test_linear_backward_split_half_precision(forced_split, dtype):
    # Aligned shapes: the fp16 and bf16 dots take the tensor-core configs.
    skip_bf16_in_interpreter(dtype, "triton")
    assert forced_split(96, 32, 48) > 2
    check_backward(*make_backward_inputs(96, 32, 48, "sigmoid", dtype=dtype), "sigmoid", 1.0 / 96)


@requires_triton
def test_linear_backward_split_is_deterministic(forced_split):
    """The partial sums are added in a fixed order: the same bits on every run."""
    inputs = make_backward_inputs(129, 31, 19, "sigmoid")
    first = ops_for(inputs[1]).linear_backward(*inputs, "sigmoid", 0.5)
    second = ops_for(inputs[1]).linear_backward(*inputs, "sigmoid", 0.5)
    assert all(torch.equal(a, b) for a, b in zip(first, second))


# --- compilation for real GPUs -------------------------------------------------

# The inner strides that are 1 for contiguous tensors, compiled as that constant;
# the input kernel also reads w, in either layout (WEIGHT_UNIT_STRIDES), the
# weight kernel does not read it.
UNIT_STRIDES = {
    "linear_backward_input_kernel": ("stride_dyn", "stride_yn", "stride_dxk"),
    "linear_backward_weight_kernel": ("stride_xk", "stride_dyn", "stride_yn", "stride_dwn", "stride_db"),
}
# The weight kernel's "split" build writes fp32 partial sums (see weight_gradient.py):
# for fp16 and bf16 operands a build of its own. Its "sgd" build takes the SGD
# step on the weight and bias in its epilogue (linear_backward_sgd, unsplit).
LAYOUTS = {
    "linear_backward_input_kernel": tuple(WEIGHT_UNIT_STRIDES),
    "linear_backward_weight_kernel": (None, "split", "sgd"),
}
# The kernels' config lists by vendor: the input gradient's differ on AMD.
CONFIG_LISTS = {
    "linear_backward_input_kernel": {"cuda": "LINEAR_BACKWARD_INPUT_CONFIGS", "hip": "LINEAR_BACKWARD_INPUT_AMD_CONFIGS"},
    "linear_backward_weight_kernel": {"cuda": "LINEAR_BACKWARD_WEIGHT_CONFIGS", "hip": "LINEAR_BACKWARD_WEIGHT_CONFIGS"},
}

# Sigmoid on (and grad_bias for kernel 2): the variants with the most work.
CONSTEXPRS = {
    "linear_backward_input_kernel": {"ACTIVATION": "sigmoid"},
    "linear_backward_weight_kernel": {"ACTIVATION": "sigmoid", "HAS_BIAS": True},
}
# Kernels 2 and 3 store the gradients, or take the SGD step where they would be stored.
EPILOGUES = {None: "gradient", "split": "gradient", "sgd": "sgd"}


def _backward_cases() -> list:
    """(kernel name, alignment, config, weight layout, dtype, precision, arch): each
    class's configs for each target at the precisions it serves, unaligned ones at
    all of them; on AMD the AMD lists, and a sample unless all are asked for."""
    from tritonnet.kernels import linear_backward as kernels
    from tritonnet.kernels.tiling import ALIGNED, UNALIGNED

    precisions = {ALIGNED: TENSOR_CORE_PRECISIONS, UNALIGNED: DOT_PRECISIONS}
    return [
        (kernel, alignment, config, layout, dtype, precision, arch)
        for kernel, list_names in CONFIG_LISTS.items()
        for arch in TARGETS
        for alignment, configs in getattr(kernels, list_names[vendor(arch)]).items()
        for config in configs
        for layout in LAYOUTS[kernel]
        for dtype, precision in dot_precisions_on(arch, precisions[alignment])
        if layout != "split" or dtype != "fp32"
        if compiled_by_default(arch, alignment=alignment, layout=layout, dtype=dtype, precision=precision)
    ]


BACKWARD_COMPILE_CASES = _backward_cases() if triton_runnable() else []

# The split-K reduction (kernel 3) into fp32 and bf16 gradients, or stepping
# fp32 and bf16 parameters.
REDUCE_COMPILE_CASES = [
    (epilogue, dtype, arch)
    for epilogue in ("gradient", "sgd")
    for dtype in ("fp32", "bf16")
    for arch in TARGETS
    if compiled_by_default(arch, dtype=dtype)
]


def reduce_case_id(epilogue, dtype, arch) -> str:
    return f"reduce-{epilogue}-{dtype}-{target_name(arch)}"


def backward_case_id(case) -> str:
    kernel, alignment, config, layout, dtype, precision, arch = case
    gradient = kernel.removeprefix("linear_backward_").removesuffix("_kernel")
    weight = f"-{layout}" if layout else ""
    return f"{gradient}-{alignment}-{config_id(config)}{weight}-{precision}-{dtype}-{target_name(arch)}"


@pytest.fixture(scope="module")
def backward_compiled() -> dict:
    from tritonnet.kernels import linear_backward as kernels

    jobs = {}
    for case in BACKWARD_COMPILE_CASES:
        kernel, alignment, config, layout, dtype, precision, arch = case
        weight_stride = (WEIGHT_UNIT_STRIDES[layout],) if layout in WEIGHT_UNIT_STRIDES else ()
        epilogue = {"EPILOGUE": EPILOGUES[layout]} if layout in EPILOGUES else {}
        jobs[backward_case_id(case)] = compile_job(
            getattr(kernels, kernel),
            arch,
            dtype=dtype,
            pointers={"dw_ptr": "*fp32", "db_ptr": "*fp32"} if layout == "split" else None,
            config=config,
            constexprs={**CONSTEXPRS[kernel], **epilogue, "INPUT_PRECISION": precision},
            unit_strides=UNIT_STRIDES[kernel] + weight_stride,
            floats=("scale", "lr"),
            aligned=alignment == "aligned",
            count_instructions=alignment == "aligned",
        )
    for epilogue, dtype, arch in REDUCE_COMPILE_CASES:
        jobs[reduce_case_id(epilogue, dtype, arch)] = compile_job(
            kernels.linear_weight_gradient_reduce_kernel,
            arch,
            dtype=dtype,
            pointers={"partial_ptr": "*fp32"},
            config=kernels.WEIGHT_GRADIENT_REDUCE_CONFIG,
            constexprs={"HAS_BIAS": True, "EPILOGUE": epilogue},
            unit_strides=("stride_dwn", "stride_db"),
            floats=("scale", "lr"),
        )
    return compile_in_child(jobs)


@requires_triton
@pytest.mark.parametrize("epilogue,dtype,arch", REDUCE_COMPILE_CASES)
def test_weight_gradient_reduce_kernel_compiles_without_spills(
    backward_compiled, epilogue, dtype, arch, record_property
):
    assert_compiled_without_spills(backward_compiled[reduce_case_id(epilogue, dtype, arch)], record_property)


@requires_triton
@pytest.mark.parametrize("case", BACKWARD_COMPILE_CASES, ids=backward_case_id)
def test_linear_backward_kernels_compile_without_spills(backward_compiled, case, record_property):
    assert_config_compiled(backward_compiled[backward_case_id(case)], case[1], case[-1], record_property)


@requires_triton
def test_linear_backward_fixed_configs_are_compiled():
    """Each class's fixed config (interpreter, TRITONNET_AUTOTUNE=0) is one of its
    list, so the compile tests above cover it."""
    from tritonnet.kernels import linear_backward as kernels

    for fixed, listed in (
        (kernels.LINEAR_BACKWARD_INPUT_FIXED_CONFIGS, kernels.LINEAR_BACKWARD_INPUT_CONFIGS),
        (kernels.LINEAR_BACKWARD_INPUT_AMD_FIXED_CONFIGS, kernels.LINEAR_BACKWARD_INPUT_AMD_CONFIGS),
        (kernels.LINEAR_BACKWARD_WEIGHT_FIXED_CONFIGS, kernels.LINEAR_BACKWARD_WEIGHT_CONFIGS),
    ):
        for alignment, config in fixed.items():
            assert any(config is candidate for candidate in listed[alignment])
