"""Data-parallel runs under torchrun: which rank this process is, its device, its
shard of each batch, and the few collectives the training loop needs.

torchrun (`python -m torch.distributed.run`) starts one process per rank and sets
WORLD_SIZE, RANK, LOCAL_RANK, MASTER_ADDR and MASTER_PORT in each. `start` reads
them and joins the process group: NCCL between GPUs (each rank on
`cuda:LOCAL_RANK`), gloo on CPUs. Without torchrun it joins nothing and the run
is the one process it always was (`SINGLE`).

Every collective waits at most the group's timeout (TIMEOUT_SECONDS, or
TRITONNET_DIST_TIMEOUT seconds), so a rank that stops answering ends the run
with an error instead of a hang. A rank that dies is seen sooner: gloo reports
the closed connection at the next collective, and torchrun stops the other
ranks and names the one that failed.

`Ranks` is what the trainer and the steps see, the same whether there is one
process or many: in one process its collectives return at once.
"""

from __future__ import annotations

import contextlib
import datetime
import math
import os
from dataclasses import dataclass
from typing import Any, Callable, Iterator, TypeVar

import torch

TIMEOUT_SECONDS = 300.0
TIMEOUT_VARIABLE = "TRITONNET_DIST_TIMEOUT"
LAUNCH_VARIABLES = ("WORLD_SIZE", "RANK", "LOCAL_RANK")

T = TypeVar("T")


@dataclass(frozen=True)
class Ranks:
    """This process's place in a data-parallel run: `rank` of `world_size`, and
    `device`, where its collectives' tensors live. `joined`: whether a process
    group is running (False in one process without torchrun)."""

    rank: int = 0
    world_size: int = 1
    device: torch.device = torch.device("cpu")
    joined: bool = False

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes the run's files: history, checkpoint, figures."""
        return self.rank == 0

    def label(self) -> str:
        """`rank 1 of 2`, for messages; empty in one process."""
        return f"rank {self.rank} of {self.world_size}" if self.joined else ""

    def shard(self, rows: int) -> tuple[int, int]:
        """This rank's rows `[start, end)` of a global batch of `rows`: contiguous,
        disjoint between ranks, as even as they can be (a short last batch may
        leave a rank none)."""
        return rows * self.rank // self.world_size, rows * (self.rank + 1) // self.world_size

    def all_reduce(self, tensor: torch.Tensor) -> torch.Tensor:
        """Sum `tensor` over the ranks, in place."""
        if self.joined:
            with _collective("an all-reduce"):
                torch.distributed.all_reduce(tensor)
        return tensor

    def barrier(self) -> None:
        if self.joined:
            with _collective("a barrier"):
                torch.distributed.barrier()

    def writer_log(self, log: Callable[[str], None]) -> Callable[[str], None]:
        """`log` on rank 0; elsewhere a log that says nothing, so a line prints once."""
        return log if self.is_writer else _silent

    def write(self, *writers: Callable[[], None]) -> None:
        """Each of `writers` called on rank 0 alone; then every rank waits until
        rank 0 is done, so none goes on while a file of the run is being written."""
        if self.is_writer:
            for writer in writers:
                writer()
        self.barrier()

    def agree_to_stop(self, requested: int | None, at_boundary: bool) -> int | None:
        """The signal that stops the run now, or None. In one process, the signal
        `requested` as soon as it comes; with many, only at a boundary every rank
        reaches at the same step, and then the one any rank received, so that all
        stop at one step."""
        if not self.joined:
            return requested
        if not at_boundary:
            return None
        signal = torch.tensor([requested or 0], dtype=torch.int64, device=self.device)
        with _collective("agreeing on a stop"):
            torch.distributed.all_reduce(signal, op=torch.distributed.ReduceOp.MAX)
        return int(signal.item()) or None

    def check_run(self, config: Any, data: dict[str, Any], device: torch.device, resume: bool) -> None:
        """Refuse, on every rank, a run whose ranks were given different settings or
        data (`check_same`), or a batch too small to give each rank rows."""
        if not self.joined:
            return
        self.check_same(run_settings(config, data, device, resume))
        if config.batch_size < self.world_size:
            raise ValueError(
                f"the batch size {config.batch_size} is smaller than the world size {self.world_size}: "
                "--batch-size is the global batch, split between the ranks, and each needs rows"
            )

    def check_same(self, settings: dict[str, Any]) -> None:
        """Raise ValueError, on every rank, naming each setting that differs
        between the ranks and which ranks hold which value."""
        if not self.joined:
            return
        gathered: list[Any] = [None] * self.world_size
        with _collective("comparing the ranks' settings"):
            torch.distributed.all_gather_object(gathered, settings)
        differing = []
        for key in settings:
            holders: dict[str, list[int]] = {}
            for rank, values in enumerate(gathered):
                holders.setdefault(repr(values.get(key)), []).append(rank)
            if len(holders) > 1:
                listing = ", ".join(f"{value} on {_ranks_text(ranks)}" for value, ranks in holders.items())
                differing.append(f"{key}: {listing}")
        if differing:
            raise ValueError(
                f"the ranks were started with different settings: {'; '.join(differing)}. "
                "Every rank must run the same command on the same data."
            )

    def from_writer(self, action: Callable[[], T], what: str) -> T:
        """`action()` run on rank 0 alone and its result sent to every rank (it
        must pickle). An error it raises is raised on rank 0, and on the others
        as a RuntimeError that says it (`what` says what rank 0 was doing)."""
        if not self.joined:
            return action()
        box: list[Any] = [None]
        failure = None
        if self.is_writer:
            try:
                box[0] = ("value", action())
            except Exception as error:  # whatever it is, the other ranks must hear of it
                failure, box[0] = error, ("error", str(error))
        with _collective(f"rank 0's broadcast (to {what})"):
            torch.distributed.broadcast_object_list(box, src=0)
        if failure is not None:
            raise failure
        kind, value = box[0]
        if kind == "error":
            raise RuntimeError(f"rank 0 could not {what}: {value}")
        return value


SINGLE = Ranks()


class RankLostError(RuntimeError):
    """A collective failed: another rank stopped, or cannot be reached."""


@contextlib.contextmanager
def _collective(what: str) -> Iterator[None]:
    """Say, when a collective fails, that the cause is most likely another rank."""
    try:
        yield
    except RuntimeError as error:
        raise RankLostError(
            f"{what} failed: another rank has stopped or cannot be reached (torchrun's report "
            f"names the rank that failed first). ({error})"
        ) from error


def _silent(message: str) -> None:
    pass


def run_settings(config: Any, data: dict[str, Any], device: torch.device, resume: bool) -> dict[str, Any]:
    """What every rank of a run must share: the training settings (`config`, a
    `TrainConfig`), whether it resumes, the backend, the kind of device, and the
    data (`data`, its `resume.data_record`: name, row counts and fingerprints;
    the folder it came from may differ)."""
    from tritonnet.backend import get_backend
    from tritonnet.resume import COMPARED_DATA

    settings = {key: value for key, value in config.describe().items() if key != "progress"}
    settings.update(resume=resume, backend=get_backend(), device=device.type)
    return {**settings, **{f"data {key}": data[key] for key in COMPARED_DATA}}


def _ranks_text(ranks: list[int]) -> str:
    return f"rank{'s' if len(ranks) > 1 else ''} {', '.join(map(str, ranks))}"


def launched() -> bool:
    """Whether torchrun started this process (its variables are set)."""
    return all(name in os.environ for name in LAUNCH_VARIABLES)


def refuse_under_torchrun(command: str, instead: str) -> None:
    """Raise ValueError when torchrun started this process: `command` runs in one
    process only, and the message suggests what to do `instead`."""
    if launched():
        raise ValueError(f"{command} runs in one process, not under torchrun; {instead}")


def writer_process() -> bool:
    """Whether this process is rank 0 (or the only one), before any group is joined."""
    return not launched() or os.environ["RANK"] == "0"


def rank_label() -> str:
    """`rank 1 of 2: ` under torchrun, else empty: what error messages start with."""
    if not launched():
        return ""
    return f"rank {os.environ['RANK']} of {os.environ['WORLD_SIZE']}: "


def timeout() -> datetime.timedelta:
    """How long a collective may wait: TRITONNET_DIST_TIMEOUT seconds, or TIMEOUT_SECONDS."""
    text = os.environ.get(TIMEOUT_VARIABLE)
    if text is None:
        return datetime.timedelta(seconds=TIMEOUT_SECONDS)
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{TIMEOUT_VARIABLE} must be a positive number of seconds, got {text!r}")
    return datetime.timedelta(seconds=seconds)


def _launch_number(name: str) -> int:
    text = os.environ[name]
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"the torchrun variable {name} must be an integer, got {text!r}") from None


@contextlib.contextmanager
def start(device: torch.device) -> Iterator[tuple[Ranks, torch.device]]:
    """Join the process group torchrun set up, for the block; yields this process's
    `Ranks` and the device it trains on. `device` is the one the command chose:
    on a GPU each rank takes `cuda:LOCAL_RANK` and the group runs NCCL, on the
    CPU gloo. Without torchrun, yields `SINGLE` and `device` unchanged."""
    if not launched():
        yield SINGLE, device
        return
    world_size, rank, local_rank = (_launch_number(name) for name in LAUNCH_VARIABLES)
    if not 0 <= rank < world_size:
        raise ValueError(f"the torchrun variable RANK must be in [0, WORLD_SIZE={world_size}), got {rank}")
    wait = timeout()
    if device.type == "cuda":
        if local_rank >= torch.cuda.device_count():
            raise RuntimeError(
                f"LOCAL_RANK {local_rank} needs GPU {local_rank}, but {torch.cuda.device_count()} "
                "are visible: start at most one process per GPU (--nproc_per_node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        torch.distributed.init_process_group("nccl", timeout=wait, device_id=device)
    else:
        torch.distributed.init_process_group("gloo", timeout=wait)
    ranks = Ranks(rank, world_size, device, joined=True)
    try:
        yield ranks, device
        # After a run that ended well, the ranks leave together: none closes its
        # connections while another may still be reading from them.
        ranks.barrier()
    finally:
        torch.distributed.destroy_process_group()
