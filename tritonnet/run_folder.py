"""One run per folder: an exclusive lock for the run's lifetime, and no silent
overwrite of a run that is already there.

`claim_run_folder` takes an exclusive `flock` on `<folder>/.tritonnet.lock`,
without waiting: a second run on the folder fails at once, naming it. The lock
belongs to the open file, so the kernel drops it when the process ends however it
ends (SIGKILL included), and a stale lock file never blocks a later run. The lock
file stays; it is the only file a run leaves that is not its output.

A folder that holds anything else is refused unless the run resumes what is in it
(`resume`) or replaces it (`overwrite`). Overwriting first deletes the files a run
writes (RUN_FILES), so nothing of the old run mixes with the new one; other files
are left alone, and figures are replaced when the new run draws them.

Claims nest within a process: the command holds its folder from the data loading
to the last figure, and `train`, which claims its folder too, runs inside.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Iterator

from tritonnet.files import remove_stray_temporaries

LOCK_NAME = ".tritonnet.lock"
RUN_FILES = ("checkpoint.pt", "history.json", "history.csv", "sweep.json")
LISTED_ENTRIES = 5

_held: set[Path] = set()  # folders this process holds


class RunFolderError(RuntimeError):
    """The folder is in use by another run, or holds one that would be overwritten."""


@contextlib.contextmanager
def claim_run_folder(folder: str | os.PathLike, *, resume: bool = False, overwrite: bool = False) -> Iterator[Path]:
    """Hold `folder` (created if need be) for the block; see the module docstring."""
    if resume and overwrite:
        raise ValueError("resume and overwrite contradict each other: --resume continues the run "
                         "in --out, --overwrite replaces it")
    folder = Path(folder)
    key = folder.resolve()
    if key in _held:
        yield folder
        return
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / LOCK_NAME, "a") as lock:
        try:
            fcntl.flock(lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RunFolderError(
                f"{folder} is in use by another tritonnet run (it holds the lock on "
                f"{folder / LOCK_NAME}); wait for that run to end, or choose another --out"
            ) from None
        # Under the lock no other run writes here: what is left of a killed write is stray.
        remove_stray_temporaries(folder)
        _check_contents(folder, resume, overwrite)
        _held.add(key)
        try:
            yield folder
        finally:
            _held.discard(key)


def _check_contents(folder: Path, resume: bool, overwrite: bool) -> None:
    entries = sorted(entry.name for entry in folder.iterdir() if entry.name != LOCK_NAME)
    if not entries or resume:
        return
    if not overwrite:
        listing = ", ".join(entries[:LISTED_ENTRIES]) + (", ..." if len(entries) > LISTED_ENTRIES else "")
        raise RunFolderError(
            f"{folder} is not empty ({listing}): pass --resume to continue the run in it, "
            "--overwrite to replace it, or choose another --out"
        )
    for name in RUN_FILES:
        (folder / name).unlink(missing_ok=True)
