"""What every Triton launcher shares: the argument checks the kernels rely on,
matmul precision and interpreter detection.

The kernels trust their arguments, so each launcher checks them here first, and
a bad call fails with the argument's name, what was expected and what came in.
Nothing here touches CUDA state at import time: the precision is read at each
launch, so a later `torch.set_float32_matmul_precision` takes effect.
"""

from __future__ import annotations

import math
import os
from numbers import Real

import torch

from tritonnet import checks
from tritonnet.backend import KERNEL_DTYPES, interpreter_enabled

# torch.get_float32_matmul_precision() -> tl.dot input_precision for fp32 operands.
# "highest" keeps full fp32 products (ieee). "high" and "medium" allow TF32 tensor
# cores, as torch's own fp32 matmuls on CUDA do under those settings (torch's
# "medium" would also allow bf16 products; TF32 is the closer and safer choice).
# fp16 and bf16 operands use their own tensor-core path; the setting does not apply.
FLOAT32_PRECISION = {"highest": "ieee", "high": "tf32", "medium": "tf32"}


def dot_precision(dtype: torch.dtype) -> str:
    """The `input_precision` for a tl.dot on operands of `dtype`."""
    if dtype == torch.float32:
        return FLOAT32_PRECISION[torch.get_float32_matmul_precision()]
    return "ieee"


def interpreting() -> bool:
    """True when kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1)."""
    return interpreter_enabled()


def fixed_configs() -> bool:
    """True when launchers run each kernel's one fixed config instead of autotuning.

    Always in the interpreter: it is slow, and its autotuner would time every config.
    On a GPU when TRITONNET_AUTOTUNE=0: autotuning times every config once per new
    shape (about 0.1 s each), which a test trying hundreds of random shapes cannot
    afford, and a fixed config gives the same kernel on every run. Read at each
    launch, so a test can set it.
    """
    return interpreter_enabled() or os.environ.get("TRITONNET_AUTOTUNE", "1") == "0"


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
    if tensor.device.type == "cuda" or (tensor.device.type == "cpu" and interpreting()):
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


def output_buffer(
    name: str, out: object, rows: int, cols: int, like_name: str, like: torch.Tensor
) -> torch.Tensor:
    """`out`, checked to be `[rows, cols]` on `like`'s device in `like`'s dtype, or a
    new contiguous such tensor. `out` may have any strides, and may be `like` itself."""
    if out is None:
        return torch.empty(rows, cols, dtype=like.dtype, device=like.device)
    out = checks.check_matrix(name, out, cols=cols, rows=rows)
    checks.check_same_device(**{like_name: like, name: out})
    checks.check_same_dtype(**{like_name: like, name: out})
    return out
