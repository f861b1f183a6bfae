"""tritonnet: the "neural network from scratch" MLP exercise on fused Triton kernels.

The exercise's API (`Linear`, `Sigmoid`, `Softmax`, `compute_loss`,
`compute_gradient`, `MLP`) runs on Triton kernels for CUDA tensors and on a plain
PyTorch reference elsewhere; `set_backend` and `use_backend` choose explicitly.
`make_step(model)` gives the trainer's fused training step, `step(x, labels) ->
loss`; `GraphedStep(step)` replays such a step from a CUDA graph;
`make_epoch_steps(model, images, labels, batch_size)` runs an epoch's steps over a
data set on the device, many to a CUDA graph replay on a GPU.
Importing tritonnet never imports triton or touches CUDA.
"""

import importlib

from tritonnet.backend import BACKENDS, get_backend, set_backend, use_backend
from tritonnet.cuda_graph import GraphedStep
from tritonnet.layers import GRAD_SCALES, Linear, Sigmoid, Softmax, compute_gradient, compute_loss
from tritonnet.model import MLP
from tritonnet.step import make_epoch_steps, make_step

__version__ = "0.1.0"

# The drop-in PyTorch API registers torch.library ops; it loads on first use.
_LAZY_SUBMODULES = ("functional", "nn")


def __getattr__(name: str):
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"tritonnet.{name}")
    raise AttributeError(f"module 'tritonnet' has no attribute {name!r}")


__all__ = [
    "BACKENDS",
    "GRAD_SCALES",
    "GraphedStep",
    "Linear",
    "MLP",
    "Sigmoid",
    "Softmax",
    "compute_gradient",
    "functional",
    "compute_loss",
    "get_backend",
    "make_epoch_steps",
    "make_step",
    "nn",
    "set_backend",
    "use_backend",
]
