"""Runs the `tritonnet` command with a signal at chosen moments, for tests/test_cli.py.

    python tests/cli_driver.py MOMENT[:TERM][,MOMENT...] -- TRITONNET_ARGUMENTS...

The first time the command reaches a moment, the process sends itself SIGINT (or
SIGTERM with `:TERM`), as a Ctrl-C at that instant would. Python runs the signal
handler before its next instruction, in the main thread, so the signal lands in
that phase every time: no race against the clock, no hook in tritonnet itself.

Moments, each a function the command calls:
  data        before the data set is loaded (`load_dataset`)
  step        after the first training step (the progress bar's first update)
  evaluate    before the first test-set evaluation
  checkpoint  while a checkpoint is being written (inside `torch.save`'s file)
  plot        before a figure is drawn
  hold        after the first training step, no signal: say "holding" on stderr
              and wait until the file named by TRITONNET_TEST_RELEASE exists
"""

from __future__ import annotations

import functools
import os
import signal
import sys
import time
from pathlib import Path

import torch

import tritonnet.datasets
import tritonnet.plots
import tritonnet.trainer
from tritonnet.cli import main


def _hold() -> None:
    print("holding", file=sys.stderr, flush=True)
    release = Path(os.environ["TRITONNET_TEST_RELEASE"])
    while not release.exists():
        time.sleep(0.02)


def _once(action, function, after: bool = False):
    """`function`, doing `action` at its first call: before it, or after it returns."""
    done = []

    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        if not done and not after:
            done.append(True)
            action()
        result = function(*args, **kwargs)
        if not done:
            done.append(True)
            action()
        return result

    return wrapper


def _after_first_step(action):
    """The trainer's progress bar, doing `action` after its first update (one step)."""
    make_bar = tritonnet.trainer._progress_bar

    def progress_bar(*args, **kwargs):
        bar = make_bar(*args, **kwargs)
        bar.update = _once(action, bar.update, after=True)
        return bar

    tritonnet.trainer._progress_bar = progress_bar


def arm(moment: str) -> None:
    name, _, kind = moment.partition(":")
    signum = signal.SIGTERM if kind == "TERM" else signal.SIGINT
    send = functools.partial(os.kill, os.getpid(), signum)
    if name == "data":
        tritonnet.datasets.load_dataset = _once(send, tritonnet.datasets.load_dataset)
    elif name == "step":
        _after_first_step(send)
    elif name == "hold":
        _after_first_step(_hold)
    elif name == "evaluate":
        tritonnet.trainer.evaluate = _once(send, tritonnet.trainer.evaluate)
    elif name == "checkpoint":
        torch.save = _once(send, torch.save)
    elif name == "plot":
        tritonnet.plots.plot_history = _once(send, tritonnet.plots.plot_history)
        tritonnet.plots.plot_sweep = _once(send, tritonnet.plots.plot_sweep)
    else:
        raise SystemExit(f"cli_driver: unknown moment {moment!r}")


if __name__ == "__main__":
    moments, separator, *arguments = sys.argv[1:]
    if separator != "--":
        raise SystemExit(__doc__)
    for moment in moments.split(","):
        arm(moment)
    sys.exit(main(arguments))
