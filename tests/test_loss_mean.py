"""The loss's mean taken inside the loss kernels (`tritonnet.kernels.loss_mean`),
against float64 torch, and the training step that no longer launches a `.mean()`.

Triton's CPU interpreter runs a grid's programs one after another, so it cannot
show a race between them; what it can show: the mean over 1, 2 and many programs
(more than one REDUCE_BLOCK of partials), a NaN row in any program, the counter
back at 0 after every launch (so the next launch starts clean), and the same bits
from two calls on the same inputs.
"""

from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import tritonnet
from conftest import TEST_DEVICE, requires_triton
from oracles import cross_entropy_oracle
from tritonnet.backend import interpreter_enabled, use_backend

pytestmark = requires_triton

triton = pytest.importorskip("triton", reason="the kernel tests need the triton package")
tl = triton.language

from tritonnet.kernels.loss_mean import REDUCE_BLOCK, store_mean  # noqa: E402

# fp32 sums of up to ~1000 values of size ~1, in some fixed order, against float64.
MEAN_TOLERANCE = dict(rtol=1e-6, atol=1e-6)
# The whole loss against float64 logits: as in test_cross_entropy.
LOSS_TOLERANCE = dict(rtol=1e-5, atol=1e-6)


@pytest.fixture(autouse=True)
def fresh_plans():
    """Each test makes its own plans, so that the launches read below are its own."""
    from tritonnet.triton_backend import plans

    plans.clear_caches()
    yield
    plans.clear_caches()


@triton.jit
def _mean_kernel(row_loss_ptr, partials_ptr, counter_ptr, loss_ptr, M, BLOCK: tl.constexpr):
    """`store_mean` of the row losses `[M]`, BLOCK rows per program."""
    offsets = tl.program_id(axis=0) * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < M
    row_loss = tl.load(row_loss_ptr + offsets, mask=mask, other=0.0)
    store_mean(tl.sum(tl.where(mask, row_loss, 0.0), axis=0), M, partials_ptr, counter_ptr, loss_ptr)


def _kernel_mean(row_loss: torch.Tensor, block: int) -> torch.Tensor:
    from tritonnet.triton_backend.tickets import loss_workspace

    rows = row_loss.shape[0]
    programs = triton.cdiv(rows, block)
    partials, counter = loss_workspace(row_loss.device, programs)
    loss = torch.full((), -1.0, device=row_loss.device)
    _mean_kernel[(programs,)](row_loss, partials, counter, loss, rows, BLOCK=block)
    assert counter.item() == 0, "the last program resets the counter"
    return loss


# Programs: 1, 2, 7, and two whole REDUCE_BLOCKs and a part (the last program's loop
# runs three times).
@pytest.mark.parametrize("programs", [1, 2, 7, 2 * REDUCE_BLOCK + 3])
def test_store_mean_matches_float64(programs):
    block = 2
    rows = programs * block - 1  # the last program's block is part masked
    row_loss = torch.rand(rows, device=TEST_DEVICE) * 4
    loss = _kernel_mean(row_loss, block)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), row_loss.double().mean(), **MEAN_TOLERANCE)
    assert torch.equal(_kernel_mean(row_loss, block), loss), "the same bits on a second call"


@pytest.mark.parametrize("bad_row", [0, 9, 22])  # the first, a middle and the last program
def test_a_nan_row_makes_the_mean_nan_and_leaves_no_trace(bad_row):
    row_loss = torch.rand(23, device=TEST_DEVICE)
    poisoned = row_loss.clone()
    poisoned[bad_row] = float("nan")
    assert torch.isnan(_kernel_mean(poisoned, 4))
    torch.testing.assert_close(_kernel_mean(row_loss, 4).double(), row_loss.double().mean(), **MEAN_TOLERANCE)


def _programs(operation: str) -> int:
    """The programs the one launch of `operation` ran (its only plan's grid)."""
    module = importlib.import_module(f"tritonnet.triton_backend.{operation}")
    (plan,) = module._plans.entries.values()
    launch = getattr(plan.launch, "cross_entropy", plan.launch)  # the wide path's row kernel
    return launch.grid[0]


def _loss_inputs(rows: int, classes: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    x = torch.randn(rows, 8, generator=generator).to(TEST_DEVICE)
    weight = (torch.randn(8, classes, generator=generator) * 2).to(TEST_DEVICE)
    bias = torch.randn(classes, generator=generator).to(TEST_DEVICE)
    target = torch.randint(0, classes, (rows,), generator=generator).to(TEST_DEVICE)
    return x, weight, bias, target


def _run(operation: str, x, weight, bias, target):
    from tritonnet import triton_backend

    if operation == "cross_entropy":
        return triton_backend.cross_entropy(x @ weight + bias, target)
    return triton_backend.linear_cross_entropy(x, weight, bias, target)


# (operation, classes, rows for 1, 2 and 5 programs in the interpreter): the fused
# output layer (64-row tiles), its wide path and the row-wise op (8-row tiles at
# 300 classes).
LOSS_CASES = [
    ("linear_cross_entropy", 10, (64, 100, 300)),
    ("linear_cross_entropy", 300, (8, 12, 40)),
    ("cross_entropy", 300, (8, 12, 40)),
]


@pytest.mark.skipif(not interpreter_enabled(), reason="the row counts give 1, 2 and 5 programs with the interpreter's tiles")
@pytest.mark.parametrize("operation,classes,rows_by_programs", LOSS_CASES, ids=lambda case: str(case))
@pytest.mark.parametrize("programs", [1, 2, 5])
def test_the_operations_mean_over_programs(operation, classes, rows_by_programs, programs):
    rows = rows_by_programs[[1, 2, 5].index(programs)]
    x, weight, bias, target = _loss_inputs(rows, classes)
    expected = cross_entropy_oracle(x.double() @ weight.double() + bias.double(), target, 1.0)[1]
    first = _run(operation, x, weight, bias, target)[1]
    assert _programs(operation) == programs
    torch.testing.assert_close(first.double(), expected, **LOSS_TOLERANCE)
    second = _run(operation, x, weight, bias, target)[1]
    assert torch.equal(first, second) and first is not second, "the same bits, in a new tensor"

    target[rows // 2] = classes  # a bad row in a middle program: the mean is NaN
    assert torch.isnan(_run(operation, x, weight, bias, target)[1])
    target[rows // 2] = 0  # and nothing of it stays for the next launch
    expected = cross_entropy_oracle(x.double() @ weight.double() + bias.double(), target, 1.0)[1]
    torch.testing.assert_close(_run(operation, x, weight, bias, target)[1].double(), expected, **LOSS_TOLERANCE)


def test_the_workspace_is_made_once_zeroed_and_kept():
    from tritonnet.triton_backend.tickets import loss_workspace

    partials, counter = loss_workspace(torch.device(TEST_DEVICE), 5)
    assert partials.shape == (8,) and partials.dtype == torch.float32
    assert counter.shape == (1,) and counter.dtype == torch.int32 and counter.item() == 0
    again = loss_workspace(torch.device(TEST_DEVICE), 7)  # the same size class
    assert again[0] is partials and again[1] is counter
    assert loss_workspace(torch.device(TEST_DEVICE), 9)[0].shape == (16,)


# --- the training step --------------------------------------------------------


class _TorchOutsideKernels(TorchDispatchMode):
    """Records the ATen ops called outside the Triton launches in `launches`."""

    def __init__(self, launches: list) -> None:
        super().__init__()
        self.launches = launches
        self.inside = 0
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.inside:
            self.ops.append(func.__name__)
        return func(*args, **(kwargs or {}))


def _record_launches(monkeypatch, recorder: _TorchOutsideKernels) -> None:
    """Every kernel of `tritonnet.kernels` appends its name to `recorder.launches`
    when launched (the interpreter copies the arguments with torch ops, which are
    the launch's, not the step's)."""
    import tritonnet.kernels as kernel_modules

    for module_info in pkgutil.iter_modules(kernel_modules.__path__):
        module = importlib.import_module(f"{kernel_modules.__name__}.{module_info.name}")
        for name, kernel in vars(module).items():
            if hasattr(kernel, "run") and hasattr(kernel, "arg_names") and not hasattr(kernel, "configs"):

                def run(*args, _run=kernel.run, _name=name, **kwargs):
                    recorder.launches.append(_name)
                    recorder.inside += 1
                    try:
                        return _run(*args, **kwargs)
                    finally:
                        recorder.inside -= 1

                monkeypatch.setattr(kernel, "run", run)


# Not device work: allocations, and the label range check the step makes on the
# CPU only (on a GPU it would wait for the device; the loss is NaN there instead).
ALLOCATIONS = {"empty.memory_format", "empty_like.default", "new_empty.default", "empty_strided.default"}
CPU_LABEL_CHECK = {"aminmax.default", "_local_scalar_dense.default"}


@pytest.mark.skipif(not interpreter_enabled(), reason="counts interpreted launches; on a GPU the autotuner adds trial runs")
def test_the_training_step_launches_no_torch_mean(monkeypatch):
    """The fused step's loss is one launch, the fused output layer's, and the step
    runs no torch op that would launch on the device: every launch is a Triton
    kernel. Before the mean moved into the kernel, the step launched one more,
    the loss's `.mean()`."""
    from tritonnet.fused_step import FusedStep

    model = tritonnet.MLP(64, 0.1, [24, 16, 12, 10], device=TEST_DEVICE)
    x = torch.rand(64, 24, device=TEST_DEVICE)
    labels = torch.randint(0, 10, (64,), device=TEST_DEVICE)
    recorder = _TorchOutsideKernels([])
    with use_backend("triton"):
        step = FusedStep(model)
        step(x, labels)  # plans, configs and buffers made
        _record_launches(monkeypatch, recorder)
        with recorder:
            loss = step(x, labels)
    assert recorder.launches[:3] == ["linear_forward_kernel", "linear_forward_kernel", "linear_cross_entropy_kernel"]
    assert recorder.launches.count("linear_cross_entropy_kernel") == 1
    assert "cross_entropy_kernel" not in recorder.launches
    assert set(recorder.ops) <= ALLOCATIONS | CPU_LABEL_CHECK, f"torch ops outside the kernels: {recorder.ops}"
    assert loss.dim() == 0 and torch.isfinite(loss)
