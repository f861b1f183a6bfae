"""The exercise MLP's whole SGD step as one persistent kernel, phases apart by a
grid-wide barrier.

Math. For x `[M, K0]`, labels t `[M]` and the layers w1 `[K0, N1]`, w2 `[N1, N2]`,
w3 `[N2, C]` with their biases, the step `FusedStep` takes in six launches:

    h1 = sigmoid(x @ w1 + b1)                       h2 = sigmoid(h1 @ w2 + b2)
    p = softmax(h2 @ w3 + b3)    loss = mean(-log p[t])    g3 = p - onehot(t)
    dz2 = (g3 @ w3^T) * h2 * (1 - h2)               dz1 = (dz2 @ w2^T) * h1 * (1 - h1)
    w3 -= lr * s3 * h2^T @ g3    w2 -= lr * s2 * h1^T @ dz2    w1 -= lr * s1 * x^T @ dz1

(each bias by the column sums of its layer's g3 or dz, times the same factors),
with s1, s2, s3 the layers' gradient scales. Every input gradient reads its
layer's weight before the step changes it.

Phases. The work is five phases, each a list of items (tiles) that the programs
of the grid share out, program p taking items p, p + programs, ...; a phase reads
only what earlier phases wrote, so its items run in any order:

    0 FORWARD_FIRST   h1, one split of one tile per item (split-K, below)
    1 FORWARD_SECOND  h2, likewise
    2 OUTPUT          BLOCK_M rows per item: logits, softmax, loss, g3, and dz2 from
                      them (the row's g3 is in registers; w3 is small)
    3 HIDDEN_GRADIENT dz1 tiles; the step of w3 and b3 (no item of this phase
                      reads w3); the loss's mean
    4 WEIGHT_STEP     the steps of w1, b1 and w2, b2

so w3 is read in phase 2 and stepped in 3, w2 read in 3 and stepped in 4.

The grid barrier (`grid_barrier`) sits between two phases of one launch: no
program starts a phase before every program has finished the one before. It is
the sense-reversing counter of CUDA's cooperative groups: each program adds 1 to
an int32 counter, program 0 adds `2**31 - (programs - 1)`, so that the sum over
the grid is `2**31`: the sign bit flips once every program has arrived, and each
program spins on an acquire load until it sees its own arrival's sign bit
flipped. The counter is back to 0 or `2**31` after every barrier, both good
starting points, so it resets itself: a CUDA graph replays the launch as it is,
with no zeroing. The arrival is a release at gpu scope behind a CTA barrier
(every thread's stores first), the spin an acquire (which also drops the SM's L1,
so no stale line of another program's output is read). A barrier spins at most
`max_spins` times; one that gives up adds 1 to `barrier[1]`, so that a grid
whose programs are not all resident (which only a cooperative launch rules out)
shows as a count, and as a NaN loss, instead of a hang.

Split-K in the forward phases. At batch 64 the first layer is 4 x 16 tiles of
16 x 32; its K = 784 reduction is split so that the items fill the grid. Each
item stores its fp32 partial tile and draws a ticket from the tile's counter
(`linear_forward.py` has the memory-ordering argument); the last adds the
partials in split order, then the bias and the sigmoid, stores the tile and
resets the counter.

Phases per launch (FIRST_PHASE, LAST_PHASE). On a GPU one cooperative launch runs
all five. Triton's CPU interpreter runs programs one after another, so a program
spinning on a barrier would wait for programs that have not started: there the
launcher runs one phase per launch, which checks all the arithmetic, and the
tests run the five phases in one launch of one program, which passes every
barrier.

Shapes. Every tensor the step owns (h1, h2, g3, dz2, dz1 and the partials) is
contiguous; x, the weights and the biases come with their strides. C is at most
BLOCK_C, one block of columns; every tl.dot block dimension is at least 16.
"""

import triton
import triton.language as tl

from tritonnet.kernels.linear_backward import write_gradient
from tritonnet.kernels.linear_cross_entropy import softmax_cross_entropy
from tritonnet.kernels.loss_mean import store_mean_of_partials
from tritonnet.kernels.tiling import linear_tile

FORWARD_FIRST: tl.constexpr = tl.constexpr(0)
FORWARD_SECOND: tl.constexpr = tl.constexpr(1)
OUTPUT: tl.constexpr = tl.constexpr(2)
HIDDEN_GRADIENT: tl.constexpr = tl.constexpr(3)
WEIGHT_STEP: tl.constexpr = tl.constexpr(4)
PHASES = 5

# One tile for every phase: 16 rows of the batch (the least tl.dot takes) keep
# many items at batch 64; 32 x 32 operand tiles keep the fp32 "ieee" build of
# all five phases unspilled on 4 warps (tests/test_persistent_step.py).
PERSISTENT_STEP_CONFIG = triton.Config({"BLOCK_M": 16, "BLOCK_N": 32, "BLOCK_K": 32}, num_warps=4, num_stages=2)


@triton.jit
def grid_barrier(barrier_ptr, max_spins):
    """Wait until every program of the grid has called this barrier as often as
    this one (see the module doc). `barrier_ptr`: int32 `[2]`, the counter (0 or
    2**31 on entry) and the count of barriers given up after `max_spins` polls."""
    tl.debug_barrier()  # every thread's stores before the arrival
    programs = tl.num_programs(axis=0).to(tl.int64)
    # 2**31 - (programs - 1) for program 0, wrapped to int32 (2**31 itself for a
    # grid of one); 1 for the others.
    first = ((1 << 31) - (programs - 1)).to(tl.int32)
    increment = tl.where(tl.program_id(axis=0) == 0, first, 1)
    arrived = tl.atomic_add(barrier_ptr, increment, sem="release", scope="gpu")
    current = arrived
    spins = tl.full((), 0, tl.int32)
    while ((arrived ^ current) >= 0) & (spins < max_spins):
        current = tl.atomic_add(barrier_ptr, 0, sem="acquire", scope="gpu")
        spins += 1
    if (arrived ^ current) >= 0:
        tl.atomic_add(barrier_ptr + 1, 1, sem="relaxed", scope="gpu")
    tl.debug_barrier()  # no thread runs ahead while one still spins


@triton.jit
def forward_item(
    item, x_ptr, stride_xm, stride_xk, w_ptr, stride_wk, stride_wn, b_ptr, stride_b, y_ptr,
    partials_ptr, counters_ptr, M, N, K, splits, k_per_split,
    INPUT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One split of one `[BLOCK_M, BLOCK_N]` tile of `y = sigmoid(x @ w + b)`, y
    contiguous `[M, N]`; partials fp32 `[splits, M, N]`, one int32 counter per tile."""
    tiles_n = tl.cdiv(N, BLOCK_N)
    split = item % splits
    tile = item // splits
    offs_m = (tile // tiles_n) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = (tile % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    k_start = split * k_per_split
    sums = linear_tile(
        x_ptr + k_start * stride_xk, w_ptr + k_start * stride_wk, b_ptr, offs_m, offs_n, M, N,
        tl.minimum(K - k_start, k_per_split), stride_xm, stride_xk, stride_wk, stride_wn, stride_b,
        False, INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
    )
    mask = (offs_m < M)[:, None] & (offs_n < N)[None, :]
    offsets = offs_m[:, None] * N + offs_n[None, :]
    if splits > 1:
        split_size = M.to(tl.int64) * N
        tl.store(partials_ptr + split * split_size + offsets, sums, mask=mask)
        tl.debug_barrier()  # the whole partial tile stored before the ticket
        ticket = tl.atomic_add(counters_ptr + tile, 1, sem="acq_rel", scope="gpu")
        if ticket == splits - 1:
            total = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
            for index in range(0, splits):  # split 0 first: the same sum whoever is last
                total += tl.load(partials_ptr + index * split_size + offsets, mask=mask, other=0.0)
            store_sigmoid(total, b_ptr, stride_b, y_ptr + offsets, offs_n, N, mask)
            tl.store(counters_ptr + tile, 0)
    else:
        store_sigmoid(sums, b_ptr, stride_b, y_ptr + offsets, offs_n, N, mask)


@triton.jit
def store_sigmoid(sums, b_ptr, stride_b, y_ptrs, offs_n, N, mask):
    """`sigmoid(sums + b)` stored at y_ptrs, b read at the tile's columns `offs_n`."""
    b = tl.load(b_ptr + offs_n * stride_b, mask=offs_n < N, other=0.0)
    tl.store(y_ptrs, tl.sigmoid(sums + b[None, :]), mask=mask)


@triton.jit
def output_item(
    tile, h_ptr, w_ptr, stride_wk, stride_wn, b_ptr, stride_b, labels_ptr, stride_labels,
    grad_logits_ptr, grad_hidden_ptr, loss_partials_ptr, M, N, C,
    INPUT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """BLOCK_M rows of the output layer: logits from h `[M, N]` and w `[N, C]`,
    then g3 into grad_logits `[M, C]`, the rows' summed loss into
    `loss_partials[tile]`, and `dz = (g3 @ w^T) * h * (1 - h)` into grad_hidden
    `[M, N]`, BLOCK_N columns at a time."""
    offs_m = tile * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.arange(0, BLOCK_C)
    mask_m = offs_m < M
    mask_c = offs_c < C
    logits = linear_tile(
        h_ptr, w_ptr, b_ptr, offs_m, offs_c, M, C, N, N, 1, stride_wk, stride_wn, stride_b,
        True, INPUT_PRECISION, BLOCK_M, BLOCK_C, BLOCK_K,
    )
    _, loss, grad = softmax_cross_entropy(logits, offs_m, offs_c, M, C, labels_ptr, stride_labels)
    tl.store(grad_logits_ptr + offs_m[:, None] * C + offs_c[None, :], grad, mask=mask_m[:, None] & mask_c[None, :])
    tl.store(loss_partials_ptr + tile, tl.sum(tl.where(mask_m, loss, 0.0), axis=0))
    for start in range(0, N, BLOCK_N):
        offs_n = start + tl.arange(0, BLOCK_N)
        mask = mask_m[:, None] & (offs_n < N)[None, :]
        w_t = tl.load(
            w_ptr + offs_c[:, None] * stride_wn + offs_n[None, :] * stride_wk,
            mask=mask_c[:, None] & (offs_n < N)[None, :], other=0.0,
        )
        h_offsets = offs_m[:, None] * N + offs_n[None, :]
        h = tl.load(h_ptr + h_offsets, mask=mask, other=0.0)
        dh = tl.dot(grad, w_t, input_precision=INPUT_PRECISION)
        tl.store(grad_hidden_ptr + h_offsets, dh * h * (1.0 - h), mask=mask)


@triton.jit
def hidden_gradient_item(
    tile, dz_ptr, w_ptr, stride_wk, stride_wn, h_ptr, out_ptr, M, K, N,
    INPUT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    """One `[BLOCK_M, BLOCK_N]` tile of `(dz @ w^T) * h * (1 - h)` into out `[M, K]`,
    for dz `[M, N]`, w `[K, N]` (before its step) and h `[M, K]`, the layer's input."""
    tiles_k = tl.cdiv(K, BLOCK_N)
    offs_m = (tile // tiles_k) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_k = (tile % tiles_k) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_n = tl.arange(0, BLOCK_K)
    mask_m = offs_m < M
    mask_k = offs_k < K
    dz_ptrs = dz_ptr + offs_m[:, None] * N + offs_n[None, :]
    w_t_ptrs = w_ptr + offs_n[:, None] * stride_wn + offs_k[None, :] * stride_wk
    accumulator = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for n in range(0, tl.cdiv(N, BLOCK_K)):
        mask_n = offs_n < N - n * BLOCK_K
        dz = tl.load(dz_ptrs, mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        w_t = tl.load(w_t_ptrs, mask=mask_n[:, None] & mask_k[None, :], other=0.0)
        accumulator = tl.dot(dz, w_t, accumulator, input_precision=INPUT_PRECISION)
        dz_ptrs += BLOCK_K
        w_t_ptrs += BLOCK_K * stride_wn
    mask = mask_m[:, None] & mask_k[None, :]
    h_offsets = offs_m[:, None] * K + offs_k[None, :]
    h = tl.load(h_ptr + h_offsets, mask=mask, other=0.0)
    tl.store(out_ptr + h_offsets, accumulator * h * (1.0 - h), mask=mask)


@triton.jit
def weight_step_item(
    tile, x_ptr, stride_xm, stride_xk, dz_ptr, w_ptr, stride_wk, stride_wn, b_ptr, stride_b,
    M, K, N, scale, lr,
    INPUT_PRECISION: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_K: tl.constexpr, BLOCK_N: tl.constexpr,
):
    """The SGD step of one `[BLOCK_K, BLOCK_N]` tile of w `[K, N]` by
    `scale * x^T @ dz`, for x `[M, K]` and dz `[M, N]` (contiguous); the tiles of
    the first row also step b by `scale * dz.sum(0)` (one writer per column)."""
    tiles_n = tl.cdiv(N, BLOCK_N)
    tile_k = tile // tiles_n
    offs_k = tile_k * BLOCK_K + tl.arange(0, BLOCK_K)
    offs_n = (tile % tiles_n) * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_m = tl.arange(0, BLOCK_M)
    mask_k = offs_k < K
    mask_n = offs_n < N
    x_t_ptrs = x_ptr + offs_k[:, None] * stride_xk + offs_m[None, :] * stride_xm
    dz_ptrs = dz_ptr + offs_m[:, None] * N + offs_n[None, :]
    accumulator = tl.zeros((BLOCK_K, BLOCK_N), dtype=tl.float32)
    column_sums = tl.zeros((BLOCK_N,), dtype=tl.float32)
    for m in range(0, tl.cdiv(M, BLOCK_M)):
        mask_m = offs_m < M - m * BLOCK_M
        dz = tl.load(dz_ptrs, mask=mask_m[:, None] & mask_n[None, :], other=0.0)
        column_sums += tl.sum(dz, axis=0)
        x_t = tl.load(x_t_ptrs, mask=mask_k[:, None] & mask_m[None, :], other=0.0)
        accumulator = tl.dot(x_t, dz, accumulator, input_precision=INPUT_PRECISION)
        x_t_ptrs += BLOCK_M * stride_xm
        dz_ptrs += BLOCK_M * N
    w_ptrs = w_ptr + offs_k[:, None] * stride_wk + offs_n[None, :] * stride_wn
    write_gradient(w_ptrs, accumulator * scale, mask_k[:, None] & mask_n[None, :], lr, "sgd")
    if tile_k == 0:
        write_gradient(b_ptr + offs_n * stride_b, column_sums * scale, mask_n, lr, "sgd")


@triton.jit
def persistent_step_kernel(
    x_ptr,
    labels_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    w3_ptr,
    b3_ptr,
    h1_ptr,
    h2_ptr,
    grad_logits_ptr,
    dz2_ptr,
    dz1_ptr,
    partials1_ptr,
    partials2_ptr,
    counters1_ptr,
    counters2_ptr,
    loss_partials_ptr,
    loss_ptr,
    barrier_ptr,
    M,
    K0,
    N1,
    N2,
    C,
    stride_xm,
    stride_xk,
    stride_labels,
    stride_w1k,
    stride_w1n,
    stride_b1,
    stride_w2k,
    stride_w2n,
    stride_b2,
    stride_w3k,
    stride_w3n,
    stride_b3,
    splits1,
    k_per_split1,
    splits2,
    k_per_split2,
    max_spins,
    scale1,
    scale2,
    scale3,
    lr,
    FIRST_PHASE: tl.constexpr,
    LAST_PHASE: tl.constexpr,
    INPUT_PRECISION: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    """Phases FIRST_PHASE to LAST_PHASE of the step, a grid barrier between two.

    Args:
        x_ptr: x `[M, K0]`, strides `(stride_xm, stride_xk)`; labels_ptr: t `[M]`,
            integer class indices, stride `stride_labels`.
        w1_ptr, w2_ptr, w3_ptr: the weights `[K0, N1]`, `[N1, N2]`, `[N2, C]`, each
            with its strides `(stride_w*k, stride_w*n)`; b1_ptr, b2_ptr, b3_ptr: the
            biases, strides `stride_b*`. Stepped in place.
        h1_ptr, h2_ptr: the hidden layers' outputs `[M, N1]`, `[M, N2]`;
            grad_logits_ptr: g3 `[M, C]`; dz2_ptr, dz1_ptr: the hidden layers'
            gradients before their sigmoid, `[M, N2]`, `[M, N1]`. All contiguous,
            all written here.
        partials1_ptr, partials2_ptr: fp32 `[splits, M, N]` of the forward
            phases; counters1_ptr, counters2_ptr: int32, one per tile, 0 on entry
            and on exit.
        loss_partials_ptr: fp32, one per BLOCK_M rows; loss_ptr: the 0-dim mean.
        barrier_ptr: int32 `[2]` (`grid_barrier`); max_spins: its polls at most.
        splits1, k_per_split1, splits2, k_per_split2: the forward phases' split-K
            (splits 1 and k_per_split K unsplit; k_per_split a multiple of BLOCK_K).
        scale1, scale2, scale3: the layers' gradient scales; lr: the learning rate.
        INPUT_PRECISION: `tl.dot`'s input_precision for fp32 ("ieee", "tf32").
        BLOCK_M: rows per tile; BLOCK_N, BLOCK_K: the tiles' columns and reduction
        step; BLOCK_C: C rounded up to a power of two >= 16.
    """
    # int64 ids and item numbers keep the offsets exact past 2**31 elements.
    pid = tl.program_id(axis=0).to(tl.int64)
    programs = tl.num_programs(axis=0).to(tl.int64)
    tiles_m = tl.cdiv(M, BLOCK_M)
    for phase in tl.static_range(FIRST_PHASE, LAST_PHASE + 1):
        if phase == FORWARD_FIRST:
            for item in range(pid, tiles_m * tl.cdiv(N1, BLOCK_N) * splits1, programs):
                forward_item(
                    item, x_ptr, stride_xm, stride_xk, w1_ptr, stride_w1k, stride_w1n, b1_ptr, stride_b1,
                    h1_ptr, partials1_ptr, counters1_ptr, M, N1, K0, splits1, k_per_split1,
                    INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
                )
        if phase == FORWARD_SECOND:
            for item in range(pid, tiles_m * tl.cdiv(N2, BLOCK_N) * splits2, programs):
                forward_item(
                    item, h1_ptr, N1, 1, w2_ptr, stride_w2k, stride_w2n, b2_ptr, stride_b2,
                    h2_ptr, partials2_ptr, counters2_ptr, M, N2, N1, splits2, k_per_split2,
                    INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
                )
        if phase == OUTPUT:
            for item in range(pid, tiles_m, programs):
                output_item(
                    item, h2_ptr, w3_ptr, stride_w3k, stride_w3n, b3_ptr, stride_b3, labels_ptr, stride_labels,
                    grad_logits_ptr, dz2_ptr, loss_partials_ptr, M, N2, C,
                    INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K, BLOCK_C,
                )
        if phase == HIDDEN_GRADIENT:
            hidden_items = tiles_m * tl.cdiv(N1, BLOCK_N)
            output_items = tl.cdiv(N2, BLOCK_K)
            for item in range(pid, hidden_items + output_items + 1, programs):
                if item < hidden_items:
                    hidden_gradient_item(
                        item, dz2_ptr, w2_ptr, stride_w2k, stride_w2n, h1_ptr, dz1_ptr, M, N1, N2,
                        INPUT_PRECISION, BLOCK_M, BLOCK_N, BLOCK_K,
                    )
                elif item < hidden_items + output_items:
                    weight_step_item(
                        item - hidden_items, h2_ptr, N2, 1, grad_logits_ptr, w3_ptr, stride_w3k, stride_w3n,
                        b3_ptr, stride_b3, M, N2, C, scale3, lr, INPUT_PRECISION, BLOCK_M, BLOCK_K, BLOCK_C,
                    )
                else:
                    store_mean_of_partials(loss_partials_ptr, tiles_m, M, loss_ptr)
        if phase == WEIGHT_STEP:
            first_items = tl.cdiv(K0, BLOCK_K) * tl.cdiv(N1, BLOCK_N)
            second_items = tl.cdiv(N1, BLOCK_K) * tl.cdiv(N2, BLOCK_N)
            for item in range(pid, first_items + second_items, programs):
                if item < first_items:
                    weight_step_item(
                        item, x_ptr, stride_xm, stride_xk, dz1_ptr, w1_ptr, stride_w1k, stride_w1n,
                        b1_ptr, stride_b1, M, K0, N1, scale1, lr, INPUT_PRECISION, BLOCK_M, BLOCK_K, BLOCK_N,
                    )
                else:
                    weight_step_item(
                        item - first_items, h1_ptr, N1, 1, dz2_ptr, w2_ptr, stride_w2k, stride_w2n,
                        b2_ptr, stride_b2, M, N1, N2, scale2, lr, INPUT_PRECISION, BLOCK_M, BLOCK_K, BLOCK_N,
                    )
        if phase < LAST_PHASE:
            grid_barrier(barrier_ptr, max_spins)
    if LAST_PHASE == WEIGHT_STEP:
        # A barrier that gave up means phases overlapped and the numbers are wrong:
        # the loss turns NaN (this step's, or at the latest the next one's, since
        # the count stays), so that the trainer's non-finite check stops the run
        # instead of training on.
        if pid == 0:
            if tl.atomic_add(barrier_ptr + 1, 0, sem="acquire", scope="gpu") > 0:
                tl.store(loss_ptr, float("nan"))
