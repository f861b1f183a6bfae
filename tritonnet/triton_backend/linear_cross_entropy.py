"""Launcher of the fused output layer: linear, softmax and cross-entropy
(`tritonnet.kernels.linear_cross_entropy`)."""

from __future__ import annotations

import torch
import triton

from tritonnet.kernels import linear_cross_entropy as kernels
from tritonnet.triton_backend.common import check_operands
from tritonnet.triton_backend.cross_entropy import LossPlan, cross_entropy_launch, cross_entropy_programs
from tritonnet.triton_backend.cross_entropy import launch_loss, loss_strides
from tritonnet.triton_backend.launch import Kernel, Launch, dot_precision
from tritonnet.triton_backend.tickets import loss_workspace
from tritonnet.triton_backend.plans import Plans
from tritonnet.triton_backend.linear import check_layer, linear_forward

FUSED = Kernel(
    kernels.linear_cross_entropy_kernel,
    lambda arguments: (triton.cdiv(arguments["M"], arguments["BLOCK_M"]),),
    autotuned=kernels.linear_cross_entropy_autotuned,
    fixed=kernels.LINEAR_CROSS_ENTROPY_INTERPRETER_CONFIG,
)


class _Unfused:
    """Rows too wide for one block: the linear forward kernel into fp32 logits, then
    the row-wise kernel. fp32 logits, as the fused kernel keeps them: rounded to
    fp16 or bf16 they would shift every probability by up to a few percent."""

    def __init__(self, rows: int, classes: int, device: torch.device) -> None:
        self.shape = (rows, classes)
        self.device = device
        self.cross_entropy = cross_entropy_launch(rows, classes)
        self.programs = cross_entropy_programs(self.cross_entropy, rows)

    def __call__(self, x, weight, bias, *rest) -> None:
        logits = torch.empty(self.shape, dtype=torch.float32, device=self.device)
        linear_forward(x, weight, bias, "none", out=logits)
        self.cross_entropy(logits, *rest)


def _plan(
    x: object, weight: object, bias: object, target: object, out_probabilities: object, out_grad_logits: object, precision: str
) -> LossPlan:
    x, weight, bias = check_layer(x, weight, bias)
    (rows, inner), classes = x.shape, weight.shape[1]
    check_operands(x=x, weight=weight, bias=bias)
    strides = loss_strides("x", x, classes, target, out_probabilities, out_grad_logits)
    if classes <= kernels.FUSED_MAX_N:
        sizes = (rows, classes, inner, *x.stride(), *weight.stride(), 0 if bias is None else bias.stride(0), *strides)
        launch = Launch(
            FUSED,
            HAS_BIAS=bias is not None,
            INPUT_PRECISION=dot_precision(x.dtype, precision),
            # tl.dot needs every block dimension >= 16.
            BLOCK_N=max(16, triton.next_power_of_2(classes)),
        )
        # The config, and so the grid, is chosen at the first launch: room for the most programs.
        programs = triton.cdiv(rows, kernels.SMALLEST_BLOCK_M)
    else:
        sizes = (rows, classes, classes, 1, *strides)  # the new logits are contiguous
        launch = _Unfused(rows, classes, x.device)
        programs = launch.programs
    if not rows:
        return LossPlan((rows, classes), x.dtype, x.device, sizes, None)
    return LossPlan((rows, classes), x.dtype, x.device, sizes, launch, loss_workspace(x.device, programs))


_plans = Plans(_plan)


def linear_cross_entropy(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, target: torch.Tensor, scale: float = 1.0,
    *, out_probabilities: torch.Tensor | None = None, out_grad_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The output layer with its softmax and cross-entropy: `(probabilities, loss, grad_logits)`.

    Same contract as `tritonnet.reference.linear_cross_entropy`, for x `[M, K]`,
    weight `[K, N]` (both any strides), bias `[N]` or None and integer class
    indices target `[M]`. The loss is an fp32 0-dim tensor on the device: the mean
    of the per-row losses, which the kernel takes in a fixed order (the same bits
    on every run; see `tritonnet.kernels.loss_mean`). The target's range is not
    checked here, which would wait for the GPU: a target outside `[0, N)` gives a
    NaN loss instead. No rows (M = 0) gives a NaN loss, as the mean of nothing
    does in torch, and launches nothing.
    """
    plan = _plans(x, weight, bias, target, out_probabilities, out_grad_logits, torch.get_float32_matmul_precision())
    return launch_loss(plan, (x, weight, bias, target), scale, out_probabilities, out_grad_logits)
