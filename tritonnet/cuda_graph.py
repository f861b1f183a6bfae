"""`GraphedTrainStep`: the MLP's training step replayed from a CUDA graph.

Why. At the exercise's batch of 64 a step is about a dozen small kernels, each a
few microseconds of GPU work, and launching each one from Python (argument checks,
Triton's launcher) takes longer than running it: on an H200 an eager step took
about 1 ms, nearly all of it the host's. A CUDA graph records the step's launches
once and replays them with one call, so the GPU runs them back to back.

How. `MLP.train_step` already suits capture: its buffers are allocated once per
batch size, the weights are updated in place, and nothing in it reads a value
back from the GPU. For each batch size the first call runs eagerly (it compiles
and autotunes the kernels and allocates the buffers, none of which may happen
while capturing), the second captures the step and replays it, and later calls
copy the batch into the graph's input buffers and replay.

A graph holds what it was captured with: the addresses of the weights, the
learning rate, the gradient scale, the backend and the matmul precision. Each
call compares them with the model's, and captures again when one has changed
(a weight tensor replaced by assignment, a new `model.lr`), so a replay never
trains a tensor the model no longer holds or uses an old setting. A replay does
see new values copied into the same tensors, as `MLP.load_state_dict` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tritonnet import checks
from tritonnet.backend import get_backend
from tritonnet.model import MLP


@dataclass
class _Graph:
    """One captured step: the graph, the buffers it reads and the loss it writes."""

    graph: torch.cuda.CUDAGraph | None
    images: torch.Tensor | None
    labels: torch.Tensor | None
    loss: torch.Tensor | None


class GraphedTrainStep:
    """`model.train_step(x, labels, keep_gradients=False)`, replayed from a CUDA graph.

    Call it as the step itself: `step = GraphedTrainStep(model); loss = step(x, labels)`.
    On the CPU, or when `enabled` is False, it is the eager step. The graphed step
    computes what the eager one computes, with the same kernels and configs.

    The returned loss is the graph's own output buffer: the next call overwrites
    it. Copy it (`losses[i] = loss`, `loss.clone()`) to keep it. Labels are not
    range-checked on the GPU, as in the eager step: a label out of range gives a
    NaN loss.
    """

    def __init__(self, model: MLP, *, enabled: bool = True) -> None:
        if not isinstance(model, MLP):
            raise TypeError(f"model must be a tritonnet.MLP, got {type(model).__name__}")
        self.model = model
        self.enabled = enabled
        self._graphs: dict[tuple, _Graph] = {}

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x = checks.check_tensor("x", x)
        labels = checks.check_tensor("labels", labels)
        if not self.enabled or x.device.type != "cuda":
            return self.model.train_step(x, labels, keep_gradients=False)
        key = self._key(x, labels)
        entry = self._graphs.get(key)
        if entry is None:
            # First step of this kind: eager, so that the kernels compile and tune,
            # and the buffers are allocated, before anything is captured.
            self._forget_stale(key)
            self._graphs[key] = _Graph(None, None, None, None)
            return self.model.train_step(x, labels, keep_gradients=False)
        if entry.graph is None:
            # Arguments are checked once, eagerly, here: a replay checks nothing.
            checks.check_matrix("x", x, cols=self.model.sizes[0])
            checks.check_labels("labels", labels, x.shape[0], self.model.sizes[-1], check_range=False)
            entry.images, entry.labels = x.clone(), labels.clone()
            entry.graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(entry.graph):
                entry.loss = self.model.train_step(entry.images, entry.labels, keep_gradients=False)
            # Capturing ran nothing: this replay is the step.
            entry.graph.replay()
            return entry.loss
        entry.images.copy_(x)
        entry.labels.copy_(labels)
        entry.graph.replay()
        return entry.loss

    def _key(self, x: torch.Tensor, labels: torch.Tensor) -> tuple:
        """Everything a captured step depends on besides the batch's values."""
        model = self.model
        return (
            tuple(x.shape),
            x.dtype,
            x.device,
            labels.dtype,
            model.lr,
            model.grad_scale,
            get_backend(),
            torch.get_float32_matmul_precision(),
            tuple(t.data_ptr() for linear in model.linears for t in (linear.weight, linear.bias)),
        )

    def _forget_stale(self, key: tuple) -> None:
        """Drop the graphs of this batch shape captured with other settings or weights:
        they would never replay again, and each holds its own memory."""
        for old in [old for old in self._graphs if old[:4] == key[:4]]:
            del self._graphs[old]
