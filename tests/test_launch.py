"""The launch path (`tritonnet.triton_backend.launch`, `plans`, `tuned`): a plan per
launch key made once, a config chosen once (fixed, tuned table or autotuner), the
compiled kernel launched directly from the second call, and Triton's fp-fusion
choice made explicitly.

On the CPU the interpreter runs the kernels and compiles nothing, so the direct
path runs here against a stand-in compiled kernel whose launcher runs the real
kernel in the interpreter: the arguments it is handed must be the kernel's own,
in order, or the result is wrong. tests/test_gpu.py checks it on a GPU.
"""

from __future__ import annotations

import warnings

import pytest
import torch

from conftest import TEST_DEVICE, requires_triton
from tritonnet import reference

pytestmark = requires_triton

FP32_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture(autouse=True)
def fresh_caches(monkeypatch):
    """No plan, launch or table from another test; fixed configs, as in the
    interpreter, unless a test chooses otherwise (autotuning is test_gpu.py's)."""
    from tritonnet.triton_backend import plans

    monkeypatch.setenv("TRITONNET_AUTOTUNE", "0")
    plans.clear_caches()
    yield
    plans.clear_caches()


def _sigmoid_plans():
    from tritonnet.triton_backend import sigmoid

    return sigmoid._forward_plans


def test_a_plan_is_made_once_per_launch_key(monkeypatch):
    from tritonnet.triton_backend import sigmoid_forward

    plans = _sigmoid_plans()
    builds = []
    build = plans.build
    monkeypatch.setattr(plans, "build", lambda *arguments: builds.append(arguments) or build(*arguments))
    x = torch.randn(5, 24, device=TEST_DEVICE)
    for _ in range(3):
        torch.testing.assert_close(sigmoid_forward(x), torch.sigmoid(x), **FP32_TOLERANCE)
    sigmoid_forward(torch.randn(5, 24, device=TEST_DEVICE))  # same key: new values, same layout
    assert len(builds) == 1
    # Each of these differs from x in one thing the key holds: shape, strides,
    # 16-byte alignment (4 bytes further on), dtype.
    wider = torch.randn(5, 32, device=TEST_DEVICE)
    transposed = torch.randn(24, 5, device=TEST_DEVICE).t()
    shifted = torch.randn(5 * 24 + 1, device=TEST_DEVICE)[1:].view(5, 24)
    for other in (wider, transposed, shifted, x.half()):
        torch.testing.assert_close(sigmoid_forward(other), torch.sigmoid(other), **FP32_TOLERANCE)
    assert len(builds) == 5


def test_a_cached_key_still_checks_what_can_differ():
    from tritonnet.triton_backend import linear_backward, sgd_update

    x, grad = torch.randn(4, 8, device=TEST_DEVICE), torch.randn(4, 3, device=TEST_DEVICE)
    weight, bias = torch.randn(8, 3, device=TEST_DEVICE), torch.randn(3, device=TEST_DEVICE)
    _, grad_weight, grad_bias = linear_backward(grad, x, weight, scale=0.5)
    with pytest.raises(ValueError, match="scale must be finite, got nan"):
        linear_backward(grad, x, weight, scale=float("nan"))
    sgd_update(weight, bias, grad_weight, grad_bias, 0.1)
    with pytest.raises(ValueError, match="lr must be a finite number >= 0, got -0.1"):
        sgd_update(weight, bias, grad_weight, grad_bias, -0.1)
    with pytest.raises(TypeError, match="weight must be a torch.Tensor, got list"):
        sgd_update([1.0], bias, grad_weight, grad_bias, 0.1)


def test_the_config_is_chosen_once(monkeypatch):
    from tritonnet.triton_backend import launch, sigmoid_forward

    choices = []
    choose = launch._choose_config
    monkeypatch.setattr(launch, "_choose_config", lambda *a: choices.append(a) or choose(*a))
    x = torch.randn(3, 40, device=TEST_DEVICE)
    for _ in range(3):
        sigmoid_forward(x)
    assert len(choices) == 1
    plan = _sigmoid_plans().entries[next(iter(_sigmoid_plans().entries))]
    assert plan.launch.source == "fixed" and plan.launch.grid == (1, 1, 1)
    # The shape class rounds up to powers of two; 3 rows are no multiple of 16.
    assert plan.launch.tuning_key == "4x64 float32 unaligned"


def test_a_kernel_may_offer_configs_per_alignment_class():
    """Tiles valid only on aligned operands go in a list of their own: the launch
    picks by the operands' alignment, which its key holds."""
    import triton

    from tritonnet.kernels import sigmoid as kernels
    from tritonnet.triton_backend import sigmoid
    from tritonnet.triton_backend.launch import ALIGNED, UNALIGNED, Kernel, Launch

    wide, narrow = triton.Config({"BLOCK_M": 16, "BLOCK_N": 64}), triton.Config({"BLOCK_M": 16, "BLOCK_N": 16})
    kernel = Kernel(
        kernels.sigmoid_forward_kernel,
        sigmoid._tiles,
        autotuned=kernels.sigmoid_forward_autotuned,
        fixed={ALIGNED: wide, UNALIGNED: narrow},
    )
    aligned = torch.randn(32, 48, device=TEST_DEVICE)
    four_bytes_on = torch.randn(32 * 48 + 1, device=TEST_DEVICE)[1:].view(32, 48)
    odd_stride = torch.randn(32, 49, device=TEST_DEVICE)[:, :48]
    for x, config, alignment in [(aligned, wide, ALIGNED), (four_bytes_on, narrow, UNALIGNED), (odd_stride, narrow, UNALIGNED)]:
        out = torch.empty(32, 48, device=TEST_DEVICE)
        launch = Launch(kernel)
        launch(x, out, 32, 48, *x.stride(), *out.stride())
        assert launch.config is config and launch.tuning_key.endswith(alignment)
        torch.testing.assert_close(out, torch.sigmoid(x), **FP32_TOLERANCE)


class StandInCompiledKernel:
    """What Triton's launch returns on a GPU, as far as the direct path uses it;
    its launcher runs the kernel in the interpreter from the arguments it gets."""

    function = "function handle"
    packed_metadata = "packed metadata"

    def __init__(self, interpreted_run, refuse: bool = False):
        self.interpreted_run = interpreted_run
        self.refuse = refuse
        self.launches = []

    def launch_metadata(self, grid, stream, *arguments):
        return "launch metadata"

    def run(self, grid_x, grid_y, grid_z, stream, function, metadata, launch_metadata, enter, leave, *arguments):
        if self.refuse:
            raise TypeError("function takes exactly 12 arguments")
        self.launches.append((stream, function, metadata, launch_metadata))
        self.interpreted_run(*arguments, grid=(grid_x, grid_y, grid_z), warmup=False)


class StandInDriver:
    class active:
        get_current_device = staticmethod(lambda: None)  # a CPU tensor's device index
        get_current_stream = staticmethod(lambda device: "stream")


stand_in = pytest.mark.skipif(
    TEST_DEVICE == "cuda",
    reason="stands in for a GPU's compiled kernel; on a GPU the real one runs "
    "(test_every_operation_on_the_gpu_call_after_call)",
)


def _stand_in_gpu(monkeypatch, refuse: bool = False) -> tuple[StandInCompiledKernel, list]:
    """Triton's launch of the sigmoid kernel returns a stand-in compiled kernel."""
    from tritonnet.kernels.sigmoid import sigmoid_forward_kernel
    from tritonnet.triton_backend import launch

    interpreted_run = sigmoid_forward_kernel.run
    compiled = StandInCompiledKernel(interpreted_run, refuse)
    through_triton = []

    def triton_run(*args, **kwargs):
        through_triton.append(kwargs)
        interpreted_run(*args, **kwargs)
        return compiled

    monkeypatch.setattr(sigmoid_forward_kernel, "run", triton_run)
    monkeypatch.setattr(launch, "driver", StandInDriver)
    monkeypatch.setattr(launch, "_direct_failed", False)
    return compiled, through_triton


@stand_in
def test_later_calls_launch_the_compiled_kernel_directly(monkeypatch):
    from tritonnet.triton_backend import sigmoid_forward

    compiled, through_triton = _stand_in_gpu(monkeypatch)
    x = torch.randn(70, 130, device=TEST_DEVICE)  # 3 x 3 tiles, partial at both edges
    for _ in range(3):
        out = torch.full_like(x, float("nan"))
        sigmoid_forward(x, out=out)
        torch.testing.assert_close(out, torch.sigmoid(x), **FP32_TOLERANCE)
    assert len(through_triton) == 1 and through_triton[0]["enable_fp_fusion"] is True
    # No profiling hook registered: no launch metadata built.
    assert compiled.launches == [("stream", "function handle", "packed metadata", None)] * 2


@stand_in
def test_a_refused_direct_launch_falls_back_once_with_a_warning(monkeypatch):
    from tritonnet.triton_backend import sigmoid_forward

    compiled, through_triton = _stand_in_gpu(monkeypatch, refuse=True)
    x = torch.randn(6, 50, device=TEST_DEVICE)
    sigmoid_forward(x)
    with pytest.warns(RuntimeWarning, match="launching compiled kernels directly failed"):
        torch.testing.assert_close(sigmoid_forward(x), torch.sigmoid(x), **FP32_TOLERANCE)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch.testing.assert_close(sigmoid_forward(x), torch.sigmoid(x), **FP32_TOLERANCE)
    assert len(through_triton) == 3


@stand_in
def test_fast_launch_off_keeps_tritons_launch(monkeypatch):
    from tritonnet.triton_backend import sigmoid_forward

    monkeypatch.setenv("TRITONNET_FAST_LAUNCH", "0")
    compiled, through_triton = _stand_in_gpu(monkeypatch)
    x = torch.randn(6, 50, device=TEST_DEVICE)
    for _ in range(3):
        torch.testing.assert_close(sigmoid_forward(x), torch.sigmoid(x), **FP32_TOLERANCE)
    assert len(through_triton) == 3 and compiled.launches == []


# --- the tuned table -----------------------------------------------------------------

FAKE_GPU = "Fake GPU 9000"


@pytest.fixture
def on_a_fake_gpu(monkeypatch, tmp_path):
    """Config choice as on a GPU named FAKE_GPU whose table lives in tmp_path."""
    from tritonnet.triton_backend import launch, tuned

    monkeypatch.setattr(tuned, "TUNED_DIR", tmp_path)
    monkeypatch.setattr(tuned, "device_name", lambda device: FAKE_GPU)
    monkeypatch.setattr(launch, "fixed_configs", lambda: False)
    return tmp_path


def _forbid_autotuning(monkeypatch):
    from triton.runtime.autotuner import Autotuner

    def autotune(self, *args, **kwargs):
        raise AssertionError("the autotuner ran")

    monkeypatch.setattr(Autotuner, "run", autotune)


def _linear_case():
    x = torch.randn(8, 16, device=TEST_DEVICE)
    weight, bias = torch.randn(16, 8, device=TEST_DEVICE), torch.randn(8, device=TEST_DEVICE)
    return x, weight, bias, reference.linear_forward(x.double(), weight.double(), bias.double(), "sigmoid")


def _forward_launch():
    from tritonnet.triton_backend import linear

    return next(iter(linear._forward_plans.entries.values())).launch


# An fp32 "ieee" dot runs on the CUDA cores: the forward's unaligned configs.
TUNING_KEY = "8x8x16 ieee float32 unaligned"


def _table_config():
    """A candidate config of the forward kernel (at TUNING_KEY) other than its fixed one."""
    from tritonnet.kernels import linear_forward as kernels
    from tritonnet.kernels.tiling import UNALIGNED

    fixed = kernels.LINEAR_FORWARD_FIXED_CONFIGS[UNALIGNED]
    return next(c for c in kernels.LINEAR_FORWARD_CONFIGS[UNALIGNED] if c.kwargs != fixed.kwargs)


def test_a_tuned_table_hit_never_autotunes(monkeypatch, on_a_fake_gpu):
    from tritonnet.triton_backend import linear_forward, tuned

    config = _table_config()
    table = {"linear_forward_kernel": {TUNING_KEY: config}}
    tuned.save(tuned.table_path(FAKE_GPU), FAKE_GPU, {(k, key): c for k, e in table.items() for key, c in e.items()})
    _forbid_autotuning(monkeypatch)
    x, weight, bias, expected = _linear_case()
    result = linear_forward(x, weight, bias, "sigmoid")
    torch.testing.assert_close(result.double(), expected, **FP32_TOLERANCE)
    launch = _forward_launch()
    assert (launch.source, launch.config) == ("tuned", config)


def test_a_miss_autotunes_and_the_table_then_hits(monkeypatch, on_a_fake_gpu):
    from triton.runtime.autotuner import Autotuner

    from tritonnet.triton_backend import linear_forward, plans, tuned

    config = _table_config()
    tuner_runs = []

    def autotune(self, *args, grid, warmup, **kwargs):
        # The interpreter cannot time configs: this one "wins".
        tuner_runs.append(self)
        self.best_config = config
        return self.fn.run(*args, grid=grid, warmup=warmup, **kwargs, **config.all_kwargs())

    monkeypatch.setattr(Autotuner, "run", autotune)
    x, weight, bias, expected = _linear_case()
    torch.testing.assert_close(linear_forward(x, weight, bias, "sigmoid").double(), expected, **FP32_TOLERANCE)
    linear_forward(x, weight, bias, "sigmoid")
    assert len(tuner_runs) == 1 and _forward_launch().source == "autotuned"

    # What benchmarks/tune.py does with it: saved, it is the next process's hit.
    path = tuned.table_path(FAKE_GPU)
    assert tuned.save(path, FAKE_GPU, tuned.autotuned()) == 1
    plans.clear_caches()
    _forbid_autotuning(monkeypatch)
    torch.testing.assert_close(linear_forward(x, weight, bias, "sigmoid").double(), expected, **FP32_TOLERANCE)
    assert _forward_launch().source == "tuned"


def test_a_table_entry_that_is_no_candidate_is_ignored(monkeypatch, on_a_fake_gpu):
    import triton

    from tritonnet.triton_backend import linear_forward, tuned

    dropped = triton.Config({"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 16, "GROUP_M": 1}, num_warps=1, num_stages=1)
    tuned.save(tuned.table_path(FAKE_GPU), FAKE_GPU, {("linear_forward_kernel", TUNING_KEY): dropped})
    _forbid_autotuning(monkeypatch)
    x, weight, bias, _ = _linear_case()
    with pytest.raises(AssertionError, match="the autotuner ran"):
        linear_forward(x, weight, bias, "sigmoid")


def test_a_broken_table_is_ignored_with_a_warning(on_a_fake_gpu):
    from tritonnet.triton_backend import tuned

    tuned.table_path(FAKE_GPU).write_text("{not json")
    from tritonnet.kernels.linear_forward import linear_forward_autotuned
    from tritonnet.kernels.tiling import UNALIGNED

    with pytest.warns(RuntimeWarning, match="ignoring the tuned table"):
        config = tuned.lookup(FAKE_GPU, "linear_forward_kernel", TUNING_KEY, linear_forward_autotuned[UNALIGNED])
    assert config is None


# --- Triton's fp-fusion default ------------------------------------------------------


def test_kernels_compile_with_fp_fusion_chosen(monkeypatch):
    """Triton 3.9 warns when a kernel compiles with fp fusion left to its default.
    The options the launch hands Triton, parsed as its compiler parses them for a
    GPU, choose it: no warning, and fusion stays on, as it always was."""
    import triton._utils
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    from tritonnet.kernels.sigmoid import sigmoid_forward_kernel
    from tritonnet.triton_backend import sigmoid_forward

    launched = []
    run = sigmoid_forward_kernel.run
    monkeypatch.setattr(sigmoid_forward_kernel, "run", lambda *a, **k: launched.append(k) or run(*a, **k))
    monkeypatch.delenv("TRITON_DEFAULT_FP_FUSION", raising=False)
    if hasattr(triton._utils, "warn_once"):
        triton._utils.warn_once.cache_clear()  # Triton warns once per process
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sigmoid_forward(torch.randn(4, 8, device=TEST_DEVICE))
        kernel_names = set(sigmoid_forward_kernel.arg_names)
        options = {name: value for name, value in launched[0].items() if name not in kernel_names | {"grid", "warmup"}}
        parsed = make_backend(GPUTarget("cuda", 90, 32)).parse_options(options)
    assert parsed.enable_fp_fusion is True
    assert not [w for w in caught if "FP_FUSION" in str(w.message)]


# --- on a GPU --------------------------------------------------------------------------

requires_gpu = pytest.mark.skipif(
    TEST_DEVICE != "cuda", reason="compiled kernels need a CUDA GPU and TRITON_INTERPRET unset"
)


def _every_operation(rows: int):
    """(name, call, oracle) for every Triton operation on fresh CUDA tensors of one
    launch key; `call()` runs the operation, `oracle()` the reference on the same
    tensors, each returning a tuple of results."""
    from tritonnet import triton_backend

    def tensors():
        x = torch.randn(rows, 128, device="cuda")
        weight = torch.randn(512, 128, device="cuda").t() * 0.1  # nn.Linear's layout
        bias = torch.randn(512, device="cuda")
        labels = torch.randint(0, 10, (rows,), device="cuda")
        wide_labels = torch.randint(0, 100, (rows,), device="cuda")
        output = reference.linear_forward(x, weight, bias, "sigmoid")
        return x, weight, bias, labels, wide_labels, output, torch.randn_like(output)

    def cases(ops, x, weight, bias, labels, wide_labels, output, grad):
        return {
            "linear_forward": lambda: (ops.linear_forward(x, weight, bias, "sigmoid"),),
            "linear_backward": lambda: ops.linear_backward(grad, x, weight, output, "sigmoid", 0.5),
            "sigmoid": lambda: (ops.sigmoid_forward(x), ops.sigmoid_backward(x, output[:, :128].contiguous())),
            "softmax": lambda: (ops.softmax(x),),
            "cross_entropy": lambda: ops.cross_entropy(x[:, :10], labels),
            "output_layer": lambda: ops.linear_cross_entropy(x, weight[:, :10], bias[:10], labels),
            "wide_output_layer": lambda: ops.linear_cross_entropy(x, weight[:, :100], bias[:100], wide_labels),
            "sgd_update": lambda: _stepped(ops, weight.contiguous(), bias.clone(), weight.contiguous(), bias),
        }

    return tensors, lambda inputs: cases(triton_backend, *inputs), lambda inputs: cases(reference, *inputs)


@requires_gpu
@pytest.mark.parametrize("fast", ["1", "0"], ids=["direct", "through-triton"])
def test_every_operation_on_the_gpu_call_after_call(monkeypatch, fast):
    """Three calls of one key (the first through Triton, the second the first
    direct one, the third the steady state), new values each time, on a side
    stream too: each matches the reference, and no call warns."""
    from tritonnet.triton_backend import plans

    monkeypatch.setenv("TRITONNET_FAST_LAUNCH", fast)
    tensors, triton_cases, reference_cases = _every_operation(rows=96)
    side_stream = torch.cuda.Stream()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for call in range(4):
            inputs = tensors()
            side_stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side_stream if call == 3 else torch.cuda.current_stream()):
                results = {name: case() for name, case in triton_cases(inputs).items()}
            torch.cuda.synchronize()
            for name, case in reference_cases(inputs).items():
                for got, expected in zip(results[name], case()):
                    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4, msg=f"{name}, call {call}")
    launches = [launch for ops in plans._ALL_PLANS for plan in ops.entries.values() for launch in _launches(plan)]
    assert launches and all((launch.compiled is not None) == (fast == "1") for launch in launches)


def _stepped(ops, weight, bias, grad_weight, grad_bias):
    ops.sgd_update(weight, bias, grad_weight, grad_bias, 0.1)
    return weight, bias


def _launches(plan):
    for value in vars(plan).values():
        if hasattr(value, "grid") and hasattr(value, "compiled"):
            yield value
        elif hasattr(value, "cross_entropy"):  # the wide output layer's two steps
            yield value.cross_entropy
        elif hasattr(value, "partials_shape") and hasattr(value, "launch"):  # the split-K forward
            yield value.launch


@requires_gpu
def test_the_exercise_shapes_hit_this_gpus_tuned_table(monkeypatch):
    """Where this GPU has a table (benchmarks/tune.py), the exercise's first call
    does not autotune."""
    from tritonnet.triton_backend import tuned

    if not tuned.table_path(torch.cuda.get_device_name()).exists():
        pytest.skip(f"no tuned table for {torch.cuda.get_device_name()} yet: benchmarks/tune.py writes it")
    from tritonnet import triton_backend as ops

    monkeypatch.delenv("TRITONNET_AUTOTUNE", raising=False)
    _forbid_autotuning(monkeypatch)
    hidden = torch.rand(64, 784, device="cuda")
    for in_features, out_features in [(784, 512), (512, 128)]:  # what a training step launches
        weight, bias = torch.randn(in_features, out_features, device="cuda"), torch.randn(out_features, device="cuda")
        output = ops.linear_forward(hidden, weight, bias, "sigmoid")
        ops.linear_backward_sgd(torch.randn_like(output), hidden, weight, bias, output, "sigmoid", 1 / 64, 0.1)
        hidden = output
    weight, bias = torch.randn(128, 10, device="cuda"), torch.randn(10, device="cuda")
    _, _, grad = ops.linear_cross_entropy(hidden, weight, bias, torch.randint(0, 10, (64,), device="cuda"), 1 / 64)
    ops.linear_backward_sgd(grad, hidden, weight, bias, None, "none", 1.0, 0.1)
    torch.cuda.synchronize()
