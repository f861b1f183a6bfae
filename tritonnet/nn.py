"""Drop-in `torch.nn` modules on tritonnet's fused operations.

Parameters have nn.Linear's names, layout (`weight` `[out_features, in_features]`)
and initialization, so a state_dict moves both ways between these modules and
torch's, and torch.optim, `torch.no_grad()`, `torch.autocast` and
`torch.compile` work as with torch's own (see `tritonnet.functional`).

`LinearSigmoid` is `nn.Linear` followed by `nn.Sigmoid` in one fused operation,
and `MLP` chains them as the exercise's network does, ending in a `Linear` that
returns logits. `MLP.loss` fuses that output layer with the softmax and the
cross-entropy.
"""

from __future__ import annotations

import torch
from torch import nn

from tritonnet import checks
from tritonnet import functional

EXERCISE_SIZES = (784, 512, 128, 10)


class Linear(nn.Module):
    """`x @ weight.T + bias`, as `torch.nn.Linear`."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        self.in_features = checks.check_positive_int("in_features", in_features)
        self.out_features = checks.check_positive_int("out_features", out_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, device=device, dtype=dtype))
        if bias:
            self.bias = nn.Parameter(torch.empty(out_features, device=device, dtype=dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.Linear's own initialization, so that one seed draws the same weights."""
        nn.Linear.reset_parameters(self)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.linear(input, self.weight, self.bias)

    def extra_repr(self) -> str:
        return (
            f"in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias is not None}"
        )


class LinearSigmoid(Linear):
    """`sigmoid(x @ weight.T + bias)`: `nn.Linear` then `nn.Sigmoid`, fused."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.linear_sigmoid(input, self.weight, self.bias)


class Softmax(nn.Module):
    """Softmax over dimension `dim`, as `torch.nn.Softmax`."""

    def __init__(self, dim: int = -1) -> None:
        super().__init__()
        self.dim = dim

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return functional.softmax(input, self.dim)

    def extra_repr(self) -> str:
        return f"dim={self.dim}"


class CrossEntropyLoss(nn.Module):
    """Mean cross-entropy of logits `[..., classes]` against class indices `[...]`.

    As `torch.nn.CrossEntropyLoss()` with its defaults, the softmax fused in. Only
    the mean reduction; no class weights, `ignore_index` or label smoothing.
    """

    def forward(self, input: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return functional.cross_entropy(input, target)


class MLP(nn.Module):
    """The exercise's network as a module: `LinearSigmoid` layers, then a `Linear`.

    `forward` returns the logits (apply `Softmax` for probabilities); `loss` returns
    the mean cross-entropy with the output layer, softmax and loss fused.
    `layers[i]` has the exercise's `linears.{i}` weights, transposed.
    """

    def __init__(
        self,
        sizes: tuple[int, ...] = EXERCISE_SIZES,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        sizes = tuple(sizes)
        if len(sizes) < 2:
            raise ValueError(f"sizes must list at least an input and an output size, got {sizes}")
        for size in sizes:
            checks.check_positive_int("sizes", size)
        self.sizes = sizes
        hidden = [
            LinearSigmoid(n_in, n_out, device=device, dtype=dtype)
            for n_in, n_out in zip(sizes[:-2], sizes[1:-1])
        ]
        self.layers = nn.ModuleList(hidden + [Linear(sizes[-2], sizes[-1], device=device, dtype=dtype)])

    def hidden(self, x: torch.Tensor) -> torch.Tensor:
        """The output of the last hidden layer (the input of the output layer)."""
        for layer in self.layers[:-1]:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `[..., sizes[-1]]` for inputs `[..., sizes[0]]`."""
        return self.layers[-1](self.hidden(x))

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy against class indices `target` (shaped `x` without its
        last dimension), the output layer fused with softmax and loss."""
        output_layer = self.layers[-1]
        return functional.linear_cross_entropy(
            self.hidden(x), output_layer.weight, output_layer.bias, target
        )

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"
