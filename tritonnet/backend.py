"""The one dispatch point between the Triton kernels and the CPU reference.

Layers, modules and the trainer never call a kernel or a reference function
directly: they ask `ops_for(*tensors)` for the module of operations that fits the
tensors at hand, and call the operation by name on it. Both modules,
`tritonnet.reference` and `tritonnet.triton_backend`, define the same operations
with the same signatures, so that each kernel can be read beside its oracle.

Backends:
- "reference": plain PyTorch, on whatever device the tensors are.
- "triton": the Triton kernels. They need CUDA tensors, or CPU tensors with
  `TRITON_INTERPRET=1` set before the kernels were imported.
- "auto" (the default): Triton where it can run, the reference elsewhere: on
  devices the kernels cannot use, and for dtypes they do not load (float64).
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
from types import ModuleType
from typing import Iterator

import torch

from tritonnet.environment import KERNEL_DTYPES, interpreter_enabled

BACKENDS = ("auto", "triton", "reference")

_selected = "auto"


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """Whether the triton package can be imported, without importing it.

    Cached: the dispatch point asks at every operation, and a module search on
    disk costs more than a small CPU matmul.
    """
    return importlib.util.find_spec("triton") is not None


def _check_name(backend: str) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return backend


def set_backend(backend: str) -> None:
    """Select the backend for every later operation: "auto", "triton" or "reference"."""
    global _selected
    _selected = _check_name(backend)


def get_backend() -> str:
    """The backend selected with `set_backend` ("auto" unless changed)."""
    return _selected


@contextlib.contextmanager
def use_backend(backend: str) -> Iterator[None]:
    """Select a backend inside a `with` block, restoring the previous one after it."""
    global _selected
    previous = _selected
    _selected = _check_name(backend)
    try:
        yield
    finally:
        _selected = previous


def _triton_runs_on_cpu() -> bool:
    return interpreter_enabled() and triton_available()


def _triton_can_run_on(device: torch.device) -> bool:
    kind = device.type  # built anew at each access
    if kind == "cpu":
        return _triton_runs_on_cpu()
    return kind == "cuda" and triton_available()


def resolve_backend(device: torch.device, backend: str | None = None) -> str:
    """The concrete backend ("triton" or "reference") that runs on `device`."""
    backend = _check_name(backend or _selected)
    if backend == "reference":
        return "reference"
    if backend == "auto":
        return "triton" if _triton_can_run_on(device) else "reference"
    if not triton_available():
        raise RuntimeError("backend 'triton' needs the triton package: pip install triton")
    if not _triton_can_run_on(device):
        raise RuntimeError(
            f"backend 'triton' cannot run on device {device}: it needs CUDA tensors, "
            "or TRITON_INTERPRET=1 set before tritonnet is imported for CPU tensors. "
            "Use set_backend('auto') or 'reference' for the CPU reference path."
        )
    return "triton"


def cpu_runs_reference() -> bool:
    """Whether the selected backend gives CPU tensors to the reference: what
    `resolve_backend(torch.device("cpu")) == "reference"` answers, without building
    a device and its type string, which cost more than the rest of this test on a
    CPU step's every operation. "triton" without the interpreter answers False
    here; `resolve_backend` is where that raises its error."""
    if _selected == "reference":
        return True
    return _selected == "auto" and not _triton_runs_on_cpu()


@functools.lru_cache(maxsize=None)
def _module(name: str) -> ModuleType:
    if name == "triton":
        return importlib.import_module("tritonnet.triton_backend")
    return importlib.import_module("tritonnet.reference")


def _kernels_load(tensors: list[torch.Tensor]) -> bool:
    """Whether the kernels handle every floating tensor's dtype (integer labels pass)."""
    for tensor in tensors:
        if tensor.dtype not in KERNEL_DTYPES and tensor.is_floating_point():
            return False
    return True


def ops_for(*tensors: torch.Tensor | None) -> ModuleType:
    """The module of operations for these tensors under the selected backend.

    Every tensor given must be on one device; `None` entries (an absent bias, say)
    are skipped. Under "auto", tensors of a dtype the kernels do not handle
    (float64) go to the reference; under "triton", the launcher refuses them with
    a TypeError that says so.
    """
    present = [t for t in tensors if t is not None]
    if not present:
        raise ValueError("ops_for needs at least one tensor to pick a device")
    device = present[0].device
    for tensor in present[1:]:
        if tensor.device != device:
            raise ValueError(
                f"all tensors must be on one device, got {device} and {tensor.device}"
            )
    if _selected == "auto" and present[0].is_cuda and triton_available():
        backend = "triton"  # resolve_backend's answer for CUDA under "auto", asked at every call
    else:
        backend = resolve_backend(device)
    if backend == "triton" and _selected == "auto" and not _kernels_load(present):
        backend = "reference"
    return _module(backend)
