"""Ctrl-C and SIGTERM: every phase of a run ends cleanly, and never mid-write.

`SignalGuard` handles SIGINT and SIGTERM while it is active. By default a signal
raises `Interrupted` at once, which suits phases with nothing to save (loading
data, drawing figures): the command catches it, says what is on disk, and exits
with 128 + the signal's number (130 for Ctrl-C). With `request_stop`, the first
signal only sets `requested`, which the training loop checks between steps so
that it stops with a checkpoint of the last finished step; a second signal
raises. Inside `deferred()` (a checkpoint being written) signals wait: they are
acted on when the block ends, so a second Ctrl-C cannot cut a checkpoint in half.

Signal handlers can only be set from the main thread; elsewhere the guard leaves
signals alone and Python's default (KeyboardInterrupt) applies.
"""

from __future__ import annotations

import contextlib
import signal
from typing import Any, Iterator

SIGNALS = (signal.SIGINT, signal.SIGTERM)


class Interrupted(KeyboardInterrupt):
    """SIGINT or SIGTERM ended a phase of a run; `signum` says which."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class SignalGuard:
    """Handles SIGINT and SIGTERM while active; see the module docstring."""

    def __init__(self, *, request_stop: bool = False) -> None:
        self.request_stop = request_stop
        self.requested: int | None = None  # the first signal received, if any
        self._deferring = 0
        self._pending: int | None = None
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> "SignalGuard":
        for signum in SIGNALS:
            try:
                self._previous[signum] = signal.signal(signum, self._handle)
            except ValueError:  # not the main thread: leave signals alone
                pass
        return self

    def __exit__(self, *exc: Any) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum: int, frame: Any) -> None:
        first = self.requested is None
        if first:
            self.requested = signum
        if self.request_stop and first:
            return
        if self._deferring:
            self._pending = signum
            return
        raise Interrupted(signum)

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        """Signals wait until the block has finished; then the one that would have
        raised does."""
        self._deferring += 1
        try:
            yield
        finally:
            self._deferring -= 1
        if not self._deferring and self._pending is not None:
            signum, self._pending = self._pending, None
            raise Interrupted(signum)

