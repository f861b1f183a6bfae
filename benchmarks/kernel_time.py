"""Where a step's GPU time goes: torch.profiler's CUDA activities, summed per kernel.

A graphed step's wall time is its kernels' time plus the gaps between them
(launch, ramp-up, tail) plus the host's share. Summing the kernels' own durations
over many steps and dividing by the steps gives the GPU time a step costs, to set
beside the wall time: the difference is what fewer, fuller kernels could win.

`kernel_time_per_step(events, steps)` does the sum on a list of profiler events
(`profile.events()`); `profile_kernel_time(function, steps)` runs `function` under
the profiler and sums its events. Memory copies and sets on the device count as
kernels here: they occupy the GPU the same way.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Callable, Iterable

from torch.autograd import DeviceType


def kernel_time_per_step(events: Iterable, steps: int) -> dict[str, float]:
    """Microseconds per step of each kernel name among `events`, the device's events
    only (a host-side event, an operator's CPU time, is left out), busiest first."""
    if steps <= 0:
        raise ValueError(f"steps must be positive, got {steps}")
    totals: dict[str, float] = defaultdict(float)
    for event in events:
        if event.device_type == DeviceType.CUDA:
            totals[event.name] += event.time_range.elapsed_us()
    return {name: total / steps for name, total in sorted(totals.items(), key=lambda item: -item[1])}


def profile_kernel_time(function: Callable[[], object], steps: int) -> dict[str, float]:
    """Run `function` (which runs `steps` training steps) once under torch.profiler,
    on the CUDA activities, and return its kernels' microseconds per step."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as profiler:
        function()
        torch.cuda.synchronize()
    return kernel_time_per_step(profiler.events(), steps)
