"""How fast is tritonnet's fused linear + sigmoid layer, forward and forward+backward?

`linear_forward(x, w, b, "sigmoid")` computes `sigmoid(x @ w + b)` in one kernel;
`linear_backward(...)` returns the input, weight and bias gradients from the saved
output. They are timed on the exercise's layer shapes (784->512, 512->128,
128->10) at batch sizes from 64 to 16384, in fp32 (ieee), TF32 and bf16, against
PyTorch eager (addmm + sigmoid, autograd for the backward), torch.compile, and
plain cuBLAS matmuls (`torch.mm`: one for the forward, three for forward+backward)
as the floor.

    python benchmarks/bench_linear.py [--quick] [--results-dir DIR]

Without CUDA it skips; `--smoke` runs one tiny case anywhere (see kernel_common).
"""

from __future__ import annotations

import itertools
import math
import sys

import torch

from kernel_common import MATMUL_MODES, QUICK_BATCHES, KernelBenchmark, Work, torch_variant, tritonnet_ops

LAYER_SHAPES = [(784, 512), (512, 128), (128, 10)]
BATCH_SIZES = [64, 256, 1024, 4096, 16384]
PASSES = ["forward", "forward+backward"]
FLOOR = "torch-mm"


def cases(quick: bool, smoke: bool) -> list[tuple[str, tuple[int, int], str, int]]:
    """(pass, (in_features, out_features), mode name, batch) for each case to time."""
    if smoke:
        return list(itertools.product(PASSES, [(128, 10)], ["fp32-ieee", "bf16"], [16]))
    batches = QUICK_BATCHES if quick else BATCH_SIZES
    return list(itertools.product(PASSES, LAYER_SHAPES, list(MATMUL_MODES), batches))


def work(pass_name: str, rows: int, in_features: int, out_features: int, element_size: int) -> Work:
    """Forward: one matmul, reading x, w, b and writing the output. The backward adds
    two matmuls (grad_input, grad_weight), reads grad_output, the output, x and w,
    and writes the three gradients."""
    x, w, y = rows * in_features, in_features * out_features, rows * out_features
    flops = 2.0 * rows * in_features * out_features
    elements = x + w + out_features + y
    if pass_name == "forward+backward":
        flops *= 3
        elements += (y + y + x + w) + (x + w + out_features)
    return Work(flops, elements * element_size)


def torch_linear_sigmoid(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(torch.addmm(bias, x, weight))


def make_call(provider: str, pass_name: str, x, weight, bias, grad_output):
    """The no-argument callable that runs one case for one provider."""
    forward_only = pass_name == "forward"
    if provider == "tritonnet":
        ops = tritonnet_ops(x)
        if forward_only:
            return lambda: ops.linear_forward(x, weight, bias, "sigmoid")

        def tritonnet_forward_backward():
            output = ops.linear_forward(x, weight, bias, "sigmoid")
            return ops.linear_backward(grad_output, x, weight, output, "sigmoid", 1.0)

        return tritonnet_forward_backward
    if provider == FLOOR:
        if forward_only:
            return lambda: torch.mm(x, weight)
        return lambda: (
            torch.mm(x, weight),
            torch.mm(grad_output, weight.t()),
            torch.mm(x.t(), grad_output),
        )
    forward = torch_variant(provider, torch_linear_sigmoid)
    if forward_only:
        return lambda: forward(x, weight, bias)
    leaves = [tensor.detach().requires_grad_() for tensor in (x, weight, bias)]
    return lambda: torch.autograd.grad(forward(*leaves), leaves, grad_output)


def main(argv: list[str] | None = None) -> int:
    run = KernelBenchmark.start(__doc__, "linear", FLOOR, argv)
    for pass_name, (in_features, out_features), mode_name, rows in cases(
        run.arguments.quick, run.arguments.smoke
    ):
        mode = MATMUL_MODES[mode_name]
        label = f"{pass_name} {in_features}x{out_features} {mode.name}"

        def tensor(*shape: int, scale: float = 1.0) -> torch.Tensor:
            return (torch.randn(*shape, device=run.device) * scale).to(mode.dtype)

        scale = math.sqrt(1.0 / in_features)  # the exercise's initialization
        x = tensor(rows, in_features)
        weight, bias = (
            tensor(in_features, out_features, scale=scale),
            tensor(out_features, scale=scale),
        )
        grad_output = tensor(rows, out_features)
        case_work = work(pass_name, rows, in_features, out_features, x.element_size())
        run.time_case(
            lambda provider: make_call(provider, pass_name, x, weight, bias, grad_output),
            mode,
            label,
            "batch",
            rows,
            case_work,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
