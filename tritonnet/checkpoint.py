"""Training checkpoints: everything needed to continue a run bit for bit, checked
on the way in and on the way out.

A checkpoint is one `torch.save` file of tensors, numbers, strings and lists, so
it loads with `torch.load(weights_only=True)`: no pickle of arbitrary objects,
nothing that runs code when it is read. It holds:
- `format_version`: FORMAT_VERSION;
- `parameters`: the network's weights and biases (`MLP.state_dict` keys), finite;
- `config`: the run's settings (`TrainConfig.describe`);
- `data`: what the run trained on (`tritonnet.resume.data_record`);
- `epoch`: the epochs completed; `step`: steps done in the epoch after those, 0 at
  an epoch boundary, more when a run was interrupted mid-epoch;
- `shuffle_state`: the shuffling generator's state at the start of that epoch, so
  the epoch's order is drawn again identically on resume; `shuffle_device`: where
  that generator lives ("cpu", or "cuda" where the steps replay from CUDA graphs);
- `torch_rng_state`: torch's global CPU RNG state;
- `partial`: the unfinished epoch's running train-loss sum and training seconds;
- `history`: one record per completed epoch.

Files are written atomically (see `tritonnet.files`). Loading verifies the bytes
before it believes them: `torch.save` writes a zip archive with a CRC-32 for every
record, which `torch.load` never checks, so a flipped bit in a weight would load
silently; the CRCs are checked here first. Then every field is validated, so a
damaged or hand-edited checkpoint fails with one CheckpointError naming the file
and the field, instead of a KeyError or a wrong resume. Saving runs the same
validation, so no checkpoint with non-finite weights or a bad field is ever
written over a good one.
"""

from __future__ import annotations

import io
import math
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Any

import torch

from tritonnet.files import atomic_write
from tritonnet.history import HISTORY_FIELDS
from tritonnet.layers import GRAD_SCALES

FORMAT_VERSION = 2
# Both generators are CPU Mersenne Twisters: their states are 5056 bytes.
RNG_STATE_SHAPE = tuple(torch.Generator().get_state().shape)


class CheckpointError(ValueError):
    """A checkpoint that cannot be used: unreadable, damaged, or with a bad field.
    The message names the file and what is wrong with it, on one line."""


class _Invalid(Exception):
    """One field's problem, before the file's name is put in front of it."""


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Validate `state` and write it atomically; on any problem the file on disk,
    the last good checkpoint, is left as it was."""
    state = {"format_version": FORMAT_VERSION, **state}
    try:
        _validate(state)
    except _Invalid as problem:
        raise CheckpointError(f"refusing to write checkpoint {path}: {problem}") from None
    with atomic_write(path, "wb") as handle:
        torch.save(state, handle)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read, verify and validate a checkpoint written by `save_checkpoint`."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    state = _read(path)
    try:
        _validate(state)
    except _Invalid as problem:
        raise CheckpointError(f"checkpoint {path}: {problem}") from None
    return state


def describe_progress(epoch: int, step: int) -> str:
    """How far a checkpoint got, in words: "epoch 2", "epoch 2 and 5 steps of epoch 3"."""
    if step == 0:
        return f"epoch {epoch}"
    steps = f"{step} step{'s' if step != 1 else ''} of epoch {epoch + 1}"
    return f"epoch {epoch} and {steps}" if epoch else steps


def _read(path: Path) -> Any:
    """The file's contents, once its zip CRCs match: our messages, not torch's."""
    try:
        raw = path.read_bytes()
    except OSError as error:
        raise CheckpointError(f"checkpoint {path} cannot be read: {error.strerror or error}") from error
    if not raw:
        raise CheckpointError(f"checkpoint {path} is an empty file")
    try:
        with zipfile.ZipFile(io.BytesIO(raw)) as archive:
            damaged = archive.testzip()
            names = archive.namelist()
    except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError, RuntimeError) as error:
        raise CheckpointError(
            f"checkpoint {path} is damaged or not a checkpoint: it is not a complete zip "
            f"archive, as torch.save writes ({error})"
        ) from error
    if damaged is not None:
        raise CheckpointError(f"checkpoint {path} is damaged: its record {damaged!r} fails its CRC check")
    if not any(name.endswith("/data.pkl") for name in names):
        raise CheckpointError(f"checkpoint {path} is not a torch checkpoint: its zip archive has no data.pkl")
    try:
        return torch.load(io.BytesIO(raw), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as error:
        raise CheckpointError(
            f"checkpoint {path} holds Python objects besides tensors, numbers, strings, "
            "lists and dicts; tritonnet does not unpickle them, since unpickling can run any code"
        ) from error
    except Exception as error:  # torch raises several types, with C++ locations, for a zip it cannot use
        raise CheckpointError(
            f"checkpoint {path} is not a checkpoint torch.load can read ({type(error).__name__}; "
            "the full reason is chained to this error)"
        ) from error


def _validate(state: Any) -> None:
    if not isinstance(state, dict):
        raise _Invalid(f"not a tritonnet checkpoint (it holds a {type(state).__name__}, not a dict)")
    version = _field(state, "format_version", "")
    if version != FORMAT_VERSION:
        raise _Invalid(
            f"format_version is {version!r}; this tritonnet reads format {FORMAT_VERSION} (an older "
            "checkpoint's weights still load with torch.load(path, weights_only=True)['parameters'])"
        )
    config = _mapping(state, "config", "")
    _integer(config, "epochs", "config", low=1)
    batch_size = _integer(config, "batch_size", "config", low=1)
    _number(config, "lr", "config", finite=True, positive=True)
    _text(config, "grad_scale", "config", choices=GRAD_SCALES)
    _integer(config, "seed", "config")
    _text(config, "api", "config")
    sizes = _field(config, "sizes", "config")
    if not (isinstance(sizes, list) and len(sizes) >= 2 and all(_is_int(size) and size > 0 for size in sizes)):
        raise _Invalid(f"config['sizes'] must be a list of at least two positive integers, got {sizes!r}")

    data = _mapping(state, "data", "")
    for key in ("name", "source", "train_fingerprint", "test_fingerprint"):
        _text(data, key, "data")
    train_rows = _integer(data, "train_rows", "data", low=1)
    _integer(data, "test_rows", "data", low=0)

    epoch = _integer(state, "epoch", "", low=0)
    steps_per_epoch = math.ceil(train_rows / batch_size)
    _integer(state, "step", "", low=0, high=steps_per_epoch,
             why=f"the steps in an epoch of {train_rows} rows in batches of {batch_size}")
    _check_parameters(_mapping(state, "parameters", ""), sizes)
    _check_history(_field(state, "history", ""), epoch)
    shuffle_device = _text(state, "shuffle_device", "", choices=("cpu", "cuda"))
    for key in ("shuffle_state", "torch_rng_state"):
        value = _field(state, key, "")
        # A CUDA generator's state (seed and offset) is short; a CPU one's is the Mersenne Twister's.
        cpu = key == "torch_rng_state" or shuffle_device == "cpu"
        shape_ok = isinstance(value, torch.Tensor) and (tuple(value.shape) == RNG_STATE_SHAPE if cpu else value.dim() == 1)
        if not (shape_ok and value.dtype == torch.uint8):
            shape = f"of shape {RNG_STATE_SHAPE}" if cpu else "1-D"
            raise _Invalid(f"{key} must be a uint8 tensor {shape}, got {_describe(value)}")
    partial = _mapping(state, "partial", "")
    _number(partial, "loss_sum", "partial", low=0.0)
    _number(partial, "seconds", "partial", low=0.0, finite=True)


def _check_parameters(parameters: dict, sizes: list[int]) -> None:
    expected = {}
    for index, (in_features, out_features) in enumerate(zip(sizes, sizes[1:])):
        expected[f"linears.{index}.weight"] = (in_features, out_features)
        expected[f"linears.{index}.bias"] = (out_features,)
    for key in parameters:
        if key not in expected:
            raise _Invalid(f"parameters has an entry {key!r} that the network of sizes {sizes} does not have")
    for key, shape in expected.items():
        value = _field(parameters, key, "parameters")
        name = f"parameters[{key!r}]"
        if not (isinstance(value, torch.Tensor) and value.is_floating_point()):
            raise _Invalid(f"{name} must be a floating-point tensor, got {_describe(value)}")
        if tuple(value.shape) != shape:
            raise _Invalid(f"{name} must have shape {shape} for sizes {sizes}, got {tuple(value.shape)}")
        if not torch.isfinite(value).all():
            raise _Invalid(f"{name} is not finite: it holds NaN or infinite values")


def _check_history(history: Any, epoch: int) -> None:
    if not (isinstance(history, list) and all(isinstance(record, dict) for record in history)):
        raise _Invalid(f"history must be a list of records, got {_describe(history)}")
    if len(history) != epoch:
        raise _Invalid(f"history has {len(history)} records, but epoch {epoch} needs one per finished epoch")
    for index, record in enumerate(history):
        where = f"history[{index}]"
        for key in HISTORY_FIELDS:
            _field(record, key, where)
        if record["epoch"] != index + 1 or not _is_int(record["epoch"]):
            raise _Invalid(f"{where}['epoch'] must be {index + 1}, got {record['epoch']!r}")
        # Losses may be NaN or infinite: a run with --allow-nonfinite records them.
        _number(record, "train_loss", where)
        _number(record, "test_loss", where)
        _number(record, "test_accuracy", where, low=0.0, high=1.0, finite=True)
        _number(record, "train_seconds", where, low=0.0, finite=True)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _describe(value: Any) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return f"{type(value).__name__} {value!r}"[:200]


def _name(key: str, where: str) -> str:
    return f"{where}[{key!r}]" if where else key


def _field(mapping: dict, key: str, where: str) -> Any:
    if key not in mapping:
        raise _Invalid(f"{_name(key, where) if where else repr(key)} is missing")
    return mapping[key]


def _mapping(mapping: dict, key: str, where: str) -> dict:
    value = _field(mapping, key, where)
    if not isinstance(value, dict):
        raise _Invalid(f"{_name(key, where)} must be a dict, got {type(value).__name__}")
    return value


def _text(mapping: dict, key: str, where: str, choices: tuple[str, ...] | None = None) -> str:
    value = _field(mapping, key, where)
    if not isinstance(value, str) or (choices is not None and value not in choices):
        expected = f"one of {', '.join(choices)}" if choices else "a string"
        raise _Invalid(f"{_name(key, where)} must be {expected}, got {value!r}")
    return value


def _integer(mapping: dict, key: str, where: str, low: int | None = None, high: int | None = None,
             why: str = "") -> int:
    value = _field(mapping, key, where)
    if not _is_int(value) or (low is not None and value < low) or (high is not None and value > high):
        if high is not None:
            expected = f"an integer from {low} to {high}" + (f" ({why})" if why else "")
        else:
            expected = "an integer" + (f" >= {low}" if low is not None else "")
        raise _Invalid(f"{_name(key, where)} must be {expected}, got {value!r}")
    return value


def _number(mapping: dict, key: str, where: str, low: float | None = None, high: float | None = None,
            finite: bool = False, positive: bool = False) -> float:
    """A real number; NaN and infinities pass unless `finite` (a NaN passes the bounds)."""
    value = _field(mapping, key, where)
    bad = not isinstance(value, (int, float)) or isinstance(value, bool)
    if not bad:
        bad = ((finite and not math.isfinite(value)) or (low is not None and value < low)
               or (high is not None and value > high) or (positive and value <= 0))
    if bad:
        bounds = " > 0" if positive else (f" from {low} to {high}" if high is not None else
                                          (f" >= {low}" if low is not None else ""))
        raise _Invalid(f"{_name(key, where)} must be a {'finite ' if finite else ''}number{bounds}, got {value!r}")
    return value
