"""A drop-in functional API in PyTorch's conventions, on tritonnet's fused operations.

Weights have nn.Linear's layout, `[out_features, in_features]`, and every function
is differentiable: the forward runs one fused operation, the backward calls
`linear_backward` from the same backend. Eager calls run one
`torch.autograd.Function` per operation (`tritonnet.functions`), except on the
CPU reference in fp32 and fp64, where PyTorch's own differentiable ops compose
each operation (`tritonnet.reference_autograd`: no Python in the backward);
under `torch.compile` the same operations are custom ops
(`tritonnet.library_ops`), which Dynamo traces without a graph break.

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

from tritonnet import arguments, checks, functions, library_ops, reference_autograd
from tritonnet.backend import ops_for


def _rows(x: torch.Tensor) -> torch.Tensor:
    """`x` as 2-D rows `[M, features]`. A 2-D `x` is returned as it is: a reshape
    would add a view node to the autograd graph, at a cost on every step."""
    return x if x.dim() == 2 else x.reshape(-1, x.shape[-1])


def _unchecked(operation, *arguments) -> torch.Tensor | None:
    """`operation(*arguments)` on the CPU reference with none of our checks, which
    its ops make themselves (`reference_autograd.takes_layers`); None where they
    refuse an argument, for the checks to name it."""
    try:
        return operation(*arguments)
    except (TypeError, ValueError, RuntimeError, IndexError):
        return None


def _linear(x: object, weight: object, bias: object, activation: str) -> torch.Tensor:
    compiling = torch.compiler.is_compiling()
    if not compiling and reference_autograd.takes_layers(x, (weight,), (bias,)):
        output = _unchecked(reference_autograd.linear, x, weight, bias, activation)
        if output is not None:
            return output
    x, weight, bias = arguments.check_linear(x, weight, bias)
    rows = _rows(x)
    if compiling:
        output = library_ops.linear(rows, weight, bias, activation)
    elif reference_autograd.runs(rows):
        output = reference_autograd.linear(rows, weight, bias, activation)
    elif functions.needs_grad(rows, weight, bias):
        output = functions.Linear.apply(rows, weight, bias, activation)
    else:  # the backends take the weight [in, out]: its transposed view
        output = ops_for(rows, weight, bias).linear_forward(rows, weight.t(), bias, activation)
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
    elif reference_autograd.runs(rows):
        probabilities = reference_autograd.softmax(rows)
    elif functions.needs_grad(rows):
        probabilities = functions.Softmax.apply(rows)
    else:
        probabilities = ops_for(rows).softmax(rows)
    return probabilities.reshape(moved.shape).movedim(-1, dim)


def cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of `logits` `[..., classes]` against class indices `[...]`.

    Equal to `torch.nn.functional.cross_entropy` for 2-D logits. Classes are the
    last dimension (torch puts them on dimension 1 when there are more than two).
    The loss is fp32 (fp64 for fp64 logits) and finite for any finite logits.
    """
    compiling = torch.compiler.is_compiling()
    if not compiling and reference_autograd.takes_loss(logits, target):
        loss = _unchecked(reference_autograd.cross_entropy, logits, target)
        if loss is not None:
            return loss
    logits = checks.check_float_tensor("logits", logits)
    if logits.dim() < 1:
        raise ValueError("logits must have at least 1 dimension [..., classes], got a 0-dim tensor")
    target = arguments.check_target(target, logits.shape[:-1], logits.shape[-1], logits.device, compiling)
    rows = _rows(logits).contiguous()
    if compiling:
        return library_ops.cross_entropy(rows, target)[0]
    if reference_autograd.runs(rows):
        return reference_autograd.cross_entropy(rows, target)
    if functions.needs_grad(rows):
        return functions.CrossEntropy.apply(rows, target)
    return ops_for(rows, target).cross_entropy(rows, target, functions.mean_scale(rows))[1]


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor
) -> torch.Tensor:
    """`cross_entropy(linear(x, weight, bias), target)` as one fused output layer.

    The logits, the softmax, the mean loss and its gradient come from one operation
    (one kernel launch on the Triton backend for up to a block of classes), and
    the logits are never handed back.
    """
    compiling = torch.compiler.is_compiling()
    if not compiling and reference_autograd.takes_network(x, (weight,), (bias,), target):
        loss = _unchecked(reference_autograd.linear_cross_entropy, x, weight, bias, target)
        if loss is not None:
            return loss
    x, weight, bias = arguments.check_linear(x, weight, bias)
    target = arguments.check_target(target, x.shape[:-1], weight.shape[0], x.device, compiling)
    rows = _rows(x)
    if compiling:
        return library_ops.linear_cross_entropy(rows, weight, bias, target)[0]
    if reference_autograd.runs(rows):
        return reference_autograd.linear_cross_entropy(rows, weight, bias, target)
    if functions.needs_grad(rows, weight, bias):
        return functions.LinearCrossEntropy.apply(rows, weight, bias, target)
    return ops_for(rows, weight, bias, target).linear_cross_entropy(
        rows, weight.t(), bias, target, functions.mean_scale(rows)
    )[1]


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
    node for the whole network (`tritonnet.functions.MLPCrossEntropy`), or on the
    CPU reference PyTorch's own ops; under torch.compile, the layers' own
    operations.
    """
    compiling = torch.compiler.is_compiling()
    if not compiling and reference_autograd.takes_network(x, weights, biases, target):
        loss = _unchecked(reference_autograd.mlp_cross_entropy, x, target, weights, biases)
        if loss is not None:
            return loss
    x, weights, biases = arguments.check_layers(x, weights, biases)
    target = arguments.check_target(target, x.shape[:-1], weights[-1].shape[0], x.device, compiling)
    rows = _rows(x)
    if compiling:
        for weight, bias in zip(weights[:-1], biases[:-1]):
            rows = library_ops.linear(rows, weight, bias, "sigmoid")
        return library_ops.linear_cross_entropy(rows, weights[-1], biases[-1], target)[0]
    if reference_autograd.runs(rows):
        return reference_autograd.mlp_cross_entropy(rows, target, weights, biases)
    return functions.MLPCrossEntropy.apply(rows, target, *weights, *biases)

