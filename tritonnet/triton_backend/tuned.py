"""The tuned table: the config Triton's autotuner chose, per GPU, kernel, shape
class, dtype, precision and alignment class, committed as
`kernels/tuned/<gpu-name>.json` so that a first call on a known GPU does not
pause to autotune.

`benchmarks/tune.py` fills it on a GPU. A table is read on the first launch key
that would otherwise autotune, never at import (no CUDA call then). An entry is
used only while it is one of the kernel's candidate configs for its alignment
class: a table written before a config list changed cannot bring back a config
that was dropped, and such a key autotunes again.

The file, e.g. for an H200:

    {"device": "NVIDIA H200", "triton": "3.6.0",
     "kernels": {"linear_forward_kernel": {
         "64x512x1024 ieee float32 aligned":
             {"kwargs": {"BLOCK_M": 64, ...}, "num_warps": 4, "num_stages": 3}}}}

The shape class rounds each size in the autotuner's key up to a power of two,
so batches 65 to 128 share the entry of 128.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Mapping

import torch
import triton

from tritonnet import kernels
from tritonnet.files import atomic_write

TUNED_DIR = Path(kernels.__file__).resolve().parent / "tuned"

_tables: dict[str, dict] = {}
_autotuned: dict[tuple[str, str], triton.Config] = {}


def device_name(device: torch.device) -> str | None:
    """The GPU's name that names its table; None off CUDA (no table)."""
    return torch.cuda.get_device_name(device) if device.type == "cuda" else None


def table_path(name: str, folder: Path | None = None) -> Path:
    """`<folder>/<name with each run of other characters as one dash>.json`."""
    slug = re.sub(r"[^A-Za-z0-9]+", "-", name).strip("-")
    return Path(folder or TUNED_DIR) / f"{slug}.json"


def tuning_key(autotuner, arguments: Mapping[str, object], alignment: str) -> str | None:
    """The shape class, key strings (the precision), dtype and alignment of a launch,
    e.g. "64x512x1024 ieee float32 aligned"; None for a kernel without autotuner."""
    if autotuner is None:
        return None
    sizes, words = [], []
    for name in autotuner.keys:
        value = arguments[name]
        if isinstance(value, int) and not isinstance(value, bool):
            sizes.append(str(triton.next_power_of_2(max(value, 1))))
        else:
            words.append(str(value))
    dtype = next(value.dtype for value in arguments.values() if isinstance(value, torch.Tensor))
    return " ".join(["x".join(sizes), *words, str(dtype).removeprefix("torch."), alignment])


def _as_json(config: triton.Config) -> dict:
    return {"kwargs": dict(config.kwargs), "num_warps": config.num_warps, "num_stages": config.num_stages}


def _load(name: str) -> dict:
    """The table of GPU `name` (kernel -> tuning key -> config), read once."""
    if name not in _tables:
        path = table_path(name)
        table = {}
        if path.exists():
            try:
                table = json.loads(path.read_text())["kernels"]
            except (OSError, ValueError, KeyError, TypeError) as error:
                warnings.warn(f"tritonnet: ignoring the tuned table {path}: {error}", RuntimeWarning, stacklevel=2)
        _tables[name] = table
    return _tables[name]


def lookup(name: str | None, kernel_name: str, key: str, autotuner) -> triton.Config | None:
    """The candidate config of `autotuner` that GPU `name`'s table holds for
    `kernel_name` at `key`, or None."""
    if name is None or autotuner is None:
        return None
    entry = _load(name).get(kernel_name, {}).get(key)
    if entry is None:
        return None
    return next((config for config in autotuner.configs if _as_json(config) == entry), None)


def record(kernel_name: str, key: str, config: triton.Config) -> None:
    """Remember what the autotuner chose, for `autotuned()` (the tuning script)."""
    _autotuned[(kernel_name, key)] = config


def autotuned() -> dict[tuple[str, str], triton.Config]:
    """(kernel name, tuning key) -> config, for every launch this process autotuned."""
    return dict(_autotuned)


def save(path: Path, device: str, choices: Mapping[tuple[str, str], triton.Config]) -> int:
    """Merge `choices` into the table at `path` (atomically); returns its entry count."""
    table = json.loads(path.read_text())["kernels"] if path.exists() else {}
    for (kernel_name, key), config in choices.items():
        table.setdefault(kernel_name, {})[key] = _as_json(config)
    document = {
        "device": device,
        "triton": triton.__version__,
        "kernels": {name: dict(sorted(entries.items())) for name, entries in sorted(table.items())},
    }
    with atomic_write(path, "w") as file:
        json.dump(document, file, indent=1)
        file.write("\n")
    return sum(len(entries) for entries in table.values())


def clear() -> None:
    """Forget the loaded tables and the recorded choices."""
    _tables.clear()
    _autotuned.clear()


def ignore_table(name: str) -> None:
    """Read no table for GPU `name` in this process, so that every launch key
    autotunes (the tuning script, which must not take its old choices for new ones)."""
    _tables[name] = {}
