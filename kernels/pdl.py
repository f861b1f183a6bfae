"""Programmatic dependent launch (PDL): a kernel's launch overlaps the tail of
the kernel before it on the same stream.

Why: at the exercise's batch of 64 each kernel of the training step runs for a
few microseconds, and between two of them the GPU drains the first grid, then
launches and ramps up the second. Launched with Triton's `launch_pdl=True` (CUDA,
sm_90 and newer), a kernel's programs may start while the previous kernel still
runs; `gdc_wait` then blocks them until that kernel has finished and its writes
are visible. The launch, the scheduling of the programs and their index
arithmetic leave the critical path.

Every kernel that may be launched so calls `wait_for_previous_kernel` as its
first statement, before it reads or writes anything in memory, and only then lets
its own successor launch (`gdc_launch_dependents`). That order keeps one
invariant simple: when a kernel's programs start, every kernel but the one just
before it has finished, so no chain of waiting grids holds SMs that the running
one needs. Without `USE_PDL` (the interpreter, AMD, sm_80, the default) the
function compiles to nothing.
"""

import triton
import triton.language as tl
from triton.language.extra.cuda import gdc_launch_dependents, gdc_wait


@triton.jit
def wait_for_previous_kernel(USE_PDL: tl.constexpr):
    """With USE_PDL: wait until the previous kernel on the stream has finished, then
    let the next one launch. Call it before any load or store."""
    if USE_PDL:
        gdc_wait()
        gdc_launch_dependents()
