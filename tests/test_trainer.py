"""The training loop: learning, determinism, checkpoints, resume, and non-finite losses.

These run on the CPU reference path (the kernels have their own tests): the
trainer's job is the loop around the steps, and the reference makes it exact and
fast enough to train for real here.
"""

from __future__ import annotations

import dataclasses
import io
import json
import signal
import sys
from pathlib import Path

import pytest
import torch

from tritonnet import step as step_module
from tritonnet import trainer
from tritonnet.backend import use_backend
from tritonnet.checkpoint import load_checkpoint
from tritonnet.datasets import Dataset, load_dataset
from tritonnet.model import MLP
from tritonnet.step import make_step
from tritonnet.trainer import NonFiniteLossError, TrainConfig, train

FASHION_DIR = Path("/usr/share/datasets/fashion-mnist")
needs_fashion = pytest.mark.skipif(
    not FASHION_DIR.is_dir(),
    reason="needs Debian's dataset-fashion-mnist (apt-get install dataset-fashion-mnist)",
)

SMALL_SIZES = (20, 16, 10)


@pytest.fixture(autouse=True)
def _reference_backend():
    with use_backend("reference"):
        yield


def synthetic_dataset(train_rows: int = 300, test_rows: int = 100, seed: int = 0) -> Dataset:
    """A learnable toy problem: the class is the arg-max of the first 10 features."""
    generator = torch.Generator().manual_seed(seed)
    images = torch.randn(train_rows + test_rows, SMALL_SIZES[0], generator=generator)
    labels = images[:, :10].argmax(dim=1)
    return Dataset(
        name="synthetic",
        train_images=images[:train_rows],
        train_labels=labels[:train_rows],
        test_images=images[train_rows:],
        test_labels=labels[train_rows:],
        mean=0.0,
        std=1.0,
        source=Path("memory"),
    )


def config(**overrides) -> TrainConfig:
    settings = dict(epochs=3, batch_size=32, lr=0.5, sizes=SMALL_SIZES, progress=False)
    return TrainConfig(**{**settings, **overrides})


def quiet(_message: str) -> None:
    pass


def test_history_files_and_checkpoint(tmp_path):
    result = train(config(), synthetic_dataset(), tmp_path, log=quiet)
    assert [record["epoch"] for record in result.history] == [1, 2, 3]
    saved = json.loads((tmp_path / "history.json").read_text())
    assert saved["dataset"] == "synthetic" and saved["history"] == result.history
    lines = (tmp_path / "history.csv").read_text().splitlines()
    assert lines[0] == "epoch,train_loss,test_loss,test_accuracy,train_seconds" and len(lines) == 4
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["epoch"] == 3 and state["step"] == 0
    assert all(record["train_seconds"] > 0 for record in result.history)
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


def test_same_seed_same_numbers(tmp_path):
    first = train(config(), synthetic_dataset(), tmp_path / "a", log=quiet).history
    second = train(config(), synthetic_dataset(), tmp_path / "b", log=quiet).history
    strip = lambda history: [{k: v for k, v in r.items() if k != "train_seconds"} for r in history]  # noqa: E731
    assert strip(first) == strip(second)
    other_seed = train(config(seed=2), synthetic_dataset(), tmp_path / "c", log=quiet).history
    assert strip(other_seed) != strip(first)


def test_resume_continues_bit_identically(tmp_path):
    dataset = synthetic_dataset()
    train(config(epochs=4), dataset, tmp_path / "full", log=quiet)
    train(config(epochs=2), dataset, tmp_path / "split", log=quiet)
    train(config(epochs=4), dataset, tmp_path / "split", resume=True, log=quiet)
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    split = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    for key, value in full["parameters"].items():
        assert torch.equal(value, split["parameters"][key]), key
    assert [r["test_loss"] for r in full["history"]] == [r["test_loss"] for r in split["history"]]


def test_resume_refuses_a_checkpoint_of_other_settings(tmp_path):
    dataset = synthetic_dataset()
    train(config(epochs=1), dataset, tmp_path, log=quiet)
    with pytest.raises(ValueError, match="another run"):
        train(config(epochs=2, lr=0.25), dataset, tmp_path, resume=True, log=quiet)


def patch_step(monkeypatch, call: int, action) -> None:
    """Wrap the step the trainer makes: its `call`-th call returns `action(model, loss)`."""
    calls = []

    def make_patched_step(model, **options):
        real_step = make_step(model, **options)

        def step(x, labels):
            calls.append(1)
            loss = real_step(x, labels)
            return action(model, loss) if len(calls) == call else loss

        return step

    monkeypatch.setattr(step_module, "make_step", make_patched_step)


def ctrl_c(model, loss):
    """A Ctrl-C right after this step, delivered to the trainer's handler as a real one is."""
    signal.raise_signal(signal.SIGINT)
    return loss


@pytest.mark.parametrize(
    "other,difference",
    [
        (lambda: synthetic_dataset(train_rows=200), r"train_rows: 300 in the checkpoint, 200 now"),
        (lambda: synthetic_dataset(test_rows=50), r"test_rows: 100 in the checkpoint, 50 now"),
        (lambda: synthetic_dataset(seed=1), r"train_fingerprint: '\w+' in the checkpoint, '\w+' now"),
        (lambda: dataclasses.replace(synthetic_dataset(), name="other"), r"name: 'synthetic' in the checkpoint, 'other' now"),
    ],
    ids=["another --limit-train", "another --limit-test", "another data folder", "another dataset"],
)
def test_resume_mid_epoch_refuses_other_data(tmp_path, monkeypatch, other, difference):
    patch_step(monkeypatch, 14, ctrl_c)  # 10 steps an epoch: stops in epoch 2, step 4
    assert train(config(epochs=2), synthetic_dataset(), tmp_path, log=quiet).interrupted
    with pytest.raises(ValueError, match=difference):
        train(config(epochs=2), other(), tmp_path, resume=True, log=quiet)


def test_resume_accepts_the_same_data_from_another_folder(tmp_path):
    # The data is checked by content: a copy of the folder elsewhere resumes.
    train(config(epochs=1), synthetic_dataset(), tmp_path, log=quiet)
    moved = dataclasses.replace(synthetic_dataset(), source=Path("elsewhere"))
    assert len(train(config(epochs=2), moved, tmp_path, resume=True, log=quiet).history) == 2


def nan_test_loss_at_call(monkeypatch, call: int) -> None:
    """The `call`-th evaluation (one an epoch here) returns a NaN test loss."""
    real_evaluate = MLP.evaluate
    calls = []

    def evaluate(self, x, labels):
        calls.append(1)
        loss, correct = real_evaluate(self, x, labels)
        return (loss * float("nan") if len(calls) == call else loss), correct

    monkeypatch.setattr(MLP, "evaluate", evaluate)


def nan_loss(model, loss):
    return loss * float("nan")


def infinite_weight(model, loss):
    model.linears[0].weight[0, 0] = float("inf")
    return loss


def test_non_finite_loss_stops_with_epoch_and_step(tmp_path, monkeypatch):
    # 300 rows in batches of 32: 10 steps an epoch, so call 15 is epoch 2, step 5.
    patch_step(monkeypatch, 15, nan_loss)
    with pytest.raises(NonFiniteLossError, match=r"epoch 2, step 5\b") as error:
        train(config(epochs=3), synthetic_dataset(), tmp_path, log=quiet)
    assert f"kept at {tmp_path / 'checkpoint.pt'} (epoch 1)" in str(error.value)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def test_non_finite_loss_in_the_first_epoch_names_no_checkpoint(tmp_path, monkeypatch):
    patch_step(monkeypatch, 3, nan_loss)
    with pytest.raises(NonFiniteLossError, match=r"epoch 1, step 3\b") as error:
        train(config(epochs=2), synthetic_dataset(), tmp_path, log=quiet)
    assert "No checkpoint was saved" in str(error.value) and "kept" not in str(error.value)
    assert not (tmp_path / "checkpoint.pt").exists()


def test_non_finite_test_loss_stops_before_the_checkpoint(tmp_path, monkeypatch):
    nan_test_loss_at_call(monkeypatch, 2)
    with pytest.raises(NonFiniteLossError, match=r"test loss is not finite after epoch 2"):
        train(config(epochs=3), synthetic_dataset(), tmp_path, log=quiet)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert len(json.loads((tmp_path / "history.json").read_text())["history"]) == 1


def test_non_finite_weights_stop_before_the_checkpoint(tmp_path, monkeypatch):
    # The last step of epoch 2 returns a finite loss (computed before its update)
    # and leaves an infinite weight behind.
    patch_step(monkeypatch, 20, infinite_weight)
    with pytest.raises(NonFiniteLossError, match=r"weights are not finite after epoch 2"):
        train(config(epochs=3), synthetic_dataset(), tmp_path, log=quiet)
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1


def strict_json(text: str):
    def refuse(constant):
        raise AssertionError(f"history.json holds a bare {constant}")

    return json.loads(text, parse_constant=refuse)


def test_allowed_non_finite_values_are_null_in_history_json(tmp_path, monkeypatch):
    nan_test_loss_at_call(monkeypatch, 2)
    result = train(config(epochs=3, stop_on_nonfinite=False), synthetic_dataset(), tmp_path, log=quiet)
    assert len(result.history) == 3 and result.history[1]["test_loss"] != result.history[1]["test_loss"]
    saved = strict_json((tmp_path / "history.json").read_text())["history"]
    assert saved[1]["test_loss"] is None and saved[2]["test_loss"] == result.history[2]["test_loss"]
    assert (tmp_path / "history.csv").read_text().splitlines()[2].split(",")[2] == ""
    # Finite weights: the checkpoint moves on, NaN test loss and all.
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 3


def test_allowed_non_finite_weights_never_replace_the_last_finite_checkpoint(tmp_path, monkeypatch):
    patch_step(monkeypatch, 20, infinite_weight)
    messages = []
    result = train(config(epochs=3, stop_on_nonfinite=False), synthetic_dataset(), tmp_path, log=messages.append)
    assert len(result.history) == 3
    assert load_checkpoint(tmp_path / "checkpoint.pt")["epoch"] == 1
    assert any("keeps epoch 1" in message for message in messages), messages
    strict_json((tmp_path / "history.json").read_text())


@pytest.mark.parametrize("cuda_graphs,expected", [(True, "auto"), (False, False)])
def test_the_step_is_graphed_as_configured(tmp_path, monkeypatch, cuda_graphs, expected):
    asked = []

    def recording_make_step(model, **options):
        asked.append(options.get("cuda_graph"))
        return make_step(model, **options)

    monkeypatch.setattr(step_module, "make_step", recording_make_step)
    train(config(epochs=1, cuda_graphs=cuda_graphs), synthetic_dataset(), tmp_path, log=quiet)
    assert asked == [expected]


def test_non_finite_loss_can_be_allowed(tmp_path):
    result = train(
        config(epochs=1, lr=1e38, grad_scale="none", stop_on_nonfinite=False),
        synthetic_dataset(),
        tmp_path,
        log=quiet,
    )
    assert len(result.history) == 1
    strict_json((tmp_path / "history.json").read_text())


@needs_fashion
def test_short_training_on_fashion_mnist_learns(tmp_path):
    dataset = load_dataset("fashion-mnist", download=False, limit_train=6000, limit_test=1000)
    result = train(
        TrainConfig(epochs=2, batch_size=64, lr=0.5, progress=False), dataset, tmp_path, log=quiet
    )
    # 10 classes: chance is 10%. Two epochs on a tenth of the data reach about 75%;
    # 65% leaves room for seeds while proving the network learned.
    assert result.history[-1]["test_accuracy"] >= 0.65


@pytest.mark.parametrize("grad_scale", ["batch", "features"])
def test_module_api_trains_like_the_exercise_api(tmp_path, grad_scale):
    # `--api module` trains the nn.Module twin with torch.optim.SGD; from the same
    # seed it starts from the same weights and must follow the same path. The two
    # compute the same sums in different orders: 1e-5 relative over 3 epochs.
    dataset = synthetic_dataset()
    exercise = train(config(grad_scale=grad_scale), dataset, tmp_path / "exercise", log=quiet).history
    module = train(config(grad_scale=grad_scale, api="module"), dataset, tmp_path / "module", log=quiet).history
    for ours, theirs in zip(exercise, module):
        for key in ("train_loss", "test_loss", "test_accuracy"):
            assert theirs[key] == pytest.approx(ours[key], rel=1e-5), key


def test_resume_refuses_a_batch_order_drawn_on_another_device(tmp_path):
    # A GPU run with graphs draws its order on the GPU: its generator state cannot
    # continue on the CPU, so the resume says why instead of failing in set_state.
    from tritonnet.checkpoint import save_checkpoint

    dataset = synthetic_dataset()
    train(config(epochs=1), dataset, tmp_path, log=quiet)
    state = load_checkpoint(tmp_path / "checkpoint.pt")
    assert state["shuffle_device"] == "cpu"
    save_checkpoint(tmp_path / "checkpoint.pt", {**state, "shuffle_device": "cuda"})
    with pytest.raises(ValueError, match="drew its batch order on cuda; this run draws it on cpu"):
        train(config(epochs=2), dataset, tmp_path, resume=True, log=quiet)


def test_chunks_stop_at_a_chunk_end_and_resume_bit_identically(tmp_path, monkeypatch):
    """The trainer's loop as it runs on a GPU, many steps per call of the runner (the
    chunks run eagerly here): a Ctrl-C stops at the end of a chunk, and the resumed
    run lines its chunks up again and ends where a run never stopped ends."""
    import signal

    from tritonnet.epoch_graph import GraphedEpochSteps
    from tritonnet.fused_step import FusedStep

    class FourStepChunks(GraphedEpochSteps):
        chunk_steps = 4  # 10 steps an epoch: chunks of 4, 4 and 2

    calls: list[tuple[int, int]] = []
    stop_after: list[int] = []

    def chunked(model, images, labels, batch_size, **options):
        runner = FourStepChunks(FusedStep(model), images, labels, batch_size)
        run = runner.run

        def run_and_maybe_stop(order, first, count, losses):
            run(order, first, count, losses)
            calls.append((first, count))
            if len(calls) in stop_after:
                signal.raise_signal(signal.SIGINT)

        runner.run = run_and_maybe_stop
        return runner

    monkeypatch.setattr(trainer, "make_epoch_steps", chunked)
    dataset = synthetic_dataset()
    train(config(epochs=3), dataset, tmp_path / "full", log=quiet)
    assert calls[:3] == [(0, 4), (4, 4), (8, 2)]
    calls.clear()
    stop_after.append(5)  # epoch 2's second chunk
    stopped = train(config(epochs=3), dataset, tmp_path / "split", log=quiet)
    assert stopped.interrupted
    state = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    assert (state["epoch"], state["step"]) == (1, 8)
    calls.clear()
    stop_after.clear()
    train(config(epochs=3), dataset, tmp_path / "split", resume=True, log=quiet)
    assert calls[0] == (8, 2)
    full = load_checkpoint(tmp_path / "full" / "checkpoint.pt")
    split = load_checkpoint(tmp_path / "split" / "checkpoint.pt")
    for key, value in full["parameters"].items():
        assert torch.equal(value, split["parameters"][key]), key
    assert [r["test_loss"] for r in full["history"]] == [r["test_loss"] for r in split["history"]]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_stays_out_of_a_log_file(tmp_path, monkeypatch):
    # stderr redirected to a file or pipe: no bar, so no flood of '\r' redraws.
    log_file = io.StringIO()
    monkeypatch.setattr(sys, "stderr", log_file)
    train(config(epochs=1, progress=True), synthetic_dataset(), tmp_path / "log", log=quiet)
    assert log_file.getvalue() == ""
    # The oracle that the bar is drawn at all: the same run on a terminal draws it.
    terminal = _Terminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    train(config(epochs=1, progress=True), synthetic_dataset(), tmp_path / "terminal", log=quiet)
    assert "epoch 1/1" in terminal.getvalue() and "\r" in terminal.getvalue()
