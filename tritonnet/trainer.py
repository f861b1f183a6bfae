"""The training loop of the exercise: SGD over shuffled batches, the test set after
every epoch, a checkpoint after every epoch, and resume.

The whole data set is moved to the device once. The steps run in chunks through
the runner `make_epoch_steps` chose (epoch_graph.py): one step at a time on the
CPU, many to a CUDA graph replay on a GPU. Each step gathers its shuffled batch
with `index_select` into a reused buffer; the losses stay on the device and are
read back only when the progress bar refreshes or the epoch ends, so a GPU is
never made to wait for Python at each step. A stop (Ctrl-C) takes effect at the
end of a chunk: on a GPU, within 64 steps.

Determinism: the network's initial weights come from torch's global RNG seeded
with `seed`; the batch order comes from a separate generator, seeded with
`seed` too, whose state is checkpointed. It lives where the runner draws the
order: on the CPU, or on the GPU where the steps replay many to a graph, so that
order differs from a CPU run's. One seed gives the same numbers run after run on
one device, and a resumed run ends bit-identical to one that was never
interrupted.

Nothing a run trained is lost (docs/reliability.md):
- a checkpoint is written only with finite weights, and only after the epoch's
  training and test losses were found finite: with `stop_on_nonfinite`, a NaN or
  infinity stops the run with NonFiniteLossError, which names the last good
  checkpoint only when one exists; without it the run goes on, and the checkpoint
  keeps the last epoch whose weights were finite;
- the run holds its folder (`tritonnet.run_folder`), and resumes only with the
  settings and the data its checkpoint was written with (`tritonnet.resume`);
- SIGINT and SIGTERM stop it between steps with a checkpoint, and a signal during
  a checkpoint's write waits for the write (`tritonnet.interrupts`).
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from tritonnet.checkpoint import describe_progress, load_checkpoint
from tritonnet.datasets import Dataset
from tritonnet.distributed import SINGLE, Ranks
from tritonnet.finite import CheckpointKeeper, check_step_losses, stop_if_non_finite
from tritonnet.finite import NonFiniteLossError  # noqa: F401 (`train` raises it; importable from here)
from tritonnet.history import write_history
from tritonnet.interrupts import SignalGuard
from tritonnet.model import EXERCISE_SIZES, MLP
from tritonnet.resume import check_resumable, data_record
from tritonnet.run_folder import claim_run_folder
from tritonnet.step import make_epoch_steps

EVAL_BATCH = 1000
PROGRESS_EVERY = 50  # steps between progress-bar refreshes (each reads the loss back)
RESUME_KEYS = ("batch_size", "lr", "grad_scale", "seed", "sizes", "api")


@dataclass
class TrainConfig:
    """The settings of one training run (the CLI's `train` flags)."""

    epochs: int = 30
    batch_size: int = 64
    lr: float = 0.1
    grad_scale: str = "batch"
    seed: int = 1
    sizes: tuple[int, ...] = EXERCISE_SIZES
    api: str = "exercise"
    stop_on_nonfinite: bool = True
    progress: bool = True
    # On a GPU, the exercise API's steps replay from a CUDA graph (make_step's
    # "auto"): the same numbers, without a launch from Python per kernel.
    cuda_graphs: bool = True

    def describe(self) -> dict[str, Any]:
        """The settings as plain data, for history files and checkpoints."""
        return {**asdict(self), "sizes": list(self.sizes)}

    def numerics(self) -> dict[str, Any]:
        """The settings that decide the numbers; a resumed run must share them."""
        return {key: self.describe()[key] for key in RESUME_KEYS}


@dataclass
class RunResult:
    """What `train` returns: the history, and the signal that stopped the run after
    its checkpoint was saved, if one did."""

    history: list[dict[str, float]] = field(default_factory=list)
    out: Path | None = None
    stop_signal: int | None = None

    @property
    def interrupted(self) -> bool:
        return self.stop_signal is not None


def build_model(config: TrainConfig, device: torch.device) -> Any:
    """The network the config asks for: the exercise MLP, or its nn.Module twin."""
    if config.api == "module":
        from tritonnet.module_model import ModuleModel

        return ModuleModel(
            config.batch_size, config.lr, config.sizes, grad_scale=config.grad_scale, device=device
        )
    return MLP(config.batch_size, config.lr, config.sizes, grad_scale=config.grad_scale, device=device)


def evaluate(model: Any, images: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    """Mean loss and accuracy over a whole split, in batches of EVAL_BATCH."""
    loss_sum = torch.zeros((), dtype=torch.float64, device=images.device)
    correct = torch.zeros((), dtype=torch.int64, device=images.device)
    for start in range(0, images.shape[0], EVAL_BATCH):
        batch_images = images[start : start + EVAL_BATCH]
        loss, batch_correct = model.evaluate(batch_images, labels[start : start + EVAL_BATCH])
        loss_sum += loss.double() * batch_images.shape[0]
        correct += batch_correct
    count = max(images.shape[0], 1)
    return float(loss_sum) / count, float(correct) / count


def _progress_bar(total: int, epoch: int, epochs: int, enabled: bool, initial: int):
    """The epoch's bar on stderr; off where stderr is not a terminal (tqdm's
    `disable=None`), since a log file would get a redraw per refresh."""
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=f"epoch {epoch}/{epochs}",
        unit="step",
        leave=False,
        disable=None if enabled else True,
        dynamic_ncols=True,
    )


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def train(
    config: TrainConfig,
    dataset: Dataset,
    out: str | Path,
    *,
    device: torch.device | str = "cpu",
    resume: bool = False,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    ranks: Ranks = SINGLE,
) -> RunResult:
    """Train on `dataset`, writing history and checkpoint under `out`.

    `out` must be empty unless `resume` (continue from `out/checkpoint.pt`, which
    must come from the same settings and data) or `overwrite` (replace the run in
    it); it is locked against other runs meanwhile. Returns the history;
    `interrupted` is set when a signal stopped the run, after its checkpoint was
    saved. `ranks`: this process's place in a data-parallel run
    (docs/distributed.md); rank 0 alone holds the folder, logs and writes.
    """
    out = Path(out)
    claim = claim_run_folder(out, resume=resume, overwrite=overwrite) if ranks.is_writer else contextlib.nullcontext()
    with claim, SignalGuard(request_stop=True) as signals:
        return _train(config, dataset, out, torch.device(device), resume, ranks.writer_log(log), signals, ranks)


def _train(config: TrainConfig, dataset: Dataset, out: Path, device: torch.device, resume: bool,
           log: Callable[[str], None], signals: SignalGuard, ranks: Ranks) -> RunResult:
    data = data_record(dataset)
    ranks.check_run(config, data, device, resume)
    meta = {"dataset": dataset.name, "data_source": str(dataset.source), "config": config.describe(),
            "world_size": ranks.world_size}

    torch.manual_seed(config.seed)
    model = build_model(config, device)
    train_images = dataset.train_images.to(device)
    train_labels = dataset.train_labels.to(device)
    steps = make_epoch_steps(
        model, train_images, train_labels, config.batch_size, cuda_graph="auto" if config.cuda_graphs else False,
        ranks=ranks,
    )
    shuffle = torch.Generator(device=steps.order_device).manual_seed(config.seed)
    fixed = {"config": meta["config"], "data": data, "shuffle_device": shuffle.device.type,
             "world_size": ranks.world_size}
    checkpoints = CheckpointKeeper(out / "checkpoint.pt", fixed, signals, writes=ranks.is_writer)
    history: list[dict[str, float]] = []
    first_epoch, first_step, partial = 1, 0, {"loss_sum": 0.0, "seconds": 0.0}
    if resume:
        state = ranks.from_writer(lambda: load_checkpoint(checkpoints.path), "read the checkpoint")
        check_resumable(checkpoints.path, state, config.numerics(), data, shuffle.device.type)
        model.load_state_dict(state["parameters"])
        shuffle.set_state(state["shuffle_state"])
        torch.set_rng_state(state["torch_rng_state"])
        history = list(state["history"])
        first_epoch, first_step, partial = state["epoch"] + 1, state["step"], dict(state["partial"])
        checkpoints.holds = describe_progress(state["epoch"], state["step"])
        if first_epoch > config.epochs:
            log(f"resuming {out}: it ended at epoch {state['epoch']}, and --epochs {config.epochs} asks "
                "for no more (a larger --epochs extends it)")
        else:
            log(f"resuming {out} at epoch {first_epoch}, step {first_step}")

    test_images = dataset.test_images.to(device)
    test_labels = dataset.test_labels.to(device)
    rows = train_images.shape[0]
    steps_per_epoch = math.ceil(rows / config.batch_size)
    settings = f"(lr {config.lr}, grad scale {config.grad_scale!r})"

    result = RunResult(history=history, out=out)
    for epoch in range(first_epoch, config.epochs + 1):
        shuffle_state = shuffle.get_state()
        order = torch.randperm(rows, generator=shuffle, device=shuffle.device).to(device)
        # Each step's mean loss, kept on the device; weighted by its batch's rows
        # at the end of the epoch (only the last batch may be short).
        step_losses = torch.zeros(steps_per_epoch, dtype=torch.float64, device=device)
        loss_sum = partial["loss_sum"]
        seconds = partial["seconds"]
        bar = _progress_bar(steps_per_epoch, epoch, config.epochs, config.progress and ranks.is_writer, first_step)
        _synchronize(device)
        started = time.perf_counter()
        step, stopping = first_step, None
        while step < steps_per_epoch:
            # To the next chunk boundary, so that a resumed run's chunks line up.
            count = min(steps_per_epoch, (step // steps.chunk_steps + 1) * steps.chunk_steps) - step
            steps.run(order, step, count, step_losses)
            step += count
            bar.update(count)
            crossed = step // PROGRESS_EVERY > (step - count) // PROGRESS_EVERY
            stopping = ranks.agree_to_stop(signals.requested, crossed or step == steps_per_epoch)
            if stopping or (config.progress and crossed) or step == steps_per_epoch:
                check_step_losses(step_losses, epoch, first_step, step, config.stop_on_nonfinite, settings, checkpoints)
                if stopping:
                    break
                bar.set_postfix(loss=f"{float(step_losses[step - 1]):.4f}")
        _synchronize(device)
        seconds += time.perf_counter() - started
        rows_per_step = torch.full((steps_per_epoch,), float(config.batch_size), dtype=torch.float64)
        rows_per_step[-1] = rows - (steps_per_epoch - 1) * config.batch_size
        loss_sum += float((step_losses[first_step:step].cpu() * rows_per_step[first_step:step]).sum())
        bar.close()
        parameters = model.state_dict()
        if stopping:
            stop_if_non_finite(config.stop_on_nonfinite, parameters, {}, f"at epoch {epoch}, step {step}",
                               settings, checkpoints)
            note = checkpoints.save(parameters, epoch - 1, step, shuffle_state,
                                    {"loss_sum": loss_sum, "seconds": seconds}, history)
            ranks.barrier()  # no rank ends before the checkpoint is written
            if note:
                log(note)
            result.stop_signal = stopping
            return result
        test_loss, test_accuracy = evaluate(model, test_images, test_labels)
        record = {
            "epoch": epoch,
            "train_loss": loss_sum / rows,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
            "train_seconds": seconds,
        }
        losses = {"training loss": record["train_loss"], "test loss": test_loss}
        stop_if_non_finite(config.stop_on_nonfinite, parameters, losses, f"after epoch {epoch}", settings, checkpoints)
        history.append(record)
        first_step, partial = 0, {"loss_sum": 0.0, "seconds": 0.0}
        with signals.deferred():
            note = checkpoints.save(parameters, epoch, 0, shuffle.get_state(), partial, history)
            ranks.write(lambda: write_history(out, history, meta))
        log(
            f"epoch {epoch:3d}  train loss {record['train_loss']:.4f}  test loss {test_loss:.4f}  "
            f"test accuracy {test_accuracy:.4f}  ({seconds:.2f} s)" + (f"  ({note})" if note else "")
        )
        result.stop_signal = ranks.agree_to_stop(signals.requested, True)
        if result.stop_signal:
            return result
    return result
