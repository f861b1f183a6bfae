"""How fast is tritonnet's fused output layer: logits, softmax, loss and its gradient?

`linear_cross_entropy(x, w, b, target, 1.0)` computes, in one kernel, the logits
`x @ w + b`, the probabilities, the mean cross-entropy loss and the gradient of
the summed loss over the logits. It is timed on the exercise's output layer,
128->10, at batch sizes from 64 to 16384, in fp32 (ieee), TF32 and bf16, against
the same four results in PyTorch (addmm, F.cross_entropy, softmax, minus the one-hot
target), eager and compiled, with one cuBLAS matmul (`torch.mm`) as the floor.

    python benchmarks/bench_output_layer.py [--quick] [--results-dir DIR]

Without CUDA it skips; `--smoke` runs a tiny case anywhere (see kernel_common).
"""

from __future__ import annotations

import itertools
import math
import sys

import torch
import torch.nn.functional as F

from kernel_common import MATMUL_MODES, QUICK_BATCHES, KernelBenchmark, Work, torch_variant, tritonnet_ops

IN_FEATURES, CLASSES = 128, 10
BATCH_SIZES = [64, 256, 1024, 4096, 16384]
FLOOR = "torch-mm"


def cases(quick: bool, smoke: bool) -> list[tuple[str, int]]:
    """(mode name, batch) for each case to time."""
    if smoke:
        return list(itertools.product(["fp32-ieee", "bf16"], [16]))
    return list(itertools.product(list(MATMUL_MODES), QUICK_BATCHES if quick else BATCH_SIZES))


def work(rows: int, element_size: int) -> Work:
    """One matmul; reads x, w, b and the int64 targets, writes the probabilities and
    the gradient (the fp32 loss is 4 bytes: left out)."""
    flops = 2.0 * rows * IN_FEATURES * CLASSES
    elements = rows * IN_FEATURES + IN_FEATURES * CLASSES + CLASSES + 2 * rows * CLASSES
    return Work(flops, elements * element_size + rows * 8)


def torch_output_layer(x, weight, bias, target):
    """What tritonnet's fused operation returns, in idiomatic PyTorch."""
    logits = torch.addmm(bias, x, weight)
    loss = F.cross_entropy(logits, target)
    probabilities = torch.softmax(logits, dim=1)
    grad_logits = probabilities - F.one_hot(target, logits.shape[1]).to(probabilities.dtype)
    return probabilities, loss, grad_logits


def make_call(provider: str, x, weight, bias, target):
    """The no-argument callable that runs one case for one provider."""
    if provider == "tritonnet":
        ops = tritonnet_ops(x)
        return lambda: ops.linear_cross_entropy(x, weight, bias, target, 1.0)
    if provider == FLOOR:
        return lambda: torch.mm(x, weight)
    output_layer = torch_variant(provider, torch_output_layer)
    return lambda: output_layer(x, weight, bias, target)


def main(argv: list[str] | None = None) -> int:
    run = KernelBenchmark.start(__doc__, "output_layer", FLOOR, argv)
    device = run.device
    scale = math.sqrt(1.0 / IN_FEATURES)  # the exercise's initialization
    for mode_name, rows in cases(run.arguments.quick, run.arguments.smoke):
        mode = MATMUL_MODES[mode_name]
        label = f"{IN_FEATURES}x{CLASSES} {mode.name}"
        # The input of the output layer is a sigmoid's output, in (0, 1).
        x = torch.rand(rows, IN_FEATURES, device=device).to(mode.dtype)
        weight = (torch.randn(IN_FEATURES, CLASSES, device=device) * scale).to(mode.dtype)
        bias = (torch.randn(CLASSES, device=device) * scale).to(mode.dtype)
        target = torch.randint(0, CLASSES, (rows,), device=device)
        case_work = work(rows, x.element_size())
        run.time_case(
            lambda provider: make_call(provider, x, weight, bias, target), mode, label, "batch", rows, case_work
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
