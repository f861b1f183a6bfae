"""One run per folder: a run is never trained over, and two never share a folder.

Runs are the trainer's, on a toy problem with the CPU reference; the second run
on a locked folder is simulated by taking the lock through another open file,
which flock treats exactly like another process.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

import pytest
import torch

from tritonnet.backend import use_backend
from tritonnet.checkpoint import load_checkpoint
from tritonnet.datasets import Dataset
from tritonnet.run_folder import LOCK_NAME, RunFolderError, claim_run_folder
from tritonnet.trainer import TrainConfig, train

SIZES = (20, 16, 10)


@pytest.fixture(autouse=True)
def _reference_backend():
    with use_backend("reference"):
        yield


def toy_dataset() -> Dataset:
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(150, SIZES[0], generator=generator)
    labels = images[:, :10].argmax(dim=1)
    return Dataset("toy", images[:100], labels[:100], images[100:], labels[100:], 0.0, 1.0, Path("memory"))


def run(out: Path, epochs: int = 1, **options):
    settings = TrainConfig(epochs=epochs, batch_size=32, lr=0.5, sizes=SIZES, progress=False)
    return train(settings, toy_dataset(), out, log=lambda _message: None, **options)


def epochs_in_history(out: Path) -> int:
    return len(json.loads((out / "history.json").read_text())["history"])


def test_a_finished_run_is_not_trained_over(tmp_path):
    run(tmp_path, epochs=2)
    before = (tmp_path / "checkpoint.pt").read_bytes()
    with pytest.raises(RunFolderError, match=r"not empty \(checkpoint\.pt, .*--resume.*--overwrite"):
        run(tmp_path)
    assert (tmp_path / "checkpoint.pt").read_bytes() == before and epochs_in_history(tmp_path) == 2


def test_overwrite_replaces_the_run(tmp_path):
    run(tmp_path, epochs=2)
    (tmp_path / "notes.txt").write_text("mine")
    run(tmp_path, epochs=1, overwrite=True)
    assert epochs_in_history(tmp_path) == 1 and load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert (tmp_path / "notes.txt").read_text() == "mine", "only the run's own files are replaced"


def test_resume_and_overwrite_contradict(tmp_path):
    with pytest.raises(ValueError, match="resume and overwrite"):
        run(tmp_path, resume=True, overwrite=True)


def test_a_folder_in_use_is_refused_at_once(tmp_path):
    tmp_path.mkdir(exist_ok=True)
    with open(tmp_path / LOCK_NAME, "a") as other_run:
        fcntl.flock(other_run.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunFolderError, match=rf"{tmp_path} is in use by another tritonnet run"):
            run(tmp_path)
        assert not (tmp_path / "checkpoint.pt").exists()
    # Released (the other run ended, however it ended): the folder is free again.
    run(tmp_path)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_lock_file_and_stray_temporaries_do_not_count_as_a_run(tmp_path):
    # What a SIGKILL during a write leaves: atomic_write's temporary file.
    stray = tmp_path / ".checkpoint.pt.0123456789abcdef.tmp"
    stray.write_bytes(b"half a checkpoint")
    (tmp_path / LOCK_NAME).touch()
    run(tmp_path)
    assert not stray.exists()
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_claims_nest_within_one_process(tmp_path):
    # The command holds the folder while `train`, which claims it too, runs inside;
    # the folder stays locked against everyone else until the outer claim ends.
    with claim_run_folder(tmp_path):
        run(tmp_path)
        with open(tmp_path / LOCK_NAME, "a") as other_run, pytest.raises(BlockingIOError):
            fcntl.flock(other_run.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    assert epochs_in_history(tmp_path) == 1
