"""A drop-in functional API in PyTorch's conventions, on tritonnet's fused operations.

Weights have nn.Linear's layout, `[out_features, in_features]`, and every function
is differentiable: the forward runs one fused operation, the backward calls
`linear_backward` from the same backend. Eager calls run one
`torch.autograd.Function` per operation (`tritonnet.functions`); under
`torch.compile` the same operations are custom ops (`tritonnet.library_ops`),
which Dynamo traces without a graph break.

- Leading dimensions: inputs `[..., features]` are flattened to rows and the
  result is shaped back, as `torch.nn.functional.linear` does.
- Gradients: only those autograd asks for are computed; an input that does not
  require grad costs no `grad_input` product.
- `torch.autocast`: `linear`, `linear_sigmoid` and the fused output layer run in
  the autocast dtype (bf16 or fp16), as torch's own matmuls do; the kernels
  accumulate in fp32 and round once. Softmax and cross-entropy compute in fp32
  for half-precision inputs, and their loss is fp32 (fp64 only for fp64 logits).
- Double backward (`create_graph=True`, gradients of gradients): supported; that
  backward runs PyTorch's own differentiable ops rather than the fused ones.
- Not supported: cross-entropy options (class weights, `ignore_index`, label
  smoothing, reductions other than the mean).
"""

from __future__ import annotations

import torch

from tritonnet import checks, functions, library_ops


def _to_autocast_dtype(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Cast to the autocast dtype where autocast is on for these tensors' device."""
    device_type = x.device.type
    if not torch.is_autocast_enabled(device_type):
        return x, weight, bias
    dtype = torch.get_autocast_dtype(device_type)
    return x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)


def _is_layer(weight: object, bias: object, features: int, x: torch.Tensor) -> bool:
    """Whether `weight` `[out, features]` and `bias` `[out]` (or None) are tensors of
    x's dtype on x's device: the common case, tested with plain comparisons on the
    hot path before any check that names what is wrong."""
    return (
        isinstance(weight, torch.Tensor)
        and weight.dim() == 2
        and weight.shape[1] == features
        and weight.dtype == x.dtype
        and weight.device == x.device
        and (
            bias is None
            or isinstance(bias, torch.Tensor)
            and bias.shape == (weight.shape[0],)
            and bias.dtype == x.dtype
            and bias.device == x.device
        )
    )


def _check_linear_arguments(
    x: object, weight: object, bias: object
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    x = checks.check_float_tensor("x", x)
    if x.dim() >= 1 and not torch.is_autocast_enabled(x.device.type) and _is_layer(weight, bias, x.shape[-1], x):
        return x, weight, bias
    if x.dim() < 1:
        raise ValueError("x must have at least 1 dimension [..., in_features], got a 0-dim tensor")
    weight = checks.check_matrix("weight", weight)
    if x.shape[-1] != weight.shape[1]:
        raise ValueError(
            f"x (the input) must have weight's in_features, {weight.shape[1]}, as its last "
            f"dimension (weight is [out_features, in_features] = {list(weight.shape)}), "
            f"got x of shape {tuple(x.shape)}"
        )
    if bias is not None:
        bias = checks.check_float_tensor("bias", bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"bias must have shape ({weight.shape[0]},) (weight's out_features), "
                f"got {tuple(bias.shape)}"
            )
    checks.check_same_device(x=x, weight=weight, bias=bias)
    x, weight, bias = _to_autocast_dtype(x, weight, bias)
    checks.check_same_dtype(x=x, weight=weight, bias=bias)
    return x, weight, bias


def _rows(x: torch.Tensor) -> torch.Tensor:
    """`x` as 2-D rows `[M, features]`. A 2-D `x` is returned as it is: a reshape
    would add a view node to the autograd graph, at a cost on every step."""
    return x if x.dim() == 2 else x.reshape(-1, x.shape[-1])


def _check_target(target: object, rows_shape: torch.Size, classes: int, device: torch.device) -> torch.Tensor:
    """Class indices in `[0, classes)` shaped `rows_shape` (the logits without their
    class dimension, the last), as one row of int64."""
    common = (
        isinstance(target, torch.Tensor)
        and target.dtype == torch.int64
        and target.shape == rows_shape
        and target.device == device
    )
    if not common:
        target = checks.check_tensor("target", target)
        if target.shape != rows_shape:
            raise ValueError(
                f"target must have shape {tuple(rows_shape)} (the logits without their "
                f"class dimension, which is the last), got {tuple(target.shape)}"
            )
        if target.device != device:
            raise ValueError(f"target must be on the logits' device {device}, got {target.device}")
        checks.check_labels("target", target.reshape(-1), target.numel(), classes, check_range=False)
    rows = target if target.dim() == 1 else target.reshape(-1)
    # Reading the values back would wait for a GPU, and cannot be traced by
    # torch.compile. Unchecked, an index out of range gives a NaN loss (the Triton
    # kernels) or an indexing error (the reference), never a read out of bounds.
    if device.type == "cpu" and not torch.compiler.is_compiling():
        checks.check_label_range("target", rows, classes)
    return rows if common else rows.long()


def _linear(x: object, weight: object, bias: object, activation: str) -> torch.Tensor:
    x, weight, bias = _check_linear_arguments(x, weight, bias)
    rows = _rows(x)
    if torch.compiler.is_compiling():
        output = library_ops.linear(rows, weight, bias, activation)
    else:
        output = functions.Linear.apply(rows, weight, bias, activation)
    return output if x.dim() == 2 else output.reshape(*x.shape[:-1], weight.shape[0])


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`x @ weight.T + bias`, as `torch.nn.functional.linear`; weight `[out, in]`."""
    return _linear(x, weight, bias, "none")


def linear_sigmoid(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """`sigmoid(x @ weight.T + bias)` in one fused operation; weight `[out, in]`.

    The backward reads the saved output, `s * (1 - s)`, rather than recomputing it.
    """
    return _linear(x, weight, bias, "sigmoid")


def softmax(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Softmax over dimension `dim`, stable for any logits (the max is subtracted first)."""
    x = checks.check_float_tensor("x", x)
    if x.dim() < 1:
        raise ValueError("x must have at least 1 dimension, got a 0-dim tensor")
    if isinstance(dim, bool) or not isinstance(dim, int) or not -x.dim() <= dim < x.dim():
        raise ValueError(
            f"dim must be an integer in [{-x.dim()}, {x.dim()}) for x of shape "
            f"{tuple(x.shape)}, got {dim!r}"
        )
    # The operation works on contiguous rows: the softmax dimension goes last.
    moved = x.movedim(dim, -1)
    rows = moved.reshape(-1, moved.shape[-1]).contiguous()
    if torch.compiler.is_compiling():
        probabilities = library_ops.softmax(rows)
    else:
        probabilities = functions.Softmax.apply(rows)
    return probabilities.reshape(moved.shape).movedim(-1, dim)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `logits` `[..., classes]` against class indices `[...]`.

    Equal to `torch.nn.functional.cross_entropy` for 2-D logits. Classes are the
    last dimension (torch puts them on dimension 1 when there are more than two).
    The loss is fp32 (fp64 for fp64 logits) and finite for any finite logits.
    """
    logits = checks.check_float_tensor("logits", logits)
    if logits.dim() < 1:
        raise ValueError("logits must have at least 1 dimension [..., classes], got a 0-dim tensor")
    target = _check_target(target, logits.shape[:-1], logits.shape[-1], logits.device)
    rows = _rows(logits).contiguous()
    if torch.compiler.is_compiling():
        return library_ops.cross_entropy(rows, target)[0]
    return functions.CrossEntropy.apply(rows, target)


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor
) -> torch.Tensor:
    """`cross_entropy(linear(x, weight, bias), target)` as one fused output layer.

    The logits, the softmax, the mean loss and its gradient come from one operation
    (one kernel launch on the Triton backend for up to a block of classes), and
    the logits are never handed back.
    """
    x, weight, bias = _check_linear_arguments(x, weight, bias)
    target = _check_target(target, x.shape[:-1], weight.shape[0], x.device)
    rows = _rows(x)
    if torch.compiler.is_compiling():
        return library_ops.linear_cross_entropy(rows, weight, bias, target)[0]
    return functions.LinearCrossEntropy.apply(rows, weight, bias, target)


def _check_mlp_arguments(
    x: object, weights: object, biases: object
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
    for name, value in (("weights", weights), ("biases", biases)):
        if not isinstance(value, (list, tuple)) or not value:
            raise TypeError(f"{name} must be a non-empty list or tuple, got {value!r}")
    if len(biases) != len(weights):
        raise ValueError(f"biases must have one entry per weight ({len(weights)}), got {len(biases)}")
    x, weight, bias = _check_linear_arguments(x, weights[0], biases[0])
    checked_weights, checked_biases = [weight], [bias]
    casting = torch.is_autocast_enabled(x.device.type)
    for index in range(1, len(weights)):
        weight, bias = weights[index], biases[index]
        if casting or not _is_layer(weight, bias, checked_weights[-1].shape[0], x):
            weight, bias = _check_hidden_layer(index, weight, bias, checked_weights[-1].shape[0], x)
        checked_weights.append(weight)
        checked_biases.append(bias)
    return x, checked_weights, checked_biases


def _check_hidden_layer(
    index: int, weight: object, bias: object, features: int, x: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """`weights[index]` and `biases[index]` checked, each error naming them, and cast
    to x's dtype under autocast."""
    weight_name, bias_name = f"weights[{index}]", f"biases[{index}]"
    weight = checks.check_matrix(weight_name, weight)
    if weight.shape[1] != features:
        raise ValueError(
            f"{weight_name} must have {features} columns (weights[{index - 1}]'s out_features), "
            f"got shape {tuple(weight.shape)}"
        )
    if bias is not None:
        bias = checks.check_float_tensor(bias_name, bias)
        if bias.shape != (weight.shape[0],):
            raise ValueError(
                f"{bias_name} must have shape ({weight.shape[0]},) ({weight_name}'s out_features), "
                f"got {tuple(bias.shape)}"
            )
    checks.check_same_device(x=x, **{weight_name: weight, bias_name: bias})
    if torch.is_autocast_enabled(x.device.type):
        weight, bias = weight.to(x.dtype), None if bias is None else bias.to(x.dtype)
    checks.check_same_dtype(x=x, **{weight_name: weight, bias_name: bias})
    return weight, bias


def mlp_cross_entropy(
    x: torch.Tensor,
    weights: list[torch.Tensor],
    biases: list[torch.Tensor | None],
    target: torch.Tensor,
) -> torch.Tensor:
    """Mean cross-entropy of the exercise's network: `linear_sigmoid` through every
    layer but the last, then `linear_cross_entropy`, as one operation.

    Layer i has `weights[i]` `[out_i, in_i]` (nn.Linear's layout, `in_0` the last
    dimension of x) and `biases[i]` (a tensor or None); `target` holds class
    indices shaped like x without its last dimension. Eagerly it is one autograd
    node for the whole network (`tritonnet.functions.MLPCrossEntropy`); under
    torch.compile, the layers' own operations.
    """
    x, weights, biases = _check_mlp_arguments(x, weights, biases)
    target = _check_target(target, x.shape[:-1], weights[-1].shape[0], x.device)
    rows = _rows(x)
    if torch.compiler.is_compiling():
        for weight, bias in zip(weights[:-1], biases[:-1]):
            rows = library_ops.linear(rows, weight, bias, "sigmoid")
        return library_ops.linear_cross_entropy(rows, weights[-1], biases[-1], target)[0]
    return functions.MLPCrossEntropy.apply(rows, target, *weights, *biases)

