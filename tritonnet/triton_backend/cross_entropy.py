"""Launcher of the row-wise softmax and cross-entropy kernel (`tritonnet.kernels.cross_entropy`).

`loss_strides`, `LossPlan` and `launch_loss` serve the fused output layer too,
which ends in the same outputs, and whose rows too wide for its own kernel come
here. Both kernels take the loss's mean themselves, with a workspace from
`tickets.py`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import triton

from tritonnet import checks
from tritonnet.kernels.cross_entropy import cross_entropy_kernel
from tritonnet.triton_backend.common import check_operands, check_scale, output_strides
from tritonnet.triton_backend.launch import Kernel, Launch
from tritonnet.triton_backend.tickets import loss_workspace
from tritonnet.triton_backend.plans import Plan, Plans
from tritonnet.triton_backend.softmax import row_blocks, row_config

CROSS_ENTROPY = Kernel(cross_entropy_kernel, lambda arguments: (triton.cdiv(arguments["M"], arguments["BLOCK_ROWS"]),))


def cross_entropy_launch(rows: int, classes: int) -> Launch:
    return Launch(CROSS_ENTROPY, row_config(row_blocks(rows, classes)))


def cross_entropy_programs(launch: Launch, rows: int) -> int:
    """The programs `launch` (a `cross_entropy_launch`) runs for `rows` rows."""
    return triton.cdiv(rows, launch.config.kwargs["BLOCK_ROWS"])


@dataclass(frozen=True)
class LossPlan(Plan):
    """A loss operation's plan: also the `(partials, counter)` workspace of its
    kernel's mean (`tickets.loss_workspace`), or None when nothing is launched."""

    workspace: tuple[torch.Tensor, torch.Tensor] | None = None


def loss_strides(
    like_name: str, like: torch.Tensor, classes: int, target: object, out_probabilities: object, out_grad_logits: object
) -> tuple[int, ...]:
    """The strides of the target and of both outputs, in the kernels' order.

    Checks the target (class indices `[M]` on `like`'s device, `like` `[M, K]`)
    and the outputs given (`[M, classes]`, `like`'s device and dtype).
    """
    rows = like.shape[0]
    target = checks.check_labels("target", target, rows, classes, check_range=False)
    checks.check_same_device(**{like_name: like, "target": target})
    return (
        target.stride(0),
        *output_strides("out_probabilities", out_probabilities, rows, classes, like_name, like),
        *output_strides("out_grad_logits", out_grad_logits, rows, classes, like_name, like),
    )


def launch_loss(
    plan: Plan, inputs: tuple, scale: object, out_probabilities: torch.Tensor | None, out_grad_logits: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Run `plan` (a `LossPlan`) on `inputs` (the kernel's arguments before its
    outputs): `(probabilities, loss, grad_logits)`, the loss a new fp32 0-dim
    tensor that the kernel fills with the mean of its rows' losses (NaN for no
    rows, as the mean of nothing is in torch)."""
    scale = check_scale(scale)
    probabilities = plan.output(out_probabilities)
    grad_logits = plan.output(out_grad_logits)
    if plan.launch is None:
        return probabilities, torch.full((), float("nan"), device=plan.device), grad_logits
    loss = torch.empty((), dtype=torch.float32, device=plan.device)
    plan.launch(*inputs, probabilities, grad_logits, loss, *plan.workspace, *plan.sizes, scale)
    return probabilities, loss, grad_logits


def _plan(logits: object, target: object, out_probabilities: object, out_grad_logits: object) -> Plan:
    logits = checks.check_matrix("logits", logits)
    check_operands(logits=logits)
    rows, classes = logits.shape
    strides = loss_strides("logits", logits, classes, target, out_probabilities, out_grad_logits)
    sizes = (rows, classes, *logits.stride(), *strides)
    if not rows:
        return LossPlan((rows, classes), logits.dtype, logits.device, sizes, None)
    launch = cross_entropy_launch(rows, classes)
    workspace = loss_workspace(logits.device, cross_entropy_programs(launch, rows))
    return LossPlan((rows, classes), logits.dtype, logits.device, sizes, launch, workspace)


_plans = Plans(_plan)


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, scale: float = 1.0,
    *, out_probabilities: torch.Tensor | None = None, out_grad_logits: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Softmax and cross-entropy of logits `[M, N]` (any strides) against integer class
    indices target `[M]`: `(probabilities, loss, grad_logits)`.

    Same contract as `tritonnet.reference.cross_entropy`. The loss is an fp32
    0-dim tensor on the device, the mean of the per-row losses, which the kernel
    takes in a fixed order (the same bits on every run). The target's range is not checked, which would wait for the GPU: a
    target outside `[0, N)` gives its row a NaN loss, so the mean is NaN. No rows
    (M = 0) gives a NaN loss, as the mean of nothing does in torch, and launches
    nothing. `out_*` tensors `[M, N]` of the logits' dtype are written in place.
    """
    plan = _plans(logits, target, out_probabilities, out_grad_logits)
    return launch_loss(plan, (logits, target), scale, out_probabilities, out_grad_logits)
