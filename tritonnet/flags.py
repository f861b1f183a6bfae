"""The values the `tritonnet` command accepts, checked before any work starts.

Each type below turns a flag's text into its value or raises
argparse.ArgumentTypeError, which argparse reports as "argument --flag: ..." with
exit code 2. `FlagError` is the same report for the checks that need more than
the flag's text: the file system (a folder that cannot be written) or the data (a
batch larger than the training set). The CLI runs those before training, so a bad
value never costs a run.
"""

from __future__ import annotations

import argparse
import math
import os
from pathlib import Path

# Batch sizes, epochs and limits index tensors: far past any real value, and below
# what every index type holds.
MAX_COUNT = 2**31 - 1
# What torch.manual_seed accepts.
MIN_SEED, MAX_SEED = -(2**63), 2**64 - 1
# The CLI trains float32 weights, and the SGD step multiplies by the rate in float32.
MAX_LEARNING_RATE = 3.4028234663852886e38


class FlagError(ValueError):
    """A flag's value that its text alone could not show to be wrong."""

    def __init__(self, flag: str, message: str) -> None:
        super().__init__(message)
        self.flag = flag


def _integer(text: str, low: int, high: int, expected: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = None
    if value is None or not low <= value <= high:
        raise argparse.ArgumentTypeError(f"expected {expected}, got {text!r}")
    return value


def positive_int(text: str) -> int:
    return _integer(text, 1, MAX_COUNT, f"a positive integer up to {MAX_COUNT}")


def seed(text: str) -> int:
    return _integer(text, MIN_SEED, MAX_SEED, f"an integer from {MIN_SEED} to {MAX_SEED}")


def learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_LEARNING_RATE:  # also refuses NaN
        raise argparse.ArgumentTypeError(
            f"expected a positive number up to {MAX_LEARNING_RATE:g} (float32 weights), got {text!r}"
        )
    return value


def sweep_folder(lr: float) -> str:
    """The sub-folder of one learning rate's run in a sweep, e.g. `lr_0.1`."""
    return f"lr_{lr:g}"


def learning_rates(text: str) -> list[float]:
    """Comma-separated rates, each with a sub-folder of its own."""
    rates = [learning_rate(part.strip()) for part in text.split(",") if part.strip()]
    if not rates:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of rates, got {text!r}")
    by_folder: dict[str, float] = {}
    for rate in rates:
        name = sweep_folder(rate)
        if name in by_folder:
            other = by_folder[name]
            problem = f"{rate!r} is given twice" if other == rate else f"{other!r} and {rate!r} would share {name}"
            raise argparse.ArgumentTypeError(f"{problem}: give rates that differ in their first 6 digits")
        by_folder[name] = rate
    return rates


def folder(text: str) -> str:
    if not text.strip():
        raise argparse.ArgumentTypeError("expected a folder, got an empty string")
    return text


def check_writable_folder(flag: str, path: str | os.PathLike) -> None:
    """Raise FlagError unless `path` is a folder, or can become one, that we can write in.

    Nothing is created: the nearest part of the path that exists must be a folder
    we may write in.
    """
    existing = Path(path).absolute()
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise FlagError(flag, f"{existing} is not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FlagError(flag, f"cannot write in {existing} (not writable)")


def check_batch_size(batch_size: int, train_size: int) -> None:
    if batch_size > train_size:
        raise FlagError(
            "--batch-size", f"{batch_size} is larger than the training set ({train_size} images)"
        )
