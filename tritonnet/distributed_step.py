"""The data-parallel training steps: each rank trains on its shard of the global
batch, and the ranks' gradients are summed before the update.

Both steps take the *global* batch, as a one-process step does, so a run on N
ranks follows the one-process run's numbers: every rank draws the same shuffled
batch and keeps its own rows `[start, end)` of it (`Ranks.shard`).

`DataParallelStep`, the exercise MLP's, runs the fused step's forward on the
shard, then each layer's `linear_backward` with the *global* batch's
`grad_scale` factor. The factor is linear, so the ranks' scaled local gradients
sum to the one-process gradient. Every layer's weight and bias gradients are
written into one flat bucket, with the rank's share of the mean loss at its end,
and one all-reduce sums the bucket; then `sgd_update` runs on every layer. At the
exercise's batch of 64 one bucket measured faster on gloo than an all-reduce per
layer overlapped with the backward, which has little to hide behind: the first
layer holds 86% of the gradients and its backward comes last
(benchmarks/bench_data_parallel.py, docs/distributed.md). Every rank ends the
step with the same weights: the sums are the same on every rank and the update
is the same element-wise operation.

`DataParallelModuleStep`, the nn.Module twin's, runs `tritonnet.nn.MLP` under
`torch.nn.parallel.DistributedDataParallel`, which averages the ranks'
gradients. Each rank's local mean loss is weighted by
`local_rows * world_size / global_rows`, so that the average is the gradient of
the global batch's mean loss, however unevenly the batch splits.
"""

from __future__ import annotations

import torch
from torch import nn

from tritonnet.backend import ops_for
from tritonnet.distributed import Ranks
from tritonnet.fused_step import FusedStep
from tritonnet.layers import gradient_scale
from tritonnet.module_step import ModuleStep


class DataParallelStep(FusedStep):
    """`step(x, labels) -> loss`: one data-parallel SGD step of `model`, a
    `tritonnet.MLP`, on the global batch `x`, `labels`. The loss is the global
    batch's mean, a view into the step's bucket that the next step overwrites.

    The layers' `grad_weight` and `grad_bias` are set to the summed, scaled
    gradients the update used (views into the bucket). Its `capture_key` is the
    fused step's: with NCCL the all-reduce is captured in the CUDA graph too.
    """

    def __init__(self, model, ranks: Ranks) -> None:
        super().__init__(model)
        self.ranks = ranks
        shapes = [(linear.in_features, linear.out_features) for linear in model.linears]
        self.bucket = torch.zeros(
            sum(rows * cols + cols for rows, cols in shapes) + 1, device=model.device, dtype=model.dtype
        )
        self.grad_weights: list[torch.Tensor] = []
        self.grad_biases: list[torch.Tensor] = []
        offset = 0
        for rows, cols in shapes:
            self.grad_weights.append(self.bucket[offset : offset + rows * cols].view(rows, cols))
            self.grad_biases.append(self.bucket[offset + rows * cols : offset + rows * cols + cols])
            offset += rows * cols + cols
        self.loss = self.bucket[offset]

    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        model = self.model
        x, labels = self._check(x, labels)
        ops = ops_for(x)
        start, end = self.ranks.shard(x.shape[0])
        if end > start:
            self._local_gradients(ops, x[start:end], labels[start:end], x.shape[0])
        else:  # a short last batch left this rank no rows: it adds nothing
            self.bucket.zero_()
        self.ranks.all_reduce(self.bucket)
        for linear, grad_weight, grad_bias in zip(model.linears, self.grad_weights, self.grad_biases):
            ops.sgd_update(linear.weight, linear.bias, grad_weight, grad_bias, model.lr)
            linear.grad_weight, linear.grad_bias = grad_weight, grad_bias
        return self.loss

    def _local_gradients(self, ops, x: torch.Tensor, labels: torch.Tensor, global_rows: int) -> None:
        """This rank's share of the step's gradients and mean loss, into the bucket."""
        model = self.model
        rows = x.shape[0]
        workspace = self._workspace(rows)
        loss, grad = self._forward(ops, x, labels, workspace)
        torch.mul(loss, rows / global_rows, out=self.loss)
        activation, output = "none", None
        for index in reversed(range(len(model.linears))):
            linear = model.linears[index]
            grad, _, _ = ops.linear_backward(
                grad,
                linear.input,
                linear.weight,
                output,
                activation,
                gradient_scale(model.grad_scale, global_rows, linear.in_features),
                need_grad_input=index > 0,
                out_grad_input=workspace.grad_inputs[index - 1] if index > 0 else None,
                out_grad_weight=self.grad_weights[index],
                out_grad_bias=self.grad_biases[index],
            )
            if index > 0:
                activation, output = "sigmoid", model.sigmoids[index - 1].output


class _ShardLoss(nn.Module):
    """The module's loss on one rank's shard, weighted: what DistributedDataParallel
    runs as its `forward`, so that its gradient hooks see every backward."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        self.module = module

    def forward(self, x: torch.Tensor, labels: torch.Tensor, weight: float) -> torch.Tensor:
        if x.shape[0] == 0:
            # No rows: zero gradients for every parameter, as DDP needs one for each.
            return sum(parameter.sum() for parameter in self.module.parameters()) * 0.0
        return self.module.loss(x, labels) * weight


class DataParallelModuleStep(ModuleStep):
    """`step(x, labels) -> loss`: one SGD step of `model`, a `ModuleModel`, under
    DistributedDataParallel, on the global batch; the loss is its mean, detached.

    The batch, the labels' range included, is checked whole first: a bad label in
    one rank's shard would stop that rank alone, leaving the others waiting for it.
    """

    check_first = True

    def __init__(self, model, ranks: Ranks) -> None:
        super().__init__(model)
        self.ranks = ranks
        device = model.device
        # A group of its own: DistributedDataParallel keeps its group alive past
        # destroy_process_group (torch 2.13), and a gloo group alive at exit may
        # abort the process when one of its threads wants Python then. The default
        # group, whose collectives pass Python's tensors, is then freed as it should be.
        self.parallel = nn.parallel.DistributedDataParallel(
            _ShardLoss(model.module),
            device_ids=[device] if device.type == "cuda" else None,
            process_group=torch.distributed.new_group(),
        )

    def _backward(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        rows, world_size = x.shape[0], self.ranks.world_size
        start, end = self.ranks.shard(rows)
        weighted = self.parallel(x[start:end], labels[start:end], (end - start) * world_size / rows)
        weighted.backward()
        # The weighted losses average to the global mean, as the gradients do.
        return self.ranks.all_reduce(weighted.detach() / world_size)
