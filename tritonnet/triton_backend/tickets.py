"""The workspaces of the kernels whose last program finishes the work: int32
ticket counters and fp32 partial sums, zeroed once and kept.

Two kernels end so: the loss kernels, whose last program to finish adds the
programs' partial sums into the mean (`tritonnet.kernels.loss_mean`), and the
split-K linear forward, whose last split of each tile adds the splits' partial
tiles (`tritonnet.kernels.linear_forward`). Each draws tickets from counters that
must be 0 when it starts, and leaves them at 0 when it ends, so the counters are
zeroed once, when made, and never again: no launch per call. They keep their
address for the life of the process, so a captured CUDA graph replays them.

One tensor per device, dtype and size class (rounded up to a power of two),
shared by every plan of that class and never freed. Never freed: a CUDA graph
that captured a launch keeps the tensor's address, and a plan can be dropped
while the graph lives (`plans.MAX_PLANS`). Shared: launches on one stream run one
after another, and each leaves its counters at 0 for the next.

Streams. Two launches that use one counter at the same time on two streams
would mix their tickets and partials. tritonnet runs every kernel of a training
step on the current stream, and its CUDA graphs (`cuda_graph.py`,
`epoch_graph.py`) are captured and replayed in order with that stream, so its
launches never overlap. A caller who runs these operations of one device on
several streams at once must order them (`Stream.wait_stream`) as for any
shared buffer. A workspace per stream would not help CUDA graphs: torch
captures on a stream of its own, and the workspace would be made, and so
zeroed, during the capture, which records the zeroing instead of running it.
"""

from __future__ import annotations

import torch
import triton

_zeroed: dict[tuple[torch.device, torch.dtype, int], torch.Tensor] = {}


def zeroed(device: torch.device, dtype: torch.dtype, count: int) -> torch.Tensor:
    """A kept tensor of at least `count` elements of `dtype` on `device`, zeroed when made."""
    size = triton.next_power_of_2(max(count, 1))
    tensor = _zeroed.get((device, dtype, size))
    if tensor is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                "a kernel's ticket workspace is made on an operation's first call, which cannot "
                "be captured in a CUDA graph: call the operation once with these shapes before capturing"
            )
        tensor = torch.zeros(size, dtype=dtype, device=device)
        _zeroed[(device, dtype, size)] = tensor
    return tensor


def loss_workspace(device: torch.device, programs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(partials, counter)` of the loss's mean for a launch of up to `programs` programs."""
    return zeroed(device, torch.float32, programs), zeroed(device, torch.int32, 1)
