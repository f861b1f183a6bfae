"""The reference path's training step on the CPU, computed feature-major.

Why. On the CPU an exercise step is about 80% GEMMs, the same GEMMs any PyTorch
code runs; what is left to win is the form each GEMM is handed to BLAS in. At a
batch of 64 the first layer's forward, `[64, 784] @ [784, 512]`, splits poorly
over the cores: computed transposed, `W^T [512, 784] @ X^T [784, 64]`, with W^T
contiguous in memory, it took about 10% less time on the 2-core machine this
project is developed on (`benchmarks/bench_training.py` measures the whole step).
So this step, when it is built, lays the first layer's weight out `[out, in]` in
memory (nn.Linear's layout; `Linear.weight` stays its `[in, out]` view, the
exercise's shape, and everything else reads it through its strides), leaves the
other layers' `[in, out]`, and keeps every activation transposed,
`[features, batch]`. In this form the first layer's forward, the
largest GEMM, took about 28% less time with its weight stored `[out, in]` than
`[in, out]`; that layer computes no input gradient. The other layers' input
gradients `W dZ^T` took about 25% less with `[in, out]` (both on that machine,
batch 64). BLAS takes a dense matrix in either order, so the step runs on
weights dense in either order (`dense`). Per step:

    forward    H_i^T = sigmoid(W_i^T H_{i-1}^T + b_i)     (H_0^T = X^T, a view)
    loss       log-softmax down each column of Z^T, the mean of -log p[target]
    backward   G^T = P^T - onehot^T; for each layer from the last:
               dZ^T = G^T, or dH^T * H^T * (1 - H^T) after a sigmoid
               dH_{i-1}^T = W_i dZ^T        (before the step; not for the first layer)
               W_i^T -= lr * scale * dZ^T H_{i-1}     (the gradient GEMM is the step)
               b_i   -= lr * scale * dZ^T 1      (a gemv: the rows' sums)

It computes what `FusedStep` computes on the reference backend, the same
operations in another memory order: the results differ only by the rounding of
the sums. Where it cannot run (another backend selected, a dtype other than fp32
or fp64, a weight assigned since that is not `dense`), it hands the batch to the
step it was given as `fallback`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from tritonnet import checks, reference
from tritonnet.backend import ops_for
from tritonnet.layers import gradient_scale

# The dtypes CPU BLAS runs the step in at full speed.
DTYPES = (torch.float32, torch.float64)


@dataclass
class _ParameterViews:
    """The views the step hands BLAS, made once rather than at every step: each
    weight as `[out, in]` and each bias as an `[out, 1]` column. `sources` are the
    tensors they view; a layer given a new tensor is seen there. `dense`: whether
    every weight is dense in one order or the other, as the step needs."""

    sources: list[tuple[torch.Tensor, torch.Tensor]]
    weights_t: list[torch.Tensor]
    bias_columns: list[torch.Tensor]
    dense: bool

    @classmethod
    def of(cls, linears) -> _ParameterViews:
        return cls(
            sources=[(linear.weight, linear.bias) for linear in linears],
            weights_t=[linear.weight.t() for linear in linears],
            bias_columns=[linear.bias.unsqueeze(1) for linear in linears],
            dense=all(dense(linear.weight) for linear in linears),
        )

    def current(self, linears) -> bool:
        return all(
            weight is linear.weight and bias is linear.bias
            for (weight, bias), linear in zip(self.sources, linears)
        )


@dataclass
class FeatureMajorWorkspace:
    """Buffers of one batch size, transposed: `[features, rows]`."""

    hidden: list[torch.Tensor]  # each hidden layer's output H^T
    hidden_rows: list[torch.Tensor]  # the same as `[rows, features]` views
    grad_hidden: list[torch.Tensor]  # the gradient flowing into each H^T
    logits: torch.Tensor  # Z^T
    minus_ones: torch.Tensor  # `[1, rows]` of -1: subtracts the one-hot targets
    ones: torch.Tensor  # `[rows]` of 1: sums dZ^T's rows, for the bias step, in one gemv

    @classmethod
    def allocate(cls, sizes: tuple[int, ...], rows: int, dtype: torch.dtype) -> FeatureMajorWorkspace:
        def empty(features: int) -> torch.Tensor:
            return torch.empty(features, rows, dtype=dtype)

        hidden = [empty(n) for n in sizes[1:-1]]
        return cls(
            hidden=hidden,
            hidden_rows=[h.t() for h in hidden],
            grad_hidden=[empty(n) for n in sizes[1:-1]],
            logits=empty(sizes[-1]),
            minus_ones=torch.full((1, rows), -1.0, dtype=dtype),
            ones=torch.ones(rows, dtype=dtype),
        )


def stored_transposed(weight: torch.Tensor) -> bool:
    """Whether an `[in, out]` weight is the view of a contiguous `[out, in]` tensor."""
    return weight.stride(0) == 1 and weight.stride(1) == weight.shape[0]


def dense(weight: torch.Tensor) -> bool:
    """Whether BLAS can take the weight as it lies: contiguous `[in, out]`, or the
    view of a contiguous `[out, in]` tensor."""
    return weight.is_contiguous() or stored_transposed(weight)


class FeatureMajorStep:
    """`step(x, labels) -> loss`: one SGD step of `model`, a `tritonnet.MLP` on the
    CPU, computed feature-major; `fallback` takes the batches it cannot run.

    Building it lays the first layer's weight out `[out, in]` in memory (the same
    values). The layers' `input` and `output` attributes are set to `[rows,
    features]` views of the activations, as `FusedStep` sets them; `grad_weight`
    and `grad_bias` to None. A label out of range raises a ValueError naming the
    labels before any parameter changes.
    """

    def __init__(self, model, fallback: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> None:
        first = model.linears[0]
        if not stored_transposed(first.weight):
            first.weight = first.weight.t().contiguous().t()
        self.model = model
        self.fallback = fallback
        self.workspaces: dict[int, FeatureMajorWorkspace] = {}  # by batch size, made at its first step
        self._views: _ParameterViews | None = None

    def _parameters(self) -> _ParameterViews:
        """The views of the layers' parameters, made again when a layer has been
        given a new tensor since the last step."""
        linears = self.model.linears
        if self._views is None or not self._views.current(linears):
            self._views = _ParameterViews.of(linears)
        return self._views

    @torch.no_grad()  # the exercise API's step: tensors that require grad are read as plain ones
    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model = self.model
        x, labels = checks.check_batch(x, labels, model.linears[0].weight, model.sizes[0], model.sizes[-1])
        if ops_for(x) is not reference or x.dtype not in DTYPES:
            return self.fallback(x, labels)
        views = self._parameters()
        if not views.dense:
            return self.fallback(x, labels)
        rows = x.shape[0]
        workspace = self.workspaces.get(rows)
        if workspace is None:
            workspace = FeatureMajorWorkspace.allocate(model.sizes, rows, x.dtype)
            self.workspaces[rows] = workspace
        return self._step(x, labels, views, workspace)

    def _step(
        self, x: torch.Tensor, labels: torch.Tensor, views: _ParameterViews, workspace: FeatureMajorWorkspace
    ) -> torch.Tensor:
        """The step on a checked batch; the labels' range is checked by the loss."""
        model = self.model
        linears = model.linears
        inputs = [x, *workspace.hidden_rows]  # each layer's input, `[rows, features]`

        previous = x.t()
        for index, (sigmoid, hidden) in enumerate(zip(model.sigmoids, workspace.hidden)):
            torch.addmm(views.bias_columns[index], views.weights_t[index], previous, out=hidden)
            hidden.sigmoid_()
            sigmoid.output = inputs[index + 1]
            previous = hidden
        last = len(linears) - 1
        logits = torch.addmm(views.bias_columns[last], views.weights_t[last], previous, out=workspace.logits)

        targets = labels.long()
        log_probabilities = torch.log_softmax(logits, dim=0)
        try:
            # The labels' range check: on the CPU both ops check every index (nll_loss
            # lets -100, its ignore_index, through; scatter_add_ does not), before any
            # parameter changes. Cheaper than a pass of its own, in a step this short.
            loss = torch.nn.functional.nll_loss(log_probabilities.t(), targets)
            grad = log_probabilities.exp_()  # P^T, then P^T - onehot^T
            grad.scatter_add_(0, targets.unsqueeze(0), workspace.minus_ones)
        except (IndexError, RuntimeError):
            checks.check_label_range("labels", labels, logits.shape[0])  # the error that names them
            raise

        rows = x.shape[0]
        for index in range(last, -1, -1):
            linear = linears[index]
            linear.input = inputs[index]
            step = -model.lr * gradient_scale(model.grad_scale, rows, linear.in_features)
            if index > 0:
                grad_input = workspace.grad_hidden[index - 1]
                torch.mm(linear.weight, grad, out=grad_input)
            views.weights_t[index].addmm_(grad, inputs[index], alpha=step)
            linear.bias.addmv_(grad, workspace.ones, alpha=step)
            linear.grad_weight = linear.grad_bias = None
            if index > 0:  # dZ^T of the layer below, in place of its dH^T
                grad = torch.ops.aten.sigmoid_backward.grad_input(
                    grad_input, workspace.hidden[index - 1], grad_input=grad_input
                )
        return loss
