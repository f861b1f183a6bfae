"""`make_step`: the one place that decides how a training step runs.

    step = make_step(model)
    loss = step(x, labels)  # one SGD step; the mean loss as a 0-dim tensor on the model's device

It chooses once, from the model, its device and dtype, between:
- `FeatureMajorStep` (feature_major.py): the exercise MLP on the CPU in fp32 or
  fp64, where the reference backend runs the step fastest with the activations
  transposed. It hands a batch it cannot run (another backend selected since, a
  weight assigned in a layout BLAS cannot take) to the fused step;
- `FusedStep` (fused_step.py): the exercise MLP anywhere else, on the Triton
  kernels or the reference, whichever `ops_for` gives;
- `GraphedStep` (cuda_graph.py) around the fused step: the exercise MLP on a
  GPU, replayed from a CUDA graph;
- `ModuleStep` (module_step.py): the nn.Module twin, `ModuleModel`, trained by
  autograd and torch.optim;
- `DataParallelStep` and `DataParallelModuleStep` (distributed_step.py): the
  same two models under torchrun, given `ranks` that joined a process group:
  each rank trains on its shard of the global batch and the gradients are
  summed over the ranks. On a GPU with NCCL the exercise MLP's step, all-reduce
  included, is replayed from a CUDA graph.

`make_epoch_steps` decides, the same way, how the trainer runs an epoch's steps
over a data set on the device (epoch_graph.py): on a GPU, the exercise MLP's
steps many to a CUDA graph replay (`GraphedEpochSteps`); elsewhere one step at a
time, with the step `make_step` gives (`EpochSteps`).

Every kind computes what the exercise's `forward`, `compute_loss`,
`backward(compute_gradient(...))` and `update` compute one after another, up to
the rounding of the sums. The loss stays on the device: reading it (`.item()`)
waits for the GPU, so callers read it only when they need it.
"""

from __future__ import annotations

from typing import Callable

import torch

from tritonnet import feature_major
from tritonnet.cuda_graph import GraphedStep
from tritonnet.distributed import SINGLE, Ranks
from tritonnet.epoch_graph import EpochSteps, GraphedEpochSteps
from tritonnet.fused_step import FusedStep
from tritonnet.model import MLP

Step = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
CUDA_GRAPH_CHOICES = ("auto", True, False)


def make_step(model: object, *, cuda_graph: str | bool = "auto", ranks: Ranks = SINGLE) -> Step:
    """The training step for `model`, a `tritonnet.MLP` or a `ModuleModel`.

    `cuda_graph`: "auto" replays the exercise MLP's step from a CUDA graph where
    the model is on a GPU; True asks for that and refuses a model it cannot graph;
    False always runs the step eagerly. `ranks`: this process's place in a
    data-parallel run (`tritonnet.distributed.start`); the step then takes the
    global batch and trains on this rank's shard of it.
    """
    if not (isinstance(cuda_graph, bool) or cuda_graph == "auto"):
        raise ValueError(f"cuda_graph must be one of {CUDA_GRAPH_CHOICES}, got {cuda_graph!r}")
    if isinstance(model, MLP):
        return _exercise_step(model, cuda_graph, ranks)
    # Loaded here, not above: it registers the drop-in API's torch.library ops.
    from tritonnet.module_model import ModuleModel

    if isinstance(model, ModuleModel):
        if cuda_graph is True:
            raise ValueError("cuda_graph=True needs a tritonnet.MLP: a ModuleModel's step runs eagerly")
        if ranks.joined:
            from tritonnet.distributed_step import DataParallelModuleStep

            return DataParallelModuleStep(model, ranks)
        from tritonnet.module_step import ModuleStep

        return ModuleStep(model)
    raise TypeError(f"model must be a tritonnet.MLP or a ModuleModel, got {type(model).__name__}")


def _exercise_step(model: MLP, cuda_graph: str | bool, ranks: Ranks) -> Step:
    on_gpu = model.device.type == "cuda"
    # NCCL's all-reduce can be captured in a CUDA graph; gloo's cannot.
    graphable = on_gpu and (not ranks.joined or torch.distributed.get_backend() == "nccl")
    if cuda_graph is True and not on_gpu:
        raise ValueError(f"cuda_graph=True needs a model on a CUDA device, got one on {model.device}")
    if cuda_graph is True and not graphable:
        raise ValueError(
            "cuda_graph=True in a data-parallel run needs NCCL, whose all-reduce a CUDA graph "
            f"captures; the process group runs {torch.distributed.get_backend()}"
        )
    if ranks.joined:
        from tritonnet.distributed_step import DataParallelStep

        step = DataParallelStep(model, ranks)
    elif on_gpu:
        step = FusedStep(model)
    elif model.dtype in feature_major.DTYPES:
        return feature_major.FeatureMajorStep(model, fallback=FusedStep(model))
    else:
        return FusedStep(model)
    return GraphedStep(step) if graphable and cuda_graph is not False else step


def make_epoch_steps(
    model: object,
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    cuda_graph: str | bool = "auto",
    ranks: Ranks = SINGLE,
) -> EpochSteps:
    """The runner of an epoch's steps of `model` over `images` and `labels`, the whole
    training set on the model's device (epoch_graph.py).

    `cuda_graph` and `ranks` as for `make_step`: where the exercise MLP is on a GPU,
    "auto" or True runs its steps many to a graph replay, drawing the epoch's order
    on the GPU (so the order differs from a CPU run's, and from a run with False,
    with the same seed); False runs one step at a time.
    """
    step = make_step(model, cuda_graph=cuda_graph, ranks=ranks)
    if isinstance(step, GraphedStep):  # graphed one step at a time: graph many instead
        return GraphedEpochSteps(step.step, images, labels, batch_size)
    return EpochSteps(step, images, labels, batch_size)
