"""Checkpoints: integrity and every field checked on load, one clear error each.

The checkpoint under test is a real one, written by a one-epoch run of the
trainer on a toy problem; each case damages or edits a copy of it. Edited copies
are saved again with `torch.save`, so their zip CRCs are right and only the
field checks can catch them.
"""

from __future__ import annotations

import argparse
import struct
import zipfile
from pathlib import Path

import pytest
import torch

from tritonnet.backend import use_backend
from tritonnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tritonnet.datasets import Dataset
from tritonnet.trainer import TrainConfig, train

SIZES = (20, 16, 10)


def toy_dataset(train_rows: int = 100, test_rows: int = 50) -> Dataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(train_rows + test_rows, SIZES[0], generator=generator)
    labels = images[:, :10].argmax(dim=1)
    return Dataset("toy", images[:train_rows], labels[:train_rows], images[train_rows:],
                   labels[train_rows:], 0.0, 1.0, Path("memory"))


@pytest.fixture(scope="module")
def good_checkpoint(tmp_path_factory) -> bytes:
    out = tmp_path_factory.mktemp("run")
    settings = TrainConfig(epochs=1, batch_size=32, lr=0.5, sizes=SIZES, progress=False)
    with use_backend("reference"):
        train(settings, toy_dataset(), out, log=lambda _message: None)
    return (out / "checkpoint.pt").read_bytes()


@pytest.fixture
def path(tmp_path, good_checkpoint) -> Path:
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(good_checkpoint)
    return target


def edited(path: Path, edit) -> Path:
    state = torch.load(path, weights_only=True)
    edit(state)
    torch.save(state, path)
    return path


def load_error(path: Path) -> str:
    with pytest.raises(CheckpointError) as error:
        load_checkpoint(path)
    message = str(error.value)
    assert str(path) in message, message
    assert "weights_only=False" not in message and "inline_container" not in message, message
    return message


def test_a_good_checkpoint_loads_and_saves_back(path, tmp_path):
    state = load_checkpoint(path)
    assert state["epoch"] == 1 and state["step"] == 0 and len(state["history"]) == 1
    copy = tmp_path / "copy.pt"
    save_checkpoint(copy, {key: value for key, value in state.items() if key != "format_version"})
    again = load_checkpoint(copy)
    for key, value in state["parameters"].items():
        assert torch.equal(value, again["parameters"][key])


def test_checkpoint_error_is_a_value_error():
    assert issubclass(CheckpointError, ValueError)


def tensor_record(path: Path) -> tuple[int, int]:
    """Offset and length of the largest tensor's bytes inside the zip."""
    with zipfile.ZipFile(path) as archive:
        info = max((i for i in archive.infolist() if "/data/" in i.filename), key=lambda i: i.file_size)
    raw = path.read_bytes()
    name_length, extra_length = struct.unpack("<HH", raw[info.header_offset + 26 : info.header_offset + 30])
    return info.header_offset + 30 + name_length + extra_length, info.file_size


def test_one_flipped_bit_in_a_tensor_is_caught(path):
    offset, length = tensor_record(path)
    raw = bytearray(path.read_bytes())
    raw[offset + length // 2] ^= 0x01
    path.write_bytes(bytes(raw))
    # The oracle that the flip landed in a weight: torch itself loads it, changed.
    assert torch.load(path, weights_only=True)
    assert "damaged" in load_error(path)


@pytest.mark.parametrize(
    "damage,pattern",
    [
        (lambda raw: b"", r"empty"),
        (lambda raw: raw[: len(raw) // 2], r"damaged or not a checkpoint"),
        (lambda raw: b"not a checkpoint\n", r"damaged or not a checkpoint"),
    ],
    ids=["empty", "truncated", "text"],
)
def test_unreadable_files_get_our_message(path, damage, pattern):
    path.write_bytes(damage(path.read_bytes()))
    assert load_error(path)
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(path)


def test_a_zip_that_is_not_a_torch_file(path):
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "hello")
    assert "not a torch checkpoint" in load_error(path)


def test_pickled_objects_are_refused_without_torchs_advice(path):
    torch.save({"format_version": 2, "settings": argparse.Namespace(lr=0.1)}, path)
    assert "unpickle" in load_error(path)


def test_a_missing_file_is_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        load_checkpoint(tmp_path / "absent.pt")


def _set(*keys_and_value):
    *keys, value = keys_and_value

    def edit(state):
        target = state
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return edit


def _delete(*keys):
    def edit(state):
        target = state
        for key in keys[:-1]:
            target = target[key]
        del target[keys[-1]]

    return edit


def _scale_weight(factor):
    def edit(state):
        state["parameters"]["linears.0.weight"][0, 0] *= factor

    return edit


FIELD_EDITS = [
    # (case, edit, what the message must say)
    ("negative epoch", _set("epoch", -1), r"epoch.*-1"),
    ("epoch as text", _set("epoch", "1"), r"epoch.*'1'"),
    ("epoch as bool", _set("epoch", True), r"epoch.*True"),
    ("step past the epoch's end", _set("step", 5), r"step.*0 to 4.*5"),
    ("negative step", _set("step", -1), r"step.*-1"),
    ("no config", _delete("config"), r"'config' is missing"),
    ("config without lr", _delete("config", "lr"), r"config\['lr'\] is missing"),
    ("negative lr", _set("config", "lr", -0.5), r"config\['lr'\].*-0.5"),
    ("zero batch size", _set("config", "batch_size", 0), r"config\['batch_size'\].*0"),
    ("sizes with text", _set("config", "sizes", [20, "16", 10]), r"config\['sizes'\].*'16'"),
    ("unknown grad scale", _set("config", "grad_scale", "mean"), r"grad_scale.*'mean'"),
    ("missing parameter", _delete("parameters", "linears.1.bias"), r"linears\.1\.bias"),
    ("extra parameter", _set("parameters", "linears.2.weight", torch.zeros(2, 2)), r"linears\.2\.weight"),
    ("parameter shape", _set("parameters", "linears.0.weight", torch.zeros(3, 3)), r"linears\.0\.weight.*\(20, 16\).*\(3, 3\)"),
    ("integer parameter", _set("parameters", "linears.0.bias", torch.zeros(16, dtype=torch.int64)), r"linears\.0\.bias.*int64"),
    ("NaN weight", _scale_weight(float("nan")), r"linears\.0\.weight.*not finite"),
    ("parameters not a dict", _set("parameters", [1, 2]), r"parameters.*dict.*list"),
    ("history shorter than epoch", _set("history", []), r"history.*0 records.*epoch 1"),
    ("history record without a field", _delete("history", 0, "test_loss"), r"history\[0\].*test_loss"),
    ("history accuracy above 1", _set("history", 0, "test_accuracy", 1.5), r"test_accuracy.*1.5"),
    ("shuffle state of another size", _set("shuffle_state", torch.zeros(3, dtype=torch.uint8)), r"shuffle_state.*\(3,\)"),
    ("rng state as floats", _set("torch_rng_state", torch.zeros(5056)), r"torch_rng_state.*float32"),
    ("unknown shuffle device", _set("shuffle_device", "tpu"), r"shuffle_device.*cpu, cuda.*'tpu'"),
    ("negative partial seconds", _set("partial", "seconds", -1.0), r"partial\['seconds'\].*-1.0"),
    ("no data record", _delete("data"), r"'data' is missing"),
    ("data rows as text", _set("data", "train_rows", "100"), r"data\['train_rows'\].*'100'"),
    ("another format", _set("format_version", 1), r"format_version is 1.*format 2"),
]


@pytest.mark.parametrize("edit,pattern", [case[1:] for case in FIELD_EDITS], ids=[case[0] for case in FIELD_EDITS])
def test_hand_edited_fields_are_named(path, edit, pattern):
    edited(path, edit)
    message = load_error(path)
    with pytest.raises(CheckpointError, match=pattern):
        load_checkpoint(path)
    assert message.count("\n") == 0, "one line"


def test_a_state_that_is_not_a_dict(path):
    torch.save([1, 2, 3], path)
    assert "not a tritonnet checkpoint" in load_error(path)


def test_saving_a_bad_state_keeps_the_file_there(path):
    state = load_checkpoint(path)
    state["parameters"]["linears.1.weight"][0, 0] = float("inf")
    before = path.read_bytes()
    with pytest.raises(CheckpointError, match=r"linears\.1\.weight.*not finite"):
        save_checkpoint(path, state)
    assert path.read_bytes() == before
