"""What the kernel benchmarks share: precision modes, providers, and the metrics they report.

Each kernel benchmark times one operation per case against the same providers:
- "tritonnet": the operation from `tritonnet.backend.ops_for(...)` under the
  "triton" backend, called as the library calls it;
- "torch-eager": the same math in idiomatic PyTorch;
- "torch-compile", "torch-compile-max-autotune": that PyTorch function under
  `torch.compile`, compiled afresh for each case (`dynamic=False`, so each shape
  gets kernels specialized to it, as tritonnet's autotuner does);
- a floor: the one library call no implementation can beat (a cuBLAS matmul, or a
  plain copy for a memory-bound operation).

Each case reports the time (µs) and, from the case's work, TFLOP/s, GB/s and the
fraction of the device's peak. The work (flops, bytes) is the minimum the
operation needs, the same for every provider, so the rates compare directly.

Every kernel benchmark takes the harness's flags. Without CUDA it prints
"skipped: needs CUDA" and exits; `--smoke` runs a tiny case anywhere (on a CPU in
Triton's interpreter) to show that the script works. `KernelBenchmark` is the
run they share: its setup, and the timing of one case for every provider.
"""

from __future__ import annotations

import argparse
import contextlib
import os
from dataclasses import dataclass
from typing import Callable, Iterator

import torch

from harness import Environment, Quantiles, ResultWriter, parser, results_dir, select_providers, time_kernel
from peaks import Peak, peak_for


@dataclass(frozen=True)
class Mode:
    """A precision mode: the tensors' dtype and torch's float32 matmul precision."""

    name: str
    dtype: torch.dtype
    matmul_precision: str  # torch.set_float32_matmul_precision; tritonnet follows it
    compute: str  # which peak applies: "fp32", "tf32" or "bf16"


# The matmul modes: fp32 at full precision ("ieee" in tl.dot), TF32 tensor cores, bf16.
MATMUL_MODES = {
    "fp32-ieee": Mode("fp32-ieee", torch.float32, "highest", "fp32"),
    "tf32": Mode("tf32", torch.float32, "high", "tf32"),
    "bf16": Mode("bf16", torch.bfloat16, "highest", "bf16"),
}
# Modes of an operation without a matmul, where the matmul precision changes nothing.
ELEMENTWISE_MODES = {
    "fp32": Mode("fp32", torch.float32, "highest", "fp32"),
    "bf16": Mode("bf16", torch.bfloat16, "highest", "bf16"),
}


@contextlib.contextmanager
def precision(mode: Mode) -> Iterator[None]:
    """Run a case under `mode`'s float32 matmul precision, restoring the previous one."""
    previous = torch.get_float32_matmul_precision()
    torch.set_float32_matmul_precision(mode.matmul_precision)
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(previous)


def kernel_device(arguments: argparse.Namespace) -> torch.device:
    """The GPU, or, for a smoke run without one, the CPU with Triton's interpreter.

    Without CUDA and without --smoke the benchmark has nothing to measure: it says
    so and exits with success, so that `run.py` goes on to the next benchmark.
    """
    if torch.cuda.is_available():
        return torch.device("cuda")
    if not arguments.smoke:
        print("skipped: needs CUDA")
        raise SystemExit(0)
    # The Triton kernels import lazily, after this: early enough for the interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")
    return torch.device("cpu")


# The quick set is the GPU check's: every kernel at the batches where the GPU work
# outweighs the launch, fp32 (ieee and TF32) and bf16, in about a minute of an
# H200. Its cases take do_bench's repeats for QUICK_REPEAT_MS instead of 100 ms:
# at these sizes a kernel runs tens to thousands of times in that, and where the
# earlier runs timed the GPU rather than the launch, the 20th and 80th
# percentiles were within 2% of the median (softmax at 16384 fp32 columns:
# 200-201 us; fp32 forward+backward at batch 4096: 611-623 us).
QUICK_BATCHES = [1024, 4096, 16384]
QUICK_REPEAT_MS = 25


def repeat_ms(arguments: argparse.Namespace) -> int:
    """do_bench's timing window for this run (see QUICK_REPEAT_MS)."""
    return QUICK_REPEAT_MS if arguments.quick else 100


def kernel_providers(arguments: argparse.Namespace, device: torch.device, floor: str) -> list[str]:
    """The providers to time. Smoke and quick runs leave out torch.compile: tens of
    seconds to compile each case (minutes with max-autotune), which the GPU check
    cannot afford."""
    available = ["tritonnet", "torch-eager", "torch-compile", floor]
    if device.type == "cuda":
        available.insert(3, "torch-compile-max-autotune")
    if arguments.smoke or arguments.quick:
        default = ["tritonnet", "torch-eager", floor]
    else:
        default = available
    return select_providers(available, default, arguments.providers)


def tritonnet_ops(*tensors: torch.Tensor):
    """The module of Triton operations for these tensors (`tritonnet.triton_backend`)."""
    from tritonnet.backend import ops_for, use_backend

    with use_backend("triton"):
        return ops_for(*tensors)


_COMPILE_MODES = {"torch-compile": None, "torch-compile-max-autotune": "max-autotune"}


def torch_variant(provider: str, function: Callable) -> Callable:
    """`function` as the torch provider runs it: as is, or freshly compiled.

    The dynamo cache is reset first, so that one case's graphs neither count against
    the next case's recompilation limit nor make it fall back to eager.
    """
    if provider == "torch-eager":
        return function
    torch._dynamo.reset()
    return torch.compile(function, mode=_COMPILE_MODES[provider], dynamic=False)


@dataclass(frozen=True)
class Work:
    """The least work an operation needs: floating-point operations and bytes moved."""

    flops: float
    bytes: float

    def roofline_seconds(self, peak: Peak, compute: str) -> float:
        """The time at the device's peak of whichever of compute and bandwidth binds."""
        return max(
            self.flops / (peak.tflops(compute) * 1e12),
            self.bytes / (peak.bandwidth_gbs * 1e9),
        )


def record(
    writer: ResultWriter,
    provider: str,
    label: str,
    mode: Mode,
    x_name: str,
    x_value: int,
    seconds: Quantiles,
    work: Work,
    peak: Peak | None,
) -> None:
    """Write one timed case: µs, TFLOP/s (if it multiplies), GB/s, fraction of peak.

    The fraction of peak is the roofline time over the measured time: 1.0 would be
    the device's peak of whichever limit, compute or memory, the case is bound by.
    It is left out on a device without a listed peak.
    """
    writer.add(provider, label, x_name, x_value, "time", "us", seconds.scaled(1e6))
    if work.flops:
        writer.add(
            provider, label, x_name, x_value, "tflops", "TFLOP/s", seconds.rate(work.flops / 1e12)
        )
    writer.add(
        provider, label, x_name, x_value, "bandwidth", "GB/s", seconds.rate(work.bytes / 1e9)
    )
    if peak is not None:
        fraction = seconds.rate(work.roofline_seconds(peak, mode.compute))
        writer.add(provider, label, x_name, x_value, "peak_fraction", "fraction", fraction)


@dataclass(frozen=True)
class KernelBenchmark:
    """One run of a kernel benchmark: its flags, device, providers, CSV and peak."""

    arguments: argparse.Namespace
    device: torch.device
    providers: list[str]
    writer: ResultWriter
    peak: Peak | None

    @classmethod
    def start(cls, doc: str, name: str, floor: str, argv: list[str] | None) -> KernelBenchmark:
        """Parse the flags (the script's first docstring line is its description) and
        set the run up: `name`.csv in the results folder, `floor` among the providers.
        Exits, as `kernel_device` says, where there is nothing to measure."""
        arguments = parser(doc.splitlines()[0]).parse_args(argv)
        device = kernel_device(arguments)
        providers = kernel_providers(arguments, device, floor)
        writer = ResultWriter(name, results_dir(arguments), Environment.detect(device))
        return cls(arguments, device, providers, writer, peak_for(writer.environment.device))

    def time_case(
        self,
        make_call: Callable[[str], Callable[[], object]],
        mode: Mode,
        label: str,
        x_name: str,
        x_value: int,
        work: Work,
    ) -> None:
        """Time `make_call(provider)` for every provider under `mode`'s precision and
        record each."""
        with precision(mode):
            for provider in self.providers:
                seconds = time_kernel(make_call(provider), self.device, repeat_ms(self.arguments))
                record(self.writer, provider, label, mode, x_name, x_value, seconds, work, self.peak)
