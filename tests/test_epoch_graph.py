"""The epoch runners (epoch_graph.py) against the per-step FusedStep over the same order.

On the CPU `GraphedEpochSteps` runs its chunk function eagerly, the very function
a GPU captures: here it must give the per-step FusedStep's losses and weights
exactly (the same operations on the same batches), across chunk boundaries, an
odd first chunk (a resumed run's) and the epoch's short last batch. tests/test_gpu.py
compares the captured chunks with the same oracle on a GPU.
"""

from __future__ import annotations

import pytest
import torch

import tritonnet
from tritonnet.backend import use_backend
from tritonnet.epoch_graph import CHUNK_STEPS, EpochSteps, GraphedEpochSteps
from tritonnet.fused_step import FusedStep
from tritonnet.step import make_epoch_steps

SIZES = (20, 16, 10)
BATCH = 4


def data(rows: int):
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(rows, SIZES[0], generator=generator)
    labels = torch.randint(0, SIZES[-1], (rows,), generator=generator)
    order = torch.randperm(rows, generator=generator)
    return images, labels, order


def model(grad_scale: str = "batch") -> tritonnet.MLP:
    torch.manual_seed(1)
    return tritonnet.MLP(BATCH, 0.1, SIZES, grad_scale=grad_scale)


@pytest.mark.parametrize("grad_scale", tritonnet.GRAD_SCALES)
def test_chunks_match_the_per_step_fused_step_over_the_same_order(grad_scale):
    # CHUNK_STEPS + 5 full steps and a short last batch of 2 rows.
    rows = (CHUNK_STEPS + 5) * BATCH + 2
    steps_per_epoch = CHUNK_STEPS + 6
    images, labels, order = data(rows)
    ours, theirs = model(grad_scale), model(grad_scale)
    runner = GraphedEpochSteps(FusedStep(ours), images, labels, BATCH)
    oracle = FusedStep(theirs)
    losses = torch.full((steps_per_epoch,), float("nan"), dtype=torch.float64)
    with use_backend("reference"):
        # An odd first chunk, as a resumed run's, then the rest by chunk boundaries.
        runner.run(order, 0, 3, losses)
        runner.run(order, 3, CHUNK_STEPS - 3, losses)
        runner.run(order, CHUNK_STEPS, steps_per_epoch - CHUNK_STEPS, losses)
        expected = torch.stack(
            [
                oracle(images[index], labels[index]).double()
                for index in order.split(BATCH)
            ]
        )
    assert torch.equal(losses, expected)
    for name, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[name], value), name


def test_the_eager_runner_writes_each_steps_loss_in_its_slot():
    rows = 5 * BATCH
    images, labels, order = data(rows)
    ours, theirs = model(), model()
    runner = make_epoch_steps(ours, images, labels, BATCH)
    assert isinstance(runner, EpochSteps) and runner.chunk_steps == 1
    assert runner.order_device == torch.device("cpu")
    oracle = tritonnet.make_step(theirs)
    losses = torch.zeros(5, dtype=torch.float64)
    with use_backend("reference"):
        for step in range(5):
            runner.run(order, step, 1, losses)
        expected = torch.stack([oracle(images[index], labels[index]).double() for index in order.split(BATCH)])
    assert torch.equal(losses, expected)


def test_a_chunk_longer_than_a_graph_holds_is_refused():
    images, labels, order = data(4 * BATCH)
    runner = GraphedEpochSteps(FusedStep(model()), images, labels, BATCH)
    with pytest.raises(ValueError, match="count"):
        runner.run(order, 0, CHUNK_STEPS + 1, torch.zeros(CHUNK_STEPS + 1, dtype=torch.float64))


@pytest.mark.parametrize(
    "batch_size,shapes,match",
    [
        (0, ((8, 20), (8,)), "batch_size"),
        (True, ((8, 20), (8,)), "batch_size"),
        (4, ((8, 20), (7,)), "labels"),
        (4, ((8,), (8,)), "images"),
    ],
)
def test_bad_arguments_are_refused_by_name(batch_size, shapes, match):
    images, labels = torch.zeros(shapes[0]), torch.zeros(shapes[1], dtype=torch.int64)
    with pytest.raises(ValueError, match=match):
        EpochSteps(FusedStep(model()), images, labels, batch_size)


def test_cuda_graph_true_needs_a_gpu():
    images, labels, _ = data(8)
    with pytest.raises(ValueError, match="cuda_graph=True"):
        make_epoch_steps(model(), images, labels, BATCH, cuda_graph=True)
