"""Which gradient exchange makes the data-parallel step faster on gloo: one bucket
per step, or an all-reduce per layer overlapped with the backward?

Two ranks on this machine's CPU in a gloo group, one thread each (torchrun's
default), train the exercise's 784-512-128-10 MLP on the reference backend, each
on its half of a random global batch of 64 or 1024 rows. Providers, taking turns
step by step (`time_in_turns`):
- "bucket": `tritonnet.distributed_step.DataParallelStep` as the trainer runs it:
  every layer's gradients in one flat bucket, one all-reduce after the backward;
- "per-layer-overlap": the same step, but each layer's gradients are all-reduced
  asynchronously as soon as its backward has written them, while the layers
  below compute theirs; the update waits for all of them;
- "barrier-only": the same step on the same shard with no all-reduce, then a
  barrier, so that the ranks stay in step (else the next provider's all-reduce
  would wait out their drift): the floor; what the exchange costs is the
  difference.
Reported: rank 0's ms per step, median and 20th/80th percentiles.

    python benchmarks/bench_data_parallel.py [--quick | --smoke] [--results-dir DIR]
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import torch
import torch.multiprocessing

from harness import Environment, ResultWriter, parser, results_dir, select_providers, time_in_turns
from tritonnet import MLP
from tritonnet.backend import ops_for, use_backend
from tritonnet.distributed import Ranks
from tritonnet.distributed_step import DataParallelStep
from tritonnet.layers import gradient_scale

WORLD_SIZE = 2
PROVIDERS = ["bucket", "per-layer-overlap", "barrier-only"]
MODE = f"gloo {WORLD_SIZE} ranks, 1 thread each"


class PerLayerOverlapStep(DataParallelStep):
    """`DataParallelStep` with an asynchronous all-reduce per layer, started as soon
    as the layer's gradients are written; the one this benchmark compares."""

    def __init__(self, model, ranks: Ranks) -> None:
        super().__init__(model, ranks)
        self.layer_gradients = []  # each layer's weight and bias gradients: one slice of the bucket
        offset = 0
        for linear in model.linears:
            size = (linear.in_features + 1) * linear.out_features
            self.layer_gradients.append(self.bucket[offset : offset + size])
            offset += size

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model, ops, rows = self.model, ops_for(x), x.shape[0]
        start, end = self.ranks.shard(rows)
        local_x, local_labels = x[start:end], labels[start:end]
        workspace = self._workspace(end - start)
        loss, grad = self._forward(ops, local_x, local_labels, workspace)
        torch.mul(loss, (end - start) / rows, out=self.loss)
        pending = [torch.distributed.all_reduce(self.bucket[-1:], async_op=True)]
        activation, output = "none", None
        for index in range(len(model.linears) - 1, -1, -1):
            linear = model.linears[index]
            scale = gradient_scale(model.grad_scale, rows, linear.in_features)
            grad_input = workspace.grad_inputs[index - 1] if index else None
            grad, _, _ = ops.linear_backward(
                grad, linear.input, linear.weight, output, activation, scale, need_grad_input=index > 0,
                out_grad_input=grad_input, out_grad_weight=self.grad_weights[index],
                out_grad_bias=self.grad_biases[index])
            pending.append(torch.distributed.all_reduce(self.layer_gradients[index], async_op=True))
            if index:
                activation, output = "sigmoid", model.sigmoids[index - 1].output
        for work in pending:
            work.wait()
        for linear, grad_weight, grad_bias in zip(model.linears, self.grad_weights, self.grad_biases):
            ops.sgd_update(linear.weight, linear.bias, grad_weight, grad_bias, model.lr)
        return self.loss


def check_same_weights(steps: dict[str, DataParallelStep]) -> None:
    """The exchanges compared must train alike: they ran the same steps on the same batches."""
    if {"bucket", "per-layer-overlap"} <= steps.keys():
        for one, other in zip(steps["bucket"].model.linears, steps["per-layer-overlap"].model.linears):
            if not torch.allclose(one.weight, other.weight, rtol=1e-4, atol=1e-6):
                raise RuntimeError("per-layer-overlap trained other weights than bucket: its step is wrong")


def cases(quick: bool, smoke: bool) -> tuple[list[int], int, int]:
    """(global batch sizes, warm-up steps, timed steps)."""
    if smoke:
        return [8], 1, 3
    if quick:
        return [64, 1024], 5, 50
    return [64, 1024], 20, 300


def make_step(provider: str, rank: int) -> DataParallelStep:
    torch.manual_seed(0)
    model = MLP(64, 0.1)
    if provider == "barrier-only":  # the same shard, and a group it never talks to
        return DataParallelStep(model, Ranks(rank, WORLD_SIZE, torch.device("cpu"), joined=False))
    ranks = Ranks(rank, WORLD_SIZE, torch.device("cpu"), joined=True)
    return (PerLayerOverlapStep if provider == "per-layer-overlap" else DataParallelStep)(model, ranks)


def rank_main(rank: int, store: str, arguments, providers: list[str], folder: Path) -> None:
    torch.set_num_threads(1)
    torch.distributed.init_process_group("gloo", init_method=store, rank=rank, world_size=WORLD_SIZE)
    batch_sizes, warmup, repeats = cases(arguments.quick, arguments.smoke)
    environment = Environment.detect(torch.device("cpu"))
    writer = ResultWriter("data_parallel", folder, environment) if rank == 0 else None
    try:
        with use_backend("reference"):
            for batch in batch_sizes:
                generator = torch.Generator().manual_seed(batch)  # the same batch on every rank
                x = torch.randn(batch, 784, generator=generator)
                labels = torch.randint(0, 10, (batch,), generator=generator)
                steps = {name: make_step(name, rank) for name in providers}
                calls = {name: (lambda step=step: step(x, labels)) for name, step in steps.items()}
                if "barrier-only" in calls:
                    only = steps["barrier-only"]
                    calls["barrier-only"] = lambda: (only(x, labels), torch.distributed.barrier())
                seconds = time_in_turns(calls, torch.device("cpu"), warmup, repeats)
                check_same_weights(steps)
                for name in providers if writer is not None else []:
                    writer.add(name, MODE, "batch", batch, "step_time", "ms", seconds[name].scaled(1e3))
    finally:
        torch.distributed.destroy_process_group()


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0]).parse_args(argv)
    providers = select_providers(PROVIDERS, PROVIDERS, arguments.providers)
    folder = results_dir(arguments)
    with tempfile.TemporaryDirectory() as scratch:
        store = f"file://{scratch}/store"
        torch.multiprocessing.spawn(rank_main, args=(store, arguments, providers, folder), nprocs=WORLD_SIZE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
