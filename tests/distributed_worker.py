"""One rank of the data-parallel checks in test_distributed.py, run under torchrun:

    python -m torch.distributed.run --standalone --nproc_per_node=2 tests/distributed_worker.py OUT

Rank 0 writes a checkpoint per case into OUT/<case>: each API with each
grad_scale, trained with `tritonnet.trainer.train` on a Fashion-MNIST subset
whose last batch of the epoch has one row, so one rank's shard of it is empty.
The parent test trains the same cases in one process and compares the weights.
Then every rank checks that a setting given to one rank only is refused, as is
a batch smaller than the world, and that an error on rank 0 reaches the others,
and writes what it saw into OUT/rank<r>.json.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

import torch

from tritonnet import distributed
from tritonnet.backend import set_backend
from tritonnet.datasets import load_dataset
from tritonnet.resume import data_record
from tritonnet.trainer import TrainConfig

# Three full batches of 64 and one of a single row.
TRAIN_ROWS, TEST_ROWS = 193, 100
BATCH_SIZE = 64
# The learning rate of each scale: "none" sums the batch's gradients, so it needs a smaller one.
CASES = {
    f"{api}-{grad_scale}": TrainConfig(epochs=1, batch_size=BATCH_SIZE, lr=lr, grad_scale=grad_scale,
                                       api=api, progress=False)
    for api in ("exercise", "module")
    for grad_scale, lr in (("batch", 0.5), ("features", 0.5), ("none", 0.01))
}


def subset():
    return load_dataset("fashion-mnist", limit_train=TRAIN_ROWS, limit_test=TEST_ROWS, download=False)


def error_of(action) -> str:
    try:
        action()
    except (RuntimeError, ValueError, OSError) as error:
        return str(error)
    return ""


def main(out: Path) -> None:
    from tritonnet.trainer import train

    set_backend("reference")
    dataset = subset()
    with distributed.start(torch.device("cpu")) as (ranks, device):
        for name, config in CASES.items():
            train(config, dataset, out / name, device=device, log=lambda message: None, ranks=ranks)
        small = dataclasses.replace(CASES["exercise-batch"], batch_size=1)
        seen = {
            "settings": error_of(lambda: ranks.check_same({"lr": 0.1 * (ranks.rank + 1), "seed": 1})),
            "small_batch": error_of(lambda: ranks.check_run(small, data_record(dataset), device, resume=False)),
            "from_writer": error_of(
                lambda: ranks.from_writer(lambda: (out / "absent.txt").read_text(), "read absent.txt")
            ),
        }
    (out / f"rank{ranks.rank}.json").write_text(json.dumps(seen))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
