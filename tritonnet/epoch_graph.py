"""An epoch's steps over a data set on the device: many steps per CUDA graph replay.

    steps = make_epoch_steps(model, images, labels, batch_size)  # step.py picks the kind
    steps.run(order, first, count, losses)  # steps first .. first+count-1 of the epoch

Why. Replayed from a graph one step at a time (`GraphedStep`), a step still costs
the host a Python call, a key of data pointers, a batch copy and a replay, and
the GPU waits for each. Here the host is out of the loop for a whole chunk: the
data set lives on the device, the epoch's row order is drawn there, each step
gathers its own batch inside the graph by index, and one replay runs
`CHUNK_STEPS` steps, each writing its loss into a device buffer the trainer reads
once an epoch (or when it refreshes a progress bar).

How. `run_steps` is the chunk: step k gathers the rows `index[k*B:(k+1)*B]` of the
data set (`index_select` into the batch buffers) and writes its loss into
`losses[k]`; it reads nothing back from the device. `EpochSteps` runs it eagerly,
one step per call of the trainer's loop, with any step `make_step` gives (the CPU's
path, or a GPU's without graphs). `GraphedEpochSteps` captures it around a
`FusedStep` over a static index buffer: before a replay the chunk's slice of the
epoch's order is copied into that buffer, after it the chunk's losses are copied
out, two device-side copies. One graph per chunk length: the full `CHUNK_STEPS`, the
epoch's remainder, and after a resume the odd first chunk. An epoch's short last
batch runs eagerly. The first chunk, and the first after the step's `capture_key()`
changes (a new learning rate, weights replaced), runs eagerly too: it compiles and
tunes the kernels and allocates the step's buffers, none of which may happen while
capturing. On a CPU `GraphedEpochSteps` runs the same chunk eagerly, which is how
the tests compare it with the per-step `FusedStep` over the same order.

Resume and Ctrl-C act between chunks: the trainer stops at a chunk's end, and a
resumed run starts its first chunk where the checkpoint left off.
"""

from __future__ import annotations

from typing import Callable

import torch

CHUNK_STEPS = 64  # steps per replay: a stop or a progress refresh waits for at most one chunk

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def run_steps(
    step: Step,
    images: torch.Tensor,
    labels: torch.Tensor,
    index: torch.Tensor,
    batch_images: torch.Tensor,
    batch_labels: torch.Tensor,
    losses: torch.Tensor,
) -> None:
    """`len(losses)` training steps: step k trains on the rows `index[k*B:(k+1)*B]` of
    `images` and `labels` (B = `len(batch_images)`; the last slice may be shorter),
    gathered into the batch buffers, and writes its loss into `losses[k]`."""
    batch_size = batch_images.shape[0]
    for k in range(losses.shape[0]):
        rows = index[k * batch_size : (k + 1) * batch_size]
        count = rows.shape[0]
        x = torch.index_select(images, 0, rows, out=batch_images[:count])
        y = torch.index_select(labels, 0, rows, out=batch_labels[:count])
        losses[k] = step(x, y)


class EpochSteps:
    """Runs an epoch's steps one at a time, eagerly, with any training step.

    `images` `[rows, features]` and `labels` `[rows]` are the whole training set, on
    the model's device. `run(order, first, count, losses)` runs steps `first` to
    `first + count - 1` of the epoch whose row order is `order` (a permutation of
    the rows, on the data's device), writing step s's loss into `losses[s]`.
    """

    chunk_steps = 1  # the trainer may stop or refresh after any step

    def __init__(self, step: Step, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size <= 0:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if images.ndim != 2 or labels.shape != images.shape[:1]:
            raise ValueError(
                f"images must be [rows, features] and labels [rows], got {tuple(images.shape)} "
                f"and {tuple(labels.shape)}"
            )
        self.step, self.images, self.labels, self.batch_size = step, images, labels, batch_size
        self.batch_images = images.new_empty(batch_size, images.shape[1])
        self.batch_labels = labels.new_empty(batch_size)

    @property
    def order_device(self) -> torch.device:
        """Where the trainer draws the epoch's order: the CPU, as it always has here."""
        return torch.device("cpu")

    def run(self, order: torch.Tensor, first: int, count: int, losses: torch.Tensor) -> None:
        size = self.batch_size
        index = order[first * size : (first + count) * size]
        batch = (self.batch_images, self.batch_labels)
        run_steps(self.step, self.images, self.labels, index, *batch, losses[first : first + count])


class GraphedEpochSteps(EpochSteps):
    """Runs an epoch's steps `CHUNK_STEPS` to a CUDA graph replay (see the module doc).

    `step` is a `FusedStep` (a step with a `capture_key()` that suits capture). The
    epoch's order is drawn on the data's device. Off a GPU the chunks run eagerly.
    """

    chunk_steps = CHUNK_STEPS

    def __init__(self, step: Step, images: torch.Tensor, labels: torch.Tensor, batch_size: int) -> None:
        super().__init__(step, images, labels, batch_size)
        self._index = torch.empty(CHUNK_STEPS * batch_size, dtype=torch.int64, device=images.device)
        self._losses = torch.empty(CHUNK_STEPS, dtype=torch.float64, device=images.device)
        self._graphs: dict[int, torch.cuda.CUDAGraph] = {}  # by the number of steps they run
        self._key: tuple | None = None

    @property
    def order_device(self) -> torch.device:
        return self.images.device

    def run(self, order: torch.Tensor, first: int, count: int, losses: torch.Tensor) -> None:
        if count > CHUNK_STEPS:
            raise ValueError(f"count must be at most CHUNK_STEPS ({CHUNK_STEPS}), got {count}")
        if self.images.device.type != "cuda":
            super().run(order, first, count, losses)
            return
        # Only full batches are captured; the epoch's short last batch runs eagerly.
        full = min(count, order.shape[0] // self.batch_size - first)
        if full > 0:
            self._replay(order, first, full, losses)
        if full < count:
            super().run(order, first + full, count - full, losses)

    def _replay(self, order: torch.Tensor, first: int, count: int, losses: torch.Tensor) -> None:
        key = self.step.capture_key()
        if key != self._key:
            # Graphs of another key would train tensors the model no longer holds,
            # or use an old setting; this eager chunk compiles what the new key needs.
            self._graphs.clear()
            self._key = key
            super().run(order, first, count, losses)
            return
        size = self.batch_size
        self._index[: count * size].copy_(order[first * size : (first + count) * size])
        graph = self._graphs.get(count)
        if graph is None:
            graph = self._graphs[count] = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                run_steps(
                    self.step,
                    self.images,
                    self.labels,
                    self._index[: count * size],
                    self.batch_images,
                    self.batch_labels,
                    self._losses[:count],
                )
        graph.replay()
        losses[first : first + count].copy_(self._losses[:count])
