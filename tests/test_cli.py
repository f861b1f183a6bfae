"""The `tritonnet` command: flags, files written, and surviving SIGKILL and Ctrl-C.

Runs that train on a Fashion-MNIST subset go through a real subprocess, on the
CPU reference path, the way a user runs them; the checks of flags and disk errors
run in this process on a tiny dataset. The catalog of bad flags is in
test_validation.py.
"""

from __future__ import annotations

import errno
import importlib.util
import io
import json
import os
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tritonnet
from tritonnet import datasets
from tritonnet.backend import use_backend
from tritonnet.checkpoint import load_checkpoint
from tritonnet.cli import main
from tritonnet.datasets import Dataset

REPOSITORY = Path(__file__).resolve().parent.parent

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)

SUBSET = ["--dataset", "fashion-mnist", "--limit-train", "1280", "--limit-test", "500"]


def cli_environment(home: Path) -> dict[str, str]:
    environment = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "TRITONNET_DATA")}
    environment["HOME"] = str(home)
    environment.pop("XDG_CACHE_HOME", None)
    return environment


def run_cli(args: list[str], home: Path, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "tritonnet", *args],
        env=cli_environment(home),
        capture_output=True,
        text=True,
        timeout=600,
        **kwargs,
    )


def start_cli(args: list[str], home: Path) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "tritonnet", *args],
        env=cli_environment(home),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )


def train_args(out: Path, epochs: int) -> list[str]:
    return ["train", *SUBSET, "--epochs", str(epochs), "--backend", "reference",
            "--no-progress", "--out", str(out)]


def wait_for_epochs(out: Path, epochs: int, process: subprocess.Popen, limit_seconds: float = 300) -> None:
    deadline = time.monotonic() + limit_seconds
    while time.monotonic() < deadline:
        history = out / "history.json"
        if history.is_file() and len(json.loads(history.read_text())["history"]) >= epochs:
            return
        if process.poll() is not None:
            pytest.fail(f"training ended early: {process.stderr.read()}")
        time.sleep(0.05)
    pytest.fail(f"no {epochs} epochs within {limit_seconds} s")


def assert_same_parameters(first: Path, second: Path) -> None:
    a = load_checkpoint(first / "checkpoint.pt")["parameters"]
    b = load_checkpoint(second / "checkpoint.pt")["parameters"]
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), f"{key} differs"


def test_info_names_versions_and_backend(capsys):
    assert main(["info"]) == 0
    output = capsys.readouterr().out
    assert f"torch {torch.__version__}" in output
    assert "backend 'auto' picks:" in output


def test_version_prints_the_package_version(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"tritonnet {tritonnet.__version__}\n"


@pytest.mark.parametrize("command", ["train", "sweep", "bench"])
def test_help_gives_every_flag_a_line_and_its_default(command, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # no help text wraps
    with pytest.raises(SystemExit):
        main([command, "--help"])
    lines = capsys.readouterr().out.splitlines()
    # Each flag's entry: its line ("  --flag ..."), and its help on a deeper-indented
    # line where the flag's name is long.
    entries: list[str] = []
    for line in lines[lines.index("options:") + 1:]:
        if line.startswith("  -"):
            entries.append(line.strip())
        elif line.startswith("    ") and entries:
            entries[-1] += " " + line.strip()
    flags = [entry for entry in entries if not entry.startswith("-h, --help")]
    assert len(flags) >= 8
    for entry in flags:
        described, _, default = entry.partition(" (default: ")
        assert default.endswith(")") and len(described.split()) >= 4, entry  # flag, metavar, some words


def test_bench_help_lists_the_benchmark_runners_flags(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--help"])
    output = capsys.readouterr().out
    for flag in ("--quick", "--smoke", "--benchmarks", "--synthetic", "--results-dir", "--figures-dir",
                 "--no-figures", "--committed-results"):
        assert flag in output


def load_benchmark_runner():
    spec = importlib.util.spec_from_file_location("benchmarks_run", REPOSITORY / "benchmarks" / "run.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_writes_into_a_folder_of_its_own_unless_told_to_commit():
    runner = load_benchmark_runner()
    default = runner.parse_arguments([])
    assert (default.results_dir, default.figures_dir) == (Path("runs/bench/results"), Path("runs/bench/figures"))
    committed = runner.parse_arguments(["--committed-results"])
    assert committed.results_dir == REPOSITORY / "benchmarks" / "results"
    assert committed.figures_dir == REPOSITORY / "figures"
    for clash in (["--smoke"], ["--results-dir", "elsewhere"]):
        with pytest.raises(SystemExit) as exit_info:
            runner.parse_arguments(["--committed-results", *clash])
        assert exit_info.value.code == 2


def test_bench_hands_its_flags_to_the_benchmark_runner(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(REPOSITORY)
    code = main(["bench", "--smoke", "--benchmarks", "training", "--synthetic", "--no-figures",
                 "--results-dir", str(tmp_path)])
    assert code == 0
    assert (tmp_path / "training.csv").read_text().startswith("benchmark,provider,mode")


def test_bench_outside_a_checkout_says_how_in_one_line(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["bench", "--quick"]) == 1
    error = capsys.readouterr().err
    assert error.count("\n") == 1
    assert "run from a source checkout" in error and "`tritonnet bench` in the root of a tritonnet checkout" in error


def tiny_dataset(*args, **kwargs) -> Dataset:
    """Ten training and four test images: enough for a one-epoch run in no time."""
    generator = torch.Generator().manual_seed(0)
    return Dataset(
        name="tiny",
        train_images=torch.randn(10, 784, generator=generator),
        train_labels=torch.arange(10),
        test_images=torch.randn(4, 784, generator=generator),
        test_labels=torch.arange(4),
        mean=0.0,
        std=1.0,
        source=Path("tiny"),
    )


class FullDisk(io.FileIO):
    """A file on a full disk: every write fails as the OS fails it."""

    def write(self, data) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


def full_disk_fdopen(fd: int, mode: str, **kwargs):
    raw = FullDisk(fd, "wb")
    return raw if "b" in mode else io.TextIOWrapper(raw, **kwargs)


def test_a_full_disk_names_the_file_and_the_reason(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", tiny_dataset)
    monkeypatch.setattr(os, "fdopen", full_disk_fdopen)  # what atomic_write writes through
    out = tmp_path / "run"
    code = main(["train", "--epochs", "1", "--batch-size", "5", "--backend", "reference", "--no-progress",
                 "--out", str(out)])
    assert code == 1
    error = capsys.readouterr().err
    assert re.search(rf"tritonnet: error: \[Errno {errno.ENOSPC}\] No space left on device: '{out}/\S+'", error)
    assert "inline_container" not in error and "Traceback" not in error


def test_missing_dataset_is_one_clear_line(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    result = run_cli(
        ["train", "--dataset", "mnist", "--data-dir", str(empty), "--epochs", "1", "--out", str(tmp_path / "run")],
        tmp_path,
    )
    assert result.returncode == 1
    assert "tritonnet: error:" in result.stderr and "not found" in result.stderr
    assert "Traceback" not in result.stderr


@needs_fashion
def test_train_writes_history_checkpoint_and_figure(tmp_path):
    out = tmp_path / "run"
    result = run_cli(train_args(out, 1), tmp_path)
    assert result.returncode == 0, result.stderr
    assert "dataset: fashion-mnist" in result.stderr
    history = json.loads((out / "history.json").read_text())
    assert history["dataset"] == "fashion-mnist" and len(history["history"]) == 1
    assert (out / "history.csv").read_text().startswith("epoch,train_loss,test_loss,test_accuracy,train_seconds")
    assert (out / "fashion-mnist_loss_accuracy.png").read_bytes().startswith(b"\x89PNG")
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


@needs_fashion
def test_sweep_writes_one_run_per_rate_and_a_figure(tmp_path):
    out = tmp_path / "sweep"
    result = run_cli(
        ["sweep", *SUBSET, "--lrs", "0.5,0.01", "--epochs", "1", "--backend", "reference",
         "--no-progress", "--out", str(out)],
        tmp_path,
    )
    assert result.returncode == 0, result.stderr
    summary = json.loads((out / "sweep.json").read_text())
    assert set(summary["histories"]) == {"0.5", "0.01"}
    assert (out / "lr_0.5" / "checkpoint.pt").is_file() and (out / "lr_0.01" / "checkpoint.pt").is_file()
    assert (out / "fashion-mnist_lr_sweep.png").read_bytes().startswith(b"\x89PNG")


@needs_fashion
def test_sigkill_then_resume_ends_bit_identical(tmp_path):
    epochs = 5
    uninterrupted = tmp_path / "uninterrupted"
    assert run_cli(train_args(uninterrupted, epochs), tmp_path).returncode == 0

    killed = tmp_path / "killed"
    process = start_cli(train_args(killed, epochs), tmp_path)
    wait_for_epochs(killed, 2, process)
    process.send_signal(signal.SIGKILL)  # no handler runs: only what is on disk survives
    process.wait(timeout=60)
    state = load_checkpoint(killed / "checkpoint.pt")
    assert 2 <= state["epoch"] < epochs, "the kill should land mid-run"

    resumed = run_cli([*train_args(killed, epochs), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_parameters(uninterrupted, killed)


@needs_fashion
def test_ctrl_c_saves_a_checkpoint_and_resume_ends_bit_identical(tmp_path):
    epochs = 4
    uninterrupted = tmp_path / "uninterrupted"
    assert run_cli(train_args(uninterrupted, epochs), tmp_path).returncode == 0

    interrupted = tmp_path / "interrupted"
    process = start_cli(train_args(interrupted, epochs), tmp_path)
    wait_for_epochs(interrupted, 1, process)
    process.send_signal(signal.SIGINT)
    _, error = process.communicate(timeout=120)
    assert process.returncode == 130, error
    assert "checkpoint.pt holds" in error and "resume with: " in error and "Traceback" not in error

    resumed = run_cli([*train_args(interrupted, epochs), "--resume"], tmp_path)
    assert resumed.returncode == 0, resumed.stderr
    assert_same_parameters(uninterrupted, interrupted)


TINY = ["--dataset", "fashion-mnist", "--limit-train", "256", "--limit-test", "100", "--backend", "reference",
        "--no-progress"]


DRIVER = Path(__file__).with_name("cli_driver.py")


def run_with_signals(moments: str, args: list[str], home: Path, **environment) -> subprocess.CompletedProcess:
    """The command, sending itself a signal at each moment (see cli_driver.py)."""
    return subprocess.run(
        [sys.executable, str(DRIVER), moments, "--", *args],
        env={**cli_environment(home), **environment},
        capture_output=True,
        text=True,
        timeout=600,
    )


def report_line(stderr: str) -> str:
    """The one line a signal's end prints, after checking it is the only one."""
    assert "Traceback" not in stderr and "inline_container" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.startswith("tritonnet: interrupted")]
    assert len(lines) == 1, stderr
    return lines[0]


@needs_fashion
def test_ctrl_c_during_the_stop_checkpoint_waits_for_it_and_the_resume_command_works(tmp_path):
    out = tmp_path / "run"
    # The first Ctrl-C after the first step; the second while that step's
    # checkpoint is being written.
    run = run_with_signals("step,checkpoint", ["train", *TINY, "--epochs", "1", "--out", str(out)], tmp_path)
    assert run.returncode == 130, run.stderr
    line = report_line(run.stderr)
    assert f"{out / 'checkpoint.pt'} holds 1 step of epoch 1; resume with: " in line
    state = load_checkpoint(out / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (0, 1)
    assert sorted(path.name for path in out.iterdir()) == [".tritonnet.lock", "checkpoint.pt"]

    command = shlex.split(line.split("resume with: ", 1)[1])
    resumed = subprocess.run(command, env=cli_environment(tmp_path), capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    assert "resuming" in resumed.stderr and load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


@needs_fashion
@pytest.mark.parametrize(
    "command,moment,code,saved",
    [
        ("train", "data", 130, "interrupted before any checkpoint was saved; start again with: "),
        ("train", "evaluate:TERM", 143, "checkpoint.pt holds epoch 1; resume with: "),
        ("train", "plot", 130, "checkpoint.pt holds epoch 2; resume with: "),
        ("sweep", "step", 130, "checkpoints in {out}: lr_0.5 1 step of epoch 1; resume with: "),
    ],
)
def test_a_signal_in_any_phase_ends_with_one_line_and_its_exit_code(tmp_path, command, moment, code, saved):
    out = tmp_path / "run"
    rates = ["--lrs", "0.5,0.01"] if command == "sweep" else []
    args = [command, *TINY, *rates, "--epochs", "2", "--out", str(out)]
    run = run_with_signals(moment, args, tmp_path)
    assert run.returncode == code, run.stderr
    line = report_line(run.stderr)
    assert saved.format(out=out) in line, line
    resumes = "resume with" in saved
    assert line.endswith(shlex.join(args + (["--resume"] if resumes else []))), line


@needs_fashion
def test_a_second_run_on_the_same_out_fails_at_once(tmp_path):
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "1", "--out", str(out)]
    release = tmp_path / "release"
    first = subprocess.Popen(
        [sys.executable, str(DRIVER), "hold", "--", *args],
        env={**cli_environment(tmp_path), "TRITONNET_TEST_RELEASE": str(release)},
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        for line in first.stderr:  # the first run holds the folder, mid-epoch
            if line.startswith("holding"):
                break
        second = run_cli(args, tmp_path)
    finally:
        release.touch()
    assert second.returncode == 1
    assert f"tritonnet: error: {out} is in use by another tritonnet run" in second.stderr
    _, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert load_checkpoint(out / "checkpoint.pt")["epoch"] == 1


def finished_run(tmp_path: Path, capsys) -> tuple[Path, list[str], bytes]:
    """A one-epoch run trained to its end in-process: its folder, the command's
    arguments and its checkpoint's bytes; its output read away."""
    out = tmp_path / "run"
    args = ["train", *TINY, "--epochs", "1", "--out", str(out)]
    with use_backend("reference"):
        assert main(args) == 0
    capsys.readouterr()
    return out, args, (out / "checkpoint.pt").read_bytes()


@needs_fashion
def test_a_finished_run_needs_resume_or_overwrite(tmp_path, capsys):
    out, args, before = finished_run(tmp_path, capsys)
    with use_backend("reference"):
        assert main(args) == 1
        error = capsys.readouterr().err
        assert f"{out} is not empty" in error and "--overwrite" in error and "Traceback" not in error
        assert (out / "checkpoint.pt").read_bytes() == before
        assert main([*args, "--overwrite"]) == 0
    assert len(json.loads((out / "history.json").read_text())["history"]) == 1


@needs_fashion
def test_resuming_a_finished_run_trains_nothing_and_says_so(tmp_path, capsys):
    # What a second `make demo` does: --resume on a run that has all its epochs.
    out, args, before = finished_run(tmp_path, capsys)
    with use_backend("reference"):
        assert main([*args, "--resume"]) == 0
    error = capsys.readouterr().err
    assert f"resuming {out}: it ended at epoch 1, and --epochs 1 asks for no more" in error
    assert (out / "checkpoint.pt").read_bytes() == before
    assert len(json.loads((out / "history.json").read_text())["history"]) == 1
