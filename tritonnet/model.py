"""The exercise's network, `MLP`: Linear -> Sigmoid -> ... -> Linear -> Softmax.

The layers are the exercise's `Linear` and `Sigmoid` objects, and their attributes
(`input`, `output`, `grad_weight`, `grad_bias`) hold what the exercise's would.
What differs is how the MLP drives them: each Linear and the Sigmoid after it run
as one fused operation (`linear_forward(..., "sigmoid")`, `linear_backward(...,
"sigmoid")`), which on the Triton backend is one kernel launch instead of three.

The MLP is the exercise and only that: `forward`, `backward`, `update`,
`evaluate` and the state. The trainer's faster step (`tritonnet.make_step`)
computes what `forward`, `compute_loss`, `backward(compute_gradient(...))` and
`update` compute one after another, and lives beside it (`step.py`). The MLP
reads its weights through their strides, so a step may lay them out as it needs.
"""

from __future__ import annotations

import torch

from tritonnet import checks
from tritonnet.backend import ops_for
from tritonnet.layers import GRAD_SCALES, Linear, Sigmoid, gradient_scale

EXERCISE_SIZES = (784, 512, 128, 10)


class MLP:
    """The exercise's MLP: `sizes[0]` inputs, sigmoid hidden layers, softmax output."""

    def __init__(
        self,
        batch_size: int,
        lr: float,
        sizes: tuple[int, ...] = EXERCISE_SIZES,
        *,
        grad_scale: str = "batch",
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> None:
        self.batch_size = checks.check_positive_int("batch_size", batch_size)
        self.lr = checks.check_learning_rate("lr", lr)
        self.grad_scale = checks.check_choice("grad_scale", grad_scale, GRAD_SCALES)
        self.sizes = sizes = checks.check_sizes("sizes", sizes)
        self.linears = [
            Linear(n_in, n_out, batch_size, lr, device=device, dtype=dtype, grad_scale=grad_scale)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        ]
        self.sigmoids = [Sigmoid(n, batch_size) for n in sizes[1:-1]]

    @property
    def layers(self) -> list[Linear | Sigmoid]:
        """The layers in order, as the exercise lists them (the softmax is a function)."""
        ordered: list[Linear | Sigmoid] = []
        for linear, sigmoid in zip(self.linears, self.sigmoids):
            ordered += [linear, sigmoid]
        return ordered + [self.linears[-1]]

    @property
    def device(self) -> torch.device:
        return self.linears[0].weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.linears[0].weight.dtype

    def _check_input(self, x: object) -> torch.Tensor:
        x = checks.check_matrix("x", x, cols=self.sizes[0])
        weight = self.linears[0].weight
        if x.device != weight.device or x.dtype != weight.dtype:  # the checks that say which
            checks.check_same_device(x=x, weight=weight)
            checks.check_same_dtype(x=x, weight=weight)
        return x

    def _scale(self, linear: Linear, rows: int) -> float:
        return gradient_scale(self.grad_scale, rows, linear.in_features)

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class probabilities `[batch, classes]` for inputs `[batch, sizes[0]]`."""
        x = self._check_input(x)
        ops = ops_for(x)
        hidden = x
        for linear, sigmoid in zip(self.linears, self.sigmoids):
            linear.input = hidden
            hidden = ops.linear_forward(hidden, linear.weight, linear.bias, "sigmoid")
            sigmoid.output = hidden
        output_layer = self.linears[-1]
        output_layer.input = hidden
        return ops.softmax(ops.linear_forward(hidden, output_layer.weight, output_layer.bias))

    __call__ = forward

    @torch.no_grad()
    def backward(self, gradient: torch.Tensor) -> None:
        """Backpropagate `gradient = p - t` from the softmax output to every layer.

        Sets each Linear's `grad_weight` and `grad_bias`. The gradient of the input
        images is never needed, so it is not computed.
        """
        if self.linears[-1].input is None:
            raise RuntimeError("MLP.backward called before forward")
        rows = self.linears[-1].input.shape[0]
        gradient = checks.check_matrix("gradient", gradient, cols=self.sizes[-1], rows=rows)
        checks.check_same_device(gradient=gradient, weight=self.linears[0].weight)
        checks.check_same_dtype(gradient=gradient, weight=self.linears[0].weight)
        ops = ops_for(gradient)
        grad = gradient
        activation, output = "none", None
        for index in reversed(range(len(self.linears))):
            linear = self.linears[index]
            grad, linear.grad_weight, linear.grad_bias = ops.linear_backward(
                grad,
                linear.input,
                linear.weight,
                output,
                activation,
                self._scale(linear, rows),
                need_grad_input=index > 0,
            )
            if index > 0:
                activation, output = "sigmoid", self.sigmoids[index - 1].output

    @torch.no_grad()
    def update(self) -> None:
        """One SGD step on every Linear."""
        for linear in self.linears:
            linear.update()

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and the number of correct predictions on a batch, as 0-dim tensors."""
        x = self._check_input(x)
        labels = checks.check_labels("labels", labels, x.shape[0], self.sizes[-1])
        ops = ops_for(x)
        hidden = x
        for linear in self.linears[:-1]:
            hidden = ops.linear_forward(hidden, linear.weight, linear.bias, "sigmoid")
        output_layer = self.linears[-1]
        probabilities, loss, _ = ops.linear_cross_entropy(
            hidden, output_layer.weight, output_layer.bias, labels, 1.0
        )
        correct = (probabilities.argmax(dim=1) == labels).sum()
        return loss, correct

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters by name (`linears.0.weight`, ...), as CPU tensors."""
        state = {}
        for index, linear in enumerate(self.linears):
            # Contiguous, whatever the layout in memory: checkpoints hold [in, out].
            weight = linear.weight.detach().cpu()
            state[f"linears.{index}.weight"] = weight.clone(memory_format=torch.contiguous_format)
            state[f"linears.{index}.bias"] = linear.bias.detach().cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy parameters saved by `state_dict` into this network, checking shapes."""
        for index, linear in enumerate(self.linears):
            for name in ("weight", "bias"):
                key = f"linears.{index}.{name}"
                if key not in state:
                    raise ValueError(f"state is missing {key!r}")
                target = getattr(linear, name)
                checks.check_tensor(f"state[{key!r}]", state[key])
                if tuple(state[key].shape) != tuple(target.shape):
                    raise ValueError(
                        f"state[{key!r}] has shape {tuple(state[key].shape)}, "
                        f"expected {tuple(target.shape)}"
                    )
                target.copy_(state[key])

    def __repr__(self) -> str:
        return f"MLP(sizes={self.sizes}, lr={self.lr}, grad_scale={self.grad_scale!r})"
