"""Draw the benchmark figures from the saved results: figures/bench_<benchmark>_<metric>.png.

Each figure holds one panel per device and mode of the newest run of each
device: the median of every provider against the panel's x (batch, columns),
with the band from the 20th to the 80th percentile around it. The figures come
from the CSVs alone, so they can be redrawn at any time without rerunning a
benchmark.

    python benchmarks/plot.py [--results-dir DIR] [--figures-dir DIR]
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on CI or on a GPU box
import matplotlib.pyplot as plt  # noqa: E402

from harness import REPOSITORY_DIR, RESULTS_DIR, latest_runs, read_results  # noqa: E402

FIGURES_DIR = REPOSITORY_DIR / "figures"
PANEL_COLUMNS = 3


def _unique(values) -> list[str]:
    return list(dict.fromkeys(values))


def _draw_panel(axes, rows: list[dict[str, str]], title: str) -> None:
    for provider in _unique(row["provider"] for row in rows):
        points = sorted(
            (float(row["x_value"]), float(row["p50"]), float(row["p20"]), float(row["p80"]))
            for row in rows
            if row["provider"] == provider
        )
        x, p50, p20, p80 = zip(*points)
        axes.plot(x, p50, marker="o", label=provider)
        axes.fill_between(x, p20, p80, alpha=0.2)
    x_values = sorted({float(row["x_value"]) for row in rows})
    # Batch sizes and widths grow in powers of two; a log axis spaces them evenly.
    if x_values[0] > 0 and x_values[-1] / x_values[0] >= 8:
        axes.set_xscale("log", base=2)
    axes.set_xticks(x_values, [f"{value:g}" for value in x_values])
    axes.minorticks_off()
    # Providers can differ by orders of magnitude (a per-sample loader, a fused kernel).
    medians = [float(row["p50"]) for row in rows]
    if min(medians) > 0 and max(medians) / min(medians) >= 20:
        axes.set_yscale("log")
    axes.set_xlabel(rows[0]["x_name"])
    axes.set_ylabel(f"{rows[0]['metric']} ({rows[0]['unit']})")
    axes.set_title(title, fontsize=8)
    axes.grid(True, alpha=0.3)
    axes.legend(fontsize=6)


def plot_metric(runs: list[list[dict[str, str]]], benchmark: str, metric: str, path: Path) -> None:
    """One figure for one metric: a panel per (device, mode) of the newest runs."""
    panels = []
    for run in runs:
        rows = [row for row in run if row["metric"] == metric]
        for mode in _unique(row["mode"] for row in rows):
            title = f"{benchmark}: {mode}\n{rows[0]['device']}"
            panels.append((title, [row for row in rows if row["mode"] == mode]))
    columns = min(PANEL_COLUMNS, len(panels))
    lines = math.ceil(len(panels) / columns)
    figure, grid = plt.subplots(lines, columns, figsize=(4.5 * columns, 3.5 * lines), squeeze=False)
    for axes, (title, rows) in zip(grid.flat, panels):
        _draw_panel(axes, rows, title)
    for axes in list(grid.flat)[len(panels) :]:
        axes.set_visible(False)
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def plot_results(results_dir: Path, figures_dir: Path) -> list[Path]:
    """Draw every metric of every results CSV in `results_dir`; the paths written."""
    figures_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for csv_path in sorted(Path(results_dir).glob("*.csv")):
        runs = latest_runs(read_results(csv_path))
        if not runs:
            continue
        benchmark = runs[0][0]["benchmark"]
        for metric in _unique(row["metric"] for run in runs for row in run):
            path = figures_dir / f"bench_{benchmark}_{metric}.png"
            plot_metric(runs, benchmark, metric, path)
            written.append(path)
    return written


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    arguments.add_argument("--figures-dir", type=Path, default=FIGURES_DIR)
    parsed = arguments.parse_args(argv)
    for path in plot_results(parsed.results_dir, parsed.figures_dir):
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
