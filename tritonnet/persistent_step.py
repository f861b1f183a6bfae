"""`PersistentStep`: the exercise MLP's SGD step as one persistent kernel.

    step = PersistentStep(model)   # a tritonnet.MLP with two sigmoid hidden layers, fp32
    loss = step(x, labels)         # as FusedStep: the mean loss, a 0-dim tensor on the device

Where `FusedStep` launches six kernels, this launches one on a GPU: a grid of at
most one program per SM runs the forward, the loss and the backward with the SGD
step in five phases, a grid-wide barrier between two (kernels/persistent_step.py,
docs/persistent-step.md). It is the issue's stretch item, not yet measured on a
GPU: `make_step` does not route to it; `benchmarks/bench_step_variants.py`
(provider "persistent") times it against the multi-kernel step.

It runs only the Triton kernels (on a CUDA device, or the CPU under
TRITON_INTERPRET=1, where each phase is a launch of its own). Its limits, checked
at each batch size's first step: sizes of 4 entries (two hidden layers), at most
64 classes, float32, batches of up to 1024 rows.
"""

from __future__ import annotations

import torch

from tritonnet.backend import get_backend, resolve_backend
from tritonnet.fused_step import FusedStep
from tritonnet.layers import gradient_scale


class PersistentStep(FusedStep):
    """`step(x, labels) -> loss`: one SGD step of `model`, a `tritonnet.MLP`, with the
    contract of `FusedStep` (capture_key included): the layers' `input` and the
    sigmoids' `output` are set to the step's activations, `grad_weight` and
    `grad_bias` to None.

    `options` (the grid's `programs`, `one_launch`, `max_spins`) are for tests and
    tuning; see `triton_backend.persistent_step.PersistentPlan`.
    """

    def __init__(self, model, **options) -> None:
        super().__init__(model)
        self.options = options
        self.plans = {}  # by batch size, precision and the batch's and parameters' layout

    def _plan(self, x: torch.Tensor, labels: torch.Tensor):
        # Imported here: importing tritonnet never imports triton.
        from tritonnet.triton_backend.persistent_step import PersistentPlan
        from tritonnet.triton_backend.plans import tensor_key

        model = self.model
        precision = torch.get_float32_matmul_precision()
        parameters = [t for linear in model.linears for t in (linear.weight, linear.bias)]
        key = (precision, *(tensor_key(t) for t in (x, labels, *parameters)))
        plan = self.plans.get(key)
        if plan is None:
            plan = PersistentPlan(model.sizes, x.shape[0], x.dtype, x.device, precision, **self.options)
            self.plans[key] = plan
        return plan

    @torch.no_grad()
    def __call__(self, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        x, labels = self._check(x, labels)
        if resolve_backend(x.device) != "triton":
            raise RuntimeError(
                f"the persistent step runs the Triton kernels only; the backend {get_backend()!r} "
                f"gives the reference on {x.device}"
            )
        model = self.model
        plan = self._plan(x, labels)
        rows = x.shape[0]
        scales = [gradient_scale(model.grad_scale, rows, linear.in_features) for linear in model.linears]
        loss = plan(x, labels, model.linears, scales, model.lr)
        inputs = (x, *plan.hidden)
        for linear, layer_input in zip(model.linears, inputs):
            linear.input = layer_input
            linear.grad_weight = linear.grad_bias = None
        for sigmoid, output in zip(model.sigmoids, plan.hidden):
            sigmoid.output = output
        return loss
