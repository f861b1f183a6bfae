"""Launch keys and plans: what a call with the same key as an earlier one reuses.

A launch key holds, of each tensor argument, all that the argument checks and the
compiled kernel depend on (`tensor_key`), and the operation's other options:
strings, flags, None, the matmul precision. A plan is what the checks made of
such arguments: output shapes, the kernels' size and stride arguments, and their
`launch.Launch`es. Scalars that differ between calls with one key (`scale`,
`lr`) stay out of the key and are checked per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tritonnet.triton_backend import tuned
from tritonnet.triton_backend.launch import Launch

# Plans kept per operation; past this the oldest goes (shapes that keep changing,
# such as a test's random ones, must not grow memory without end).
MAX_PLANS = 1024


def tensor_key(tensor: torch.Tensor) -> tuple:
    """What a launch key holds of a tensor: all the checks and the compiled kernel
    depend on (class, dtype, shape, strides, device, 16-byte alignment)."""
    return (tensor.__class__, tensor.dtype, tensor.shape, tensor.stride(), tensor.device, tensor.data_ptr() % 16 == 0)


_ALL_PLANS: list["Plans"] = []


class Plans:
    """One operation's plans by launch key. `plans(*arguments)` returns the plan
    of these arguments, made by `build(*arguments)` the first time.

    `arguments` are all that the checks and the launches depend on except the
    scalars re-checked per call: tensors (keyed by `tensor_key`), None, strings,
    flags. Arguments that make no key (unhashable, or no real tensor) get a plan
    made afresh and not kept: `build` raises the argument error then, as it does
    for any bad key, and a bad key is never kept.
    """

    def __init__(self, build: Callable[..., object]) -> None:
        self.build = build
        self.entries: dict[tuple, object] = {}
        _ALL_PLANS.append(self)

    def __call__(self, *arguments):
        try:
            key = tuple([tensor_key(a) if isinstance(a, torch.Tensor) else a for a in arguments])
            return self.entries[key]
        except KeyError:
            pass
        except (AttributeError, TypeError, RuntimeError):
            return self.build(*arguments)
        plan = self.build(*arguments)
        if len(self.entries) >= MAX_PLANS:
            del self.entries[next(iter(self.entries))]
        self.entries[key] = plan
        return plan


@dataclass(frozen=True)
class Plan:
    """An operation's plan with one output `shape` (made when the caller gives
    none), the kernel's size and stride arguments, and its launch (None when
    there is nothing to compute)."""

    shape: tuple[int, ...]
    dtype: torch.dtype
    device: torch.device
    sizes: tuple
    launch: Launch | None

    def output(self, out: torch.Tensor | None) -> torch.Tensor:
        """`out`, or a new contiguous output."""
        return torch.empty(self.shape, dtype=self.dtype, device=self.device) if out is None else out


def clear_caches() -> None:
    """Forget every plan, launch and loaded tuned table (tests and tuning runs)."""
    for plans in _ALL_PLANS:
        plans.entries.clear()
    tuned.clear()
