"""Argument checks for the public entry points.

Every error names the argument, says what was expected and what came in, so that
a bad call fails where it enters the library rather than deep in a kernel.
"""

from __future__ import annotations

import math
from numbers import Real

import torch

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16, torch.float64)


def check_tensor(name: str, value: object) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(value).__name__}")
    return value


def check_float_tensor(name: str, value: object) -> torch.Tensor:
    tensor = check_tensor(name, value)
    if tensor.dtype not in FLOAT_DTYPES:
        allowed = ", ".join(str(d).removeprefix("torch.") for d in FLOAT_DTYPES)
        raise TypeError(f"{name} must have a floating dtype ({allowed}), got {tensor.dtype}")
    return tensor


def check_matrix(name: str, value: object, cols: int | None = None, rows: int | None = None) -> torch.Tensor:
    """A floating 2-D tensor, with the given column and row counts where they are set."""
    tensor = check_float_tensor(name, value)
    if tensor.dim() != 2:
        raise ValueError(f"{name} must be 2-D [rows, columns], got shape {tuple(tensor.shape)}")
    if cols is not None and tensor.shape[1] != cols:
        raise ValueError(
            f"{name} must have {cols} columns, got shape {tuple(tensor.shape)}"
        )
    if rows is not None and tensor.shape[0] != rows:
        raise ValueError(f"{name} must have {rows} rows, got shape {tuple(tensor.shape)}")
    return tensor


def check_same_device(**tensors: torch.Tensor | None) -> None:
    present = {name: t for name, t in tensors.items() if t is not None}
    if len({t.device for t in present.values()}) > 1:
        listing = ", ".join(f"{name} on {t.device}" for name, t in present.items())
        raise ValueError(f"tensors must be on one device, got {listing}")


def check_same_dtype(**tensors: torch.Tensor | None) -> None:
    present = {name: t for name, t in tensors.items() if t is not None}
    if len({t.dtype for t in present.values()}) > 1:
        listing = ", ".join(f"{name} {t.dtype}" for name, t in present.items())
        raise TypeError(f"tensors must share one dtype, got {listing}")


def check_labels(name: str, value: object, rows: int, classes: int, check_range: bool = True) -> torch.Tensor:
    """Class indices: an integer tensor `[rows]` with values in `[0, classes)`.

    The range check reads the values back; on a GPU that waits for the device, so
    hot loops whose labels were checked once (the trainer's) pass `check_range=False`.
    """
    tensor = check_tensor(name, value)
    if tensor.dtype not in (torch.int64, torch.int32, torch.int16, torch.uint8):
        raise TypeError(f"{name} must hold integer class indices, got dtype {tensor.dtype}")
    if tensor.shape != (rows,):
        raise ValueError(f"{name} must have shape ({rows},), got {tuple(tensor.shape)}")
    if check_range:
        check_label_range(name, tensor, classes)
    return tensor


def check_label_range(name: str, tensor: torch.Tensor, classes: int) -> None:
    """Class indices already checked by `check_labels` lie in `[0, classes)`."""
    if tensor.numel():
        low, high = (int(value) for value in torch.aminmax(tensor))  # one pass, one op
        if low < 0 or high >= classes:
            raise ValueError(f"{name} must lie in [0, {classes}), got values from {low} to {high}")


def check_batch(
    x: object, labels: object, weight: torch.Tensor, in_features: int, classes: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """A training batch for a network whose first weight is `weight`: `x`
    `[rows, in_features]` on the weight's device and of its dtype, `labels` `[rows]`
    class indices on the same device. Their range is left to the caller, which
    knows whether reading them back would wait for a GPU (see `check_labels`)."""
    x = check_matrix("x", x, cols=in_features)
    if x.device != weight.device or x.dtype != weight.dtype:  # the checks that say which
        check_same_device(x=x, weight=weight)
        check_same_dtype(x=x, weight=weight)
    labels = check_labels("labels", labels, x.shape[0], classes, check_range=False)
    if labels.device != x.device:
        check_same_device(x=x, labels=labels)
    return x, labels


def check_positive_int(name: str, value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return value


def check_sizes(name: str, value: object) -> tuple[int, ...]:
    """An MLP's layer sizes, input first: at least an input and an output size,
    each a positive integer."""
    sizes = tuple(value)  # type: ignore[call-overload]
    if len(sizes) < 2:
        raise ValueError(f"{name} must list at least an input and an output size, got {sizes}")
    return tuple(check_positive_int(name, size) for size in sizes)


def check_learning_rate(name: str, value: object, dtype: torch.dtype | None = None) -> float:
    """A finite number >= 0; with `dtype`, one that the weights' dtype can hold,
    since the SGD step multiplies by it in that dtype."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    if dtype is not None and value > torch.finfo(dtype).max:
        raise ValueError(f"{name} must be at most {torch.finfo(dtype).max:g} for {dtype} weights, got {value!r}")
    return float(value)


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")
    return value  # type: ignore[return-value]
