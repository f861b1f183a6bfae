"""The argument checks every Triton launcher shares.

The kernels trust their arguments, so each launcher checks them here first, and
a bad call fails with the argument's name, what was expected and what came in.
A launcher runs them once per launch key (`launch.Plans`).
"""

from __future__ import annotations

import math
from numbers import Real

import torch

from tritonnet import checks
from tritonnet.environment import KERNEL_DTYPES, interpreter_enabled


def check_kernel_dtype(name: str, tensor: torch.Tensor) -> None:
    """Raise TypeError unless `tensor` has a dtype the kernels load (KERNEL_DTYPES)."""
    if tensor.dtype not in KERNEL_DTYPES:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in KERNEL_DTYPES)
        raise TypeError(
            f"{name} must have dtype {allowed} on the triton backend, got {tensor.dtype}; "
            "use the reference backend for other dtypes"
        )


def check_kernel_device(name: str, tensor: torch.Tensor) -> None:
    """Raise ValueError unless the kernels can read `tensor` where it is: CUDA, or the
    CPU when the interpreter runs them. Elsewhere a launch would fail inside Triton,
    or read host memory as device addresses."""
    if tensor.device.type == "cuda" or (tensor.device.type == "cpu" and interpreter_enabled()):
        return
    raise ValueError(
        f"{name} must be a CUDA tensor (or a CPU tensor with TRITON_INTERPRET=1) "
        f"for the triton backend, got device {tensor.device}"
    )


def check_operands(**tensors: torch.Tensor | None) -> None:
    """Every tensor given (None skipped) on one device the kernels run on, in one
    dtype they load. Shapes are the caller's to check first."""
    present = {name: tensor for name, tensor in tensors.items() if tensor is not None}
    checks.check_same_device(**present)
    checks.check_same_dtype(**present)
    first_name, first = next(iter(present.items()))
    check_kernel_dtype(first_name, first)
    check_kernel_device(first_name, first)


def check_scale(value: object) -> float:
    """A finite real factor on a gradient, as a Python float for the kernel."""
    if isinstance(value, bool) or not isinstance(value, Real):
        raise TypeError(f"scale must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"scale must be finite, got {value!r}")
    return float(value)


def output_strides(
    name: str, out: object, rows: int, cols: int, like_name: str, like: torch.Tensor
) -> tuple[int, int]:
    """The strides of `out`, checked to be `[rows, cols]` on `like`'s device in
    `like`'s dtype (any strides; it may be `like` itself); for `out` None, those of
    the new contiguous tensor the launcher will make (`launch.Plan.output`)."""
    if out is None:
        return (cols, 1)
    out = checks.check_matrix(name, out, cols=cols, rows=rows)
    checks.check_same_device(**{like_name: like, name: out})
    checks.check_same_dtype(**{like_name: like, name: out})
    return out.stride()
