"""Which alignment class a launch falls in.

The GEMM kernels offer a config list per class (`tritonnet.kernels.tiling`):
tensor-core-sized tiles for ALIGNED launches, small tiles that compile without
spills in the worst case for UNALIGNED ones. The class follows what Triton
specializes a launch on, so that the build a class's configs run as is the build
the compile tests check for it. `launch.Launch` asks once per launch key: the
key holds everything the class depends on.
"""

from __future__ import annotations

from typing import Mapping

import torch

from tritonnet.kernels.tiling import ALIGNED, UNALIGNED


def uses_tensor_cores(dtype: torch.dtype, precision: str) -> bool:
    """Whether `tl.dot` on operands of `dtype` at `precision` runs on the tensor cores:
    fp16 and bf16 always, fp32 as TF32; fp32 "ieee" runs on the CUDA cores."""
    return dtype != torch.float32 or precision == "tf32"


def alignment_class(arguments: Mapping[str, object]) -> str:
    """ALIGNED or UNALIGNED for a launch with `arguments`, the kernel's arguments by
    name, its constexprs included.

    ALIGNED when the kernel's dot (INPUT_PRECISION, on operands of the first
    tensor argument's dtype) runs on the tensor cores, and Triton compiles every
    argument as divisible by 16: each tensor's address a multiple of 16 bytes, each
    integer a multiple of 16, except a stride (`stride_*`) of 1, which Triton
    compiles as the constant 1. Floats, strings and None are not specialized on.
    """
    precision = arguments.get("INPUT_PRECISION")
    operand = next(value for value in arguments.values() if isinstance(value, torch.Tensor))
    if precision is not None and not uses_tensor_cores(operand.dtype, precision):
        return UNALIGNED
    for name, value in arguments.items():
        if isinstance(value, torch.Tensor):
            if value.data_ptr() % 16:
                return UNALIGNED
        elif isinstance(value, int) and not isinstance(value, bool):
            if value % 16 and not (value == 1 and name.startswith("stride_")):
                return UNALIGNED
    return ALIGNED
