"""`tritonnet.functional` on the CPU reference, in fp32 and fp64: each operation
composed of PyTorch's own differentiable ops, so that autograd runs its backward
in C++ with no Python at all.

Why not the Functions of `tritonnet.functions` there: their backward is Python,
operations called one by one through their Python bindings, where autograd's own
nodes run the same products in C++; and the reference is plain PyTorch anyway.
At the exercise's sizes a CPU step takes about a millisecond, and Python run
between its GEMMs costs three to four times what it costs alone (measured in
docs/drop-in.md). Elsewhere (the Triton kernels, half precision, autocast, whose
checks cast to a half dtype first) the Functions run.

The products are handed to BLAS in the forms `nn.Linear` hands them (`F.linear`:
`x @ W.T + b`, row-major), so that the twin's arithmetic is torch's on every CPU:
which form BLAS runs fastest depends on the CPU (docs/drop-in.md).

What these do that `nn.Linear`, `nn.Sigmoid` and `F.cross_entropy` do not:
- Each sigmoid is applied in place on its layer's product, which autograd allows
  (the product's backward does not read its output).
- The losses refuse every index outside the classes, and that error names the
  target. `F.cross_entropy` would skip a target equal to its `ignore_index` (-100
  unless told otherwise) and train on a smaller mean.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from tritonnet import checks
from tritonnet.backend import cpu_runs_reference

DTYPES = (torch.float32, torch.float64)

# `nll_loss_forward`, the op under `F.nll_loss`, returns the total weight with the
# loss; `F.nll_loss` would call it through three Python layers.
_NLL_LOSS = torch.ops.aten.nll_loss_forward.default
_MEAN = 1  # torch's reduction enum: none 0, mean 1, sum 2
_NO_INDEX = torch.iinfo(torch.int64).min  # ignore_index: no class index is this


def runs(rows: torch.Tensor) -> bool:
    """Whether this route computes an operation on `rows` (whose device and dtype
    the other arguments share, as the caller checked): CPU tensors of fp32 or fp64
    that the selected backend gives to the reference."""
    # `is_cpu` first: the one test a GPU call pays.
    return rows.is_cpu and rows.dtype in DTYPES and cpu_runs_reference()


def takes_layers(x: object, weights: Sequence[object], biases: Sequence[object]) -> bool:
    """Whether this route can take layers' arguments as they came, unchecked by
    `tritonnet.arguments`: x a CPU tensor it computes (`runs`), no autocast, each
    weight a matrix and each bias `[out]` or None.

    The rest PyTorch's ops check themselves, in C++, at no cost of their own:
    `addmm` refuses matrices whose sizes do not chain and tensors whose dtypes or
    devices differ; `log_softmax` logits that are not 2-D; `nll_loss` targets that
    are not one per row, not int64 or outside the classes. What they would take
    without a word is tested here: a bias that broadcasts (`[1]`, or `[rows, 1]`)
    and an input under autocast (the checks cast it). An argument the ops refuse
    falls to the checks that name it. On a CPU, where a step of the exercise's
    network takes about a millisecond, the full checks cost several percent of it.
    """
    if not (isinstance(x, torch.Tensor) and runs(x)) or torch.is_autocast_enabled("cpu"):
        return False
    for weight, bias in zip(weights, biases):
        if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
            return False
        if bias is not None and not (isinstance(bias, torch.Tensor) and bias.shape == (weight.shape[0],)):
            return False
    return True


def _int64(target: object) -> bool:
    return isinstance(target, torch.Tensor) and target.dtype == torch.int64


def takes_loss(logits: object, target: object) -> bool:
    """Whether `cross_entropy` can take these as they came (see `takes_layers`):
    2-D CPU logits this route computes and int64 targets."""
    return isinstance(logits, torch.Tensor) and logits.dim() == 2 and runs(logits) and _int64(target)


def takes_network(x: object, weights: object, biases: object, target: object) -> bool:
    """Whether `mlp_cross_entropy` can take these as they came (see
    `takes_layers`): x 2-D, int64 targets, and one bias per weight (`zip` would
    cut the longer list short)."""
    return (
        isinstance(weights, (list, tuple))
        and isinstance(biases, (list, tuple))
        and len(weights) == len(biases) > 0
        and isinstance(x, torch.Tensor)
        and x.dim() == 2
        and _int64(target)
        and takes_layers(x, weights, biases)
    )


def linear(rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str) -> torch.Tensor:
    """`activation(rows @ weight.T + bias)` for rows `[..., in]`, weight `[out, in]`."""
    output = F.linear(rows, weight, bias)
    return output.sigmoid_() if activation == "sigmoid" else output


def softmax(rows: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax of `[M, N]` rows, stable (torch subtracts the row max)."""
    return torch.softmax(rows, dim=1)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits `[M, C]` against int64 class indices `[M]`; a
    target outside `[0, C)` raises the ValueError that names it.

    Two autograd nodes, as `F.cross_entropy`'s own: `log_softmax`, then
    `nll_loss_forward`, whose index check refuses every target outside the classes
    but its `ignore_index`. That has to be some int64: it is the int64 minimum, and
    the total weight the op returns (how many targets it did not skip) tells
    whether a target held that value, which the range check then names.
    """
    log_probabilities = torch.log_softmax(logits, dim=1)
    try:
        loss, counted = _NLL_LOSS(log_probabilities, target, None, _MEAN, _NO_INDEX)
    except (IndexError, RuntimeError):
        checks.check_label_range("target", target, logits.shape[1])  # the error that names it
        raise
    if counted.item() != target.shape[0]:
        checks.check_label_range("target", target, logits.shape[1])
    return loss


def linear_cross_entropy(
    rows: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor
) -> torch.Tensor:
    """`cross_entropy` of the logits `rows @ weight.T + bias`."""
    return cross_entropy(F.linear(rows, weight, bias), target)


def mlp_cross_entropy(
    x: torch.Tensor, target: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor | None]
) -> torch.Tensor:
    """The exercise's network and its mean loss: x `[M, in_0]`, int64 class indices
    `target` `[M]`, `weights[i]` `[out_i, in_i]` (nn.Linear's layout) and
    `biases[i]` `[out_i]` or None; the sigmoid after every layer but the last."""
    last = len(weights) - 1
    hidden = x
    for index in range(last):
        hidden = linear(hidden, weights[index], biases[index], "sigmoid")
    return linear_cross_entropy(hidden, weights[last], biases[last], target)
