"""Launcher of the one-launch SGD update (`tritonnet.kernels.sgd`)."""

from __future__ import annotations

import torch
import triton

from tritonnet import checks
from tritonnet.kernels.sgd import SGD_INTERPRETER_CONFIG, sgd_update_autotuned, sgd_update_kernel
from tritonnet.triton_backend.common import check_operands, fixed_configs


def _dense(tensor: torch.Tensor) -> bool:
    """Whether `tensor` fills one run of memory: contiguous, or the transpose of a
    contiguous matrix (the MLP's weights on the CPU, stored `[out, in]`)."""
    return tensor.is_contiguous() or (tensor.dim() == 2 and tensor.t().is_contiguous())


def _check_pair(name: str, param: torch.Tensor, grad_name: str, grad: object) -> torch.Tensor:
    """`grad` matches `param` in shape, device, dtype, kernel support and memory
    layout, and `param` is dense."""
    grad = checks.check_float_tensor(grad_name, grad)
    if grad.shape != param.shape:
        raise ValueError(
            f"{grad_name} must have the shape of {name}, {tuple(param.shape)}, got {tuple(grad.shape)}"
        )
    check_operands(**{name: param, grad_name: grad})
    # The kernel walks both tensors as one flat run of elements, in memory order:
    # the parameter must fill one run, and its gradient be laid out the same way.
    if not _dense(param):
        raise ValueError(
            f"{name} must be contiguous or the transpose of a contiguous matrix, got strides {param.stride()}"
        )
    if grad.stride() != param.stride():
        raise ValueError(f"{grad_name} must have the strides of {name}, {param.stride()}, got {grad.stride()}")
    return grad


def sgd_update(
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    grad_weight: torch.Tensor,
    grad_bias: torch.Tensor | None,
    lr: float,
) -> None:
    """Plain SGD in place, `weight -= lr * grad_weight` and `bias -= lr * grad_bias`, in one launch.

    Each parameter must be contiguous or the transpose of a contiguous matrix, and
    its gradient laid out the same (`torch.empty_like` does it); bias and
    grad_bias are both None or both tensors. fp32 math, rounded once to the
    parameters' dtype.
    """
    weight = checks.check_float_tensor("weight", weight)
    grad_weight = _check_pair("weight", weight, "grad_weight", grad_weight)
    lr = checks.check_learning_rate("lr", lr)
    if (bias is None) != (grad_bias is None):
        raise ValueError(
            "bias and grad_bias must both be tensors or both be None, got "
            f"bias {type(bias).__name__} and grad_bias {type(grad_bias).__name__}"
        )
    if bias is None:
        # No bias programs: the kernel never reads these pointers.
        bias, grad_bias = weight, grad_weight
        bias_numel = 0
    else:
        bias = checks.check_float_tensor("bias", bias)
        check_operands(weight=weight, bias=bias)
        grad_bias = _check_pair("bias", bias, "grad_bias", grad_bias)
        bias_numel = bias.numel()

    weight_numel = weight.numel()
    args = (weight, grad_weight, weight_numel, bias, grad_bias, bias_numel, lr)

    def grid(meta):
        return (triton.cdiv(weight_numel, meta["BLOCK"]) + triton.cdiv(bias_numel, meta["BLOCK"]),)

    if weight_numel + bias_numel == 0:
        return
    if fixed_configs():
        config = SGD_INTERPRETER_CONFIG.all_kwargs()
        sgd_update_kernel[grid(config)](*args, **config)
    else:
        sgd_update_autotuned[grid](*args)
