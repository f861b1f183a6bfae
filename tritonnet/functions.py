"""One `torch.autograd.Function` per fused operation: the eager route of `tritonnet.functional`.

Outside `torch.compile`, `tritonnet.functional` calls these Functions; while
Dynamo traces, it calls the custom ops of `tritonnet.library_ops` instead, which
compute the same things through the dispatcher. A custom op's call crosses the
dispatcher twice (the autograd key, then the backend key) with Python glue on
each side, which on the CPU costs more than a small layer's work; a Function is
called directly.

What each Function keeps off the hot path:
- It asks `tritonnet.backend.ops_for` once, in its forward, and its backward runs
  on that backend.
- It saves only what its backward reads. The linear layers save their input and
  weight, and after a sigmoid their output (the backward reads `s * (1 - s)` from
  it, never recomputing the sigmoid). The losses save the gradient of the mean
  loss over the logits, which their fused forward computes anyway, and the inputs
  that a double backward recomputes it from (references, not copies).
- It returns only differentiable outputs, so autograd materializes no zero
  gradients for the probabilities the fused losses also compute.

Double backward (`create_graph=True`): the backward then runs differentiable
PyTorch ops instead of the backend's fused ones (no kernels), so that a gradient
of a gradient is right; the first-order backward stays on the backend.
"""

from __future__ import annotations

import torch

from tritonnet.backend import ops_for


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """fp32 for half-precision tensors, their own dtype for fp32 and fp64."""
    return torch.promote_types(dtype, torch.float32)


def softmax_backward(probabilities: torch.Tensor, grad_output: torch.Tensor) -> torch.Tensor:
    """`p * (g - sum(g * p))` over rows, in at least fp32.

    The backends have no softmax-backward op: it is one row reduction and two
    element-wise ops, left to PyTorch (and to Inductor's fusion when compiled).
    Being PyTorch ops, it is differentiable again.
    """
    dtype = compute_dtype(probabilities.dtype)
    p, g = probabilities.to(dtype), grad_output.to(dtype)
    return (p * (g - (g * p).sum(dim=1, keepdim=True))).to(probabilities.dtype)


def _composed_linear_backward(grad_output, x, weight, output, activation, needs):
    """`linear`'s gradients from differentiable PyTorch ops, for a double backward."""
    need_input, need_weight, need_bias = needs
    dz = grad_output * output * (1 - output) if activation == "sigmoid" else grad_output
    return (
        dz @ weight if need_input else None,
        dz.t() @ x if need_weight else None,
        dz.sum(dim=0) if need_bias else None,
    )


def _composed_mean_cross_entropy_gradient(logits, target, grad_loss):
    """`grad_loss * (softmax(z) - onehot(target)) / rows`, differentiable in z."""
    probabilities = torch.softmax(logits.to(compute_dtype(logits.dtype)), dim=1)
    one_hot = torch.nn.functional.one_hot(target, logits.shape[1])
    gradient = (probabilities - one_hot) * (grad_loss / max(logits.shape[0], 1))
    return gradient.to(logits.dtype)


class Linear(torch.autograd.Function):
    """`activation(x @ weight.T + bias)` for x `[M, in]`, weight `[out, in]`."""

    @staticmethod
    def forward(ctx, x, weight, bias, activation):
        ops = ops_for(x, weight, bias)
        # The backends take the weight `[in, out]`: the view, without a copy.
        output = ops.linear_forward(x, weight.t(), bias, activation)
        ctx.ops, ctx.activation = ops, activation
        ctx.save_for_backward(x, weight, output if activation == "sigmoid" else None)
        return output

    @staticmethod
    def backward(ctx, grad_output):
        x, weight, output = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            return (*_composed_linear_backward(grad_output, x, weight, output, ctx.activation, needs), None)
        return (*linear_gradients(ctx.ops, grad_output, x, weight, output, ctx.activation, needs), None)


def linear_gradients(ops, grad_output, x, weight, output, activation, needs):
    """`(grad_input, grad_weight, grad_bias)` from the backend's `linear_backward`,
    each None where `needs` (autograd's `needs_input_grad`) says it is not wanted.

    grad_output goes in contiguous: autograd may hand in a broadcast view (stride
    0, from a `.sum()`), and the backends expect row-major rows. The backend
    returns grad_weight `[in, out]`; its transpose is nn.Linear's layout, and
    `.contiguous()` copies only if the backend laid it out the other way.
    """
    need_input, need_weight, need_bias = needs
    grad_input, grad_weight, grad_bias = ops.linear_backward(
        grad_output.contiguous(),
        x,
        weight.t(),
        output,
        activation,
        1.0,
        need_grad_input=need_input,
        need_grad_bias=need_bias,
    )
    return grad_input, grad_weight.t().contiguous() if need_weight else None, grad_bias


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
            logits, target, 1.0 / max(logits.shape[0], 1)
        )
        ctx.save_for_backward(grad_logits, logits, target)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_logits, logits, target = ctx.saved_tensors
        if torch.is_grad_enabled():
            return _composed_mean_cross_entropy_gradient(logits, target, grad_loss), None
        return grad_logits * grad_loss, None


class LinearCrossEntropy(torch.autograd.Function):
    """`CrossEntropy` of `Linear`'s logits, as one fused backend op that never hands
    the logits back; the backward runs `linear_backward` on the saved gradient."""

    @staticmethod
    def forward(ctx, x, weight, bias, target):
        ops = ops_for(x, weight, bias, target)
        _, loss, grad_logits = ops.linear_cross_entropy(
            x, weight.t(), bias, target, 1.0 / max(x.shape[0], 1)
        )
        ctx.ops = ops
        ctx.save_for_backward(grad_logits, x, weight, bias, target)
        return loss

    @staticmethod
    def backward(ctx, grad_loss):
        grad_logits, x, weight, bias, target = ctx.saved_tensors
        needs = ctx.needs_input_grad[:3]
        if torch.is_grad_enabled():
            logits = torch.nn.functional.linear(x, weight, bias)
            grad_logits = _composed_mean_cross_entropy_gradient(logits, target, grad_loss).to(x.dtype)
            return (*_composed_linear_backward(grad_logits, x, weight, None, "none", needs), None)
        return (*linear_gradients(ctx.ops, grad_logits * grad_loss, x, weight, None, "none", needs), None)
