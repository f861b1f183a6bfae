"""A run's history files: `history.json` and `history.csv`, one record per finished epoch.

Both stay strict formats that any tool reads as they are. JSON has no NaN or
Infinity, so a loss that became non-finite (a run with --allow-nonfinite) is
`null` in history.json and an empty cell in history.csv; in memory, and in the
checkpoint, it stays the float it was. Files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from pathlib import Path
from typing import Any

from tritonnet.files import atomic_write

HISTORY_FIELDS = ("epoch", "train_loss", "test_loss", "test_accuracy", "train_seconds")


def json_safe(value: Any) -> Any:
    """`value` with every NaN or infinite float, however deeply nested, made None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: json_safe(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(item) for item in value]
    return value


def write_json(path: str | os.PathLike, data: Any) -> None:
    """Strict JSON (non-finite numbers as null), indented, written atomically."""
    text = json.dumps(json_safe(data), indent=2, allow_nan=False)
    with atomic_write(path, "w") as handle:
        handle.write(text + "\n")


def write_history(out: Path, history: list[dict[str, float]], meta: dict[str, Any]) -> None:
    """history.json (with the run's settings and dataset) and history.csv."""
    write_json(out / "history.json", {**meta, "history": history})
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=HISTORY_FIELDS, lineterminator="\n")
    writer.writeheader()
    writer.writerows(json_safe(history))  # None is written as an empty cell
    with atomic_write(out / "history.csv", "w") as handle:
        handle.write(text.getvalue())
