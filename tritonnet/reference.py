"""The reference backend: every operation of tritonnet in plain PyTorch.

It is the oracle of the kernel tests and the path that runs where there is no
GPU, so it mirrors `tritonnet.triton_backend` operation by operation, under the
same names and signatures. Each function may write into preallocated `out_*`
tensors: the training loop reuses its buffers from step to step instead of
allocating, which is what makes this path fast on a CPU.

Half-precision inputs (fp16, bf16) are computed in fp32 and rounded once at the
end, as the kernels do with their fp32 accumulators.

Arguments are trusted here: the public entry points (layers, modules, the
functional API) validate them first.
"""

from __future__ import annotations

import torch

from tritonnet import checks

ACTIVATIONS = ("none", "sigmoid")

_LOW_PRECISION = (torch.float16, torch.bfloat16)


def _empty(rows: int, cols: int, like: torch.Tensor, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.empty(rows, cols, dtype=dtype or like.dtype, device=like.device)


def _store(result: torch.Tensor, out: torch.Tensor | None, dtype: torch.dtype | None = None) -> torch.Tensor:
    """`result` in `out` when given, else as `dtype` (copying only if it differs)."""
    if out is not None:
        return out.copy_(result)
    if dtype is not None and result.dtype != dtype:
        return result.to(dtype)
    return result


def linear_forward(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    activation: str = "none",
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """`activation(x @ weight + bias)` for x `[M, K]`, weight `[K, N]`, bias `[N]`."""
    if x.dtype in _LOW_PRECISION:
        result = linear_forward(
            x.float(), weight.float(), None if bias is None else bias.float(), activation
        )
        # Rounded once, to `out`'s dtype (fp32 logits may be asked for) or x's.
        return _store(result, out, x.dtype)
    if out is None:  # the op allocates its own result: one call fewer
        out = torch.mm(x, weight) if bias is None else torch.addmm(bias, x, weight)
    elif bias is None:
        torch.mm(x, weight, out=out)
    else:
        torch.addmm(bias, x, weight, out=out)
    if activation == "sigmoid":
        out.sigmoid_()
    return out


def _pre_activation_gradient(
    grad_output: torch.Tensor, output: torch.Tensor | None, activation: str
) -> torch.Tensor:
    """dz: `grad_output * output * (1 - output)` for the sigmoid, else grad_output."""
    if activation == "sigmoid":
        # From the saved output, in one pass (ATen's own sigmoid derivative; two
        # element-wise ops would read and write the tile twice).
        return torch.ops.aten.sigmoid_backward.default(grad_output, output)
    return grad_output


def linear_backward(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    output: torch.Tensor | None = None,
    activation: str = "none",
    scale: float = 1.0,
    *,
    need_grad_input: bool = True,
    need_grad_bias: bool = True,
    out_grad_input: torch.Tensor | None = None,
    out_grad_weight: torch.Tensor | None = None,
    out_grad_bias: torch.Tensor | None = None,
) -> tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]:
    """Gradients of `output = activation(x @ weight + bias)`.

    With `dz = grad_output * output * (1 - output)` for the sigmoid (from the saved
    output, not recomputed) and `dz = grad_output` without activation:
    `grad_input = dz @ weight.T` (only if `need_grad_input`),
    `grad_weight = scale * x.T @ dz`, `grad_bias = scale * dz.sum(0)`.
    `scale` is the gradient normalization (1/batch, 1/in_features or 1).
    """
    if grad_output.dtype in _LOW_PRECISION:
        grads = linear_backward(
            grad_output.float(),
            x.float(),
            weight.float(),
            None if output is None else output.float(),
            activation,
            scale,
            need_grad_input=need_grad_input,
            need_grad_bias=need_grad_bias,
        )
        outs = (out_grad_input, out_grad_weight, out_grad_bias)
        dtypes = (x.dtype, weight.dtype, weight.dtype)
        return tuple(
            None if g is None else _store(g.to(dtype), out)
            for g, out, dtype in zip(grads, outs, dtypes)
        )

    dz = _pre_activation_gradient(grad_output, output, activation)
    if out_grad_weight is None:
        out_grad_weight = torch.empty_like(weight)
    # beta=0 makes addmm ignore the old contents of the buffer, NaN included.
    torch.addmm(out_grad_weight, x.t(), dz, beta=0.0, alpha=scale, out=out_grad_weight)

    grad_bias = None
    if need_grad_bias:
        if out_grad_bias is None:
            grad_bias = dz.sum(dim=0)
        else:
            grad_bias = torch.sum(dz, dim=0, out=out_grad_bias)
        if scale != 1.0:
            grad_bias.mul_(scale)

    grad_input = None
    if need_grad_input:
        if out_grad_input is None:
            grad_input = torch.mm(dz, weight.t())
        else:
            grad_input = torch.mm(dz, weight.t(), out=out_grad_input)
    return grad_input, out_grad_weight, grad_bias


def linear_backward_sgd(
    grad_output: torch.Tensor,
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    output: torch.Tensor | None,
    activation: str,
    scale: float,
    lr: float,
    *,
    need_grad_input: bool = True,
    out_grad_input: torch.Tensor | None = None,
) -> torch.Tensor | None:
    """`linear_backward` fused with the SGD step, for training loops that need no
    gradients kept: `weight -= lr * grad_weight` and `bias -= lr * grad_bias` in
    place, the gradients never written out. Returns `grad_input` (or None), computed
    from the weight before the step.

    On a CPU this saves a pass over each weight matrix per step: the update is the
    weight-gradient GEMM itself, accumulating into the weight (`addmm_`).
    """
    if grad_output.dtype in _LOW_PRECISION:
        grad_input, grad_weight, grad_bias = linear_backward(
            grad_output, x, weight, output, activation, scale,
            need_grad_input=need_grad_input, need_grad_bias=bias is not None,
            out_grad_input=out_grad_input,
        )
        sgd_update(weight, bias, grad_weight, grad_bias, lr)
        return grad_input
    dz = _pre_activation_gradient(grad_output, output, activation)
    grad_input = None
    if need_grad_input:
        if out_grad_input is None:
            out_grad_input = _empty(dz.shape[0], weight.shape[0], x)
        grad_input = torch.mm(dz, weight.t(), out=out_grad_input)
    weight.addmm_(x.t(), dz, alpha=-lr * scale)
    if bias is not None:
        bias.add_(dz.sum(dim=0), alpha=-lr * scale)
    return grad_input


def sigmoid_forward(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """`1 / (1 + exp(-x))`, element-wise."""
    if x.dtype in _LOW_PRECISION:
        return _store(torch.sigmoid(x.float()).to(x.dtype), out)
    return torch.sigmoid(x, out=out) if out is not None else torch.sigmoid(x)


def sigmoid_backward(
    grad_output: torch.Tensor, output: torch.Tensor, out: torch.Tensor | None = None
) -> torch.Tensor:
    """`grad_output * output * (1 - output)`, from the saved sigmoid output."""
    g, y = grad_output.float(), output.float()
    return _store((g * y * (1.0 - y)).to(grad_output.dtype), out)


def _at_least_fp32(x: torch.Tensor) -> torch.Tensor:
    return x.to(torch.promote_types(x.dtype, torch.float32))


def softmax(x: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """Row-wise softmax of a `[M, N]` tensor, stable: the row max is subtracted first.

    A row whose entries are all -inf gives NaN, as torch.softmax does.
    """
    if x.numel() == 0:  # nothing to normalize, and amax cannot reduce an empty row
        return _store(x.clone(), out)
    x32 = _at_least_fp32(x)
    shifted = x32 - x32.amax(dim=1, keepdim=True)
    exp = shifted.exp_()
    exp.div_(exp.sum(dim=1, keepdim=True))
    return _store(exp.to(x.dtype), out)


def cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    scale: float = 1.0,
    *,
    out_probabilities: torch.Tensor | None = None,
    out_grad_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax and cross-entropy of logits `z` `[M, N]` against class indices `target` `[M]`.

    - probabilities `p = softmax(z)`;
    - loss: the mean over rows of `logsumexp(z) - z[target]` (an fp32 scalar, or
      fp64 for fp64 inputs), which stays finite when a probability underflows to 0;
    - grad_logits: `(p - onehot(target)) * scale`, the gradient of the summed loss
      times `scale` (1 for the exercise, 1/M for the mean).
    A target outside `[0, N)` raises a ValueError that names it, on the CPU (the
    public entry points leave this check to here: nll_loss and scatter_ check every
    index anyway, so it costs nothing when the targets are right).
    """
    target = target.long()
    compute_dtype = torch.promote_types(logits.dtype, torch.float32)  # cast inside the op
    log_probabilities = torch.log_softmax(logits, dim=1, dtype=compute_dtype)
    try:
        # nll_loss lets -100, its ignore_index, through; scatter_ does not.
        loss = torch.nn.functional.nll_loss(log_probabilities, target)
        probabilities = log_probabilities.exp_()
        # p - onehot(target), the 1 subtracted in place at each target (one_hot would
        # check the targets' range again, and build a whole int64 matrix).
        grad_logits = probabilities.clone().scatter_(1, target.unsqueeze(1), -1.0, reduce="add")
    except (IndexError, RuntimeError):
        if target.device.type == "cpu":
            checks.check_label_range("target", target, logits.shape[1])  # the error that names it
        raise
    if scale != 1.0:
        grad_logits.mul_(scale)
    return (
        _store(probabilities, out_probabilities, logits.dtype),
        loss,
        _store(grad_logits, out_grad_logits, logits.dtype),
    )


def linear_cross_entropy(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    target: torch.Tensor,
    scale: float = 1.0,
    *,
    out_probabilities: torch.Tensor | None = None,
    out_grad_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The output layer fused with `cross_entropy`: logits `z = x @ weight + bias`
    (computed in at least fp32), then probabilities, mean loss and `grad_logits`
    as `cross_entropy` gives them, in x's dtype."""
    dtype = x.dtype
    if dtype in _LOW_PRECISION:
        x, weight, bias = x.float(), weight.float(), None if bias is None else bias.float()
    probabilities, loss, grad_logits = cross_entropy(linear_forward(x, weight, bias), target, scale)
    if out_probabilities is None and out_grad_logits is None and probabilities.dtype == dtype:
        return probabilities, loss, grad_logits  # the common case, with nothing to store
    return (
        _store(probabilities, out_probabilities, dtype),
        loss,
        _store(grad_logits, out_grad_logits, dtype),
    )


def sgd_update(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    grad_weight: torch.Tensor,
    grad_bias: torch.Tensor | None,
    lr: float,
) -> None:
    """Plain SGD in place: `weight -= lr * grad_weight`, `bias -= lr * grad_bias`."""
    if bias is None:
        weight.add_(grad_weight, alpha=-lr)
    else:  # one call for both: the per-call cost is what counts at these sizes
        torch._foreach_add_([weight, bias], [grad_weight, grad_bias], alpha=-lr)
