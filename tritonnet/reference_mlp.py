"""The exercise's whole network and its loss in plain PyTorch, written out: the CPU
route of `tritonnet.functions.MLPCrossEntropy` (and so of `tritonnet.nn.MLP.loss`).

It computes what the reference backend's operations compute layer by layer
(`linear_forward` with the sigmoid, `linear_cross_entropy`, `linear_backward`),
for fp32 and fp64 tensors, with nothing between the matrix products but the
products' own calls. Why a route of its own: at the exercise's sizes on a CPU a
step is about a millisecond, and the Python around each operation (the backend's
dispatch, its `out_*` and low-precision branches, keyword arguments) added up to
several percent of it; the Python between two GEMMs also costs more than it does
alone, as the other core's BLAS thread waits through it.

Layouts:
- A hidden output that feeds another hidden layer is stored feature-major
  (`[features, rows]` in memory, the same values), and so is its gradient: BLAS
  on the CPU splits the first layer's product, and the next layer's input
  gradient, over the cores better in this order. The last hidden output, which
  the output layer reads, stays row-major. No caller sees the order.
- Each weight gradient is computed as `dz.T @ x`, `[out, in]` row-major, the
  layout of nn.Linear's weight, so autograd hands it to `.grad` without a copy.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet import checks

DTYPES = (torch.float32, torch.float64)


def _feature_major(rows: int, features: int, like: torch.Tensor) -> torch.Tensor:
    """An uninitialized `[rows, features]` tensor stored `[features, rows]`."""
    return torch.empty(features, rows, dtype=like.dtype, device=like.device).t()


def forward(
    x: torch.Tensor, target: torch.Tensor, weights: tuple[torch.Tensor, ...], biases: tuple[torch.Tensor | None, ...]
) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
    """`(loss, grad_logits, inputs)`: the mean cross-entropy of the network on x
    `[M, in_0]` against class indices `target` `[M]`, the gradient of that mean
    over the logits, `(softmax - onehot) / M`, and each layer's input.

    `weights[i]` is `[out_i, in_i]` (nn.Linear's layout), `biases[i]` `[out_i]` or
    None. A target outside the classes raises the ValueError that names it,
    before anything is returned (nll_loss and scatter_ check every index).
    """
    rows, last = x.shape[0], len(weights) - 1
    inputs = [x]
    hidden = x
    for index in range(last):
        weight, bias = weights[index], biases[index]
        out = _feature_major(rows, weight.shape[0], x) if index < last - 1 else None
        if bias is None:
            hidden = torch.mm(hidden, weight.t(), out=out) if out is not None else torch.mm(hidden, weight.t())
        elif out is not None:
            hidden = torch.addmm(bias, hidden, weight.t(), out=out)
        else:
            hidden = torch.addmm(bias, hidden, weight.t())
        hidden.sigmoid_()
        inputs.append(hidden)
    log_probabilities = torch.log_softmax(F.linear(hidden, weights[last], biases[last]), dim=1)
    try:
        # nll_loss lets -100, its ignore_index, through; scatter_ does not.
        loss = F.nll_loss(log_probabilities, target)
        grad_logits = log_probabilities.exp_().scatter_(1, target.unsqueeze(1), -1.0, reduce="add")
    except (IndexError, RuntimeError):
        checks.check_label_range("target", target, log_probabilities.shape[1])  # the error that names it
        raise
    return loss, grad_logits.mul_(1.0 / max(rows, 1)), inputs


def backward(
    grad_loss: torch.Tensor,
    grad_logits: torch.Tensor,
    inputs: tuple[torch.Tensor, ...],
    weights: tuple[torch.Tensor, ...],
    needs: tuple[bool, ...],
) -> tuple[torch.Tensor | None, list[torch.Tensor | None], list[torch.Tensor | None]]:
    """`(grad_x, grad_weights, grad_biases)` of `forward`'s loss, scaled by
    `grad_loss`; `needs` is autograd's `needs_input_grad` for `(x, target,
    *weights, *biases)`, and a gradient nobody needs is None, not computed. The
    layers' outputs are read from `inputs` (each sigmoid's, the next layer's input).
    """
    layers = len(weights)
    need_weights, need_biases = needs[2 : 2 + layers], needs[2 + layers :]
    grad_weights: list[torch.Tensor | None] = [None] * layers
    grad_biases: list[torch.Tensor | None] = [None] * layers
    grad = grad_logits * grad_loss  # dz of the output layer
    for index in range(layers - 1, -1, -1):
        x = inputs[index]
        if need_weights[index]:
            grad_weights[index] = torch.mm(grad.t(), x)
        if need_biases[index]:
            grad_biases[index] = grad.sum(dim=0)
        if index > 0:
            # dz of the layer below, in place of its output's gradient, laid out as its output.
            grad_input = torch.mm(grad, weights[index], out=torch.empty_like(x))
            grad = torch.ops.aten.sigmoid_backward.grad_input(grad_input, x, grad_input=grad_input)
    return (torch.mm(grad, weights[0]) if needs[0] else None), grad_weights, grad_biases
