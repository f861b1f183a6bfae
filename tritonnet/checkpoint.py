"""Training checkpoints: everything needed to continue a run bit for bit.

A checkpoint is one `torch.save` file of tensors, numbers, strings and lists, so
it loads with `torch.load(weights_only=True)`: no pickle of arbitrary objects,
nothing that runs code when it is read. It holds:
- `parameters`: the network's weights and biases (`MLP.state_dict` keys);
- `config`: the run's settings (sizes, lr, grad scale, batch size, seed, dataset);
- `epoch`: the epochs completed; `step`: steps done in the epoch after those, 0 at
  an epoch boundary, more when a run was interrupted mid-epoch;
- `shuffle_state`: the shuffling generator's state at the start of that epoch, so
  the epoch's order is drawn again identically on resume;
- `torch_rng_state`: torch's global CPU RNG state;
- `partial`: the unfinished epoch's running train-loss sum and training seconds;
- `history`: one record per completed epoch.
Files are written atomically (see `tritonnet.files`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from tritonnet.files import atomic_write

FORMAT_VERSION = 1


def save_checkpoint(path: str | os.PathLike, state: dict[str, Any]) -> None:
    """Write `state` atomically; the previous checkpoint survives a crash mid-write."""
    with atomic_write(path, "wb") as handle:
        torch.save({"format_version": FORMAT_VERSION, **state}, handle)


def load_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Read a checkpoint written by `save_checkpoint`, without unpickling objects."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # torch raises several types for a damaged file
        raise ValueError(f"checkpoint {path} cannot be read: {error}") from error
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise ValueError(
            f"checkpoint {path} is not a tritonnet checkpoint of format {FORMAT_VERSION}"
        )
    return state
