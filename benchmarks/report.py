"""Print the newest benchmark results as Markdown tables, ready for the README.

For each results CSV and each device, the newest run: one table per metric, a
line per (mode, x) and a column per provider, each cell the median with its
20th-80th percentile range.

    python benchmarks/report.py [--results-dir DIR] [--metrics epoch_time,speedup_vs_torch_eager]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from harness import RESULTS_DIR, latest_runs, read_results


def _unique(values) -> list[str]:
    return list(dict.fromkeys(values))


def _number(text: str) -> str:
    """Whole numbers from 100 up, three significant digits below: no exponents."""
    value = float(text)
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 10:
        return f"{value:.1f}"
    return f"{value:#.3g}"


def metric_table(rows: list[dict[str, str]]) -> list[str]:
    """Markdown lines for one metric of one run."""
    providers = _unique(row["provider"] for row in rows)
    cells = {(row["mode"], row["x_value"], row["provider"]): row for row in rows}
    x_name = rows[0]["x_name"]
    lines = [
        f"| mode | {x_name} | " + " | ".join(providers) + " |",
        "|---|---:|" + "---:|" * len(providers),
    ]
    for mode, x_value in _unique((row["mode"], row["x_value"]) for row in rows):
        values = []
        for provider in providers:
            row = cells.get((mode, x_value, provider))
            values.append(
                ""
                if row is None
                else f"{_number(row['p50'])} ({_number(row['p20'])}–{_number(row['p80'])})"
            )
        lines.append(f"| {mode} | {x_value} | " + " | ".join(values) + " |")
    return lines


def report(results_dir: Path, metrics: list[str] | None = None) -> str:
    """The Markdown for every results CSV in `results_dir`."""
    lines: list[str] = []
    for csv_path in sorted(Path(results_dir).glob("*.csv")):
        for run in latest_runs(read_results(csv_path)):
            shown = [
                name
                for name in _unique(row["metric"] for row in run)
                if metrics is None or name in metrics
            ]
            if not shown:
                continue
            first = run[0]
            lines += [
                f"### {first['benchmark']} on {first['device']}",
                "",
                f"torch {first['torch']}, triton {first['triton']}, commit {first['commit']}, "
                f"{first['timestamp']}. Median (20th–80th percentile).",
                "",
            ]
            for metric in shown:
                rows = [row for row in run if row["metric"] == metric]
                lines += [f"**{metric}** ({rows[0]['unit']})", "", *metric_table(rows), ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--results-dir", type=Path, default=RESULTS_DIR)
    arguments.add_argument(
        "--metrics",
        type=lambda text: [name for name in text.split(",") if name],
        default=None,
        help="comma-separated metrics to show (default: all)",
    )
    parsed = arguments.parse_args(argv)
    print(report(parsed.results_dir, parsed.metrics))
    return 0


if __name__ == "__main__":
    sys.exit(main())
