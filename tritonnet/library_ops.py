"""tritonnet's operations as `torch.library` custom ops: the route under `torch.compile`.

Dynamo cannot look inside a Triton launch, and would break the graph at every
call. A custom op is one opaque node with a fake implementation
(`register_fake`) that gives the output shapes and dtypes, so `torch.compile`
traces a whole model, forward and backward, in one graph. Each forward op has
its backward registered with `register_autograd`; the linear layers' backward is
the `linear_backward` op, so that it too is one node.

`tritonnet.functional` calls these ops only while Dynamo traces. Eager calls take
the `autograd.Function`s of `tritonnet.functions`, which run the same backend
operations without the dispatcher's overhead; the results are the same.

The ops are `custom_op`s, not `triton_op`s: their bodies dispatch at run time through
`tritonnet.backend.ops_for` (Triton or the PyTorch reference, by device and the
selected backend), and the Triton launchers call their kernels directly. Inductor
therefore calls them as they are and does not fuse into them.

Conventions: inputs are 2-D (`tritonnet.functional` flattens leading dimensions
and validates the arguments first); weights have nn.Linear's layout
`[out_features, in_features]` and reach the backends as the strided view
`weight.t()`, without a copy. Every real implementation returns contiguous tensors,
as its fake implementation promises: compiled code indexes the outputs with the
fake strides.
"""

from __future__ import annotations

import torch

from tritonnet.backend import ops_for
from tritonnet.functions import compute_dtype, linear_gradients, mean_scale, softmax_backward


# --- linear (+ sigmoid) ---------------------------------------------------------


def _linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, activation: str) -> torch.Tensor:
    """`activation(x @ weight.T + bias)` for x `[M, in]`, weight `[out, in]`."""
    return ops_for(x, weight, bias).linear_forward(x, weight.t(), bias, activation)


linear = torch.library.custom_op("tritonnet::linear", mutates_args=())(_linear)


@linear.register_fake
def _linear_fake(x, weight, bias, activation):
    return x.new_empty(x.shape[0], weight.shape[0])


# `Tensor?` outputs: a gradient that is not needed is not computed, and comes back
# as None. Type annotations cannot say that yet, so the schema is written out.
def _linear_backward(grad_output, x, weight, output, activation, need_grad_input, need_grad_bias):
    """`(grad_input, grad_weight, grad_bias)` of `linear`, grad_weight `[out, in]`.

    With the sigmoid, `output` is the saved forward output: the backend folds
    `grad_output * output * (1 - output)` into its gradient products.
    """
    ops = ops_for(grad_output, x, weight, output)
    needs = (need_grad_input, True, need_grad_bias)
    # Contiguous: autograd may hand in a broadcast view (stride 0, from a `.sum()`),
    # and the backends expect row-major rows; the gradients are returned contiguous,
    # as the fake implementation says.
    grad_input, grad_weight, grad_bias = linear_gradients(
        ops, grad_output.contiguous(), x, weight, output, activation, needs
    )
    return grad_input, grad_weight.contiguous(), grad_bias


linear_backward = torch.library.custom_op(
    "tritonnet::linear_backward",
    mutates_args=(),
    schema="(Tensor grad_output, Tensor x, Tensor weight, Tensor? output, str activation, "
    "bool need_grad_input, bool need_grad_bias) -> (Tensor?, Tensor, Tensor?)",
)(_linear_backward)


@linear_backward.register_fake
def _linear_backward_fake(grad_output, x, weight, output, activation, need_grad_input, need_grad_bias):
    grad_input = x.new_empty(x.shape) if need_grad_input else None
    grad_bias = weight.new_empty(weight.shape[0]) if need_grad_bias else None
    return grad_input, weight.new_empty(weight.shape), grad_bias


def _linear_setup_context(ctx, inputs, output):
    x, weight, _, activation = inputs
    ctx.activation = activation
    # The sigmoid's backward reads the saved output instead of recomputing it.
    ctx.save_for_backward(x, weight, output if activation == "sigmoid" else None)


def _linear_autograd_backward(ctx, grad_output):
    x, weight, output = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input, grad_weight, grad_bias = linear_backward(
        grad_output, x, weight, output, ctx.activation, need_input, need_bias
    )
    return grad_input, grad_weight if need_weight else None, grad_bias, None


linear.register_autograd(_linear_autograd_backward, setup_context=_linear_setup_context)

# --- softmax ---------------------------------------------------------------------


def _softmax(x: torch.Tensor) -> torch.Tensor:
    """Row-wise softmax of a contiguous `[M, N]` tensor."""
    return ops_for(x).softmax(x)


softmax = torch.library.custom_op("tritonnet::softmax", mutates_args=())(_softmax)


@softmax.register_fake
def _softmax_fake(x):
    return x.new_empty(x.shape)


def _softmax_setup_context(ctx, inputs, output):
    ctx.save_for_backward(output)


def _softmax_autograd_backward(ctx, grad_output):
    (probabilities,) = ctx.saved_tensors
    return softmax_backward(probabilities, grad_output)


softmax.register_autograd(_softmax_autograd_backward, setup_context=_softmax_setup_context)

# --- cross-entropy on logits -------------------------------------------------------


def _cross_entropy(
    logits: torch.Tensor, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(mean loss, probabilities, grad_logits)` for logits `[M, C]` and int64 class indices `[M]`.

    One backend op computes the softmax, the loss `logsumexp(z) - z[target]` (fp32,
    fp64 for fp64 logits; finite where a probability underflows to 0) and the
    gradient of the mean loss over the logits, `(p - onehot(target)) / M`; the
    backward only scales that gradient by the incoming one.
    """
    probabilities, loss, grad_logits = ops_for(logits, target).cross_entropy(
        logits, target, mean_scale(logits)
    )
    return loss, probabilities, grad_logits


cross_entropy = torch.library.custom_op("tritonnet::cross_entropy", mutates_args=())(_cross_entropy)


@cross_entropy.register_fake
def _cross_entropy_fake(logits, target):
    loss = logits.new_empty((), dtype=compute_dtype(logits.dtype))
    return loss, logits.new_empty(logits.shape), logits.new_empty(logits.shape)


def _cross_entropy_setup_context(ctx, inputs, output):
    _, probabilities, grad_logits = output
    ctx.mark_non_differentiable(probabilities, grad_logits)
    ctx.save_for_backward(grad_logits)


def _cross_entropy_autograd_backward(ctx, grad_loss, grad_probabilities, grad_grad_logits):
    (grad_logits,) = ctx.saved_tensors
    return grad_logits * grad_loss, None


cross_entropy.register_autograd(
    _cross_entropy_autograd_backward, setup_context=_cross_entropy_setup_context
)

# --- the output layer fused with softmax and cross-entropy ---------------------------


def _linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """`(mean loss, probabilities, grad_logits)` of `cross_entropy(linear(x), target)`.

    One backend op computes the logits, the softmax, the loss and the gradient of
    the mean loss over the logits, `(p - onehot(target)) / M`; the backward only
    scales that gradient and runs `linear_backward` on it.
    """
    probabilities, loss, grad_logits = ops_for(x, weight, bias, target).linear_cross_entropy(
        x, weight.t(), bias, target, mean_scale(x)
    )
    return loss, probabilities, grad_logits


linear_cross_entropy = torch.library.custom_op("tritonnet::linear_cross_entropy", mutates_args=())(
    _linear_cross_entropy
)


@linear_cross_entropy.register_fake
def _linear_cross_entropy_fake(x, weight, bias, target):
    logits_shape = (x.shape[0], weight.shape[0])
    return x.new_empty((), dtype=torch.float32), x.new_empty(logits_shape), x.new_empty(logits_shape)


def _linear_cross_entropy_setup_context(ctx, inputs, output):
    x, weight, _, _ = inputs
    _, probabilities, grad_logits = output
    ctx.mark_non_differentiable(probabilities, grad_logits)
    ctx.save_for_backward(x, weight, grad_logits)


def _linear_cross_entropy_autograd_backward(ctx, grad_loss, grad_probabilities, grad_grad_logits):
    x, weight, grad_logits = ctx.saved_tensors
    need_input, need_weight, need_bias = ctx.needs_input_grad[:3]
    grad_input, grad_weight, grad_bias = linear_backward(
        grad_logits * grad_loss, x, weight, None, "none", need_input, need_bias
    )
    return grad_input, grad_weight if need_weight else None, grad_bias, None


linear_cross_entropy.register_autograd(
    _linear_cross_entropy_autograd_backward, setup_context=_linear_cross_entropy_setup_context
)
