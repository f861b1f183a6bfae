"""Argument checks of `tritonnet.functional`, where the drop-in API's inputs enter.

Every error names the argument, says what was expected and what came in. The
checks run at every call of a layer or a loss, so each has a hot path: the common
case (tensors of one floating dtype on one device, shapes that chain, no autocast)
is recognized with plain comparisons, and only an argument that fails them goes
through the checks that name what is wrong. On the CPU a step of the exercise's
network is short enough that the difference shows in its time.
"""

from __future__ import annotations

import torch

from tritonnet import checks
from tritonnet.environment import interpreter_enabled


def _layers_match(x: torch.Tensor, weights, biases) -> bool:
    """Whether each weight `[out, in]` takes the previous layer's output (x's last
    dimension first), each bias is `[out]` or None, and all have x's dtype and
    device: the hot path's test, which names nothing."""
    dtype, device, features = x.dtype, x.device, x.shape[-1]
    for weight, bias in zip(weights, biases):
        if not isinstance(weight, torch.Tensor) or weight.dtype != dtype or weight.device != device:
            return False
        shape = weight.shape
        if len(shape) != 2 or shape[1] != features:
            return False
        features = shape[0]
        if bias is not None and not (
            isinstance(bias, torch.Tensor)
            and bias.dtype == dtype
            and bias.device == device
            and bias.shape == (features,)
        ):
            return False
    return True


def _device_type(tensor: torch.Tensor) -> str:
    """`tensor.device.type` without building it for CUDA and CPU tensors: the
    `device.type` string costs about 250 ns, `is_cuda` and `is_cpu` a quarter of
    that, and the hot path asks at every call."""
    if tensor.is_cuda:
        return "cuda"
    return "cpu" if tensor.is_cpu else tensor.device.type


def _is_plain_input(x: object) -> bool:
    return (
        isinstance(x, torch.Tensor)
        and x.dtype in checks.FLOAT_DTYPES
        and x.dim() >= 1
        and not torch.is_autocast_enabled(_device_type(x))
    )


def check_linear(x: object, weight: object, bias: object) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """x `[..., in]`, weight `[out, in]`, bias `[out]` or None, cast to the autocast
    dtype where autocast is on."""
    if _is_plain_input(x) and _layers_match(x, (weight,), (bias,)):
        return x, weight, bias
    x = checks.check_float_tensor("x", x)
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
    device_type = x.device.type
    if torch.is_autocast_enabled(device_type):
        dtype = torch.get_autocast_dtype(device_type)
        x, weight, bias = x.to(dtype), weight.to(dtype), None if bias is None else bias.to(dtype)
    checks.check_same_dtype(x=x, weight=weight, bias=bias)
    return x, weight, bias


def check_layers(
    x: object, weights: object, biases: object
) -> tuple[torch.Tensor, list[torch.Tensor], list[torch.Tensor | None]]:
    """A chain of layers: `weights[i]` `[out_i, in_i]` with `in_0` x's last dimension
    and `in_i` the previous `out`, `biases[i]` `[out_i]` or None; cast to the
    autocast dtype where autocast is on."""
    for name, value in (("weights", weights), ("biases", biases)):
        if not isinstance(value, (list, tuple)) or not value:
            raise TypeError(f"{name} must be a non-empty list or tuple, got {value!r}")
    if len(biases) != len(weights):
        raise ValueError(f"biases must have one entry per weight ({len(weights)}), got {len(biases)}")
    if _is_plain_input(x) and _layers_match(x, weights, biases):
        return x, weights, biases
    x, weight, bias = check_linear(x, weights[0], biases[0])
    checked_weights, checked_biases = [weight], [bias]
    for index in range(1, len(weights)):
        weight, bias = _hidden_layer(index, weights[index], biases[index], weight.shape[0], x)
        checked_weights.append(weight)
        checked_biases.append(bias)
    return x, checked_weights, checked_biases


def _hidden_layer(
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


def check_target(
    target: object, rows_shape: torch.Size, classes: int, device: torch.device, compiling: bool
) -> torch.Tensor:
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
    rows = target if len(rows_shape) == 1 else target.reshape(-1)
    # The range: on the CPU the reference's own ops check every index and raise
    # the error that names the target (`reference_autograd`'s and
    # `reference.cross_entropy`'s nll_loss and scatter_), at no cost of their own;
    # the Triton kernels, which the interpreter runs there, do not. On a GPU,
    # reading the values back would wait for it, and torch.compile cannot trace
    # it: unchecked, an index out of range gives a NaN loss (the Triton kernels)
    # or an indexing error (the reference), never a read out of bounds.
    if rows.is_cpu and not compiling and interpreter_enabled():
        checks.check_label_range("target", rows, classes)
    return rows if common else rows.long()
