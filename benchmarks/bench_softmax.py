"""How close does tritonnet's row softmax come to the memory bandwidth?

`softmax(x)` on `[4096, N]`, N from 256 to 16384, in fp32 and bf16. It reads and
writes each element once, so the figure of merit is GB/s: it is timed against
`torch.softmax` eager and compiled, and against a plain copy of the same tensor
(`out.copy_(x)`, the same bytes with no arithmetic) as the floor.

    python benchmarks/bench_softmax.py [--quick] [--results-dir DIR]

Without CUDA it skips; `--smoke` runs a tiny case anywhere (see kernel_common).
"""

from __future__ import annotations

import itertools
import sys

import torch

from kernel_common import ELEMENTWISE_MODES, KernelBenchmark, Work, torch_variant, tritonnet_ops

ROWS = 4096
COLUMNS = [256, 512, 1024, 2048, 4096, 8192, 16384]
# A launch-bound width, and wide rows up to the widest the softmax holds in registers.
QUICK_COLUMNS = [1024, 4096, 8192, 16384]
FLOOR = "torch-copy"


def cases(quick: bool, smoke: bool) -> list[tuple[str, int, int]]:
    """(mode name, rows, columns) for each case to time."""
    if smoke:
        return list(itertools.product(list(ELEMENTWISE_MODES), [16], [256]))
    columns = QUICK_COLUMNS if quick else COLUMNS
    return list(itertools.product(list(ELEMENTWISE_MODES), [ROWS], columns))


def torch_softmax(x: torch.Tensor) -> torch.Tensor:
    return torch.softmax(x, dim=1)


def make_call(provider: str, x: torch.Tensor):
    """The no-argument callable that runs one case for one provider."""
    if provider == "tritonnet":
        ops = tritonnet_ops(x)
        return lambda: ops.softmax(x)
    if provider == FLOOR:
        out = torch.empty_like(x)
        return lambda: out.copy_(x)
    softmax = torch_variant(provider, torch_softmax)
    return lambda: softmax(x)


def main(argv: list[str] | None = None) -> int:
    run = KernelBenchmark.start(__doc__, "softmax", FLOOR, argv)
    for mode_name, rows, columns in cases(run.arguments.quick, run.arguments.smoke):
        mode = ELEMENTWISE_MODES[mode_name]
        label = f"{rows} rows {mode.name}"
        x = torch.randn(rows, columns, device=run.device).to(mode.dtype)
        # One read and one write of every element; the few flops per element never bind.
        case_work = Work(flops=0.0, bytes=2.0 * x.numel() * x.element_size())
        run.time_case(lambda provider: make_call(provider, x), mode, label, "columns", columns, case_work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
