"""The mean over rows of a per-row loss, taken inside the kernel that computes it.

Math. For per-row losses `loss[m]`, m in `[0, M)`, spread over the programs of a
1-D grid (each owns a run of rows), the 0-dim fp32 result is

    mean = (sum over programs p of partial[p]) / M,   partial[p] = sum of p's rows

Why here: the loss kernels (`cross_entropy.py`, `linear_cross_entropy.py`) used
to write the per-row losses and leave the mean to a torch `.mean()`: one more
launch per training step, and a vector allocated for it.

Why not `tl.atomic_add` of the partials into the result: float addition is not
associative, and atomics add in the order the programs finish, which changes
from run to run. Two runs of one step would differ in the last bits, and a
training run resumed from a checkpoint would no longer match an uninterrupted
one. Instead, "the last program reduces":

1. each program stores its partial sum in its own slot of an fp32 workspace
   `partials[programs]`;
2. it draws a ticket, `tl.atomic_add(counter, 1, sem="acq_rel", scope="gpu")`;
3. the program that draws the last ticket (`programs - 1`) loads every partial
   and adds them in a fixed order (slot `i` of each run of REDUCE_BLOCK slots
   into lane `i`, in slot order, then the lanes by one `tl.sum`, whose tree is
   fixed in the compiled kernel), divides by M, stores the mean, and stores 0
   in the counter, so that the next launch (or a CUDA graph's next replay)
   starts from 0.

The result depends only on the partials and the compiled kernel, never on the
order the programs finish in. A launch of one program skips the ticket (the
atomic and its fences): its own partial is the whole sum. It still goes through
its slot rather than storing `partial / M` in a branch of its own: with that
branch, ptxas spilled the row-wise kernel's 8 x 128 bf16 build on sm_90, and the
1 x 4096 fp32 one on sm_80 and gfx90a when the branch came after its loop.

Why the last program sees every partial. The ticket's `sem="acq_rel"` (the
default of `tl.atomic_add` in triton 3.6 and 3.9, written out here), at
`scope="gpu"` (also the default: it orders memory for every program on the
device, not only those of one SM): its release half orders the program's
partial store before its increment, so a program that draws a ticket sees the
partials of every program that drew one before it; its acquire half orders the
last program's loads after its increment. In the compiled code (sm_90, triton
3.9) the release is a `MEMBAR.ALL.GPU` before the `ATOMG`, the acquire a
`CCTL.IVALL` after it (the SM's L1 dropped, so no stale partial is read). A
scalar store and a scalar atomic are each issued by one thread of the program
(Triton masks the copies of a scalar out of the others); `tl.debug_barrier()`
after the store orders it before the increment whichever thread issues either,
and the ticket reaches the program's other threads through shared memory
behind a barrier, which orders their loads after the acquire.

The workspace (`partials`, at least one slot per program, and `counter`, one
int32 that must be 0 before a launch) is the launcher's
(`tritonnet/triton_backend/tickets.py`): zeroed once, and kept at one
address, which a captured CUDA graph replays.
"""

import triton
import triton.language as tl

# Partials the last program loads per step of its loop: 2 per thread of 4 warps.
REDUCE_BLOCK = tl.constexpr(256)


@triton.jit
def store_mean(partial, M, partials_ptr, counter_ptr, loss_ptr):
    """Store the mean over all M rows of the grid's losses at loss_ptr, given this
    program's `partial`, the fp32 sum of its rows' losses.

    Args:
        partial: this program's sum, e.g. `tl.sum(tl.where(mask_row, loss, 0.0), axis=0)`.
        M: the rows of the whole grid.
        partials_ptr: the fp32 workspace, one slot per program of the grid.
        counter_ptr: the int32 ticket counter, 0 on entry and on exit.
        loss_ptr: the 0-dim fp32 mean.
    """
    programs = tl.num_programs(axis=0)
    # An int64 program id before the pointer arithmetic, as in every kernel here.
    tl.store(partials_ptr + tl.program_id(axis=0).to(tl.int64), partial)
    tl.debug_barrier()  # the store before the ticket, or before a lone program's own load
    ticket = programs - 1  # a lone program's
    if programs > 1:
        ticket = tl.atomic_add(counter_ptr, 1, sem="acq_rel", scope="gpu")
    if ticket == programs - 1:
        store_mean_of_partials(partials_ptr, programs, M, loss_ptr)
        tl.store(counter_ptr, 0)


@triton.jit
def store_mean_of_partials(partials_ptr, count, M, loss_ptr):
    """Store `(partials[0] + ... + partials[count - 1]) / M` at loss_ptr, added in
    a fixed order (see the module doc); also the persistent step's loss, whose
    grid barrier stands in for the ticket."""
    total = tl.zeros([REDUCE_BLOCK], dtype=tl.float32)
    for start in range(0, count, REDUCE_BLOCK):
        offsets = start + tl.arange(0, REDUCE_BLOCK)
        total += tl.load(partials_ptr + offsets, mask=offsets < count, other=0.0)
    tl.store(loss_ptr, tl.sum(total, axis=0) / M)
