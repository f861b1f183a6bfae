"""Drop-in `torch.nn` modules on tritonnet's fused operations.

Parameters have nn.Linear's names, layout (`weight` `[out_features, in_features]`)
and initialization, so a state_dict moves both ways between these modules and
torch's, and torch.optim, `torch.no_grad()`, `torch.autocast` and
`torch.compile` work as with torch's own (see `tritonnet.functional`).

`LinearSigmoid` is `nn.Linear` followed by `nn.Sigmoid` in one fused operation,
and `MLP` chains them as the exercise's network does, ending in a `Linear` that
returns logits. `MLP.loss` runs the whole network with the softmax and the
cross-entropy as one fused operation (one autograd node). `MLP` also converts the exercise's state (a `tritonnet train`
checkpoint's parameters) both ways, and hands its weights to a plain
`nn.Sequential` (see docs/drop-in.md).
"""

from __future__ import annotations

from collections.abc import Mapping

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

    `forward` returns the logits (apply `Softmax` for probabilities), layer by
    layer; `loss` returns the mean cross-entropy from the whole network, softmax
    and loss fused into one operation.

    `layers[i]` has the exercise's `linears.{i}` weights, transposed: the exercise
    (`tritonnet.MLP`, and the checkpoints of `tritonnet train`) stores each weight
    `[in_features, out_features]` under `linears.{i}.weight`, nn.Linear
    `[out_features, in_features]`. `from_exercise_state_dict`,
    `load_exercise_state_dict` and `to_exercise_state_dict` convert between the two.
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
        *hidden, _ = self.layers  # slicing a ModuleList would build a new one at every call
        for layer in hidden:
            x = layer(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits `[..., sizes[-1]]` for inputs `[..., sizes[0]]`."""
        *_, output_layer = self.layers
        return output_layer(self.hidden(x))

    def loss(self, x: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy against class indices `target` (shaped `x` without its
        last dimension): the whole network, softmax and loss as one fused operation
        (`functional.mlp_cross_entropy`), so the layers' own forward hooks are not
        called here; `forward` calls them."""
        weights, biases = [], []
        # Read from the modules' dicts: each `layer.weight` is a Module.__getattr__,
        # together ten times this loop. A parametrized weight or bias
        # (torch.nn.utils.parametrize) is not in `_parameters`: its property computes it.
        for layer in self._modules["layers"]._modules.values():
            parameters = layer._parameters
            weight = parameters.get("weight")
            weights.append(layer.weight if weight is None else weight)
            biases.append(parameters["bias"] if "bias" in parameters else layer.bias)
        return functional.mlp_cross_entropy(x, weights, biases, target)

    def extra_repr(self) -> str:
        return f"sizes={self.sizes}"

    # --- the exercise's state, and plain torch.nn ---------------------------------

    @classmethod
    def from_exercise_state_dict(
        cls,
        state: Mapping[str, torch.Tensor],
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> MLP:
        """A network holding the parameters of `state`, saved under the exercise's
        names and layout: what `tritonnet.MLP.state_dict()` returns and what a
        `tritonnet train` checkpoint holds under "parameters". The sizes are read
        from the weights' shapes; the dtype is theirs unless `dtype` is given."""
        sizes = _exercise_sizes(state)
        dtype = dtype or state["linears.0.weight"].dtype
        # Built on the meta device: no initial weights are drawn, and none are wasted.
        model = cls(sizes, device="meta", dtype=dtype).to_empty(device=device or "cpu")
        model.load_exercise_state_dict(state)
        return model

    @torch.no_grad()
    def load_exercise_state_dict(self, state: Mapping[str, torch.Tensor]) -> None:
        """Copy parameters saved under the exercise's names and layout (weights
        `[in, out]`) into this network, checking every key and shape first."""
        expected = {}
        for index, layer in enumerate(self.layers):
            expected[f"linears.{index}.weight"] = (layer.in_features, layer.out_features)
            expected[f"linears.{index}.bias"] = (layer.out_features,)
        state = _check_state(state)
        for key, shape in expected.items():
            if key not in state:
                raise ValueError(f"state is missing {key!r}")
            value = checks.check_tensor(f"state[{key!r}]", state[key])
            if tuple(value.shape) != shape:
                raise ValueError(f"state[{key!r}] has shape {tuple(value.shape)}, expected {shape}")
        unexpected = sorted(set(state) - set(expected))
        if unexpected:
            raise ValueError(f"state has keys this network of sizes {self.sizes} does not: {unexpected}")
        for index, layer in enumerate(self.layers):
            layer.weight.copy_(state[f"linears.{index}.weight"].t())
            layer.bias.copy_(state[f"linears.{index}.bias"])

    def to_exercise_state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters under the exercise's names and layout, as contiguous CPU
        tensors: what `tritonnet.MLP.load_state_dict` takes and checkpoints hold."""
        state = {}
        for index, layer in enumerate(self.layers):
            state[f"linears.{index}.weight"] = layer.weight.detach().t().contiguous().cpu()
            state[f"linears.{index}.bias"] = layer.bias.detach().cpu().clone()
        return state

    def to_sequential(self) -> nn.Sequential:
        """A plain `torch.nn.Sequential(Linear, Sigmoid, ..., Linear)` holding a copy
        of these parameters, on their device and dtype: the same logits, with no
        tritonnet needed to run it."""
        weight = self.layers[0].weight
        modules: list[nn.Module] = []
        for layer in self.layers:
            # On the meta device, so that building it draws nothing from the generator.
            linear = nn.Linear(layer.in_features, layer.out_features, device="meta", dtype=weight.dtype)
            modules += [linear, nn.Sigmoid()]
        sequential = nn.Sequential(*modules[:-1]).to_empty(device=weight.device)
        state = {}
        for index, layer in enumerate(self.layers):
            # In the Sequential, a Sigmoid stands between each two Linears.
            state[f"{2 * index}.weight"], state[f"{2 * index}.bias"] = layer.weight, layer.bias
        sequential.load_state_dict(state)
        return sequential


def _check_state(state: object) -> Mapping[str, torch.Tensor]:
    if not isinstance(state, Mapping):
        raise TypeError(f"state must be a mapping of names to tensors, got {type(state).__name__}")
    return state


def _exercise_sizes(state: object) -> tuple[int, ...]:
    """The layer sizes of a state saved under the exercise's names: `linears.{i}.weight`
    is `[sizes[i], sizes[i + 1]]`, for i from 0 as long as the key is there."""
    state = _check_state(state)
    if "linears.0.weight" not in state:
        raise ValueError(
            "state is missing 'linears.0.weight': it must hold the exercise's parameters "
            "(tritonnet.MLP.state_dict(), or a tritonnet train checkpoint's 'parameters')"
        )
    weights: list[torch.Tensor] = []
    while f"linears.{len(weights)}.weight" in state:
        key = f"linears.{len(weights)}.weight"
        rows = weights[-1].shape[1] if weights else None  # the previous layer's out_features
        weights.append(checks.check_matrix(f"state[{key!r}]", state[key], rows=rows))
    return (weights[0].shape[0], *(weight.shape[1] for weight in weights))
