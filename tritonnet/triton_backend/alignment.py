"""Which alignment class a GEMM launch falls in, and the launch with that class's configs.

The GEMM kernels offer a config list per class (`tritonnet.kernels.tiling`):
tensor-core-sized tiles for ALIGNED launches, small tiles that compile without
spills in the worst case for UNALIGNED ones. The class follows what Triton
specializes a launch on, so that the build a class's configs run as is the build
the compile tests check for it.
"""

from __future__ import annotations

import torch

from tritonnet.kernels.tiling import ALIGNED, UNALIGNED
from tritonnet.triton_backend.common import fixed_configs


def uses_tensor_cores(dtype: torch.dtype, precision: str) -> bool:
    """Whether `tl.dot` on operands of `dtype` at `precision` runs on the tensor cores:
    fp16 and bf16 always, fp32 as TF32; fp32 "ieee" runs on the CUDA cores."""
    return dtype != torch.float32 or precision == "tf32"


def alignment_class(kernel, args: tuple, dtype: torch.dtype, precision: str) -> str:
    """ALIGNED or UNALIGNED for `kernel` (a @triton.jit function) launched on `args`,
    its positional arguments in order, with a dot of `dtype` operands at `precision`.

    ALIGNED when the dot runs on the tensor cores and Triton compiles every
    argument as divisible by 16: each tensor's address a multiple of 16 bytes,
    each integer a multiple of 16, except a stride (`stride_*`) of 1, which Triton
    compiles as the constant 1. Floats and None are not specialized on.
    """
    if not uses_tensor_cores(dtype, precision):
        return UNALIGNED
    for name, value in zip(kernel.arg_names, args):
        if isinstance(value, torch.Tensor):
            if value.data_ptr() % 16:
                return UNALIGNED
        elif isinstance(value, int) and not isinstance(value, bool):
            if value % 16 and not (value == 1 and name.startswith("stride_")):
                return UNALIGNED
    return ALIGNED


def launch_gemm(autotuned: dict, fixed: dict, grid, args: tuple, constexprs: dict) -> None:
    """Launch a GEMM kernel with the configs of its alignment class.

    `autotuned` and `fixed` map each class to the kernel's autotuner and its one
    fixed config (`fixed_configs` says which runs); `args` are the kernel's
    positional arguments, the first of them a dot operand; `constexprs` holds
    INPUT_PRECISION with the other constexprs.
    """
    any_autotuner = next(iter(autotuned.values()))
    alignment = alignment_class(any_autotuner.fn, args, args[0].dtype, constexprs["INPUT_PRECISION"])
    if fixed_configs():
        any_autotuner.fn[grid](*args, **constexprs, **fixed[alignment].all_kwargs())
    else:
        autotuned[alignment][grid](*args, **constexprs)
