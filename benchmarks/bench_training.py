"""How long does an epoch of the exercise's MLP take in tritonnet, and in PyTorch?

One epoch of the 784-512-128-10 sigmoid MLP on Fashion-MNIST, at batch 64 and
1024, lr 0.1, gradients of the mean loss (grad_scale "batch"), shuffled every
epoch. Every provider starts from the same seed and reads the same data,
preloaded on the device:
- "tritonnet": the exercise API, `tritonnet.make_step(model, cuda_graph=False)`
  per batch, on the Triton kernels; on a CPU it runs the reference path (the
  feature-major step, as the trainer runs it there) and is named
  "tritonnet-reference";
- "tritonnet-cuda-graph", on a GPU: the same steps replayed from a CUDA graph
  (`tritonnet.GraphedStep`, make_step's choice there), as the trainer runs them;
- "tritonnet-epoch-graph", on a GPU: the epoch as the trainer runs it there,
  `tritonnet.make_epoch_steps`, 64 steps to a CUDA graph replay, each step
  gathering its batch inside the graph, the order drawn on the GPU;
- "tritonnet-module": `tritonnet.module_model.ModuleModel` (the nn.Module twin,
  autograd and torch.optim.SGD), "tritonnet-module-reference" on a CPU;
- "torch-eager": idiomatic PyTorch, nn.Sequential + F.cross_entropy + autograd +
  optim.SGD;
- "torch-compile" and, on a GPU, "torch-compile-reduce-overhead" (CUDA graphs):
  the same, with the loss function under torch.compile;
- "torch-compile-max-autotune", on a GPU, only when asked for by name: the same in
  torch.compile's max-autotune mode, whose autotuning takes minutes (the GPU check
  runs it as a step of its own, under its own time limit);
- "torch-cuda-graph", on a GPU: the strongest plain-PyTorch step at this size,
  the whole step (forward, loss, backward, SGD step) captured in one
  torch.cuda.graph and replayed per batch (`TorchGraphTrainer`);
- "exercise-style": the exercise's own code, a per-sample DataLoader and
  hand-written layers (see exercise_style.py).
Reported: ms per epoch and steps per second, median and 20th/80th percentiles
over the timed epochs, after warm-up epochs that absorb compilation and
autotuning. For the graphed providers (GRAPHED_PROVIDERS) also the wall time per
step and, beside it, the GPU kernel time per step: one more epoch under
torch.profiler, its kernels' durations summed (kernel_time.py). The providers take turns epoch by epoch, so that a busy machine slows
them all alike. When both ran, the speedup of tritonnet over torch-eager is printed
(issue 7 asks for at least 1.5x on the CPU at batch 64) and saved as a metric.

`--precision` picks the arithmetic, and names it in every row's mode:
- "fp32-ieee" (the default): fp32 with `torch.set_float32_matmul_precision("highest")`,
  which tritonnet's kernels follow as torch's matmuls do;
- "fp32-tf32": the same at "high", TF32 tensor cores for both;
- "bf16": what each API offers for bf16. The torch providers and tritonnet-module
  run the forward and the loss under `torch.autocast(dtype=torch.bfloat16)`, fp32
  weights and optimizer; the exercise API has no autocast, so the tritonnet
  providers train an MLP whose weights and data are bf16 (`MLP(dtype=...)`).
  exercise-style is left out.

`--time-to-accuracy` instead trains each provider for 30 epochs from scratch and
reports the wall time of the whole training (compilation included) and the final
test accuracy.

    python benchmarks/bench_training.py [--quick] [--time-to-accuracy] [--synthetic]

Without the dataset, or with `--synthetic`, it uses random data of the same shape.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

import exercise_style
from kernel_time import profile_kernel_time
from tritonnet import MLP, make_epoch_steps, make_step
from tritonnet.backend import use_backend
from harness import (
    Environment,
    Quantiles,
    ResultWriter,
    parser,
    results_dir,
    select_providers,
    synchronize,
    time_in_turns,
)

LR = 0.1
SEED = 1
BATCH_SIZES = [64, 1024]
SIZES = (784, 512, 128, 10)
TRAIN_SIZE, TEST_SIZE = 60000, 10000
# The torch providers: None runs eagerly, a string is torch.compile's mode.
TORCH_COMPILE_MODES = {
    "torch-eager": None,
    "torch-compile": "default",
    "torch-compile-reduce-overhead": "reduce-overhead",
    "torch-compile-max-autotune": "max-autotune",
}
# torch.compile's modes that replay CUDA graphs, which need each step marked.
GRAPHING_COMPILE_MODES = ("reduce-overhead", "max-autotune")
GPU_PROVIDERS = (
    "tritonnet-cuda-graph",
    "tritonnet-epoch-graph",
    "torch-cuda-graph",
    "torch-compile-reduce-overhead",
    "torch-compile-max-autotune",
)
# Left out unless asked for by name: its autotuning alone takes minutes.
ON_REQUEST_PROVIDERS = ("torch-compile-max-autotune",)
# The providers whose GPU kernel time per step is reported beside their wall time.
GRAPHED_PROVIDERS = ("tritonnet-cuda-graph", "tritonnet-epoch-graph", "torch-cuda-graph")
# --precision: torch's float32 matmul precision for each.
PRECISIONS = {"fp32-ieee": "highest", "fp32-tf32": "high", "bf16": "highest"}


@dataclass
class Data:
    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor


def synthetic_data(device: torch.device) -> Data:
    """Random images and labels of Fashion-MNIST's shape: fine for timing, not for accuracy."""
    generator = torch.Generator().manual_seed(SEED)

    def images(count: int) -> torch.Tensor:
        return torch.randn(count, SIZES[0], generator=generator).to(device)

    def labels(count: int) -> torch.Tensor:
        return torch.randint(0, SIZES[-1], (count,), generator=generator).to(device)

    return Data(
        "synthetic", images(TRAIN_SIZE), labels(TRAIN_SIZE), images(TEST_SIZE), labels(TEST_SIZE)
    )


def load_data(synthetic: bool, device: torch.device) -> Data:
    """Fashion-MNIST from disk (never downloaded here), else synthetic data, saying why."""
    if synthetic:
        return synthetic_data(device)
    try:
        from tritonnet.datasets import load_dataset

        dataset = load_dataset("fashion-mnist", download=False)
    except (ImportError, FileNotFoundError) as error:
        print(f"Fashion-MNIST unavailable ({error}); using synthetic data of the same shape")
        return synthetic_data(device)
    return Data(
        dataset.name,
        dataset.train_images.to(device),
        dataset.train_labels.to(device),
        dataset.test_images.to(device),
        dataset.test_labels.to(device),
    )


def autocast(device: torch.device, precision: str):
    """bf16 autocast on `device` for --precision bf16; a no-op context otherwise.
    Without autocast's cache of cast weights, as torch's CUDA-graph docs ask for a
    captured step; each weight is cast once per step here, so nothing is lost."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16", cache_enabled=False)


def bf16_data(data: Data) -> Data:
    """The same data with bf16 images, for an exercise MLP whose weights are bf16."""
    return Data(
        data.name,
        data.train_images.to(torch.bfloat16),
        data.train_labels,
        data.test_images.to(torch.bfloat16),
        data.test_labels,
    )


def shuffled_batches(
    data: Data, batch_size: int, generator: torch.Generator, limit: int | None
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """One epoch of batches in a new random order, gathered on the device."""
    order = torch.randperm(len(data.train_labels), generator=generator).to(data.train_labels.device)
    for step, start in enumerate(range(0, len(order), batch_size)):
        if step == limit:
            return
        index = order[start : start + batch_size]
        yield data.train_images.index_select(0, index), data.train_labels.index_select(0, index)


class ExerciseApiTrainer:
    """Trains a model with the trainer's protocol (`make_step`, `evaluate`):
    `tritonnet.MLP` or `ModuleModel`, under one backend."""

    def __init__(
        self, model, backend: str, data: Data, batch_size: int, limit: int | None, cuda_graph: bool = False,
        precision: str = "fp32-ieee",
    ) -> None:
        self.model, self.backend, self.data, self.precision = model, backend, data, precision
        self.batch_size, self.limit = batch_size, limit
        self.generator = torch.Generator().manual_seed(SEED)
        self.step = make_step(model, cuda_graph=cuda_graph)

    def train_epoch(self) -> None:
        with use_backend(self.backend), autocast(self.data.train_images.device, self.precision):
            for x, labels in shuffled_batches(
                self.data, self.batch_size, self.generator, self.limit
            ):
                self.step(x, labels)

    def test_accuracy(self) -> float:
        with use_backend(self.backend):
            _, correct = self.model.evaluate(self.data.test_images, self.data.test_labels)
        return correct.item() / len(self.data.test_labels)


def torch_model(device: torch.device) -> nn.Sequential:
    """The exercise's MLP as idiomatic PyTorch: Linear and Sigmoid layers, logits out."""
    layers: list[nn.Module] = []
    for in_features, out_features in zip(SIZES[:-1], SIZES[1:]):
        layers += [nn.Linear(in_features, out_features), nn.Sigmoid()]
    return nn.Sequential(*layers[:-1]).to(device)


class EpochGraphTrainer:
    """tritonnet's epoch as the trainer runs it on a GPU: `make_epoch_steps`, many
    steps to a graph replay, the order drawn on the device from its own generator."""

    def __init__(self, model, data: Data, batch_size: int, limit: int | None) -> None:
        self.model, self.data = model, data
        self.steps = make_epoch_steps(model, data.train_images, data.train_labels, batch_size)
        self.generator = torch.Generator(device=self.steps.order_device).manual_seed(SEED)
        self.steps_per_epoch = steps_per_epoch(data, batch_size, limit)
        self.losses = torch.zeros(self.steps_per_epoch, dtype=torch.float64, device=model.device)

    def train_epoch(self) -> None:
        rows = len(self.data.train_labels)
        order = torch.randperm(rows, generator=self.generator, device=self.generator.device)
        chunk = self.steps.chunk_steps
        with use_backend("triton"):
            for first in range(0, self.steps_per_epoch, chunk):
                self.steps.run(order, first, min(chunk, self.steps_per_epoch - first), self.losses)

    def test_accuracy(self) -> float:
        with use_backend("triton"):
            _, correct = self.model.evaluate(self.data.test_images, self.data.test_labels)
        return correct.item() / len(self.data.test_labels)


class TorchTrainer:
    """Idiomatic PyTorch: nn.Sequential, F.cross_entropy, autograd, optim.SGD; the
    loss function eager (`compile_mode` None) or under torch.compile in that mode."""

    def __init__(
        self, compile_mode: str | None, data: Data, batch_size: int, limit: int | None,
        precision: str = "fp32-ieee",
    ) -> None:
        self.precision = precision
        self.model = torch_model(data.train_images.device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.loss = (
            self._loss
            if compile_mode is None
            else torch.compile(self._loss, mode=compile_mode, dynamic=False)
        )
        self.cuda_graphs = compile_mode in GRAPHING_COMPILE_MODES
        self.data, self.batch_size, self.limit = data, batch_size, limit
        self.generator = torch.Generator().manual_seed(SEED)

    def _loss(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with autocast(x.device, self.precision):
            return F.cross_entropy(self.model(x), labels)

    def train_epoch(self) -> None:
        for x, labels in shuffled_batches(self.data, self.batch_size, self.generator, self.limit):
            if self.cuda_graphs:
                # A new step: the graphs may reuse the previous step's output memory.
                torch.compiler.cudagraph_mark_step_begin()
            self.optimizer.zero_grad(set_to_none=True)
            self.loss(x, labels).backward()
            self.optimizer.step()

    @torch.no_grad()
    def test_accuracy(self) -> float:
        predictions = self.model(self.data.test_images).argmax(dim=1)
        return (predictions == self.data.test_labels).float().mean().item()


class TorchGraphTrainer:
    """PyTorch's whole-step CUDA graph, as torch's docs show it ("whole network
    capture"): nn.Sequential, F.cross_entropy, autograd and optim.SGD, the step
    captured once over static input buffers and replayed for every full batch.

    torch.optim.SGD has no `capturable` flag in torch 2.11 or 2.13: with a float lr
    and no momentum its step keeps no state, so it captures as it is. Before the
    capture, three steps on a side stream (which autograd and cuBLAS need, as the
    docs do) train on the first batch: three steps more than the other providers
    take. An epoch's short last batch runs eagerly; the graph keeps its own gradient
    buffers, so the eager step does not disturb it.
    """

    def __init__(self, data: Data, batch_size: int, limit: int | None, precision: str = "fp32-ieee") -> None:
        device = data.train_images.device
        self.precision = precision
        self.model = torch_model(device)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=LR)
        self.data, self.batch_size, self.limit = data, batch_size, limit
        self.generator = torch.Generator().manual_seed(SEED)
        self.images = torch.empty(batch_size, SIZES[0], device=device)
        self.labels = torch.empty(batch_size, dtype=torch.int64, device=device)
        self.graph: torch.cuda.CUDAGraph | None = None

    def _step(self, x: torch.Tensor, labels: torch.Tensor) -> None:
        self.optimizer.zero_grad(set_to_none=True)
        with autocast(x.device, self.precision):
            loss = F.cross_entropy(self.model(x), labels)
        loss.backward()
        self.optimizer.step()

    def _capture(self) -> None:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                self._step(self.images, self.labels)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self._step(self.images, self.labels)

    def train_epoch(self) -> None:
        for x, labels in shuffled_batches(self.data, self.batch_size, self.generator, self.limit):
            if x.shape[0] != self.batch_size:
                self._step(x, labels)
                continue
            self.images.copy_(x)
            self.labels.copy_(labels)
            if self.graph is None:
                self._capture()
            self.graph.replay()

    @torch.no_grad()
    def test_accuracy(self) -> float:
        predictions = self.model(self.data.test_images).argmax(dim=1)
        return (predictions == self.data.test_labels).float().mean().item()


class ExerciseStyleTrainer:
    """The exercise's own code: a per-sample DataLoader and hand-written layers."""

    def __init__(self, data: Data, batch_size: int, limit: int | None) -> None:
        self.model = exercise_style.MLP(batch_size, LR, data.train_images.device)
        generator = torch.Generator().manual_seed(SEED)
        self.loader = exercise_style.make_loader(
            data.train_images, data.train_labels, batch_size, generator
        )
        self.data, self.limit = data, limit

    def train_epoch(self) -> None:
        exercise_style.train_epoch(self.model, self.loader, self.limit)

    def test_accuracy(self) -> float:
        return exercise_style.accuracy(self.model, self.data.test_images, self.data.test_labels)


def module_model_importable() -> bool:
    try:
        import tritonnet.module_model  # noqa: F401
    except ImportError as error:
        print(f"tritonnet-module left out: {error}")
        return False
    return True


def available_providers(device: torch.device) -> list[str]:
    suffix = "" if device.type == "cuda" else "-reference"
    providers = [f"tritonnet{suffix}", "tritonnet-cuda-graph", "tritonnet-epoch-graph"]
    if module_model_importable():
        providers.append(f"tritonnet-module{suffix}")
    providers += [
        "torch-eager",
        "torch-cuda-graph",
        "torch-compile",
        "torch-compile-reduce-overhead",
        "torch-compile-max-autotune",
        "exercise-style",
    ]
    if device.type == "cuda":
        return providers
    return [name for name in providers if name not in GPU_PROVIDERS]


def skip_gpu_providers(requested: list[str] | None, device: torch.device) -> list[str] | None:
    """`requested` without the providers that need CUDA, each named as skipped, on a CPU."""
    if requested is None or device.type == "cuda":
        return requested
    for name in requested:
        if name in GPU_PROVIDERS:
            print(f"skipped: {name} needs CUDA", flush=True)
    return [name for name in requested if name not in GPU_PROVIDERS]


def make_trainer(provider: str, data: Data, batch_size: int, limit: int | None, precision: str = "fp32-ieee"):
    """A fresh trainer for `provider`, built after seeding, so every provider's
    initial weights and shuffles come from the same seed."""
    torch.manual_seed(SEED)
    device = data.train_images.device
    backend = "triton" if device.type == "cuda" else "reference"
    if provider.startswith("tritonnet-module"):
        from tritonnet.module_model import ModuleModel

        model = ModuleModel(batch_size, LR, SIZES, grad_scale="batch", device=device)
        return ExerciseApiTrainer(model, backend, data, batch_size, limit, precision=precision)
    if provider.startswith("tritonnet"):
        # The exercise API has no autocast: in bf16 its weights and data are bf16.
        dtype = torch.bfloat16 if precision == "bf16" else torch.float32
        data = bf16_data(data) if precision == "bf16" else data
        model = MLP(batch_size, LR, SIZES, grad_scale="batch", device=device, dtype=dtype)
        if provider == "tritonnet-epoch-graph":
            return EpochGraphTrainer(model, data, batch_size, limit)
        graphed = provider == "tritonnet-cuda-graph"
        return ExerciseApiTrainer(model, backend, data, batch_size, limit, cuda_graph=graphed)
    if provider == "exercise-style":
        return ExerciseStyleTrainer(data, batch_size, limit)
    if provider == "torch-cuda-graph":
        return TorchGraphTrainer(data, batch_size, limit, precision)
    return TorchTrainer(TORCH_COMPILE_MODES[provider], data, batch_size, limit, precision)


def steps_per_epoch(data: Data, batch_size: int, limit: int | None) -> int:
    steps = math.ceil(len(data.train_labels) / batch_size)
    return steps if limit is None else min(steps, limit)


def report_speedup(
    writer: ResultWriter,
    epoch_seconds: dict[str, Quantiles],
    label: str,
    batch_size: int,
    baseline: str = "torch-eager",
) -> None:
    """Print and save how many times faster tritonnet's epoch is than `baseline`'s."""
    if baseline not in epoch_seconds:
        return
    theirs = epoch_seconds[baseline]
    metric = "speedup_vs_" + baseline.replace("-", "_")
    for tritonnet in ("tritonnet", "tritonnet-cuda-graph", "tritonnet-epoch-graph", "tritonnet-reference"):
        if tritonnet not in epoch_seconds:
            continue
        ours = epoch_seconds[tritonnet]
        # Their time over ours; the percentiles pair each side's opposite extremes.
        speedup = Quantiles(theirs.p50 / ours.p50, theirs.p20 / ours.p80, theirs.p80 / ours.p20)
        print(
            f"speedup of {tritonnet} over {baseline}, batch {batch_size}: {speedup.p50:.2f}x "
            f"(epoch medians; {speedup.p20:.2f}x to {speedup.p80:.2f}x)",
            flush=True,
        )
        writer.add(tritonnet, label, "batch", batch_size, metric, "x", speedup)


def benchmark_epochs(
    arguments, data: Data, providers: list[str], writer: ResultWriter, label: str
) -> None:
    """Epoch times of every provider, the providers taking turns epoch by epoch."""
    device = data.train_images.device
    for batch_size in arguments.batch_sizes:
        steps = steps_per_epoch(data, batch_size, arguments.limit)
        trainers = {
            provider: make_trainer(provider, data, batch_size, arguments.limit, arguments.precision)
            for provider in providers
        }
        epoch_seconds = time_in_turns(
            {provider: trainer.train_epoch for provider, trainer in trainers.items()},
            device,
            arguments.warmup_epochs,
            arguments.epochs,
        )
        for provider, seconds in epoch_seconds.items():
            row = (provider, label, "batch", batch_size)
            writer.add(*row, "epoch_time", "ms", seconds.scaled(1e3))
            writer.add(*row, "steps_per_second", "steps/s", seconds.rate(steps))
            if provider in GRAPHED_PROVIDERS:
                writer.add(*row, "wall_us_per_step", "us", seconds.scaled(1e6 / steps))
                report_kernel_time(writer, row, trainers[provider], steps)
        report_speedup(writer, epoch_seconds, label, batch_size)
        # Issue 16's bar: twice PyTorch's own whole-step CUDA graph.
        report_speedup(writer, epoch_seconds, label, batch_size, baseline="torch-cuda-graph")


def report_kernel_time(writer: ResultWriter, row: tuple, trainer, steps: int) -> None:
    """One more epoch under torch.profiler: its kernels' time per step, saved as
    `gpu_kernel_us_per_step` beside the wall time, and the busiest kernels printed."""
    per_kernel = profile_kernel_time(trainer.train_epoch, steps)
    total = sum(per_kernel.values())
    print(f"{row[0]}, batch {row[3]}: {total:.1f} us of GPU kernels per step", flush=True)
    for name, microseconds in list(per_kernel.items())[:12]:
        print(f"  {microseconds:8.2f} us  {name[:100]}", flush=True)
    writer.add(*row, "gpu_kernel_us_per_step", "us", Quantiles(total, total, total))


def benchmark_time_to_accuracy(
    arguments, data: Data, providers: list[str], writer: ResultWriter, label: str
) -> None:
    device = data.train_images.device
    for batch_size in arguments.batch_sizes:
        for provider in providers:
            trainer = make_trainer(provider, data, batch_size, arguments.limit, arguments.precision)
            synchronize(device)
            start = time.perf_counter()
            for _ in range(arguments.epochs):
                trainer.train_epoch()
            synchronize(device)
            seconds = time.perf_counter() - start
            accuracy = trainer.test_accuracy()
            writer.add(
                provider,
                label,
                "batch",
                batch_size,
                "train_time",
                "s",
                Quantiles(seconds, seconds, seconds),
            )
            writer.add(
                provider,
                label,
                "batch",
                batch_size,
                "test_accuracy",
                "fraction",
                Quantiles(accuracy, accuracy, accuracy),
            )


def batch_sizes(text: str) -> list[int]:
    return [int(size) for size in text.split(",") if size]


def parse_arguments(argv: list[str] | None):
    arguments = parser(__doc__.splitlines()[0])
    arguments.add_argument(
        "--time-to-accuracy",
        action="store_true",
        help="train 30 epochs and report the test accuracy",
    )
    arguments.add_argument(
        "--synthetic", action="store_true", help="random data instead of Fashion-MNIST"
    )
    arguments.add_argument(
        "--device", default=None, help="cuda or cpu (default: cuda where there is one)"
    )
    arguments.add_argument(
        "--batch-sizes",
        type=batch_sizes,
        default=BATCH_SIZES,
        help="comma-separated (default 64,1024)",
    )
    arguments.add_argument(
        "--epochs",
        type=int,
        default=None,
        help="timed epochs (default 5, 2 with --quick, 30 to accuracy)",
    )
    arguments.add_argument(
        "--precision",
        choices=list(PRECISIONS),
        default="fp32-ieee",
        help="fp32 at full precision, fp32 with TF32 matmuls, or bf16 (default %(default)s)",
    )
    arguments.add_argument(
        "--warmup-epochs", type=int, default=1, help="untimed epochs before the timed ones"
    )
    arguments.add_argument(
        "--limit", type=int, default=None, help="at most this many batches per epoch"
    )
    parsed = arguments.parse_args(argv)
    if parsed.smoke:
        parsed.synthetic = True
        parsed.limit = parsed.limit or 3
    if parsed.epochs is None:
        parsed.epochs = 2 if parsed.smoke or parsed.quick else 30 if parsed.time_to_accuracy else 5
    return parsed


def main(argv: list[str] | None = None) -> int:
    arguments = parse_arguments(argv)
    device = torch.device(arguments.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    # For torch's matmuls and for tritonnet's, which follow it.
    torch.set_float32_matmul_precision(PRECISIONS[arguments.precision])
    available = available_providers(device)
    if arguments.precision == "bf16":
        available.remove("exercise-style")  # its hand-written layers have no bf16 path
    compiling = [name for name in available if name.startswith("torch-compile")]
    left_out = compiling if arguments.smoke else ON_REQUEST_PROVIDERS
    default = [name for name in available if name not in left_out]
    requested = skip_gpu_providers(arguments.providers, device)
    providers = select_providers(available, default, requested)
    data = load_data(arguments.synthetic, device)
    label = f"{data.name} {arguments.precision}"
    if arguments.limit is not None:
        label += f" {arguments.limit}-batch epochs"  # not whole epochs: say so in every row
    environment = Environment.detect(device)
    folder = results_dir(arguments)
    if arguments.time_to_accuracy:
        writer = ResultWriter("time_to_accuracy", folder, environment)
        benchmark_time_to_accuracy(arguments, data, providers, writer, label)
    else:
        writer = ResultWriter("training", folder, environment)
        benchmark_epochs(arguments, data, providers, writer, label)
    return 0


if __name__ == "__main__":
    sys.exit(main())
