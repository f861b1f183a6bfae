"""Launcher of the persistent step (`tritonnet.kernels.persistent_step`): the
exercise MLP's whole SGD step in one cooperative launch.

A `PersistentPlan` is made once per batch size and layout (`PersistentStep` keeps
them): it checks the network and the batch against the kernel's limits, chooses
the forward phases' split-K and the grid, allocates the workspace (kept, so that
a CUDA graph replays its addresses) and makes the launches: one on a GPU, with
`launch_cooperative_grid=True`, so that the driver refuses a grid whose programs
could not all be resident at once instead of letting its barriers wait forever;
one per phase in Triton's interpreter, which runs programs one after another
(docs/persistent-step.md).
"""

from __future__ import annotations

import os

import torch
import triton

from tritonnet import checks
from tritonnet.environment import interpreter_enabled
from tritonnet.kernels import persistent_step as kernels
from tritonnet.triton_backend.launch import Kernel, Launch, dot_precision
from tritonnet.triton_backend.weight_gradient import processors

MAX_ROWS = 1024  # the batch it is meant for is 64; past this the multi-kernel step is the one to use
MAX_CLASSES = 64  # one block of logits per row, as the fused output layer (FUSED_MAX_N)
SPLIT_MIN_K = 64  # in_features each split of a forward reduces, at least
MAX_SPINS = 1 << 20  # a barrier's polls before it gives up (about a second on a GPU)


def cooperative_launch_enabled() -> bool:
    """False when TRITONNET_COOPERATIVE_LAUNCH=0 asks for a plain launch: a fallback
    for a driver that will not capture a cooperative launch in a CUDA graph. The
    grid (at most one program per SM, each small enough to share an SM) is then
    resident in practice, and a barrier that waits too long gives up and counts it
    (`barrier[1]`) rather than hang."""
    return os.environ.get("TRITONNET_COOPERATIVE_LAUNCH", "1") != "0"


def forward_splits(tiles: int, in_features: int, programs: int, block_k: int) -> tuple[int, int]:
    """`(splits, k_per_split)` of a forward phase of `tiles` output tiles: K split
    until the items fill the `programs` once, but no split shorter than SPLIT_MIN_K;
    the runs are whole steps of `block_k`, and no split is empty."""
    splits = max(1, min(programs // max(tiles, 1), in_features // SPLIT_MIN_K))
    k_per_split = triton.cdiv(triton.cdiv(in_features, splits), block_k) * block_k
    return triton.cdiv(in_features, k_per_split), k_per_split


def _check_network(sizes: tuple[int, ...], dtype: torch.dtype, device: torch.device, rows: int) -> None:
    if len(sizes) != 4:
        raise ValueError(f"the persistent step needs two hidden layers (sizes of 4 entries), got sizes {sizes}")
    if sizes[-1] > MAX_CLASSES:
        raise ValueError(f"the persistent step takes at most {MAX_CLASSES} classes, got {sizes[-1]}")
    if dtype != torch.float32:
        raise TypeError(f"the persistent step trains float32 weights, got {dtype}")
    if not 1 <= rows <= MAX_ROWS:
        raise ValueError(f"the persistent step takes batches of 1 to {MAX_ROWS} rows, got {rows}")
    if not (device.type == "cuda" or (device.type == "cpu" and interpreter_enabled())):
        raise ValueError(
            f"the persistent step runs on a CUDA device (or the CPU with TRITON_INTERPRET=1), got {device}"
        )


class PersistentPlan:
    """The persistent step for one batch size: `plan(x, labels, linears, scales, lr)`
    steps the layers in place and returns the mean loss (a new 0-dim fp32 tensor).

    `sizes`: the network's (in, hidden, hidden, classes); `programs`: the grid (at
    most the SMs, by default as many as the largest phase has items);
    `one_launch`: all five phases in one launch (the default on a GPU); in the
    interpreter only a grid of one program can do so, or a small `max_spins`
    (`kernels.grid_barrier`), after which the barriers give up. `hidden` holds
    the two hidden layers' outputs after a step; `barrier[1]` counts the
    barriers that gave up.
    """

    def __init__(
        self, sizes: tuple[int, ...], rows: int, dtype: torch.dtype, device: torch.device, precision: str, *,
        programs: int | None = None, one_launch: bool | None = None, max_spins: int = MAX_SPINS,
    ) -> None:
        _check_network(sizes, dtype, device, rows)
        if programs is not None:
            checks.check_positive_int("programs", programs)
        checks.check_positive_int("max_spins", max_spins)
        inputs, first, second, classes = sizes
        config = kernels.PERSISTENT_STEP_CONFIG
        block_m, block_n, block_k = (config.kwargs[name] for name in ("BLOCK_M", "BLOCK_N", "BLOCK_K"))
        tiles_m = triton.cdiv(rows, block_m)
        available = processors(device)  # the split fills the SMs, whatever the grid
        first_tiles = tiles_m * triton.cdiv(first, block_n)
        second_tiles = tiles_m * triton.cdiv(second, block_n)
        self.splits = (
            forward_splits(first_tiles, inputs, available, block_k) + forward_splits(second_tiles, first, available, block_k)
        )
        items = (
            first_tiles * self.splits[0],
            second_tiles * self.splits[2],
            tiles_m,
            first_tiles + triton.cdiv(second, block_k) + 1,
            triton.cdiv(inputs, block_k) * triton.cdiv(first, block_n) + triton.cdiv(first, block_k) * triton.cdiv(second, block_n),
        )
        self.programs = programs or min(available, max(items))
        self.one_launch = device.type == "cuda" if one_launch is None else one_launch
        if self.one_launch and device.type != "cuda" and self.programs != 1 and max_spins == MAX_SPINS:
            raise ValueError(
                "one_launch on Triton's interpreter needs programs=1: it runs programs one after "
                f"another, so the barriers of {self.programs} programs would not open (a small "
                "max_spins makes them give up instead)"
            )
        self.sizes, self.rows, self.max_spins = sizes, rows, max_spins
        self._allocate(device)
        kernel = Kernel(kernels.persistent_step_kernel, lambda arguments: (self.programs,))
        constexprs = {
            "INPUT_PRECISION": dot_precision(torch.float32, precision),
            "BLOCK_C": max(16, triton.next_power_of_2(classes)),
        }
        if self.one_launch:
            phases = [(0, kernels.PHASES - 1)]
            constexprs["launch_cooperative_grid"] = device.type == "cuda" and cooperative_launch_enabled()
        else:
            phases = [(phase, phase) for phase in range(kernels.PHASES)]
        self.launches = [
            Launch(kernel, config, FIRST_PHASE=first_phase, LAST_PHASE=last_phase, **constexprs)
            for first_phase, last_phase in phases
        ]

    def _allocate(self, device: torch.device) -> None:
        """The workspace: made once, on the first step of this batch size, which
        must not be a CUDA graph's capture (its zeroing would be recorded, not run)."""
        if device.type == "cuda" and torch.cuda.is_current_stream_capturing():
            raise RuntimeError(
                "the persistent step's workspace is made at the first step of a batch size, which "
                "cannot be captured in a CUDA graph: take one step of this size before capturing"
            )
        rows, (_, first, second, classes) = self.rows, self.sizes
        block_m = kernels.PERSISTENT_STEP_CONFIG.kwargs["BLOCK_M"]

        def zeros(*shape: int) -> torch.Tensor:
            return torch.zeros(shape, dtype=torch.float32, device=device)

        self.hidden = (zeros(rows, first), zeros(rows, second))
        self.grad_logits, self.grad_hidden = zeros(rows, classes), (zeros(rows, first), zeros(rows, second))
        self.partials = (zeros(self.splits[0], rows, first), zeros(self.splits[2], rows, second))
        self.loss_partials = zeros(triton.cdiv(rows, block_m))
        block_n = kernels.PERSISTENT_STEP_CONFIG.kwargs["BLOCK_N"]
        tiles = [triton.cdiv(rows, block_m) * triton.cdiv(width, block_n) for width in (first, second)]
        counters = torch.zeros(sum(tiles), dtype=torch.int32, device=device)
        self.counters = (counters[: tiles[0]], counters[tiles[0] :])
        self.barrier = torch.zeros(2, dtype=torch.int32, device=device)

    def __call__(self, x: torch.Tensor, labels: torch.Tensor, linears: list, scales: list[float], lr: float) -> torch.Tensor:
        loss = torch.empty((), dtype=torch.float32, device=x.device)
        parameters = [tensor for linear in linears for tensor in (linear.weight, linear.bias)]
        workspace = (
            *self.hidden, self.grad_logits, self.grad_hidden[1], self.grad_hidden[0], *self.partials,
            *self.counters, self.loss_partials, loss, self.barrier,
        )
        strides = [*x.stride(), labels.stride(0)]
        for linear in linears:
            strides += [*linear.weight.stride(), linear.bias.stride(0)]
        sizes = (self.rows, *self.sizes, *strides, *self.splits, self.max_spins, *scales, lr)
        for launch in self.launches:
            launch(x, labels, *parameters, *workspace, *sizes)
        return loss
