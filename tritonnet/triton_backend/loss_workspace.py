"""The workspace of the loss kernels' in-kernel mean (`tritonnet.kernels.loss_mean`):
fp32 partial sums, one slot per program, and an int32 ticket counter.

The kernels need the counter at 0 when they start, and leave it at 0 when they
end, so it is zeroed once, when it is made, and never again: no launch per call.
It keeps its address for the life of the process, so a captured CUDA graph
replays it.

One workspace per device and size class (slots rounded up to a power of two),
shared by every plan of that class and never freed. Never freed: a CUDA graph
that captured a launch keeps the workspace's address, and a plan can be dropped
while the graph lives (`plans.MAX_PLANS`). Shared: launches on one stream run
one after another, and each leaves the counter at 0 for the next.

Streams. Two launches that use one workspace at the same time on two streams
would mix their tickets and partials. tritonnet runs every kernel of a training
step on the current stream, and its CUDA graphs (`cuda_graph.py`,
`epoch_graph.py`) are captured and replayed in order with that stream, so its
launches never overlap. A caller who runs loss operations of one device on
several streams at once must order them (`Stream.wait_stream`) as for any
shared buffer. A workspace per stream would not help CUDA graphs: torch
captures on a stream of its own, and the workspace would be made, and so
zeroed, during the capture, which records the zeroing instead of running it.
"""

from __future__ import annotations

import torch
import triton

_workspaces: dict[tuple[torch.device, int], tuple[torch.Tensor, torch.Tensor]] = {}


def loss_workspace(device: torch.device, programs: int) -> tuple[torch.Tensor, torch.Tensor]:
    """`(partials, counter)` for a launch of up to `programs` programs on `device`."""
    slots = triton.next_power_of_2(max(programs, 1))
    workspace = _workspaces.get((device, slots))
    if workspace is None:
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                "the loss's workspace is made on an operation's first call, which cannot be "
                "captured in a CUDA graph: call the operation once with these shapes before capturing"
            )
        workspace = (
            torch.zeros(slots, dtype=torch.float32, device=device),
            torch.zeros(1, dtype=torch.int32, device=device),
        )
        _workspaces[(device, slots)] = workspace
    return workspace
