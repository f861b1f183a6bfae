"""Which of the graphed step's fusions pay on this GPU?

The trainer's step on a GPU (`make_epoch_steps`: 64 steps per CUDA graph replay,
each batch gathered on the device) is timed with each of its fusions on and off,
taking turns epoch by epoch, on synthetic data of Fashion-MNIST's size:

- the split-K forward at small batch (`kernels.linear_forward.forward_splits`);
  off, every forward launches its tiles alone, as before the split;
- the SGD step in the weight-gradient kernel's epilogue; off, each layer's
  gradients are written out and `sgd_update` steps the weights in a launch of
  its own, as before (one launch more per layer);
- a narrow layer's whole backward and step in one launch
  (`kernels.linear_backward_sgd.backward_in_one_launch`); off, the input
  gradient and the weight gradient with its step are two launches, as before
  (one launch more for each of the two narrow layers).

Providers: "fused" (all on, what ships), "unsplit-forward", "separate-sgd",
"two-launch-backward" and "neither" (the first two off); and "pdl", what ships
with every kernel of the step launched by programmatic dependent launch
(`TRITONNET_PDL=1`, off by default until measured; sm_90 and newer, else it
runs as "fused"). Each row gives the wall time per step and the GPU kernel time
per step (torch.profiler, `kernel_time.py`); the issue's rule is to keep
whichever measures faster. The loss's mean inside its kernel has no "off": the
old `.mean()` is gone.

"persistent" is the whole step as one persistent kernel (`PersistentStep`,
docs/persistent-step.md) under the same epoch graph, against the others.

    python benchmarks/bench_step_variants.py [--quick] [--results-dir DIR] [--providers ...]

Without CUDA it says so and exits 0 (the fusions exist only in the compiled
kernels); `--smoke` then runs the variants eagerly on the CPU under Triton's
interpreter, one short epoch each, to show the switches work.
"""

from __future__ import annotations

import contextlib
import os
import sys
from typing import Iterator
from unittest import mock

import torch

from bench_training import LR, Data, EpochGraphTrainer, batch_sizes, synthetic_data
from harness import Environment, Quantiles, ResultWriter, parser, results_dir, select_providers, time_in_turns
from kernel_time import profile_kernel_time
from tritonnet import MLP

PROVIDERS = ["fused", "unsplit-forward", "separate-sgd", "two-launch-backward", "neither", "pdl", "persistent"]


def _separate_sgd(grad_output, x, weight, bias, output, activation, scale, lr, *, need_grad_input=True,
                  out_grad_input=None):
    """`linear_backward_sgd` as it was before the epilogue: the gradients, then the step."""
    from tritonnet import triton_backend

    grad_input, grad_weight, grad_bias = triton_backend.linear_backward(
        grad_output, x, weight, output, activation, scale,
        need_grad_input=need_grad_input, need_grad_bias=bias is not None, out_grad_input=out_grad_input,
    )
    triton_backend.sgd_update(weight, bias, grad_weight, grad_bias, lr)
    return grad_input


def _unsplit(rows: int, in_features: int, *_) -> tuple[int, int]:
    """`forward_splits` as before the split: one split of all of K."""
    return 1, in_features


@contextlib.contextmanager
def variant(provider: str) -> Iterator[None]:
    """The fusions `provider` turns off (or PDL, which it turns on), switched for
    the duration (the plans are cleared on the way in and out, so no launch of
    another variant is reused)."""
    from tritonnet import triton_backend
    from tritonnet.kernels import linear_backward_sgd, linear_forward
    from tritonnet.triton_backend import plans

    patches = []
    if provider == "two-launch-backward":
        patches.append(mock.patch.object(linear_backward_sgd, "backward_in_one_launch", lambda *_: False))
    if provider in ("unsplit-forward", "neither"):
        patches.append(mock.patch.object(linear_forward, "forward_splits", _unsplit))
    if provider in ("separate-sgd", "neither"):
        patches.append(mock.patch.object(triton_backend, "linear_backward_sgd", _separate_sgd))
    if provider == "pdl":
        patches.append(mock.patch.dict(os.environ, {"TRITONNET_PDL": "1"}))
    plans.clear_caches()
    try:
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            yield
    finally:
        plans.clear_caches()


class VariantEpochs(EpochGraphTrainer):
    """The trainer's epoch on a GPU (bench_training's `tritonnet-epoch-graph`) with
    the fusions `provider` turns off switched off while it runs."""

    def __init__(self, provider: str, data: Data, batch_size: int, limit: int | None) -> None:
        torch.manual_seed(1)
        model = MLP(batch_size, LR, device=data.train_images.device)
        super().__init__(model, data, batch_size, limit)
        self.provider = provider
        if provider == "persistent":
            from tritonnet.epoch_graph import GraphedEpochSteps
            from tritonnet.persistent_step import PersistentStep

            self.steps = GraphedEpochSteps(PersistentStep(model), data.train_images, data.train_labels, batch_size)

    def train_epoch(self) -> None:
        with variant(self.provider):
            super().train_epoch()


def _working_persistent_run(data: Data, batch_size: int, limit: int | None) -> VariantEpochs | None:
    """The persistent step's run, tried for an epoch before the timing (which runs
    every provider in turns, so its failure would cost every row): with the
    cooperative launch, else with a plain one (TRITONNET_COOPERATIVE_LAUNCH=0, for
    a driver that will not capture a cooperative launch; docs/persistent-step.md),
    else none. Each failure is printed."""
    settings = ["0"] if os.environ.get("TRITONNET_COOPERATIVE_LAUNCH") == "0" else ["1", "0"]
    for setting in settings:
        os.environ["TRITONNET_COOPERATIVE_LAUNCH"] = setting
        run = VariantEpochs("persistent", data, batch_size, limit)
        try:
            run.train_epoch()
            return run
        except Exception as error:  # noqa: BLE001 - any failure of the new kernel drops its rows alone
            print(
                f"bench_step_variants: persistent with TRITONNET_COOPERATIVE_LAUNCH={setting} failed: "
                f"{type(error).__name__}: {error}",
                file=sys.stderr,
            )
    return None


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument("--batch-sizes", type=batch_sizes, default=[64, 1024], help="comma-separated (default 64,1024)")
    options = arguments.parse_args(argv)
    cuda = torch.cuda.is_available()
    if not cuda and not options.smoke:
        print("bench_step_variants: no CUDA device; the fusions exist only in the compiled kernels")
        return 0
    if not cuda:
        os.environ["TRITON_INTERPRET"] = "1"  # before tritonnet imports triton, which reads it once
    device = torch.device("cuda" if cuda else "cpu")
    providers = select_providers(PROVIDERS, PROVIDERS, options.providers)
    batches = [16] if options.smoke else options.batch_sizes
    limit, repeats = (2, 1) if options.smoke else (None, 3 if options.quick else 5)
    data = synthetic_data(device)
    writer = ResultWriter("step_variants", results_dir(options), Environment.detect(device))
    torch.set_float32_matmul_precision("highest")
    mode = "synthetic fp32-ieee"
    for batch in batches:
        runs = {name: VariantEpochs(name, data, batch, limit) for name in providers if name != "persistent"}
        persistent = _working_persistent_run(data, batch, limit) if "persistent" in providers else None
        if persistent is not None:
            runs["persistent"] = persistent
        epochs = {name: run.train_epoch for name, run in runs.items()}
        seconds = time_in_turns(epochs, device, warmup=1, repeats=repeats)
        for name, run in runs.items():
            steps = run.steps_per_epoch
            writer.add(name, mode, "batch", batch, "epoch_time", "ms", seconds[name].scaled(1e3))
            writer.add(name, mode, "batch", batch, "wall_us_per_step", "us", seconds[name].scaled(1e6 / steps))
            if cuda:
                kernels = profile_kernel_time(run.train_epoch, steps)
                total = sum(kernels.values())
                writer.add(name, mode, "batch", batch, "gpu_kernel_us_per_step", "us", Quantiles(total, total, total))
    return 0


if __name__ == "__main__":
    sys.exit(main())
