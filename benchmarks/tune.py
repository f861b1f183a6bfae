"""Fill this GPU's tuned table: the config Triton's autotuner picks for every kernel
at the exercise's layer shapes, batches 64 to 16384, in fp32 (ieee and TF32) and
bf16, merged into `kernels/tuned/<gpu-name>.json`.

Each batch runs, with autotuning on and this GPU's old table ignored so that
every launch key autotunes afresh, what a training step launches (the hidden
layers' forward, backward with the SGD step in its epilogue, the standalone
sigmoid, the fused output layer and its backward) and the hidden layers' plain
backward, which the drop-in modules' autograd launches and which has entries of
its own (docs/kernels.md). The table is written atomically after each batch: a run cut
short keeps what it tuned. Entries of other shapes stay.

    python benchmarks/tune.py [--quick] [--out DIR]

--quick tunes batches 64, 1024, 4096 and 16384: those of the GPU tests, the
training benchmark and the quick kernel benchmarks. Needs CUDA; TRITONNET_AUTOTUNE=0 would tune nothing and is refused.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import torch

LAYERS = ((784, 512), (512, 128))
OUTPUT_LAYER = (128, 10)
MODES = {"fp32-ieee": (torch.float32, "highest"), "fp32-tf32": (torch.float32, "high"), "bf16": (torch.bfloat16, "highest")}
BATCHES = tuple(64 * 2**power for power in range(9))  # 64 to 16384
QUICK_BATCHES = (64, 1024, 4096, 16384)


def training_step(ops, batch: int, dtype: torch.dtype) -> None:
    """What a training step launches at `batch`, on random values."""

    def randn(*shape: int) -> torch.Tensor:
        return (torch.randn(*shape, device="cuda") * 0.1).to(dtype)

    hidden = torch.rand(batch, LAYERS[0][0], device="cuda").to(dtype)
    for in_features, out_features in LAYERS:
        weight, bias = randn(in_features, out_features), randn(out_features)
        output = ops.linear_forward(hidden, weight, bias, "sigmoid")
        ops.sigmoid_backward(randn(batch, out_features), ops.sigmoid_forward(output))
        ops.linear_backward(randn(batch, out_features), hidden, weight, output, "sigmoid", 1 / batch)
        ops.linear_backward_sgd(randn(batch, out_features), hidden, weight, bias, output, "sigmoid", 1 / batch, 0.1)
        hidden = output
    weight, bias = randn(*OUTPUT_LAYER), randn(OUTPUT_LAYER[1])
    labels = torch.randint(0, OUTPUT_LAYER[1], (batch,), device="cuda")
    _, _, grad_logits = ops.linear_cross_entropy(hidden, weight, bias, labels, 1 / batch)
    ops.linear_backward_sgd(grad_logits, hidden, weight, bias, None, "none", 1.0, 0.1)
    torch.cuda.synchronize()


def main(argv: list[str] | None = None) -> int:
    arguments = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    arguments.add_argument("--quick", action="store_true", help=f"batches {QUICK_BATCHES} only")
    arguments.add_argument("--out", type=Path, default=None, help="the table's folder (default kernels/tuned)")
    parsed = arguments.parse_args(argv)
    if not torch.cuda.is_available() or os.environ.get("TRITON_INTERPRET") == "1":
        print("skipped: tuning needs CUDA (and TRITON_INTERPRET unset)")
        return 0
    if os.environ.get("TRITONNET_AUTOTUNE") == "0":
        raise SystemExit("TRITONNET_AUTOTUNE=0 turns autotuning off: unset it to tune")
    from tritonnet import triton_backend as ops
    from tritonnet.triton_backend import plans, tuned

    device = torch.cuda.get_device_name()
    path = tuned.table_path(device, parsed.out)
    tuned.ignore_table(device)
    for batch in QUICK_BATCHES if parsed.quick else BATCHES:
        started = time.perf_counter()
        for mode, (dtype, matmul_precision) in MODES.items():
            torch.set_float32_matmul_precision(matmul_precision)
            training_step(ops, batch, dtype)
        entries = tuned.save(path, device, tuned.autotuned())
        plans.clear_caches()  # forgets the recorded choices too: each save merges its own
        tuned.ignore_table(device)
        print(f"batch {batch}: tuned in {time.perf_counter() - started:.1f} s; {path} has {entries} entries", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
