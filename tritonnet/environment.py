"""What both sides of the dispatch point need to know about the machine, and
nothing that imports triton: the dtypes the kernels load, and whether Triton runs
them in its CPU interpreter.

It sits below `tritonnet.backend` (which routes operations) and
`tritonnet.triton_backend` (which launches kernels), so that neither imports
the other to learn these.
"""

from __future__ import annotations

import os

import torch

# The floating dtypes the kernels load and store (they accumulate in fp32). Kept
# out of the Triton backend so that the dispatch point can route other dtypes to
# the reference without importing triton.
KERNEL_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


def interpreter_enabled() -> bool:
    """Whether Triton runs kernels on the CPU through its interpreter (TRITON_INTERPRET=1)."""
    return os.environ.get("TRITON_INTERPRET", "0") == "1"
