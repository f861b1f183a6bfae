"""The Triton backend: every operation of tritonnet as fused Triton kernels.

It mirrors `tritonnet.reference` operation by operation, under the same names and
signatures, so that each kernel can be read beside its oracle. Each operation's
launcher lives in its own module here (argument checks, output buffers, grid and
config choice); the `@triton.jit` code lives in `tritonnet.kernels`.

Importing this package imports triton but touches no CUDA state, so it also
works on a CPU, with `TRITON_INTERPRET=1` set before the import.
"""

from tritonnet.triton_backend.cross_entropy import cross_entropy
from tritonnet.triton_backend.linear import linear_backward, linear_backward_sgd, linear_forward
from tritonnet.triton_backend.linear_cross_entropy import linear_cross_entropy
from tritonnet.triton_backend.sgd import sgd_update
from tritonnet.triton_backend.sigmoid import sigmoid_backward, sigmoid_forward
from tritonnet.triton_backend.softmax import softmax

__all__ = [
    "cross_entropy",
    "linear_backward",
    "linear_backward_sgd",
    "linear_cross_entropy",
    "linear_forward",
    "sgd_update",
    "sigmoid_backward",
    "sigmoid_forward",
    "softmax",
]
