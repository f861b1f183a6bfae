"""The compiled kernels on a real GPU, against float64 oracles, at ieee, tf32 and bf16.

Skipped without CUDA, and when TRITON_INTERPRET=1 (the interpreter would run the
kernels instead of the compiled code). benchmarks/gpu_check.sh runs this module on
a GPU machine. The rest of the suite also runs on the GPU there (its tensors go
to conftest.TEST_DEVICE); this module adds what only a GPU shows: the autotuned
configs at large batches, TF32 tensor cores, and whole training runs.
"""

from __future__ import annotations

import pytest
import torch

import tritonnet
from tritonnet.backend import interpreter_enabled, use_backend

pytestmark = pytest.mark.skipif(
    not torch.cuda.is_available() or interpreter_enabled(),
    reason="compiled kernels need a CUDA GPU and TRITON_INTERPRET unset (benchmarks/gpu_check.sh)",
)

EXERCISE_LAYERS = [(784, 512), (512, 128), (128, 10)]
BATCHES = [64, 1024, 4096]

# Tolerances against float64, for sums of up to 784 products of O(0.1) values:
# - ieee fp32: rounding of about 1e-6 relative per operation;
# - tf32: 10-bit mantissas, about 5e-4 relative per product, so about 1e-2 absolute
#   on a sum of hundreds of them;
# - bf16: 8-bit mantissas on the inputs and the output, about 1e-2 relative.
TOLERANCES = {
    "ieee": dict(rtol=1e-4, atol=1e-4),
    "tf32": dict(rtol=1e-2, atol=1e-2),
    "bf16": dict(rtol=3e-2, atol=3e-2),
}
MODES = {  # mode: (torch matmul precision, dtype)
    "ieee": ("highest", torch.float32),
    "tf32": ("high", torch.float32),
    "bf16": ("highest", torch.bfloat16),
}


@pytest.fixture(params=list(MODES))
def mode(request):
    precision, dtype = MODES[request.param]
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(precision)
    try:
        with use_backend("triton"):
            yield request.param, dtype
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.fixture(params=[False, True], ids=["launch", "pdl"])
def pdl(request, monkeypatch):
    """Plain launches, then programmatic dependent launch (TRITONNET_PDL=1) where
    the GPU has it; the launch plans are made afresh for each."""
    from tritonnet.triton_backend import launch, plans

    if request.param:
        monkeypatch.setenv("TRITONNET_PDL", "1")
        if not launch.pdl_enabled(torch.device("cuda")):
            pytest.skip("programmatic dependent launch needs compute capability 9.0 or newer")
    plans.clear_caches()
    yield request.param
    plans.clear_caches()


def ops():
    from tritonnet import triton_backend

    return triton_backend


def layer_tensors(rows, in_features, out_features, dtype, transposed=False):
    scale = in_features**-0.5
    x = torch.randn(rows, in_features, device="cuda").to(dtype)
    if transposed:  # nn.Linear's [out, in] weight, read through strides
        weight = (torch.randn(out_features, in_features, device="cuda") * scale).to(dtype).t()
    else:
        weight = (torch.randn(in_features, out_features, device="cuda") * scale).to(dtype)
    bias = (torch.randn(out_features, device="cuda") * scale).to(dtype)
    return x, weight, bias


@pytest.mark.parametrize("rows", BATCHES)
@pytest.mark.parametrize("in_features,out_features", EXERCISE_LAYERS)
@pytest.mark.parametrize("activation", ["sigmoid", "none"])
def test_linear_forward(mode, rows, in_features, out_features, activation):
    name, dtype = mode
    x, weight, bias = layer_tensors(rows, in_features, out_features, dtype, transposed=rows == 1024)
    expected = x.double() @ weight.double() + bias.double()
    if activation == "sigmoid":
        expected = torch.sigmoid(expected)
    output = ops().linear_forward(x, weight, bias, activation)
    assert output.dtype == dtype
    torch.testing.assert_close(output.double(), expected, **TOLERANCES[name])


@pytest.mark.parametrize("rows", BATCHES)
@pytest.mark.parametrize("in_features,out_features", EXERCISE_LAYERS[:2])
def test_linear_sigmoid_backward(mode, rows, in_features, out_features):
    name, dtype = mode
    x, weight, bias = layer_tensors(rows, in_features, out_features, dtype)
    x64, weight64, bias64 = (t.double().requires_grad_() for t in (x, weight, bias))
    output64 = torch.sigmoid(x64 @ weight64 + bias64)
    grad_output = torch.randn(rows, out_features, device="cuda").to(dtype)
    output64.backward(grad_output.double())
    scale = 1.0 / rows
    output = ops().linear_forward(x, weight, bias, "sigmoid")
    grad_input, grad_weight, grad_bias = ops().linear_backward(
        grad_output, x, weight, output, "sigmoid", scale
    )
    tolerance = TOLERANCES[name]
    torch.testing.assert_close(grad_input.double(), x64.grad, **tolerance)
    torch.testing.assert_close(grad_weight.double(), weight64.grad * scale, **tolerance)
    torch.testing.assert_close(grad_bias.double(), bias64.grad * scale, **tolerance)


@pytest.mark.parametrize("cols", [10, 1000, 4099, 16384])
def test_softmax_wide_rows_and_extremes(mode, cols):
    name, dtype = mode
    x = (torch.randn(256, cols, device="cuda") * 5).to(dtype)
    x[0, :] = 1e4
    x[1, 0] = -1e4
    x[2, cols // 2] = float("-inf")
    expected = torch.softmax(x.double(), dim=1)
    torch.testing.assert_close(ops().softmax(x).double(), expected, **TOLERANCES[name])


@pytest.mark.parametrize("rows", BATCHES)
@pytest.mark.parametrize("classes", [10, 1000])  # one fused kernel; the split path
def test_linear_cross_entropy(mode, rows, classes):
    name, dtype = mode
    x, weight, bias = layer_tensors(rows, 128, classes, dtype)
    target = torch.randint(0, classes, (rows,), device="cuda")
    logits64 = (x.double() @ weight.double() + bias.double()).requires_grad_()
    expected_loss = torch.nn.functional.cross_entropy(logits64, target)
    expected_loss.backward()
    probabilities, loss, grad_logits = ops().linear_cross_entropy(x, weight, bias, target, 1.0 / rows)
    tolerance = TOLERANCES[name]
    torch.testing.assert_close(probabilities.double(), torch.softmax(logits64.detach(), 1), **tolerance)
    torch.testing.assert_close(loss.double(), expected_loss.detach(), **tolerance)
    torch.testing.assert_close(grad_logits.double(), logits64.grad, **tolerance)


def test_sgd_update_matches_torch():
    weight, bias = torch.randn(784, 512, device="cuda"), torch.randn(512, device="cuda")
    grad_weight, grad_bias = torch.randn_like(weight), torch.randn_like(bias)
    expected_weight, expected_bias = weight - 0.3 * grad_weight, bias - 0.3 * grad_bias
    with use_backend("triton"):
        ops().sgd_update(weight, bias, grad_weight, grad_bias, 0.3)
    torch.testing.assert_close(weight, expected_weight)
    torch.testing.assert_close(bias, expected_bias)


@pytest.mark.parametrize("bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize("in_features,out_features", EXERCISE_LAYERS)
def test_linear_backward_sgd_steps_once_through_the_autotuner(monkeypatch, in_features, out_features, bias):
    """The SGD epilogue's first call at batch 64: its autotuner times every config
    on the real weight and bias and restores them after each run (unless this
    GPU's tuned table has the key), so they take one step, the reference's. The
    narrow layers take the one-launch kernel (`kernels/linear_backward_sgd.py`),
    whose autotuner restores them too."""
    from tritonnet import reference
    from tritonnet.kernels import linear_backward as kernels
    from tritonnet.kernels import linear_backward_sgd as one_launch_kernels
    from tritonnet.triton_backend import plans

    monkeypatch.delenv("TRITONNET_AUTOTUNE", raising=False)
    for tuner in [*kernels.linear_backward_weight_sgd_autotuned.values(),
                  *one_launch_kernels.linear_backward_sgd_autotuned.values()]:
        monkeypatch.setattr(tuner, "cache", {})
    plans.clear_caches()
    torch.manual_seed(0)
    x = torch.rand(64, in_features, device="cuda")
    weight = torch.randn(in_features, out_features, device="cuda") * in_features**-0.5
    bias_tensor = torch.randn(out_features, device="cuda") * 0.1 if bias else None
    output = reference.linear_forward(x, weight, bias_tensor, "sigmoid")
    grad_output = torch.randn_like(output)
    expected_weight = weight.clone()
    expected_bias = bias_tensor.clone() if bias else None
    expected_input = reference.linear_backward_sgd(
        grad_output, x, expected_weight, expected_bias, output, "sigmoid", 1 / 64, 0.5
    )
    grad_input = ops().linear_backward_sgd(grad_output, x, weight, bias_tensor, output, "sigmoid", 1 / 64, 0.5)
    torch.testing.assert_close(grad_input, expected_input, **TOLERANCES["ieee"])
    torch.testing.assert_close(weight, expected_weight, **TOLERANCES["ieee"])
    if bias:
        torch.testing.assert_close(bias_tensor, expected_bias, **TOLERANCES["ieee"])


def test_last_program_reductions_are_race_free_and_repeatable():
    """The reductions where the last program to draw a ticket adds the others'
    partials: the split-K forward at batch 64 and the loss's mean over many
    programs. The interpreter runs programs one after another and cannot show a
    race; here 200 calls on the GPU must match the float64 oracle and give the
    same bits every time."""
    from tritonnet.kernels import linear_forward as forward_kernels
    from tritonnet.triton_backend.weight_gradient import processors

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        splits, _ = forward_kernels.forward_splits(64, 784, 512, processors(torch.device("cuda")))
        assert splits > 1, "this GPU keeps the exercise's first layer unsplit at batch 64: nothing to test"
        x, weight, bias = layer_tensors(64, 784, 512, torch.float32)
        inputs, out_weight, out_bias = layer_tensors(4096, 128, 10, torch.float32)
        target = torch.randint(0, 10, (4096,), device="cuda")
        with use_backend("triton"):
            first_hidden = ops().linear_forward(x, weight, bias, "sigmoid").clone()
            first_loss = ops().linear_cross_entropy(inputs, out_weight, out_bias, target, 1 / 4096)[1].clone()
            hidden = [ops().linear_forward(x, weight, bias, "sigmoid") for _ in range(200)]
            losses = [ops().linear_cross_entropy(inputs, out_weight, out_bias, target, 1 / 4096)[1] for _ in range(200)]
        expected_hidden = torch.sigmoid(x.double() @ weight.double() + bias.double())
        logits = inputs.double() @ out_weight.double() + out_bias.double()
        expected_loss = torch.nn.functional.cross_entropy(logits, target)
        torch.testing.assert_close(first_hidden.double(), expected_hidden, **TOLERANCES["ieee"])
        torch.testing.assert_close(first_loss.double(), expected_loss, **TOLERANCES["ieee"])
        assert all(torch.equal(h, first_hidden) for h in hidden), "the split forward's bits changed between calls"
        assert all(torch.equal(loss, first_loss) for loss in losses), "the loss's bits changed between calls"
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.parametrize("grad_scale", tritonnet.GRAD_SCALES)
def test_training_on_gpu_follows_the_cpu_reference(grad_scale):
    """100 steps of the exercise MLP: Triton on the GPU, reference on the CPU, at ieee."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        steps_follow_the_cpu_reference(grad_scale, tritonnet.make_step, 100)
    finally:
        torch.set_float32_matmul_precision(previous)


def steps_follow_the_cpu_reference(grad_scale: str, gpu_step_of, steps: int):
    """`steps` steps of the exercise MLP, `gpu_step_of(model)` on the GPU (Triton)
    against make_step's on the CPU (reference), loss by loss, then the weights;
    returns the GPU model and its step."""
    torch.manual_seed(1)
    gpu = tritonnet.MLP(64, 0.1, grad_scale=grad_scale, device="cuda")
    torch.manual_seed(1)
    cpu = tritonnet.MLP(64, 0.1, grad_scale=grad_scale)
    gpu_step, cpu_step = gpu_step_of(gpu), tritonnet.make_step(cpu)
    generator = torch.Generator().manual_seed(0)
    for step in range(steps):
        x = torch.randn(64, 784, generator=generator)
        labels = torch.randint(0, 10, (64,), generator=generator)
        with use_backend("triton"):
            gpu_loss = gpu_step(x.cuda(), labels.cuda())
        with use_backend("reference"):
            cpu_loss = cpu_step(x, labels)
        # Summation orders differ between the kernels and MKL; over 100 steps
        # the drift stays around 1e-5 relative at ieee.
        torch.testing.assert_close(gpu_loss.cpu(), cpu_loss, rtol=1e-4, atol=1e-5, msg=f"step {step}")
    for ours, theirs in zip(gpu.state_dict().values(), cpu.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
    return gpu, gpu_step


def test_cuda_graph_steps_follow_the_eager_steps():
    """make_step's graphed step against the eager fused step, over batch-size,
    learning-rate and weight changes, each of which must make it capture again."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        torch.manual_seed(1)
        eager = tritonnet.MLP(64, 0.1, device="cuda")
        torch.manual_seed(1)
        graphed_model = tritonnet.MLP(64, 0.1, device="cuda")
        step = tritonnet.make_step(graphed_model)
        assert isinstance(step, tritonnet.GraphedStep)
        eager_step = tritonnet.make_step(eager, cuda_graph=False)
        generator = torch.Generator().manual_seed(0)
        # 64-row steps (eager, capture, replays), a short last batch, an lr change,
        # new weights loaded, then 64-row steps again.
        schedule = [64] * 6 + [16, 16, 16] + ["lr"] + [64] * 3 + ["load"] + [64] * 3
        with use_backend("triton"):
            for index, rows in enumerate(schedule):
                if rows == "lr":
                    eager.lr = graphed_model.lr = 0.05
                    continue
                if rows == "load":
                    state = {key: value * 0.5 for key, value in eager.state_dict().items()}
                    eager.load_state_dict(state)
                    graphed_model.load_state_dict(state)
                    continue
                x = torch.randn(rows, 784, generator=generator).cuda()
                labels = torch.randint(0, 10, (rows,), generator=generator).cuda()
                expected = eager_step(x, labels)
                loss = step(x, labels)
                # The same kernels with the same configs: equal up to rounding.
                torch.testing.assert_close(loss, expected, rtol=1e-6, atol=1e-7, msg=f"step {index}")
        for ours, theirs in zip(graphed_model.state_dict().values(), eager.state_dict().values()):
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.parametrize("grad_scale", tritonnet.GRAD_SCALES)
def test_epoch_graph_steps_follow_the_per_step_fused_step(grad_scale, pdl):
    """make_epoch_steps's chunks, many steps to a replay, against the eager FusedStep
    over the same order drawn on the GPU: an eager first chunk, captures, replays,
    odd chunks (a resumed run's), the short last batch, and an lr change, which must
    run eagerly and capture again. With PDL, both launch so."""
    from tritonnet.epoch_graph import CHUNK_STEPS, GraphedEpochSteps
    from tritonnet.fused_step import FusedStep

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        batch, steps_per_epoch = 64, 2 * CHUNK_STEPS + 8
        rows = (steps_per_epoch - 1) * batch + 16  # a short last batch of 16 rows
        generator = torch.Generator(device="cuda").manual_seed(0)
        images = torch.randn(rows, 784, device="cuda", generator=generator)
        labels = torch.randint(0, 10, (rows,), device="cuda", generator=generator)
        torch.manual_seed(1)
        graphed_model = tritonnet.MLP(batch, 0.1, grad_scale=grad_scale, device="cuda")
        torch.manual_seed(1)
        eager_model = tritonnet.MLP(batch, 0.1, grad_scale=grad_scale, device="cuda")
        runner = tritonnet.make_epoch_steps(graphed_model, images, labels, batch)
        assert isinstance(runner, GraphedEpochSteps) and runner.order_device.type == "cuda"
        oracle = FusedStep(eager_model)
        chunks_of_epochs = [
            [(0, CHUNK_STEPS), (CHUNK_STEPS, CHUNK_STEPS), (2 * CHUNK_STEPS, 8)],
            [(0, 5), (5, CHUNK_STEPS - 5), (CHUNK_STEPS, CHUNK_STEPS), (2 * CHUNK_STEPS, 8)],
            "lr",
            [(0, CHUNK_STEPS), (CHUNK_STEPS, CHUNK_STEPS), (2 * CHUNK_STEPS, 8)],
        ]
        with use_backend("triton"):
            for epoch, chunks in enumerate(chunks_of_epochs):
                if chunks == "lr":
                    graphed_model.lr = eager_model.lr = 0.05
                    continue
                order = torch.randperm(rows, device="cuda", generator=generator)
                losses = torch.full((steps_per_epoch,), float("nan"), dtype=torch.float64, device="cuda")
                for first, count in chunks:
                    runner.run(order, first, count, losses)
                expected = torch.stack(
                    [oracle(images[index], labels[index]).double() for index in order.split(batch)]
                )
                # The same kernels with the same configs: equal up to rounding.
                torch.testing.assert_close(losses, expected, rtol=1e-6, atol=1e-7, msg=f"epoch {epoch}")
        for ours, theirs in zip(graphed_model.state_dict().values(), eager_model.state_dict().values()):
            torch.testing.assert_close(ours, theirs, rtol=1e-6, atol=1e-7)
    finally:
        torch.set_float32_matmul_precision(previous)


@pytest.mark.parametrize("grad_scale", tritonnet.GRAD_SCALES)
def test_persistent_step_follows_the_reference_step(grad_scale):
    """The whole step as one cooperative launch (PersistentStep): 20 eager steps
    against the CPU reference, then two chunks of the epoch graph (64 steps to a
    replay, capture included) against the GPU's eager FusedStep over the same
    batches. No barrier may have given up."""
    from tritonnet.epoch_graph import CHUNK_STEPS, GraphedEpochSteps
    from tritonnet.fused_step import FusedStep
    from tritonnet.persistent_step import PersistentStep

    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision("highest")
    try:
        gpu, step = steps_follow_the_cpu_reference(grad_scale, PersistentStep, 20)
        eager_model = tritonnet.MLP(64, 0.1, grad_scale=grad_scale, device="cuda")
        eager_model.load_state_dict(gpu.state_dict())
        oracle = FusedStep(eager_model)
        rows = 2 * CHUNK_STEPS * 64
        images = torch.randn(rows, 784, device="cuda", generator=torch.Generator(device="cuda").manual_seed(3))
        labels = torch.randint(0, 10, (rows,), device="cuda")
        runner = GraphedEpochSteps(step, images, labels, 64)
        order = torch.randperm(rows, device="cuda")
        losses = torch.full((2 * CHUNK_STEPS,), float("nan"), dtype=torch.float64, device="cuda")
        with use_backend("triton"):
            for first in (0, CHUNK_STEPS):  # the first chunk eager, the second captured and replayed
                runner.run(order, first, CHUNK_STEPS, losses)
            expected = torch.stack([oracle(images[index], labels[index]).double() for index in order.split(64)])
        torch.testing.assert_close(losses, expected, rtol=1e-4, atol=1e-5)
        for ours, theirs in zip(gpu.state_dict().values(), eager_model.state_dict().values()):
            torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)
        assert all(plan.barrier[1].item() == 0 for plan in step.plans.values()), "a grid barrier gave up"
    finally:
        torch.set_float32_matmul_precision(previous)
