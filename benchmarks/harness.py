"""The one harness every benchmark shares: timers, the run's environment, the CSV.

Every measurement is a median with its 20th and 80th percentiles (`Quantiles`), so
a plot or a table can show how much a number moves from run to run.

Timers:
- `time_kernel` times one GPU operation with `triton.testing.do_bench`, which
  flushes the L2 cache before each call and times with CUDA events; on a CPU it
  falls back to `time_repeated`.
- `time_repeated` runs a callable a few times to warm it up, then times each of N
  repeats with `time.perf_counter`, waiting for the GPU at both ends when the work
  is on one. `time_in_turns` does the same for several callables, taking turns
  repeat by repeat: the training benchmark times its providers' epochs with it.

Results go to `<results_dir>/<benchmark>.csv`, one row per (provider, mode, x,
metric), appended as soon as they are measured so that a run cut short keeps what
it measured. Every row of one run carries the same timestamp: it is the run's id,
which the plots and the report use to pick the latest run of each device.
"""

from __future__ import annotations

import argparse
import csv
import datetime
import importlib.metadata
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy
import torch

BENCHMARKS_DIR = Path(__file__).resolve().parent
REPOSITORY_DIR = BENCHMARKS_DIR.parent
RESULTS_DIR = BENCHMARKS_DIR / "results"

RESULT_COLUMNS = (
    "benchmark",
    "provider",
    "mode",
    "x_name",
    "x_value",
    "metric",
    "unit",
    "p50",
    "p20",
    "p80",
    "device",
    "torch",
    "triton",
    "commit",
    "timestamp",
)

# do_bench returns the quantiles in the order asked: median first.
DO_BENCH_QUANTILES = [0.5, 0.2, 0.8]


@dataclass(frozen=True)
class Quantiles:
    """A median with its 20th and 80th percentiles."""

    p50: float
    p20: float
    p80: float

    @classmethod
    def of(cls, samples: list[float]) -> "Quantiles":
        p50, p20, p80 = numpy.percentile(samples, [50, 20, 80])
        return cls(float(p50), float(p20), float(p80))

    def scaled(self, factor: float) -> "Quantiles":
        """The same quantiles in another unit (seconds to microseconds, say)."""
        return Quantiles(self.p50 * factor, self.p20 * factor, self.p80 * factor)

    def rate(self, amount: float) -> "Quantiles":
        """`amount` per unit of this duration: bytes per second from seconds, say.

        A rate falls as the time rises, so the 20th percentile of the rate comes
        from the 80th percentile of the time, and the other way round.
        """
        return Quantiles(amount / self.p50, amount / self.p80, amount / self.p20)


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` (a no-op on the CPU)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _seconds_of_one_call(function: Callable[[], object], device: torch.device) -> float:
    start = time.perf_counter()
    function()
    synchronize(device)
    return time.perf_counter() - start


def time_repeated(
    function: Callable[[], object], device: torch.device, warmup: int, repeats: int
) -> Quantiles:
    """Seconds per call of `function`: `warmup` untimed calls, then `repeats` timed ones."""
    return time_in_turns({"": function}, device, warmup, repeats)[""]


def time_in_turns(
    functions: dict[str, Callable[[], object]], device: torch.device, warmup: int, repeats: int
) -> dict[str, Quantiles]:
    """Seconds per call of each function, the functions taking turns call by call.

    Taking turns spreads a slowdown of the machine (another process, a throttled
    clock) over every function alike, instead of landing on whichever ran then: the
    ratios between them stay fair on a shared machine.
    """
    for function in functions.values():
        for _ in range(warmup):
            function()
    synchronize(device)
    samples: dict[str, list[float]] = {name: [] for name in functions}
    for _ in range(repeats):
        for name, function in functions.items():
            samples[name].append(_seconds_of_one_call(function, device))
    return {name: Quantiles.of(times) for name, times in samples.items()}


def time_kernel(function: Callable[[], object], device: torch.device, repeat_ms: int = 100) -> Quantiles:
    """Seconds per call of one operation, with `do_bench` on a GPU: as many calls
    as fit in `repeat_ms` milliseconds, after a quarter of that in warm-up calls.

    Kernels are timed on a CPU only in smoke runs, whose numbers just show that the
    benchmark runs: three plain repeats are enough there.
    """
    if device.type != "cuda":
        return time_repeated(function, device, warmup=1, repeats=3)
    # Imported here: triton reads TRITON_INTERPRET when it is first imported.
    import triton.testing

    milliseconds = triton.testing.do_bench(
        function, warmup=max(repeat_ms // 4, 1), rep=repeat_ms, quantiles=DO_BENCH_QUANTILES
    )
    return Quantiles(*milliseconds).scaled(1e-3)


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo and the number of cores this process may use."""
    name = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{name} ({cores} cores)"


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's model with its core count."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return cpu_model()


def _package_version(name: str) -> str:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "none"


def _commit() -> str:
    """The checkout's commit; TRITONNET_COMMIT where the code runs from a copy with no
    .git (the GPU check's staging folder)."""
    if os.environ.get("TRITONNET_COMMIT"):
        return os.environ["TRITONNET_COMMIT"]
    try:
        result = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPOSITORY_DIR,
            capture_output=True,
            text=True,
            check=True,
        )
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return result.stdout.strip()


@dataclass(frozen=True)
class Environment:
    """What a run was measured on; every row of the run repeats it."""

    device: str
    torch: str
    triton: str
    commit: str
    timestamp: str

    @classmethod
    def detect(cls, device: torch.device) -> "Environment":
        """The run's environment. TRITONNET_RUN_TIMESTAMP names the run when several
        scripts make up one (the GPU check): `latest_runs` then keeps all their rows."""
        now = datetime.datetime.now(datetime.timezone.utc)
        timestamp = os.environ.get("TRITONNET_RUN_TIMESTAMP") or now.isoformat(timespec="seconds")
        return cls(
            device=device_name(device),
            torch=torch.__version__,
            triton=_package_version("triton"),
            commit=_commit(),
            timestamp=timestamp,
        )


def _format(value: float) -> str:
    return f"{value:.6g}"


class ResultWriter:
    """Appends one benchmark's rows to `<results_dir>/<benchmark>.csv` and echoes them."""

    def __init__(self, benchmark: str, results_dir: Path, environment: Environment) -> None:
        self.benchmark = benchmark
        self.environment = environment
        self.path = Path(results_dir) / f"{benchmark}.csv"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists() and self.path.stat().st_size > 0:
            with self.path.open(newline="") as file:
                header = tuple(next(csv.reader(file), ()))
            if header != RESULT_COLUMNS:
                raise ValueError(
                    f"{self.path} has columns {header}, expected {RESULT_COLUMNS}; "
                    "move it away or pass another --results-dir"
                )
        else:
            with self.path.open("w", newline="") as file:
                csv.writer(file).writerow(RESULT_COLUMNS)

    def add(
        self,
        provider: str,
        mode: str,
        x_name: str,
        x_value: int,
        metric: str,
        unit: str,
        quantiles: Quantiles,
    ) -> None:
        environment = self.environment
        row = (
            self.benchmark,
            provider,
            mode,
            x_name,
            str(x_value),
            metric,
            unit,
            _format(quantiles.p50),
            _format(quantiles.p20),
            _format(quantiles.p80),
            environment.device,
            environment.torch,
            environment.triton,
            environment.commit,
            environment.timestamp,
        )
        with self.path.open("a", newline="") as file:
            csv.writer(file).writerow(row)
        print(
            f"{self.benchmark:<14} {provider:<28} {mode:<28} {x_name}={x_value:<6} "
            f"{metric:<16} {_format(quantiles.p50):>10} {unit:<9} "
            f"[{_format(quantiles.p20)}, {_format(quantiles.p80)}]",
            flush=True,
        )


def read_results(path: Path) -> list[dict[str, str]]:
    """The rows of one results CSV, as dicts keyed by `RESULT_COLUMNS`."""
    with Path(path).open(newline="") as file:
        return list(csv.DictReader(file))


def latest_runs(rows: list[dict[str, str]]) -> list[list[dict[str, str]]]:
    """The rows of the newest run of each device, one list per device."""
    newest: dict[str, str] = {}
    for row in rows:
        newest[row["device"]] = max(newest.get(row["device"], ""), row["timestamp"])
    return [
        [row for row in rows if row["device"] == device and row["timestamp"] == timestamp]
        for device, timestamp in sorted(newest.items())
    ]


def parser(description: str) -> argparse.ArgumentParser:
    """The command-line options every benchmark script takes."""
    arguments = argparse.ArgumentParser(description=description)
    arguments.add_argument("--quick", action="store_true", help="a reduced set of cases")
    arguments.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest run of every code path, on any machine; its numbers mean nothing",
    )
    arguments.add_argument(
        "--results-dir",
        type=Path,
        default=None,
        help=f"where <benchmark>.csv is appended to (default {RESULTS_DIR}; "
        "for --smoke a new temporary folder)",
    )
    arguments.add_argument(
        "--providers",
        type=lambda text: [name for name in text.split(",") if name],
        default=None,
        help="comma-separated providers to run (default: all that apply)",
    )
    return arguments


def results_dir(arguments: argparse.Namespace) -> Path:
    """The folder for the results: --results-dir, else a new temporary folder for a
    smoke run (its numbers must never mix with real ones), else benchmarks/results."""
    if arguments.results_dir is not None:
        return arguments.results_dir
    if arguments.smoke:
        folder = Path(tempfile.mkdtemp(prefix="tritonnet-smoke-"))
        print(f"smoke run: results go to {folder}")
        return folder
    return RESULTS_DIR


def select_providers(
    available: list[str], default: list[str], requested: list[str] | None
) -> list[str]:
    """The providers to run: `requested` (from `--providers`) if given, else `default`.

    A requested name that cannot run here fails the run, naming what can.
    """
    if requested is None:
        return default
    unknown = [name for name in requested if name not in available]
    if unknown:
        raise SystemExit(f"--providers: {unknown} cannot run here; available: {available}")
    return [name for name in available if name in requested]
