"""`ModuleStep`: the training step of the nn.Module twin, autograd and torch.optim.

`ModuleModel` holds the twin and its `torch.optim.SGD`; this step trains it the
way PyTorch code trains any module, so that the two APIs can be compared run for
run. The exercise scales each layer's weight and bias gradients of the *summed*
loss by its `grad_scale` factor (see `tritonnet.layers`); autograd computes the
gradients of the mean loss, the "batch" scaling, so for the others each layer's
gradients are multiplied by `batch * factor` after the backward pass.
"""

from __future__ import annotations

import torch

from tritonnet.layers import gradient_scale


class ModuleStep:
    """`step(x, labels) -> loss`: one SGD step of `model`, a `ModuleModel`; the loss
    is the batch's mean cross-entropy, detached, as a 0-dim tensor.

    The batch is checked by the loss, which checks x, the labels and, on the CPU,
    the labels' range inside the ops it runs anyway (the `nll_loss` of
    `tritonnet.reference_autograd`), before any parameter changes. Only when it
    refuses them does the step check them itself, for the error that names `x`
    and `labels`: on a CPU the same checks twice, and a pass over the labels,
    cost a few percent of a step.
    """

    # Whether the batch is checked, the labels' range included, before the step.
    check_first = False

    def __init__(self, model) -> None:
        self.model = model

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model = self.model
        # The loss takes x [..., in]; a step's batch is [rows, in].
        if self.check_first or getattr(x, "ndim", None) != 2:
            x, labels = model.check_batch(x, labels)
        model.optimizer.zero_grad()
        try:
            loss = self._backward(x, labels)
        except (TypeError, ValueError):
            model.check_batch(x, labels)  # the error that names them, if they are the cause
            raise
        if model.grad_scale != "batch":
            self._rescale_gradients(x.shape[0])
        model.optimizer.step()
        return loss

    def _backward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The batch's mean loss, detached, with its gradients in the parameters' `grad`."""
        loss = self.model.module.loss(x, labels)
        loss.backward()
        return loss.detach()

    def _rescale_gradients(self, rows: int) -> None:
        """From the mean loss's gradients (the sum's / rows) to the exercise's scaling."""
        for layer in self.model.module.layers:
            factor = rows * gradient_scale(self.model.grad_scale, rows, layer.in_features)
            layer.weight.grad.mul_(factor)
            layer.bias.grad.mul_(factor)
