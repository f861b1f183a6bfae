"""Run every benchmark, then draw the figures and print the Markdown report.

Each benchmark runs in a Python process of its own: a crash or a CUDA error in one
does not stop the others, and each starts with empty torch.compile and autotuning
caches. The kernel benchmarks print "skipped: needs CUDA" without a GPU; the
training benchmark runs anywhere, and so does the launch benchmark (on a CPU,
tritonnet's host overhead per call without the launch itself).

`tritonnet bench` runs this file from the checkout it is started in. Its flags are
defined in tritonnet/bench_flags.py, for both. Results and figures go to
runs/bench/ under the current folder, unless --committed-results asks for the
checkout's benchmarks/results/ and figures/.

    python benchmarks/run.py [--quick | --smoke] [--benchmarks launch,linear,softmax,output_layer,training]
                             [--synthetic] [--results-dir DIR] [--figures-dir DIR] [--no-figures]
                             [--committed-results]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from pathlib import Path

from tritonnet.bench_flags import OUTPUT_DIR, add_bench_flags, check_bench_flags

BENCHMARKS_DIR = Path(__file__).resolve().parent


def parse_arguments(argv: list[str] | None) -> argparse.Namespace:
    arguments = argparse.ArgumentParser(prog="benchmarks/run.py", description=__doc__.splitlines()[0])
    add_bench_flags(arguments)
    parsed = arguments.parse_args(argv)
    check_bench_flags(arguments, parsed)
    if parsed.committed_results:
        parsed.results_dir = BENCHMARKS_DIR / "results"
        parsed.figures_dir = BENCHMARKS_DIR.parent / "figures"
    if parsed.smoke:
        # A smoke run's numbers mean nothing: they go to a temporary folder unless
        # told otherwise, never next to real results or figures.
        scratch = Path(tempfile.mkdtemp(prefix="tritonnet-smoke-"))
        parsed.results_dir = parsed.results_dir or scratch / "results"
        parsed.figures_dir = parsed.figures_dir or scratch / "figures"
    parsed.results_dir = parsed.results_dir or OUTPUT_DIR / "results"
    parsed.figures_dir = parsed.figures_dir or OUTPUT_DIR / "figures"
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
    figures = "" if arguments.no_figures else f", figures in {arguments.figures_dir}"
    print(f"results in {arguments.results_dir}{figures}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
