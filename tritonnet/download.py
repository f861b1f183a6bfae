"""Downloads into the cache: bounded in time, checked by md5, never left half-written.

Each file goes to a temporary file beside its final name, is checked against its
md5, then renamed into place (`atomic_write`), so the cache never holds a partial
or unverified file. Two limits keep a download from hanging: each network
operation (connecting, each read) waits at most DOWNLOAD_TIMEOUT_SECONDS, and the
whole download ends within DOWNLOAD_DEADLINE_SECONDS, however slowly a server
trickles its bytes.

A download killed midway (SIGKILL, a power cut) leaves its temporary file behind:
`remove_leftovers` deletes those at the next start, once they are older than any
download can last, and the folder too where that leaves it empty.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from tritonnet.files import atomic_write

# Seconds each network operation (connecting, each read) may wait. Downloads stop
# at the first file that no mirror gives, so an offline attempt costs at most
# this times the number of mirrors, and usually far less (DNS fails at once).
DOWNLOAD_TIMEOUT_SECONDS = 5.0
# Seconds a whole download may take: MNIST's four files (11 MB) at 37 kB/s.
DOWNLOAD_DEADLINE_SECONDS = 300.0
DOWNLOAD_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True)
class RemoteFile:
    """One of a dataset's files: its name on the mirrors, and the md5 of that .gz."""

    name: str
    md5: str

    @property
    def stem(self) -> str:
        """The name without `.gz`, as torchvision and others store it unpacked."""
        return self.name.removesuffix(".gz")

    def find_in(self, folder: Path) -> Path | None:
        """The file in `folder`, unpacked or gzipped; None when it is not there."""
        for file_name in (self.stem, self.name):
            path = folder / file_name
            if path.is_file():
                return path
        return None


class DownloadError(OSError):
    """A file could not be fetched in time from any mirror, or did not match its md5."""


@dataclass(frozen=True)
class _Deadline:
    seconds: float
    end: float

    def remaining(self) -> float:
        """Seconds left; raises DownloadError once there are none."""
        left = self.end - time.monotonic()
        if left <= 0:
            raise DownloadError(f"stopped: a download may take at most {self.seconds:g} s")
        return left


def download_files(files: Iterable[RemoteFile], mirrors: Iterable[str], folder: Path) -> None:
    """Download each of `files` missing from `folder`, trying the mirrors in order.

    Raises DownloadError, naming each URL tried and why it failed, at the first
    file that no mirror gives within the deadline. A failed download leaves no
    file, and no folder where it created an empty one.
    """
    deadline = _Deadline(DOWNLOAD_DEADLINE_SECONDS, time.monotonic() + DOWNLOAD_DEADLINE_SECONDS)
    try:
        for remote in files:
            if remote.find_in(folder) is not None:
                continue
            failures = []
            for mirror in mirrors:
                url = mirror + remote.name
                try:
                    _download_file(url, folder / remote.name, remote.md5, deadline)
                    break
                except DownloadError as error:
                    failures.append(f"{url}: {error}")
            else:
                raise DownloadError("; ".join(failures) or "no mirrors")
    except BaseException:
        _remove_if_empty(folder)
        raise


def _download_file(url: str, destination: Path, md5: str, deadline: _Deadline) -> None:
    digest = hashlib.md5()
    # atomic_write drops its temporary file when the block raises, so a failed,
    # cut, late or mismatched download leaves nothing behind.
    with atomic_write(destination) as temporary:
        try:
            timeout = min(DOWNLOAD_TIMEOUT_SECONDS, deadline.remaining())
            with urllib.request.urlopen(url, timeout=timeout) as response:
                # read1 returns after one read from the socket, so the deadline is
                # checked however few bytes each read brings; read(n) waits for n.
                while chunk := response.read1(DOWNLOAD_CHUNK_BYTES):
                    digest.update(chunk)
                    temporary.write(chunk)
                    deadline.remaining()
        except DownloadError:  # the deadline's, already worded
            raise
        # URLError, HTTPError and socket timeouts are OSErrors; a connection cut
        # mid-transfer surfaces as http.client.IncompleteRead, an HTTPException.
        except (OSError, http.client.HTTPException) as error:
            raise DownloadError(str(error) or type(error).__name__) from error
        if digest.hexdigest() != md5:
            raise DownloadError(f"md5 mismatch: expected {md5}, got {digest.hexdigest()}")


def remove_leftovers(folder: Path, files: Iterable[RemoteFile]) -> None:
    """Delete the temporary files that killed downloads of `files` left in `folder`,
    then `folder` itself where that leaves it empty.

    A temporary file is removed only once it is older than any download can last,
    so a download running in another process keeps its own.
    """
    stale_before = time.time() - DOWNLOAD_DEADLINE_SECONDS - DOWNLOAD_TIMEOUT_SECONDS
    for remote in files:
        # atomic_write names its temporary files `.<name>.<random>.tmp`.
        for temporary in folder.glob(f".{remote.name}.*.tmp"):
            with contextlib.suppress(OSError):  # gone already, or not ours to delete
                if temporary.stat().st_mtime < stale_before:
                    temporary.unlink()
    _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    with contextlib.suppress(OSError):  # absent, or not empty
        folder.rmdir()
