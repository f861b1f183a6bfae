"""`GraphedStep`: a training step replayed from a CUDA graph.

Why. At the exercise's batch of 64 a step is about a dozen small kernels, each a
few microseconds of GPU work, and launching each one from Python (argument checks,
Triton's launcher) takes longer than running it: on an H200 an eager step took
about 1 ms, nearly all of it the host's. A CUDA graph records the step's launches
once and replays them with one call, so the GPU runs them back to back.

How. A step that suits capture allocates its buffers once per batch size,
updates its weights in place, and reads no value back from the GPU, as
`FusedStep` does. For each kind of batch the first call runs eagerly (it compiles
and autotunes the kernels and allocates the buffers, none of which may happen
while capturing, and checks the arguments), the second captures the step and
replays it, and later calls copy the batch into the graph's input buffers and
replay.

A graph holds what it was captured with. The step says what that is, besides
the batch, through its `capture_key()` (for `FusedStep`: the addresses of the
weights, the learning rate, the gradient scale, the backend and the matmul
precision). Each call compares it with the key the graph was captured under and
captures again when it has changed (a weight tensor replaced by assignment, a new
`model.lr`), so a replay never trains a tensor the model no longer holds or uses
an old setting. A replay does see new values copied into the same tensors, as
`MLP.load_state_dict` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tritonnet import checks


@dataclass
class _Graph:
    """One captured step: the graph, the buffers it reads and the loss it writes."""

    graph: torch.cuda.CUDAGraph | None
    images: torch.Tensor | None
    labels: torch.Tensor | None
    loss: torch.Tensor | None


class GraphedStep:
    """`step(x, labels) -> loss`, replayed from a CUDA graph on CUDA tensors.

    `step` is a training step with a `capture_key()` method (see the module doc),
    such as `FusedStep`. Call the result as the step itself: `loss = graphed(x,
    labels)`. On other devices it is the eager step. The graphed step computes what
    the eager one computes, with the same kernels and configs.

    The returned loss is the graph's own output buffer: the next call overwrites
    it. Copy it (`losses[i] = loss`, `loss.clone()`) to keep it. A replay checks
    nothing: the eager call that came before it, with a batch of the same kind,
    checked the arguments.
    """

    def __init__(self, step: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        if not callable(step) or not callable(getattr(step, "capture_key", None)):
            raise TypeError(
                "step must be a training step with a capture_key() method, such as "
                f"tritonnet.fused_step.FusedStep; got {type(step).__name__}"
            )
        self.step = step
        self._graphs: dict[tuple, _Graph] = {}

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = checks.check_tensor("x", x)
        labels = checks.check_tensor("labels", labels)
        if x.device.type != "cuda":
            return self.step(x, labels)
        batch = (tuple(x.shape), x.dtype, x.device, tuple(labels.shape), labels.dtype, labels.device)
        key = (batch, self.step.capture_key())
        entry = self._graphs.get(key)
        if entry is None:
            # First step of this kind: eager, so that the kernels compile and tune,
            # the buffers are allocated and the arguments checked before anything
            # is captured. Only a step that succeeded is captured next time.
            loss = self.step(x, labels)
            self._forget_stale(batch)
            self._graphs[key] = _Graph(None, None, None, None)
            return loss
        if entry.graph is None:
            entry.images, entry.labels = x.clone(), labels.clone()
            entry.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(entry.graph):
                entry.loss = self.step(entry.images, entry.labels)
            # Capturing ran nothing: this replay is the step.
            entry.graph.replay()
            return entry.loss
        entry.images.copy_(x)
        entry.labels.copy_(labels)
        entry.graph.replay()
        return entry.loss

    def _forget_stale(self, batch: tuple) -> None:
        """Drop the graphs of this kind of batch captured under another key: they
        would never replay again, and each holds its own memory."""
        for old in [old for old in self._graphs if old[0] == batch]:
            del self._graphs[old]
