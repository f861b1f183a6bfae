"""What must match for a run to resume: the settings that decide its numbers, and
its data.

A checkpoint records what the data was (`data_record`): the dataset's name, the
folder it came from, the row counts, and a fingerprint of each split. Resuming on
other data (another --limit-train, another data folder) would go on training a
different problem and record a wrong loss, so it is refused with the fields that
differ. The source folder is reported but not compared: a copy of the data moved
elsewhere resumes.

The fingerprint is a SHA-256 over the split's shapes, all its labels and 1024
image rows spread evenly over it (3 MB of the 188 MB training set): a few
milliseconds, where hashing every byte would take about a second per run. It
tells other folders, subsets and datasets apart; it would not notice a single
pixel edited in a row it did not sample.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import torch

from tritonnet.datasets import Dataset

FINGERPRINT_ROWS = 1024
COMPARED_DATA = ("name", "train_rows", "test_rows", "train_fingerprint", "test_fingerprint")


def fingerprint(images: torch.Tensor, labels: torch.Tensor) -> str:
    """A short hex digest of one split; see the module docstring for what it covers."""
    rows = images.shape[0]
    count = min(rows, FINGERPRINT_ROWS)
    # Integer arithmetic, so every machine samples the same rows; only those rows
    # leave the device.
    sampled = torch.arange(count, dtype=torch.int64, device=images.device) * max(rows - 1, 0) // max(count - 1, 1)
    digest = hashlib.sha256()
    digest.update(repr((tuple(images.shape), str(images.dtype), tuple(labels.shape), str(labels.dtype))).encode())
    digest.update(labels.detach().cpu().contiguous().numpy().tobytes())
    digest.update(images.detach().index_select(0, sampled).cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def data_record(dataset: Dataset) -> dict[str, Any]:
    """What a checkpoint records about the data it was trained on."""
    return {
        "name": dataset.name,
        "source": str(dataset.source),
        "train_rows": int(dataset.train_images.shape[0]),
        "test_rows": int(dataset.test_images.shape[0]),
        "train_fingerprint": fingerprint(dataset.train_images, dataset.train_labels),
        "test_fingerprint": fingerprint(dataset.test_images, dataset.test_labels),
    }


def differences(saved: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """`key: <saved> in the checkpoint, <current> now` for each key whose values differ."""
    return [
        f"{key}: {saved.get(key)!r} in the checkpoint, {value!r} now"
        for key, value in current.items()
        if saved.get(key) != value
    ]


def check_resumable(path: Path, state: dict[str, Any], settings: dict[str, Any], data: dict[str, Any],
                    shuffle_device: str) -> None:
    """Raise ValueError, saying what differs, unless `state` (a validated checkpoint)
    was written with these settings on this data, its batch order drawn on
    `shuffle_device` (a generator's state continues only on its own device)."""
    if state["shuffle_device"] != shuffle_device:
        raise ValueError(
            f"checkpoint {path} drew its batch order on {state['shuffle_device']}; this run draws it "
            f"on {shuffle_device} (resume with the same device and --no-cuda-graphs setting)"
        )
    changed = differences(state["config"], settings)
    if changed:
        raise ValueError(
            f"checkpoint {path} was written by another run: {'; '.join(changed)}. "
            "Resume with the settings it was written with, or start a new run in another --out."
        )
    changed = differences(state["data"], {key: data[key] for key in COMPARED_DATA})
    if changed:
        raise ValueError(
            f"checkpoint {path} was written on other data: {'; '.join(changed)} (its data came "
            f"from {state['data']['source']}, this run's from {data['source']}). Resume on the "
            "data it was trained on, or start a new run in another --out."
        )
