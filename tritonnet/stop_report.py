"""The one line a `train` or `sweep` command prints when a signal ends it: what is
saved, and the exact command that continues from there.

What is saved is read back from disk, not assumed, whatever phase the signal
landed in (loading data, training, writing a checkpoint, drawing figures): a
checkpoint that holds some progress gives the command with `--resume` (without
`--overwrite`, which would delete it); no checkpoint gives the command as it was.
A sweep resumes every learning rate that has a checkpoint and starts the others,
so its command always has `--resume`.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import Sequence

from tritonnet.checkpoint import CheckpointError, describe_progress, load_checkpoint
from tritonnet.distributed import launched

CHECKPOINT_NAME = "checkpoint.pt"


def stop_report(command: str, out: str | Path, argv: Sequence[str]) -> str:
    """`interrupted: <what is saved>; resume with: <command line>` for `train` or
    `sweep`, whose --out is `out`."""
    out = Path(out)
    if command == "sweep":
        folders = sorted(folder for folder in _subfolders(out) if (folder / CHECKPOINT_NAME).is_file())
        held = [f"{folder.name} {_holds(folder)}" for folder in folders]
        saved = f"checkpoints in {out}: {', '.join(held)}" if held else ""
        return _line(saved, argv, resume=True)
    held = _holds(out) if (out / CHECKPOINT_NAME).is_file() else None
    saved = f"{out / CHECKPOINT_NAME} holds {held}" if held else ""
    return _line(saved, argv, resume=bool(held))


def command_line(argv: Sequence[str], resume: bool) -> str:
    """The command as it was run, with `--resume` (and no `--overwrite`) or without it."""
    program = ["tritonnet"] if Path(sys.argv[0]).name == "tritonnet" else [sys.executable, "-m", "tritonnet"]
    if launched():  # torchrun started the ranks: it starts them again, with its own flags
        program = ["torchrun", "...", "-m", "tritonnet"]
    dropped = ("--resume", "--overwrite") if resume else ("--resume",)
    words = [word for word in argv if not any(_abbreviates(word, flag) for flag in dropped)]
    return shlex.join([*program, *words, *(["--resume"] if resume else [])])


def _line(saved: str, argv: Sequence[str], resume: bool) -> str:
    if saved:
        return f"interrupted: {saved}; resume with: {command_line(argv, resume)}"
    return f"interrupted before any checkpoint was saved; start again with: {command_line(argv, resume)}"


def _holds(folder: Path) -> str:
    try:
        state = load_checkpoint(folder / CHECKPOINT_NAME)
    except CheckpointError as error:
        return f"an unusable checkpoint ({error})"
    return describe_progress(state["epoch"], state["step"])


def _subfolders(out: Path) -> list[Path]:
    return [entry for entry in out.iterdir() if entry.is_dir()] if out.is_dir() else []


def _abbreviates(word: str, flag: str) -> bool:
    """`word` is `flag` or an abbreviation argparse accepts for it ("--res")."""
    return word.startswith("--") and len(word) > 3 and flag.startswith(word)
