"""The exercise's network, `MLP`: Linear -> Sigmoid -> ... -> Linear -> Softmax.

The layers are the exercise's `Linear` and `Sigmoid` objects, and their attributes
(`input`, `output`, `grad_weight`, `grad_bias`) hold what the exercise's would.
What differs is how the MLP drives them: each Linear and the Sigmoid after it run
as one fused operation (`linear_forward(..., "sigmoid")`, `linear_backward(...,
"sigmoid")`), which on the Triton backend is one kernel launch instead of three.

`train_step` is the fast path the trainer uses. It fuses the output layer with
the softmax and the cross-entropy (one launch for logits, probabilities, loss and
loss gradient), skips the gradient of the input images, and writes into buffers
kept from step to step. It computes exactly what `forward`, `compute_loss`,
`backward(compute_gradient(...))` and `update` compute one after another.

On the CPU the first layer's weight is stored `[out, in]` in memory and its
`Linear.weight` is the `[in, out]` view: the trainer's CPU step runs feature-major
(`feature_major.py`), where BLAS is faster with that layout for the first layer
and with `[in, out]` for the others. Everything else reads the weights through
their strides, as it reads any view.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from tritonnet import checks, feature_major, reference
from tritonnet.backend import ops_for
from tritonnet.layers import GRAD_SCALES, Linear, Sigmoid, gradient_scale

EXERCISE_SIZES = (784, 512, 128, 10)


@dataclass
class _Workspace:
    """Buffers of one batch size, reused by every `train_step` of that size."""

    activations: list[torch.Tensor]  # the output of each hidden layer
    grad_inputs: list[torch.Tensor]  # the gradient flowing into each hidden layer's output
    probabilities: torch.Tensor
    grad_logits: torch.Tensor


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
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least an input and an output size, got {sizes}")
        for size in sizes:
            checks.check_positive_int("sizes", size)
        self.sizes = sizes
        self.linears = [
            Linear(n_in, n_out, batch_size, lr, device=device, dtype=dtype, grad_scale=grad_scale)
            for n_in, n_out in zip(sizes[:-1], sizes[1:])
        ]
        self.sigmoids = [Sigmoid(n, batch_size) for n in sizes[1:-1]]
        if self.device.type == "cpu":  # the same values, stored [out, in]
            first = self.linears[0]
            first.weight = first.weight.t().contiguous().t()
        self._workspaces: dict[int, _Workspace] = {}
        self._feature_major_workspaces: dict[int, feature_major.FeatureMajorWorkspace] = {}

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

    def update(self) -> None:
        """One SGD step on every Linear."""
        for linear in self.linears:
            linear.update()

    def _feature_major_workspace(self, ops, x: torch.Tensor) -> feature_major.FeatureMajorWorkspace | None:
        """`feature_major`'s buffers for this batch size (allocated at its first
        step) where the fused step can run feature-major: the reference backend on
        the CPU, fp32 or fp64, and every weight `feature_major.dense` (a weight
        assigned since may be laid out otherwise). Else None."""
        if ops is not reference or x.device.type != "cpu" or x.dtype not in (torch.float32, torch.float64):
            return None
        rows = x.shape[0]
        workspace = self._feature_major_workspaces.get(rows)
        if workspace is None:
            workspace = feature_major.FeatureMajorWorkspace.allocate(self.sizes, rows, x.dtype)
            self._feature_major_workspaces[rows] = workspace
        return workspace if workspace.parameters_of(self.linears).dense else None

    def _workspace(self, rows: int) -> _Workspace:
        workspace = self._workspaces.get(rows)
        if workspace is None:
            def empty(cols: int) -> torch.Tensor:
                return torch.empty(rows, cols, device=self.device, dtype=self.dtype)

            workspace = _Workspace(
                activations=[empty(n) for n in self.sizes[1:-1]],
                grad_inputs=[empty(n) for n in self.sizes[1:-1]],
                probabilities=empty(self.sizes[-1]),
                grad_logits=empty(self.sizes[-1]),
            )
            self._workspaces[rows] = workspace
        return workspace

    def _ensure_grad_buffers(self) -> None:
        for linear in self.linears:
            if linear.grad_weight is None:
                linear.grad_weight = torch.empty_like(linear.weight)
                linear.grad_bias = torch.empty_like(linear.bias)

    def train_step(self, x: torch.Tensor, labels: torch.Tensor, *, keep_gradients: bool = True) -> torch.Tensor:
        """One SGD step on a batch; returns its mean loss as a 0-dim tensor.

        `labels` are class indices `[batch]`. The loss stays on the device: reading
        it (`.item()`) waits for the GPU, so callers read it only when they need it.
        With `keep_gradients=False` (the trainer's choice) each layer's backward and
        SGD step run as one operation (`linear_backward_sgd`), which never writes
        the gradients out; the layers' `grad_weight` and `grad_bias` are then None.
        On the reference backend on the CPU that step runs feature-major
        (`feature_major.train_step`), while the weights are dense.
        """
        x = self._check_input(x)
        rows = x.shape[0]
        labels = checks.check_labels("labels", labels, rows, self.sizes[-1], check_range=False)
        if labels.device != x.device:
            checks.check_same_device(x=x, labels=labels)
        ops = ops_for(x)
        if not keep_gradients:
            transposed_workspace = self._feature_major_workspace(ops, x)
            if transposed_workspace is not None:  # it checks the labels' range itself
                return feature_major.train_step(self, x, labels, transposed_workspace)
        # On a GPU the range check would wait for the device at every step; there
        # the fused kernel gives a NaN loss for a label out of range instead.
        if labels.device.type == "cpu":
            checks.check_label_range("labels", labels, self.sizes[-1])
        workspace = self._workspace(rows)
        if keep_gradients:
            self._ensure_grad_buffers()

        hidden = x
        for linear, sigmoid, out in zip(self.linears, self.sigmoids, workspace.activations):
            linear.input = hidden
            hidden = ops.linear_forward(hidden, linear.weight, linear.bias, "sigmoid", out=out)
            sigmoid.output = hidden
        output_layer = self.linears[-1]
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

        activation, output = "none", None
        for index in reversed(range(len(self.linears))):
            linear = self.linears[index]
            scale = self._scale(linear, rows)
            grad_input = workspace.grad_inputs[index - 1] if index > 0 else None
            if keep_gradients:
                grad, _, _ = ops.linear_backward(
                    grad, linear.input, linear.weight, output, activation, scale,
                    need_grad_input=index > 0,
                    out_grad_input=grad_input,
                    out_grad_weight=linear.grad_weight,
                    out_grad_bias=linear.grad_bias,
                )
            else:
                # The step changes this layer's weight, which no later step of this
                # backward reads: grad_input is computed before the update.
                grad = ops.linear_backward_sgd(
                    grad, linear.input, linear.weight, linear.bias, output, activation, scale,
                    self.lr, need_grad_input=index > 0, out_grad_input=grad_input,
                )
                linear.grad_weight = linear.grad_bias = None
            if index > 0:
                activation, output = "sigmoid", self.sigmoids[index - 1].output
        if keep_gradients:
            for linear in self.linears:
                ops.sgd_update(linear.weight, linear.bias, linear.grad_weight, linear.grad_bias, self.lr)
        return loss

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
                if tuple(state[key].shape) != tuple(target.shape):
                    raise ValueError(
                        f"state[{key!r}] has shape {tuple(state[key].shape)}, "
                        f"expected {tuple(target.shape)}"
                    )
                target.copy_(state[key])

    def __repr__(self) -> str:
        return f"MLP(sizes={self.sizes}, lr={self.lr}, grad_scale={self.grad_scale!r})"
