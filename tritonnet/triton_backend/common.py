"""What every Triton launcher shares: matmul precision and interpreter detection.

Nothing here imports CUDA state at import time: the precision is read at each
launch, so a later `torch.set_float32_matmul_precision` takes effect.
"""

from __future__ import annotations

import torch

from tritonnet.backend import interpreter_enabled

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
    """True when kernels run in Triton's CPU interpreter (TRITON_INTERPRET=1).

    Launchers then use one fixed small config: the interpreter is slow, and its
    autotuner would time every config.
    """
    return interpreter_enabled()
