"""What does one call cost the host: every public operation against its torch twin.

Called from Python, a small operation is bound by host time, not GPU time. On a
GPU each operation is called many times back to back at shapes whose GPU work is
a few microseconds (batch 64, 128 features, 10 classes), with one synchronize at
the end: the time per call is what the host spends on it. Each operation is timed
against the torch ops it replaces: the reference backend's plain PyTorch for the
backend operations (linear+sigmoid against addmm + sigmoid, the output layer
against addmm, log_softmax, nll_loss and the gradient), and torch.nn.functional
for the drop-in API, forward alone and forward with backward.

On a CPU the kernels run only in Triton's interpreter, so the script measures
tritonnet's own per-call overhead with the Triton launch itself made a no-op
(`Launch.__call__`): the launch key, the plan lookup, the checks of what can
differ, the outputs and the arguments, and for the drop-in API the autograd
route around it. Provider "tritonnet-host": a regression there shows without a GPU.

    python benchmarks/bench_launch.py [--quick | --smoke] [--results-dir DIR] [--providers ...]
"""

from __future__ import annotations

import os
import sys
from typing import Callable

import torch
import torch.nn.functional as F

from harness import Environment, ResultWriter, parser, results_dir, select_providers, time_in_turns

ROWS, FEATURES, CLASSES = 64, 128, 10
LEARNING_RATE = 1e-3


def _tensors(device: torch.device) -> dict[str, torch.Tensor]:
    """The operands, in the exercise's layouts: weights `[in, out]` for the backend
    operations, `[out, in]` (nn.Linear's) for the drop-in API."""
    x = torch.rand(ROWS, FEATURES, device=device)
    weight = torch.randn(FEATURES, FEATURES, device=device) * FEATURES**-0.5
    output = torch.sigmoid(x @ weight)
    return {
        "x": x,
        "weight": weight,
        "bias": torch.randn(FEATURES, device=device) * 0.1,
        "output": output,
        "grad": torch.randn_like(output),
        "grad_weight": torch.randn_like(weight) * 1e-3,
        "logits": torch.randn(ROWS, CLASSES, device=device),
        "labels": torch.randint(0, CLASSES, (ROWS,), device=device),
        "out_weight": torch.randn(FEATURES, CLASSES, device=device) * FEATURES**-0.5,
        "out_bias": torch.zeros(CLASSES, device=device),
        "linear_weight": torch.randn(FEATURES, FEATURES, device=device, requires_grad=True),
        "linear_bias": torch.zeros(FEATURES, device=device, requires_grad=True),
        "classifier_weight": torch.randn(CLASSES, FEATURES, device=device, requires_grad=True),
    }


def backend_operations(ops, t: dict[str, torch.Tensor]) -> dict[str, Callable[[], object]]:
    """The backend operations of `ops` (tritonnet.triton_backend or tritonnet.reference)."""
    scale = 1.0 / ROWS
    bias_grad = t["grad"][0]
    return {
        "linear_forward sigmoid": lambda: ops.linear_forward(t["x"], t["weight"], t["bias"], "sigmoid"),
        "linear_backward sigmoid": lambda: ops.linear_backward(
            t["grad"], t["x"], t["weight"], t["output"], "sigmoid", scale
        ),
        "linear_backward_sgd sigmoid": lambda: ops.linear_backward_sgd(
            t["grad"], t["x"], t["weight"], t["bias"], t["output"], "sigmoid", scale, LEARNING_RATE
        ),
        "sigmoid_forward": lambda: ops.sigmoid_forward(t["x"]),
        "sigmoid_backward": lambda: ops.sigmoid_backward(t["grad"], t["output"]),
        "softmax": lambda: ops.softmax(t["logits"]),
        "cross_entropy": lambda: ops.cross_entropy(t["logits"], t["labels"], scale),
        "linear_cross_entropy": lambda: ops.linear_cross_entropy(
            t["x"], t["out_weight"], t["out_bias"], t["labels"], scale
        ),
        "sgd_update": lambda: ops.sgd_update(t["weight"], t["bias"], t["grad_weight"], bias_grad, LEARNING_RATE),
    }


def _forward_backward(loss: Callable[[], torch.Tensor]) -> Callable[[], None]:
    return lambda: loss().backward()


def drop_in_operations(functional, t: dict[str, torch.Tensor]) -> dict[str, Callable[[], object]]:
    """The drop-in API of `functional` (tritonnet.functional, or torch's twins below)."""
    x, weight, bias = t["x"], t["linear_weight"], t["linear_bias"]

    def no_grad(call: Callable[[], object]) -> Callable[[], object]:
        def run():
            with torch.no_grad():
                return call()

        return run

    return {
        "functional.linear_sigmoid forward": no_grad(lambda: functional.linear_sigmoid(x, weight, bias)),
        "functional.softmax forward": no_grad(lambda: functional.softmax(t["logits"], dim=-1)),
        "functional.cross_entropy forward": no_grad(lambda: functional.cross_entropy(t["logits"], t["labels"])),
        "functional.linear_sigmoid forward+backward": _forward_backward(
            lambda: functional.linear_sigmoid(x, weight, bias).sum()
        ),
        "functional.linear_cross_entropy forward+backward": _forward_backward(
            lambda: functional.linear_cross_entropy(x, t["classifier_weight"], None, t["labels"])
        ),
    }


class TorchFunctional:
    """torch.nn.functional's twins of tritonnet.functional."""

    linear_sigmoid = staticmethod(lambda x, weight, bias: torch.sigmoid(F.linear(x, weight, bias)))
    softmax = staticmethod(torch.softmax)
    cross_entropy = staticmethod(F.cross_entropy)
    linear_cross_entropy = staticmethod(lambda x, weight, bias, labels: F.cross_entropy(F.linear(x, weight, bias), labels))


def operations(provider: str, t: dict[str, torch.Tensor]) -> dict[str, Callable[[], object]]:
    if provider == "torch":
        from tritonnet import reference

        return {**backend_operations(reference, t), **drop_in_operations(TorchFunctional, t)}
    from tritonnet import functional, triton_backend

    return {**backend_operations(triton_backend, t), **drop_in_operations(functional, t)}


def without_launches() -> None:
    """Make every Triton launch a no-op, for the host overhead around it (CPU)."""
    from tritonnet.triton_backend.launch import Launch

    Launch.__call__ = lambda self, *args: None


def main(argv: list[str] | None = None) -> int:
    arguments = parser(__doc__.splitlines()[0]).parse_args(argv)
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    if not on_gpu:
        # CPU tensors reach the Triton launchers only with the interpreter on; it is
        # read when triton is first imported, which is below.
        os.environ["TRITON_INTERPRET"] = "1"
    from tritonnet.backend import set_backend

    set_backend("triton")
    available = ["tritonnet", "torch"] if on_gpu else ["tritonnet-host"]
    providers = select_providers(available, available, arguments.providers)
    if not on_gpu:
        without_launches()
    calls, repeats = (5, 3) if arguments.smoke else (200, 10) if arguments.quick else (500, 20)
    writer = ResultWriter("launch", results_dir(arguments), Environment.detect(device))
    tensors = _tensors(device)
    by_provider = {provider: operations(provider, tensors) for provider in providers}
    for name in by_provider[providers[0]]:

        def back_to_back(call: Callable[[], object]) -> Callable[[], None]:
            return lambda: [call() for _ in range(calls)]

        seconds = time_in_turns(
            {provider: back_to_back(by_provider[provider][name]) for provider in providers},
            device,
            warmup=2,
            repeats=repeats,
        )
        for provider, quantiles in seconds.items():
            mode = f"{name} fp32"
            writer.add(provider, mode, "batch", ROWS, "host_time", "us", quantiles.scaled(1e6 / calls))
    return 0


if __name__ == "__main__":
    sys.exit(main())
