"""`FusedStep`: the exercise MLP's SGD step in as few operations as it takes.

It computes what `forward`, `compute_loss`, `backward(compute_gradient(...))` and
`update` compute one after another, with three fusions:
- each hidden Linear with the Sigmoid after it (`linear_forward(..., "sigmoid")`);
- the output layer with the softmax and the cross-entropy
  (`linear_cross_entropy`: one launch for logits, probabilities, loss and the
  loss gradient);
- each layer's backward with its SGD step (`linear_backward_sgd`), which never
  writes the gradients out.
It skips the gradient of the input images and writes into buffers kept from step
to step, one set per batch size. The operations come from `ops_for`, so the same
step runs the Triton kernels or the reference. Nothing in it reads a value back
from the device and its buffers keep their addresses, so it suits CUDA graph
capture (`cuda_graph.GraphedStep`), for which `capture_key` says what it reads.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tritonnet import checks
from tritonnet.backend import get_backend, ops_for
from tritonnet.layers import gradient_scale


@dataclass
class Workspace:
    """Buffers of one batch size, reused by every step of that size."""

    activations: list[torch.Tensor]  # the output of each hidden layer
    grad_inputs: list[torch.Tensor]  # the gradient flowing into each hidden layer's output
    probabilities: torch.Tensor
    grad_logits: torch.Tensor

    @classmethod
    def allocate(cls, sizes: tuple[int, ...], rows: int, device: torch.device, dtype: torch.dtype) -> Workspace:
        def empty(cols: int) -> torch.Tensor:
            return torch.empty(rows, cols, device=device, dtype=dtype)

        return cls(
            activations=[empty(n) for n in sizes[1:-1]],
            grad_inputs=[empty(n) for n in sizes[1:-1]],
            probabilities=empty(sizes[-1]),
            grad_logits=empty(sizes[-1]),
        )


class FusedStep:
    """`step(x, labels) -> loss`: one SGD step of `model`, a `tritonnet.MLP`.

    `labels` are class indices `[batch]`; the loss is their mean cross-entropy as a
    0-dim tensor on the model's device, read back only when the caller needs it.
    The layers' `input` and `output` are set as `forward` sets them, and their
    `grad_weight` and `grad_bias` to None: the gradients are never formed. On a GPU
    the labels' range is not checked, since that would wait for the device at
    every step; the fused loss is NaN for a label out of range instead.
    """

    def __init__(self, model) -> None:
        self.model = model
        self.workspaces: dict[int, Workspace] = {}  # by batch size, made at its first step

    def capture_key(self) -> tuple:
        """What a captured step depends on besides the batch's values: the learning
        rate, the gradient scaling, the backend, the matmul precision and the
        addresses of the parameters it trains."""
        model = self.model
        return (
            model.lr,
            model.grad_scale,
            get_backend(),
            torch.get_float32_matmul_precision(),
            tuple(t.data_ptr() for linear in model.linears for t in (linear.weight, linear.bias)),
        )

    def _workspace(self, rows: int) -> Workspace:
        workspace = self.workspaces.get(rows)
        if workspace is None:
            model = self.model
            workspace = Workspace.allocate(model.sizes, rows, model.device, model.dtype)
            self.workspaces[rows] = workspace
        return workspace

    @torch.no_grad()  # the exercise API's step: tensors that require grad are read as plain ones
    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x, labels = self._check(x, labels)
        ops = ops_for(x)
        rows = x.shape[0]
        workspace = self._workspace(rows)
        loss, grad = self._forward(ops, x, labels, workspace)
        model = self.model
        activation, output = "none", None
        for index in reversed(range(len(model.linears))):
            linear = model.linears[index]
            # The step changes this layer's weight, which no later step of this
            # backward reads: grad_input is computed before the update.
            grad = ops.linear_backward_sgd(
                grad,
                linear.input,
                linear.weight,
                linear.bias,
                output,
                activation,
                gradient_scale(model.grad_scale, rows, linear.in_features),
                model.lr,
                need_grad_input=index > 0,
                out_grad_input=workspace.grad_inputs[index - 1] if index > 0 else None,
            )
            linear.grad_weight = linear.grad_bias = None
            if index > 0:
                activation, output = "sigmoid", model.sigmoids[index - 1].output
        return loss

    def _check(self, x: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
        model = self.model
        x, labels = checks.check_batch(x, labels, model.linears[0].weight, model.sizes[0], model.sizes[-1])
        if labels.device.type == "cpu":
            checks.check_label_range("labels", labels, model.sizes[-1])
        return x, labels

    def _forward(self, ops, x: torch.Tensor, labels: torch.Tensor, workspace: Workspace) -> tuple[torch.Tensor, torch.Tensor]:
        """The forward pass and the loss: sets the layers' `input` and `output` as
        `forward` does; returns the mean loss and the summed loss's gradient of
        the logits, `p - onehot`."""
        model = self.model
        hidden = x
        for linear, sigmoid, out in zip(model.linears, model.sigmoids, workspace.activations):
            linear.input = hidden
            hidden = ops.linear_forward(hidden, linear.weight, linear.bias, "sigmoid", out=out)
            sigmoid.output = hidden
        output_layer = model.linears[-1]
        output_layer.input = hidden
        _, loss, grad = ops.linear_cross_entropy(
            hidden,
            output_layer.weight,
            output_layer.bias,
            labels,
            1.0,
            out_probabilities=workspace.probabilities,
            out_grad_logits=workspace.grad_logits,
        )
        return loss, grad
