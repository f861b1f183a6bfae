"""Non-finite values in a run: nothing is called good before it was checked.

A step's loss is computed before the step's update, so a finite loss says nothing
about the weights the update left behind; and the test loss is computed after the
epoch. So at the end of an epoch (and before a stop's checkpoint) the weights and
both losses are checked, and:
- with `stop_on_nonfinite` (the default), anything non-finite stops the run with
  NonFiniteLossError before the checkpoint is written; the message says what
  became non-finite and where, and names the last good checkpoint only if one
  exists;
- without it, the run goes on and the history records the values (as null in
  history.json); the checkpoint is written only while the weights are finite, so
  it keeps the last epoch that can be resumed, and each later epoch's log line
  says so.
`CheckpointKeeper` owns that rule for the run's checkpoint file.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import torch

from tritonnet.checkpoint import describe_progress, save_checkpoint
from tritonnet.interrupts import SignalGuard

NONFINITE_ADVICE = "Lower the learning rate, or pass --allow-nonfinite to go on anyway."


class NonFiniteLossError(RuntimeError):
    """A loss or the weights became NaN or infinite. The message says which and
    where, and names the last good checkpoint only if one was saved."""


def non_finite_weights(parameters: dict[str, torch.Tensor]) -> bool:
    return not all(bool(torch.isfinite(value).all()) for value in parameters.values())


class CheckpointKeeper:
    """The run's checkpoint file: written only with finite weights, its write
    shielded from signals, and what it holds remembered, so that a message names
    a checkpoint only when one exists."""

    def __init__(self, path: Path, fixed: dict[str, Any], signals: SignalGuard, writes: bool = True) -> None:
        self.path = path
        self.fixed = fixed  # the run's settings and data record
        self.signals = signals
        self.writes = writes  # False on the ranks of a data-parallel run but rank 0, which writes
        self.holds: str | None = None  # `describe_progress` of the file on disk

    def kept(self) -> str:
        if self.holds is None:
            return "No checkpoint was saved."
        return f"The last good checkpoint is kept at {self.path} ({self.holds})."

    def save(self, parameters: dict[str, torch.Tensor], epoch: int, step: int,
             shuffle_state: torch.Tensor, partial: dict[str, float], history: list) -> str:
        """Write the checkpoint unless the weights are not finite; then return why
        it was not written, for the log. A keeper that does not write (`writes`
        False, on a rank other than 0) only notes what rank 0's file now holds."""
        if non_finite_weights(parameters):
            return f"the weights are not finite: {self.path} keeps {self.holds or 'nothing'}"
        if self.writes:
            with self.signals.deferred():
                save_checkpoint(self.path, {
                    **self.fixed,
                    "parameters": parameters,
                    "epoch": epoch,
                    "step": step,
                    "shuffle_state": shuffle_state,
                    "torch_rng_state": torch.get_rng_state(),
                    "partial": partial,
                    "history": history,
                })
        self.holds = describe_progress(epoch, step)
        return ""


def stop_if_non_finite(stop_on_nonfinite: bool, parameters: dict[str, torch.Tensor],
                       losses: dict[str, float], where: str, settings: str, keeper: CheckpointKeeper) -> None:
    """Raise NonFiniteLossError if the weights, or one of `losses` (named by what
    they are), are not finite, unless the run goes on anyway."""
    if not stop_on_nonfinite:
        return
    if non_finite_weights(parameters):
        _stop(f"the weights are not finite {where}", settings, keeper)
    for name, loss in losses.items():
        if not math.isfinite(loss):
            _stop(f"the {name} is not finite {where}", settings, keeper)


def check_step_losses(step_losses: torch.Tensor, epoch: int, first_step: int, step: int,
                      stop_on_nonfinite: bool, settings: str, keeper: CheckpointKeeper) -> None:
    """Raise NonFiniteLossError naming the first bad step since `first_step`, unless
    the run goes on anyway."""
    if not stop_on_nonfinite:
        return
    bad = (~torch.isfinite(step_losses[first_step:step])).nonzero()
    if bad.numel():
        _stop(f"the training loss is not finite at epoch {epoch}, step {first_step + int(bad[0]) + 1}",
              settings, keeper)


def _stop(what: str, settings: str, keeper: CheckpointKeeper) -> None:
    raise NonFiniteLossError(f"{what} {settings}. {keeper.kept()} {NONFINITE_ADVICE}")
