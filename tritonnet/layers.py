"""The exercise's layer API: `Linear`, `Sigmoid`, `Softmax`, the loss and its gradient.

These classes keep the exercise's names and calling conventions (weights `[in, out]`,
explicit `forward`/`backward`/`update`, no autograd) and run every operation
through `tritonnet.backend.ops_for`, so the same code trains on Triton kernels on a
GPU and on the PyTorch reference on a CPU.

No autograd: the layers compute their gradients themselves, so `Linear`, `Sigmoid`,
`Softmax` and `MLP` run under `torch.no_grad()`. Inputs and weights that require
grad are read as plain tensors, and no output requires grad, on either backend.
(`compute_loss` and `compute_gradient` are torch expressions and follow autograd.)
For autograd through the network, use the drop-in modules of `tritonnet.nn`.

Gradient normalization, `grad_scale`:
    The gradient fed to `MLP.backward` is `compute_gradient(t, p) = p - t`, the
    gradient of the *summed* cross-entropy over the batch. Each `Linear.backward`
    then multiplies its `grad_weight` and `grad_bias` (not the `grad_input` it
    passes on) by a factor chosen by `grad_scale`:
    - "batch" (default): 1 / batch rows, the gradient of the mean loss;
    - "features": 1 / in_features, as the report's solution does;
    - "none": 1, the plain sum over the batch, as the exercise template.
    "features" and "none" change the effective learning rate; that is why the
    report found lr 1.0 best.
"""

from __future__ import annotations

import math

import torch

from tritonnet import checks
from tritonnet.backend import ops_for

GRAD_SCALES = ("batch", "features", "none")


def gradient_scale(grad_scale: str, batch_rows: int, in_features: int) -> float:
    """The factor applied to a layer's weight and bias gradients (see module doc)."""
    if grad_scale == "batch":
        return 1.0 / max(batch_rows, 1)
    if grad_scale == "features":
        return 1.0 / in_features
    return 1.0


class Linear:
    """`output = input @ weight + bias`, with `weight` `[in_features, out_features]`.

    `batch_size` is the batch the layer expects; other batch sizes work too.
    Weight and bias start as `randn * sqrt(1 / in_features)`, drawn on the CPU from
    torch's global RNG so that one seed gives the same network on every device.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int,
        batch_size: int,
        lr: float = 0.1,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype = torch.float32,
        grad_scale: str = "batch",
    ) -> None:
        self.in_features = checks.check_positive_int("in_features", in_features)
        self.out_features = checks.check_positive_int("out_features", out_features)
        self.batch_size = checks.check_positive_int("batch_size", batch_size)
        self.grad_scale = checks.check_choice("grad_scale", grad_scale, GRAD_SCALES)
        if dtype not in checks.FLOAT_DTYPES:
            raise TypeError(f"dtype must be a floating dtype, got {dtype}")
        self.lr = checks.check_learning_rate("lr", lr, dtype)
        std = math.sqrt(1.0 / in_features)
        self.weight = (torch.randn(in_features, out_features, device="cpu") * std).to(device=device, dtype=dtype)
        self.bias = (torch.randn(out_features, device="cpu") * std).to(device=device, dtype=dtype)
        self.input: torch.Tensor | None = None
        self.grad_weight: torch.Tensor | None = None
        self.grad_bias: torch.Tensor | None = None

    def _check_input(self, name: str, tensor: object, cols: int, rows: int | None = None) -> torch.Tensor:
        tensor = checks.check_matrix(name, tensor, cols=cols, rows=rows)
        checks.check_same_device(**{name: tensor, "weight": self.weight})
        checks.check_same_dtype(**{name: tensor, "weight": self.weight})
        return tensor

    @torch.no_grad()
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        """Save `input` `[batch, in_features]` and return `input @ weight + bias`."""
        self.input = self._check_input("input", input, self.in_features)
        return ops_for(input, self.weight).linear_forward(input, self.weight, self.bias)

    @torch.no_grad()
    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        """Set `grad_weight` and `grad_bias` (scaled by `grad_scale`); return `grad_input`."""
        if self.input is None:
            raise RuntimeError("Linear.backward called before forward")
        grad_output = self._check_input(
            "grad_output", grad_output, self.out_features, rows=self.input.shape[0]
        )
        scale = gradient_scale(self.grad_scale, self.input.shape[0], self.in_features)
        grad_input, self.grad_weight, self.grad_bias = ops_for(grad_output, self.weight).linear_backward(
            grad_output, self.input, self.weight, None, "none", scale
        )
        return grad_input

    @torch.no_grad()
    def update(self) -> None:
        """One SGD step: `weight -= lr * grad_weight`, `bias -= lr * grad_bias`."""
        if self.grad_weight is None:
            raise RuntimeError("Linear.update called before backward")
        ops_for(self.weight).sgd_update(self.weight, self.bias, self.grad_weight, self.grad_bias, self.lr)

    __call__ = forward

    def __repr__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"lr={self.lr}, grad_scale={self.grad_scale!r})"
        )


class Sigmoid:
    """`1 / (1 + exp(-input))`; its backward uses the saved output, `g * y * (1 - y)`."""

    def __init__(self, in_features: int, batch_size: int) -> None:
        self.in_features = checks.check_positive_int("in_features", in_features)
        self.batch_size = checks.check_positive_int("batch_size", batch_size)
        self.output: torch.Tensor | None = None

    @torch.no_grad()
    def forward(self, input: torch.Tensor) -> torch.Tensor:
        input = checks.check_matrix("input", input, cols=self.in_features)
        self.output = ops_for(input).sigmoid_forward(input)
        return self.output

    @torch.no_grad()
    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        if self.output is None:
            raise RuntimeError("Sigmoid.backward called before forward")
        grad_output = checks.check_matrix(
            "grad_output", grad_output, cols=self.in_features, rows=self.output.shape[0]
        )
        checks.check_same_device(grad_output=grad_output, output=self.output)
        return ops_for(grad_output, self.output).sigmoid_backward(grad_output, self.output)

    __call__ = forward

    def __repr__(self) -> str:
        return f"Sigmoid(in_features={self.in_features})"


@torch.no_grad()
def Softmax(input: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax of `[batch, classes]`, stable for any logits (the row max is
    subtracted first; the exercise's version overflows above about 88)."""
    input = checks.check_matrix("input", input)
    return ops_for(input).softmax(input)


def _check_prediction_pair(target_onehot: object, prediction: object) -> tuple[torch.Tensor, torch.Tensor]:
    prediction = checks.check_matrix("prediction", prediction)
    target_onehot = checks.check_matrix(
        "target_onehot", target_onehot, cols=prediction.shape[1], rows=prediction.shape[0]
    )
    checks.check_same_device(target_onehot=target_onehot, prediction=prediction)
    return target_onehot, prediction


def compute_loss(target_onehot: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the batch, `-sum(t * log(p)) / batch`, as a 0-dim tensor.

    A probability of 0 is clamped to the smallest normal float before the log, so
    the loss stays finite (about 87.3 per row at worst in fp32).
    """
    target_onehot, prediction = _check_prediction_pair(target_onehot, prediction)
    tiny = torch.finfo(prediction.dtype).tiny
    return -(target_onehot * prediction.clamp_min(tiny).log()).sum() / prediction.shape[0]


def compute_gradient(target_onehot: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    """`prediction - target_onehot`: the gradient of the summed loss over the logits.

    It is not divided by the batch: each Linear applies its `grad_scale` to its own
    weight and bias gradients (see the module doc).
    """
    target_onehot, prediction = _check_prediction_pair(target_onehot, prediction)
    return prediction - target_onehot
