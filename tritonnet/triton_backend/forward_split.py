"""Launcher of the split-K linear forward (`linear_forward_kernel` with SPLIT_K,
`tritonnet.kernels.linear_forward`), for layers whose tiles are far fewer than
the GPU's SMs (the exercise's hidden layers at batch 64).

`linear.linear_forward`'s plan makes a `ForwardSplit` when
`kernels.forward_splits` splits K on this device. Each program reduces one run
of K for one tile into an fp32 partial tile of a workspace made per call; the
tile's last split to finish adds the partials in a fixed order, then the bias
and the activation, and stores y. One launch, and the same bits on every run.
"""

from __future__ import annotations

import torch
import triton

from tritonnet import rocm
from tritonnet.kernels import linear_forward as kernels
from tritonnet.triton_backend.launch import Kernel, Launch
from tritonnet.triton_backend.tickets import zeroed
from tritonnet.triton_backend.weight_gradient import processors


def _tiles_and_splits(arguments: dict) -> tuple[int, int]:
    tiles = triton.cdiv(arguments["M"], arguments["BLOCK_M"]) * triton.cdiv(arguments["N"], arguments["BLOCK_N"])
    return tiles, triton.cdiv(arguments["K"], arguments["k_per_split"])


# Its own name in the tuned table: the split configs are not the unsplit ones.
SPLIT = Kernel(
    kernels.linear_forward_kernel,
    _tiles_and_splits,
    autotuned=kernels.linear_forward_split_autotuned,
    fixed=kernels.LINEAR_FORWARD_SPLIT_FIXED_CONFIG,
    name="linear_forward_split_k",
)


class ForwardSplit:
    """`activation(x @ weight + bias)` with K split, for one launch key of
    `linear_forward` with rows, in_features and out_features > 0.

    Called as the unsplit launch is, with the kernel's arguments before the
    workspace: `(x, weight, bias, out, *sizes)`. Each call takes
    `splits * M * N` fp32 values of workspace; the per-tile ticket counters are
    kept from call to call (`tickets.py`).
    """

    def __init__(self, rows: int, in_features: int, out_features: int, splits: int, k_per_split: int,
                 device: torch.device, constexprs: dict) -> None:
        self.launch = Launch(SPLIT, SPLIT_K=True, **constexprs)
        self.partials_shape = (splits, rows, out_features)
        self.device = device
        tiles = triton.cdiv(rows, kernels.SPLIT_BLOCK_M) * triton.cdiv(out_features, kernels.SPLIT_BLOCK_N)
        self.counters = zeroed(device, torch.int32, tiles)
        self.k_per_split = k_per_split

    def __call__(self, x, weight, bias, out, *sizes) -> None:
        partials = torch.empty(self.partials_shape, dtype=torch.float32, device=self.device)
        self.launch(x, weight, bias, out, *sizes, partials, self.counters, self.k_per_split)


def split_forward(x: torch.Tensor, out_features: int, constexprs: dict) -> ForwardSplit | None:
    """The split launch of a forward of x `[M, K]` to `out_features`, or None
    where `kernels.forward_splits` keeps K whole on x's device, and on AMD GPUs,
    where the split kernel's builds spill scalar registers (docs/kernels.md)."""
    if rocm.hip_version():
        return None
    rows, in_features = x.shape
    splits, k_per_split = kernels.forward_splits(rows, in_features, out_features, processors(x.device))
    if splits == 1:
        return None
    return ForwardSplit(rows, in_features, out_features, splits, k_per_split, x.device, constexprs)
