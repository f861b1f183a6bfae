"""The flags of `tritonnet bench` and `benchmarks/run.py`, defined once for both.

The benchmarks ship with the source checkout, not the installed package:
`tritonnet bench` checks its flags here (so `tritonnet bench --help` lists them),
then runs the checkout's benchmarks/run.py, which parses the same flags.

A run writes into a folder of its own, `runs/bench/` under the current folder, so
that a user who only wants numbers keeps a clean checkout. Only
`--committed-results` writes where the repository keeps its results
(benchmarks/results/ and figures/), as maintainers do for a commit.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tritonnet import flags

BENCHMARKS = ("launch", "linear", "softmax", "output_layer", "training")
OUTPUT_DIR = Path("runs") / "bench"


def _benchmark_names(text: str) -> list[str]:
    names = [name for name in text.split(",") if name]
    unknown = [name for name in names if name not in BENCHMARKS]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"expected names from {','.join(BENCHMARKS)}, got {text!r}")
    return names


def _folder(text: str) -> Path:
    return Path(flags.folder(text))


def add_bench_flags(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument(
        "--quick",
        action="store_true",
        help="the GPU check's set: every kernel at batches 1024 to 16384, no torch.compile rows (default: off)",
    )
    size.add_argument(
        "--smoke",
        action="store_true",
        help="the smallest run of every code path; its numbers mean nothing, and go to a new "
        "temporary folder unless --results-dir or --figures-dir says otherwise (default: off)",
    )
    parser.add_argument(
        "--benchmarks",
        type=_benchmark_names,
        default=",".join(BENCHMARKS),
        help="comma-separated benchmarks to run (default: %(default)s)",
    )
    parser.add_argument(
        "--synthetic", action="store_true", help="train on random data instead of Fashion-MNIST (default: off)"
    )
    parser.add_argument(
        "--results-dir", type=_folder, help=f"where <benchmark>.csv is appended to (default: {OUTPUT_DIR / 'results'})"
    )
    parser.add_argument(
        "--figures-dir", type=_folder, help=f"where the figures are drawn (default: {OUTPUT_DIR / 'figures'})"
    )
    parser.add_argument("--no-figures", action="store_true", help="skip drawing the figures (default: off)")
    parser.add_argument(
        "--committed-results",
        action="store_true",
        help="append to the checkout's benchmarks/results/ and redraw its figures/, the results "
        "the repository keeps (default: off)",
    )


def check_bench_flags(parser: argparse.ArgumentParser, parsed: argparse.Namespace) -> None:
    """Refuse --committed-results with a folder of its own or a smoke run's numbers."""
    if parsed.committed_results:
        for flag, given in (("--results-dir", parsed.results_dir), ("--figures-dir", parsed.figures_dir),
                            ("--smoke", parsed.smoke)):
            if given:
                parser.error(f"argument --committed-results: not allowed with {flag}")
