"""One `torch.autograd.Function` per fused operation: the eager route of `tritonnet.functional`.

Outside `torch.compile`, `tritonnet.functional` calls these Functions (but on
the CPU reference in fp32 and fp64, where it composes PyTorch's own ops:
`tritonnet.reference_autograd`); while Dynamo traces, it calls the custom ops of
`tritonnet.library_ops` instead, which compute the same things through the
dispatcher. A custom op's call crosses the dispatcher twice (the autograd key,
then the backend key) with Python glue on each side, which on the CPU costs more
than a small layer's work; a Function is called directly.

What each Function keeps off the hot path:
- It asks `tritonnet.backend.ops_for` once, in its forward, and its backward runs
  on that backend.
- It saves only what its backward reads. The linear layers save their input and
  weight, and after a sigmoid their output (the backward reads `s * (1 - s)` from
  it, never recomputing the sigmoid). The losses save the gradient of the mean
  loss over the logits, which their fused forward computes anyway. The inputs a
  double backward would recompute from are saved too: references, not copies.
- It returns only differentiable outputs, so autograd materializes no zero
  gradients for the probabilities the fused losses also compute.

`MLPCrossEntropy` is the exercise's whole network and its loss as one operation,
one autograd node where a chain of layers would make one per layer: each node of
a Python Function costs its own call into Python in the forward and again in the
backward, which at the exercise's sizes is as much as a small layer's work.

Double backward (`create_graph=True`): the backward then recomputes the operation
from PyTorch's own differentiable ops and differentiates that (`_twin_gradients`),
so a gradient of a gradient is right; the first-order backward stays fused.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from tritonnet.backend import ops_for


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half-precision tensors, their own dtype for fp32 and fp64."""
    return torch.promote_types(dtype, torch.float32)


def mean_scale(rows: torch.Tensor) -> float:
    """The scale of the mean loss's gradient over the rows of `rows`, 1/M (1 for
    no rows, where the loss is NaN and nothing is launched)."""
    return 1.0 / max(rows.shape[0], 1)


def needs_grad(*tensors: torch.Tensor | None) -> bool:
    """Whether autograd would record an operation on `tensors`: grad mode is on and
    one of them requires grad. Where it would not (inference, `torch.no_grad`),
    `tritonnet.functional` calls the backend's operation itself: a Function's
    `apply` would cost its Python for a node nobody differentiates."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def softmax_backward(probabilities: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """`p * (g - sum(g * p))` over rows, in at least fp32.

    The backends have no softmax-backward op: it is one row reduction and two
    element-wise ops, left to PyTorch (and to Inductor's fusion when compiled).
    Being PyTorch ops, it is differentiable again.
    """
    dtype = compute_dtype(probabilities.dtype)
    p, g = probabilities.to(dtype), grad_output.to(dtype)
    return (p * (g - (g * p).sum(dim=1, keepdim=True))).to(probabilities.dtype)


def _twin_gradients(twin, inputs, needs, grad_output):
    """The gradients of `twin(*inputs)`, the operation written in PyTorch's own ops,
    for the inputs where `needs` is true, as a graph that can be differentiated
    again: the backward of a double backward."""
    wanted = [tensor for tensor, need in zip(inputs, needs) if need]
    with torch.enable_grad():
        grads = iter(torch.autograd.grad(twin(*inputs), wanted, grad_output, create_graph=True))
    return tuple(next(grads) if need else None for need in needs)


def _linear_twin(activation):
    if activation == "sigmoid":
        return lambda x, weight, bias: torch.sigmoid(F.linear(x, weight, bias))
    return F.linear


def _cross_entropy_twin(logits, target):
    return F.cross_entropy(logits.to(compute_dtype(logits.dtype)), target)


def _mlp_cross_entropy_twin(x, target, *parameters):
    """`MLPCrossEntropy` in PyTorch's own ops."""
    layers = len(parameters) // 2
    for weight, bias in zip(parameters[: layers - 1], parameters[layers:-1]):
        x = torch.sigmoid(F.linear(x, weight, bias))
    return _cross_entropy_twin(F.linear(x, parameters[layers - 1], parameters[-1]), target)


def linear_gradients(ops, grad_output, x, weight, output, activation, needs):
    """`(grad_input, grad_weight, grad_bias)` from the backend's `linear_backward`,
    each None where `needs` (autograd's `needs_input_grad`) says it is not wanted.

    The backend returns grad_weight `[in, out]`; its transpose has nn.Linear's
    shape, and the layout of the weight's own transpose where the backend allocates
    it like the weight (the reference does), so autograd hands it to `.grad`
    without a copy.
    """
    need_input, need_weight, need_bias = needs
    grad_input, grad_weight, grad_bias = ops.linear_backward(
        grad_output,
        x,
        weight.t(),
        output,
        activation,
        1.0,
        need_grad_input=need_input,
        need_grad_bias=need_bias,
    )
    return grad_input, grad_weight.t() if need_weight else None, grad_bias


class Linear(torch.autograd.Function):
    """`activation(x @ weight.T + bias)` for x `[M, in]`, weight `[out, in]`."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        ops = ops_for(x, weight, bias)
        # The backends take the weight `[in, out]`: the view, without a copy.
        output = ops.linear_forward(x, weight.t(), bias, activation)
        ctx.ops, ctx.activation = ops, activation
        ctx.save_for_backward(x, weight, bias, output if activation == "sigmoid" else None)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, bias, output = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            twin = _linear_twin(ctx.activation)
            return (*_twin_gradients(twin, (x, weight, bias), needs, grad_output), None)
        # Contiguous: autograd may hand in a broadcast view (stride 0, from a `.sum()`),
        # and the backends expect row-major rows.
        grads = linear_gradients(ctx.ops, grad_output.contiguous(), x, weight, output, ctx.activation, needs)
        return (*grads, None)


class Softmax(torch.autograd.Function):
    """Row-wise softmax of a contiguous `[M, N]` tensor."""

    @staticmethod
    def forward(ctx, x):
        probabilities = ops_for(x).softmax(x)
        ctx.save_for_backward(probabilities)
        return probabilities

    @staticmethod
    def backward(ctx, grad_output):
        (probabilities,) = ctx.saved_tensors
        return softmax_backward(probabilities, grad_output)


class CrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of logits `[M, C]` against int64 class indices `[M]`.

    The backend computes the loss and its gradient over the logits,
    `(p - onehot(target)) / M`, in one op; the backward scales that gradient.
    """

    @staticmethod
    def forward(ctx, logits, target):
        _, loss, grad_logits = ops_for(logits, target).cross_entropy(
            logits, target, mean_scale(logits)
        )
        ctx.save_for_backward(grad_logits, logits, target)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_logits, logits, target = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _twin_gradients(_cross_entropy_twin, (logits, target), (True, False), grad_loss)
        return grad_logits * grad_loss, None


class LinearCrossEntropy(torch.autograd.Function):
    """`CrossEntropy` of `Linear`'s logits, as one fused backend op that never hands
    the logits back; the backward runs `linear_backward` on the saved gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, target):
        ops = ops_for(x, weight, bias, target)
        _, loss, grad_logits = ops.linear_cross_entropy(
            x, weight.t(), bias, target, mean_scale(x)
        )
        ctx.ops = ops
        ctx.save_for_backward(grad_logits, x, weight, bias, target)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_logits, x, weight, bias, target = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            twin = lambda x, weight, bias: _cross_entropy_twin(F.linear(x, weight, bias), target)  # noqa: E731
            return (*_twin_gradients(twin, (x, weight, bias), needs, grad_loss), None)
        grads = linear_gradients(ctx.ops, grad_logits * grad_loss, x, weight, None, "none", needs)
        return (*grads, None)


class MLPCrossEntropy(torch.autograd.Function):
    """The exercise's network and its mean loss as one operation: `Linear` with the
    sigmoid through each hidden layer, then `LinearCrossEntropy`.

    `parameters` are the weights `[out, in]` of every layer, then their biases (each
    a tensor or None). The forward runs the backend's fused ops layer by layer and
    saves every layer's input; the backward runs `linear_backward` from the last
    layer to the first, with no autograd node between the layers. (On the CPU
    reference, `functional.mlp_cross_entropy` composes PyTorch's own ops instead:
    `tritonnet.reference_autograd`.)
    """

    @staticmethod
    def forward(ctx, x, target, *parameters):
        layers = len(parameters) // 2
        weights, biases = parameters[:layers], parameters[layers:]
        ops = ops_for(x, target)  # `functional` checked that the parameters match x
        inputs = [x]
        for weight, bias in zip(weights[:-1], biases[:-1]):
            inputs.append(ops.linear_forward(inputs[-1], weight.t(), bias, "sigmoid"))
        _, loss, grad_logits = ops.linear_cross_entropy(
            inputs[-1], weights[-1].t(), biases[-1], target, mean_scale(x)
        )
        ctx.ops = ops
        ctx.save_for_backward(grad_logits, target, *inputs, *parameters)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_logits, target, *saved = ctx.saved_tensors
        needs = ctx.needs_input_grad
        layers = len(needs[2:]) // 2
        inputs, parameters = saved[:layers], saved[layers:]
        if torch.is_grad_enabled():
            twin_inputs = (inputs[0], target, *parameters)
            return _twin_gradients(_mlp_cross_entropy_twin, twin_inputs, needs, grad_loss)
        grads = [None] * (2 * layers)
        grad, output, activation = grad_logits * grad_loss, None, "none"
        for index in range(layers - 1, -1, -1):
            layer_needs = (index > 0 or needs[0], needs[2 + index], needs[2 + layers + index])
            grad, grads[index], grads[layers + index] = linear_gradients(
                ctx.ops, grad, inputs[index], parameters[index], output, activation, layer_needs
            )
            output, activation = inputs[index], "sigmoid"
        return (grad, None, *grads)
