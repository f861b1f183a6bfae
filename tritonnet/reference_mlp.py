"""The exercise's network and its mean loss from PyTorch's own differentiable ops:
the CPU route of `tritonnet.functional.mlp_cross_entropy` (and so of
`tritonnet.nn.MLP.loss`) on the reference backend, in fp32 and fp64.

Why not the `MLPCrossEntropy` Function there: its backward is Python, a dozen
operations called one by one through their Python bindings, where autograd's own
nodes run the same products in C++. At the exercise's sizes a CPU step takes
about a millisecond, and Python run between its GEMMs costs three to four times
what it costs alone (measured in docs/drop-in.md); this route runs none in the
backward.

What it does that `nn.Sequential` + `F.cross_entropy` does not:
- Each sigmoid is applied in place on its layer's product, which autograd allows
  (the product's backward does not read its output).
- A hidden output that feeds another hidden layer is computed feature-major, as
  `W @ x.T + b` read through its transpose (the same values): BLAS on the CPU
  splits the first layer's product over the cores better in this order. The last
  hidden output, which the output layer reads, stays row-major.
- The loss picks each row's log-probability with `gather`, which refuses every
  index outside the classes. `F.cross_entropy` would skip a target equal to its
  `ignore_index` (-100 unless told otherwise) and train on a smaller mean.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet import checks

DTYPES = (torch.float32, torch.float64)


def mlp_cross_entropy(
    x: torch.Tensor, target: torch.Tensor, weights: list[torch.Tensor], biases: list[torch.Tensor | None]
) -> torch.Tensor:
    """The mean cross-entropy of the network on x `[M, in_0]` against int64 class
    indices `target` `[M]`; `weights[i]` is `[out_i, in_i]` (nn.Linear's layout),
    `biases[i]` `[out_i]` or None. A target outside the classes raises the
    ValueError that names it."""
    last = len(weights) - 1
    hidden = x
    for index in range(last):
        weight, bias = weights[index], biases[index]
        if index < last - 1:  # feeds another hidden layer: feature-major
            product = (
                torch.mm(weight, hidden.t()) if bias is None else torch.addmm(bias.unsqueeze(1), weight, hidden.t())
            )
            hidden = product.sigmoid_().t()
        else:
            hidden = F.linear(hidden, weight, bias).sigmoid_()
    log_probabilities = torch.log_softmax(F.linear(hidden, weights[last], biases[last]), dim=1)
    try:
        picked = log_probabilities.gather(1, target.unsqueeze(1))
    except RuntimeError:
        checks.check_label_range("target", target, log_probabilities.shape[1])  # the error that names it
        raise
    return picked.mean().neg()
