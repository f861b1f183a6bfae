"""Run every benchmark, then draw the figures and print the Markdown report.

Each benchmark runs in a Python process of its own: a crash or a CUDA error in one
does not stop the others, and each starts with empty torch.compile and autotuning
caches. The kernel benchmarks print "skipped: needs CUDA" without a GPU; the
training benchmark runs anywhere.

`main(argv)` is also what `tritonnet bench` calls. benchmarks/ is not an installed
package, so this file imports nothing from it and can be loaded by its path.

    python benchmarks/run.py [--quick | --smoke] [--benchmarks linear,softmax,output_layer,training]
                             [--synthetic] [--results-dir DIR] [--figures-dir DIR] [--no-figures]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent
BENCHMARKS = ("linear", "softmax", "output_layer", "training")


def _benchmark_names(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown benchmarks {unknown}; choose from {list(BENCHMARKS)}"
        )
    return names


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    arguments = argparse.ArgumentParser(
        prog="benchmarks/run.py", description=__doc__.splitlines()[0]
    )
    size = arguments.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="the reduced set (about 2 minutes of kernels on an H100)",
    )
    size.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest run of every code path; numbers mean nothing",
    )
    arguments.add_argument(
        "--benchmarks",
        type=_benchmark_names,
        default=list(BENCHMARKS),
        help=f"comma-separated, from {','.join(BENCHMARKS)} (default: all)",
    )
    arguments.add_argument(
        "--synthetic", action="store_true", help="train on random data instead of Fashion-MNIST"
    )
    arguments.add_argument(
        "--results-dir", type=Path, default=None, help="default benchmarks/results"
    )
    arguments.add_argument("--figures-dir", type=Path, default=None, help="default figures/")
    arguments.add_argument("--no-figures", action="store_true", help="skip drawing the figures")
    parsed = arguments.parse_args(argv)
    if parsed.smoke:
        # A smoke run's numbers mean nothing: they go to a temporary folder unless
        # told otherwise, never next to real results or figures.
        scratch = Path(tempfile.mkdtemp(prefix="tritonnet-smoke-"))
        parsed.results_dir = parsed.results_dir or scratch / "results"
        parsed.figures_dir = parsed.figures_dir or scratch / "figures"
    parsed.results_dir = parsed.results_dir or BENCHMARKS_DIR / "results"
    parsed.figures_dir = parsed.figures_dir or BENCHMARKS_DIR.parent / "figures"
    return parsed


def _run(script: str, arguments: list[str]) -> int:
    command = [sys.executable, str(BENCHMARKS_DIR / script), *arguments]
    print(f"== {' '.join(command)}", flush=True)
    return subprocess.run(command).returncode


def main(argv: list[str] | None = None) -> int:
    """Run the chosen benchmarks, then the figures and the report; 1 if any failed."""
    arguments = parse_arguments(argv)
    results = ["--results-dir", str(arguments.results_dir)]
    size = ["--quick"] if arguments.quick else ["--smoke"] if arguments.smoke else []
    failed = []
    for name in arguments.benchmarks:
        extra = ["--synthetic"] if name == "training" and arguments.synthetic else []
        if _run(f"bench_{name}.py", [*size, *results, *extra]) != 0:
            failed.append(name)
    if (
        not arguments.no_figures
        and _run("plot.py", [*results, "--figures-dir", str(arguments.figures_dir)]) != 0
    ):
        failed.append("plot")
    if _run("report.py", results) != 0:
        failed.append("report")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
