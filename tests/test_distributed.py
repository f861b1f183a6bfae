"""Data-parallel training (docs/distributed.md): shards, the data-parallel steps, and
two-process runs under torchrun on gloo, checked against the one-process run.

The steps are checked in this process in a gloo group of one rank, against the
exercise's forward/backward/update and the module twin's step. The two-process
runs go through torchrun, as a user starts them: on a Fashion-MNIST subset, the
weights after training equal the one-process run's to fp32 rounding.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import tritonnet
from conftest import exercise_step, requires_triton
from tritonnet import distributed
from tritonnet.backend import use_backend
from tritonnet.checkpoint import load_checkpoint
from tritonnet.datasets import load_dataset
from tritonnet.distributed import SINGLE, Ranks
from tritonnet.distributed_step import DataParallelModuleStep, DataParallelStep
from tritonnet.layers import GRAD_SCALES
from tritonnet.module_model import ModuleModel
from tritonnet.module_step import ModuleStep
from tritonnet.step import make_step
from tritonnet.trainer import TrainConfig, train

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)
TESTS_DIR = Path(__file__).resolve().parent
SIZES = (20, 16, 10)
# fp32 rounding of sums taken in another order, over a few steps.
TOLERANCE = dict(rtol=1e-5, atol=1e-6)
TRAIN_ROWS = 640  # the killed run's subset: 10 steps an epoch


def test_shards_split_every_batch_into_contiguous_disjoint_rows():
    for world_size in range(1, 6):
        for rows in range(1, 70):
            bounds = [Ranks(rank, world_size).shard(rows) for rank in range(world_size)]
            assert bounds[0][0] == 0 and bounds[-1][1] == rows
            assert all(end == start for (_, end), (start, _) in zip(bounds, bounds[1:]))
            sizes = [end - start for start, end in bounds]
            assert max(sizes) - min(sizes) <= 1


def test_one_process_needs_no_group(monkeypatch):
    for name in distributed.LAUNCH_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    assert not distributed.launched() and distributed.rank_label() == ""
    tensor = torch.arange(3.0)
    assert SINGLE.all_reduce(tensor) is tensor and torch.equal(tensor, torch.arange(3.0))
    assert SINGLE.agree_to_stop(2, at_boundary=False) == 2 and SINGLE.agree_to_stop(None, True) is None
    assert SINGLE.from_writer(lambda: 7, "count") == 7
    assert SINGLE.writer_log(print) is print and SINGLE.label() == ""


@pytest.mark.parametrize("text", ["soon", "0", "-5", "nan", "inf"])
def test_a_bad_timeout_is_named(monkeypatch, text):
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, text)
    expected = f"TRITONNET_DIST_TIMEOUT must be a positive number of seconds, got '{text}'"
    with pytest.raises(ValueError, match=expected):
        distributed.timeout()


def test_the_timeout_is_finite_and_can_be_set(monkeypatch):
    monkeypatch.delenv(distributed.TIMEOUT_VARIABLE, raising=False)
    assert distributed.timeout().total_seconds() == distributed.TIMEOUT_SECONDS
    monkeypatch.setenv(distributed.TIMEOUT_VARIABLE, "12.5")
    assert distributed.timeout().total_seconds() == 12.5


def test_errors_name_the_rank_under_torchrun(monkeypatch):
    for name, value in (("WORLD_SIZE", "4"), ("RANK", "3"), ("LOCAL_RANK", "1")):
        monkeypatch.setenv(name, value)
    assert distributed.launched() and distributed.rank_label() == "rank 3 of 4: "


def test_sweep_says_it_runs_in_one_process(monkeypatch, tmp_path, capsys):
    from tritonnet.cli import main

    for name, value in (("WORLD_SIZE", "2"), ("RANK", "0"), ("LOCAL_RANK", "0")):
        monkeypatch.setenv(name, value)
    with use_backend("auto"):
        assert main(["sweep", "--epochs", "1", "--out", str(tmp_path)]) == 1
    assert "tritonnet: error: rank 0 of 2: sweep runs in one process, not under torchrun" in capsys.readouterr().err


@pytest.fixture
def one_rank():
    """A gloo group of one rank in this process: the data-parallel steps run whole."""
    torch.distributed.init_process_group("gloo", store=torch.distributed.HashStore(), rank=0, world_size=1)
    try:
        yield Ranks(0, 1, torch.device("cpu"), joined=True)
    finally:
        torch.distributed.destroy_process_group()


def batches(count: int, rows: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(torch.randn(rows, SIZES[0]), torch.randint(0, SIZES[-1], (rows,))) for _ in range(count)]


# The Triton kernels at one scale: the scales differ only in a factor both backends take alike.
STEP_CASES = [("reference", grad_scale) for grad_scale in GRAD_SCALES] + [
    pytest.param("triton", "batch", marks=requires_triton)
]


@pytest.mark.parametrize("backend_name,grad_scale", STEP_CASES)
def test_data_parallel_step_is_the_exercise_step(one_rank, backend_name, grad_scale):
    with use_backend(backend_name):
        check_exercise_step(one_rank, grad_scale)


def check_exercise_step(one_rank: Ranks, grad_scale: str) -> None:
    model = tritonnet.MLP(32, 0.3, SIZES, grad_scale=grad_scale)
    oracle = tritonnet.MLP(32, 0.3, SIZES, grad_scale=grad_scale)
    oracle.load_state_dict(model.state_dict())
    step = make_step(model, ranks=one_rank)
    assert isinstance(step, DataParallelStep)
    for x, labels in batches(3, 32) + batches(1, 5):
        loss = step(x, labels)
        expected = exercise_step(oracle, x, labels)
        torch.testing.assert_close(loss, expected, **TOLERANCE)
    for linear, expected in zip(model.linears, oracle.linears):
        torch.testing.assert_close(linear.weight, expected.weight, **TOLERANCE)
        torch.testing.assert_close(linear.bias, expected.bias, **TOLERANCE)
        torch.testing.assert_close(linear.grad_weight, expected.grad_weight, **TOLERANCE)


@pytest.mark.parametrize("grad_scale", GRAD_SCALES)
def test_data_parallel_module_step_is_the_module_step(one_rank, grad_scale):
    with use_backend("reference"):
        model = ModuleModel(32, 0.3, SIZES, grad_scale=grad_scale)
        oracle = ModuleModel(32, 0.3, SIZES, grad_scale=grad_scale)
        oracle.load_state_dict(model.state_dict())
        step, oracle_step = make_step(model, ranks=one_rank), ModuleStep(oracle)
        assert isinstance(step, DataParallelModuleStep)
        for x, labels in batches(3, 32) + batches(1, 5):
            torch.testing.assert_close(step(x, labels), oracle_step(x, labels), **TOLERANCE)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, oracle.state_dict()[key], **TOLERANCE)


def test_a_cpu_run_cannot_ask_for_cuda_graphs(one_rank):
    with pytest.raises(ValueError, match="cuda_graph=True needs a model on a CUDA device"):
        make_step(tritonnet.MLP(8, 0.1, SIZES), cuda_graph=True, ranks=one_rank)
    with pytest.raises(ValueError, match="cuda_graph=True needs a tritonnet.MLP"):
        make_step(ModuleModel(8, 0.1, SIZES), cuda_graph=True, ranks=one_rank)


# --- Two processes under torchrun -------------------------------------------------


def torchrun(args: list[str], **options) -> subprocess.Popen:
    """`python -m torch.distributed.run --standalone --nproc_per_node=2 ARGS`: a free
    port of its own, and collectives that give up after 60 s rather than hang."""
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    environment.update(TRITONNET_DIST_TIMEOUT="60", OMP_NUM_THREADS="1")
    return subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", *args],
        env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **options,
    )


def finish(process: subprocess.Popen, limit_seconds: float = 300) -> str:
    try:
        output, _ = process.communicate(timeout=limit_seconds)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        pytest.fail(f"torchrun did not end within {limit_seconds} s: {output}")
    return output


def assert_same_parameters(first: dict, second: dict) -> None:
    assert first.keys() == second.keys()
    for key in first:
        torch.testing.assert_close(first[key], second[key], **TOLERANCE, msg=lambda text: f"{key}: {text}")


@needs_fashion
def test_two_ranks_train_as_one_process_does(tmp_path):
    import distributed_worker

    process = torchrun([str(TESTS_DIR / "distributed_worker.py"), str(tmp_path)])
    output = finish(process)
    assert process.returncode == 0, output
    dataset = distributed_worker.subset()
    for name, config in distributed_worker.CASES.items():
        with use_backend("reference"):
            torch.manual_seed(config.seed)
            initial = tritonnet.MLP(config.batch_size, config.lr, config.sizes).state_dict()
            train(config, dataset, tmp_path / "one" / name, log=lambda message: None)
        one = load_checkpoint(tmp_path / "one" / name / "checkpoint.pt")["parameters"]
        two = load_checkpoint(tmp_path / name / "checkpoint.pt")
        assert two["world_size"] == 2
        assert_same_parameters(two["parameters"], one)
        # It trained: the steps moved the weights far past the tolerance.
        assert (two["parameters"]["linears.2.weight"] - initial["linears.2.weight"]).abs().max() > 1e-3

    seen = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    for rank in (0, 1):
        assert "different settings: lr: 0.1 on rank 0, 0.2 on rank 1" in seen[rank]["settings"]
        assert "the batch size 1 is smaller than the world size 2" in seen[rank]["small_batch"]
    assert "absent.txt" in seen[0]["from_writer"]
    assert seen[1]["from_writer"].startswith("rank 0 could not read absent.txt: ")


def rank_process(torchrun_pid: int, rank: int) -> int:
    """The pid of the worker torchrun started for `rank` (read from its environment)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            environment = (entry / "environ").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue
        if parent == torchrun_pid and f"RANK={rank}".encode() in environment:
            return int(entry.name)
    raise LookupError(f"no worker of rank {rank} under torchrun {torchrun_pid}")


def cli_train(out: Path, epochs: int, *extra: str, rows: int = TRAIN_ROWS) -> list[str]:
    return ["-m", "tritonnet", "train", "--dataset", "fashion-mnist", "--limit-train", str(rows),
            "--limit-test", "100", "--batch-size", "64", "--lr", "0.5", "--epochs", str(epochs),
            "--backend", "reference", "--device", "cpu", "--no-progress", "--out", str(out), *extra]


def one_process(dataset, out: Path, epochs: int, resume: bool = False) -> dict:
    """The weights the same run ends with in one process (this one)."""
    config = TrainConfig(epochs=epochs, batch_size=64, lr=0.5, progress=False)
    with use_backend("reference"):
        train(config, dataset, out, resume=resume, log=lambda message: None)
    return load_checkpoint(out / "checkpoint.pt")["parameters"]


def wait_for_checkpoint(run: Path, process: subprocess.Popen) -> None:
    deadline = time.monotonic() + 300
    while not (run / "checkpoint.pt").is_file():
        assert process.poll() is None, finish(process)
        assert time.monotonic() < deadline, "no checkpoint within 300 s"
        time.sleep(0.05)


@needs_fashion
def test_a_killed_rank_stops_the_run_and_resume_ends_where_one_process_does(tmp_path):
    run = tmp_path / "run"
    process = torchrun(cli_train(run, 200))
    wait_for_checkpoint(run, process)
    os.kill(rank_process(process.pid, 1), signal.SIGKILL)
    output = finish(process)
    assert process.returncode != 0, "the run should stop when a rank dies"
    # torchrun names the rank that failed; the rank left says why it stops.
    assert "rank      : 1 (local_rank: 1)" in output and "Signal 9 (SIGKILL)" in output
    assert "tritonnet: error: rank 0 of 2: " in output and "another rank has stopped" in output

    state = load_checkpoint(run / "checkpoint.pt")
    epochs = state["epoch"]
    assert state["world_size"] == 2 and 1 <= epochs < 200
    assert json.loads((run / "history.json").read_text())["world_size"] == 2
    dataset = load_dataset("fashion-mnist", limit_train=TRAIN_ROWS, limit_test=100, download=False)
    assert_same_parameters(state["parameters"], one_process(dataset, tmp_path / "one", epochs))

    shutil.copytree(run, tmp_path / "resumed-alone")
    resumed = torchrun(cli_train(run, epochs + 1, "--resume"))
    output = finish(resumed)
    assert resumed.returncode == 0, output
    expected = one_process(dataset, tmp_path / "uninterrupted", epochs + 1)
    assert_same_parameters(load_checkpoint(run / "checkpoint.pt")["parameters"], expected)
    # Another world size resumes too: one process from the two ranks' checkpoint.
    alone = one_process(dataset, tmp_path / "resumed-alone", epochs + 1, resume=True)
    assert_same_parameters(alone, expected)


@needs_fashion
def test_ctrl_c_on_one_rank_stops_every_rank_at_one_step(tmp_path):
    rows = 6400  # 100 steps an epoch: the ranks agree to stop at step 50 or 100
    run = tmp_path / "run"
    process = torchrun(cli_train(run, 200, rows=rows))
    wait_for_checkpoint(run, process)
    os.kill(rank_process(process.pid, 1), signal.SIGINT)
    output = finish(process)
    assert "another rank has stopped" not in output, output
    assert output.count("tritonnet: interrupted: ") == 1, output  # rank 0 alone says what is saved
    assert "resume with: torchrun ... -m tritonnet train " in output
    state = load_checkpoint(run / "checkpoint.pt")
    assert state["step"] in (0, 50, 100), "the ranks stop where they agreed to"

    dataset = load_dataset("fashion-mnist", limit_train=rows, limit_test=100, download=False)
    epochs = state["epoch"] + 1
    resumed = one_process(dataset, run, epochs, resume=True)
    assert_same_parameters(resumed, one_process(dataset, tmp_path / "uninterrupted", epochs))
