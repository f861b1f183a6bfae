"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Everything tritonnet writes for a user (checkpoints, histories, figures, downloads)
goes through `atomic_write`: the data goes to a temporary file in the same folder,
is flushed and fsynced, then renamed over the target, and the folder is fsynced so
the rename itself survives a power cut. A crash at any point leaves the previous
file intact and at worst a stray temporary file, which is removed when possible.

A disk error while writing (a full disk, a quota, an I/O error) is raised as an
OSError that names the target file and the OS's reason, also where the writer
reported it as an error of its own (torch.save raises a RuntimeError about
`inline_container.cc`, with the OSError as its context).

The temporary file is created with mode 0666 and the process umask applies, as it
does to any file `open` creates: `tempfile.mkstemp` would make every output 0600.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
from pathlib import Path
from typing import IO, Iterator

# `.<target name>.<16 hex digits>.tmp`, as `_create_temporary` names them.
TEMPORARY_NAME = re.compile(r"\..+\.[0-9a-f]{16}\.tmp")


def _fsync_directory(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some file systems do not open directories
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _create_temporary(target: Path) -> tuple[int, Path]:
    """A new file beside `target`, opened for writing, its mode 0666 less the umask."""
    while True:
        temporary = target.parent / f".{target.name}.{secrets.token_hex(8)}.tmp"
        try:
            return os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), temporary
        except FileExistsError:  # 64 random bits: a clash is a stray file of ours
            continue


def remove_stray_temporaries(folder: Path) -> None:
    """Delete what killed writes left in `folder`. Only for a folder that nothing
    else writes to now (a run folder, under its lock): a live write's temporary
    file looks the same."""
    for entry in folder.iterdir():
        if TEMPORARY_NAME.fullmatch(entry.name) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file to write; on a clean exit it replaces `path` atomically.

    If the block raises, the temporary file is deleted and `path` is untouched.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode must be 'w' or 'wb', got {mode!r}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, temporary = _create_temporary(target)
    try:
        with os.fdopen(fd, mode, **({"encoding": "utf-8", "newline": ""} if mode == "w" else {})) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, target)
    except BaseException as error:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        disk_error = error if isinstance(error, OSError) else error.__context__
        # An errno without a file name: a write, flush or fsync of the temporary file.
        if isinstance(disk_error, OSError) and disk_error.errno is not None and disk_error.filename is None:
            raise OSError(disk_error.errno, disk_error.strerror, str(target)) from error
        raise
    _fsync_directory(target.parent)
