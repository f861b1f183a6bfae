"""The `tritonnet` command: train, sweep learning rates, print info, run benchmarks.

    tritonnet train --epochs 30 --batch-size 64 --lr 0.1 --out runs/main
    tritonnet sweep --lrs 1,0.5,0.25,0.01,0.001 --epochs 30 --out runs/sweep
    tritonnet info
    tritonnet bench --quick

Bad flags or values give an argparse error (exit code 2); a run that cannot
start (no data set found, a checkpoint from another run) prints one line and
exits with 1. Neither prints a traceback.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Sequence

from tritonnet.backend import BACKENDS

DEVICE_CHOICES = ("auto", "cpu", "cuda")
API_CHOICES = ("exercise", "module")
EXERCISE_SWEEP = "1,0.5,0.25,0.01,0.001"


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return value


def _learning_rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not math.isfinite(value) or value <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text!r}")
    return value


def _learning_rates(text: str) -> list[float]:
    rates = [_learning_rate(part.strip()) for part in text.split(",") if part.strip()]
    if not rates:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list of rates, got {text!r}")
    return rates


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    from tritonnet.datasets import DATASET_NAMES
    from tritonnet.layers import GRAD_SCALES

    parser.add_argument("--epochs", type=_positive_int, default=30)
    parser.add_argument("--batch-size", type=_positive_int, default=64)
    parser.add_argument(
        "--grad-scale",
        choices=GRAD_SCALES,
        default="batch",
        help="how weight gradients are normalized: by the batch rows (the mean loss), "
        "by in_features (the report's solution), or not at all (default: batch)",
    )
    parser.add_argument("--dataset", choices=DATASET_NAMES, default="auto")
    parser.add_argument("--data-dir", help="folder with the IDX files (else TRITONNET_DATA, the cache, system dirs, a download)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--api", choices=API_CHOICES, default="exercise",
                        help="the exercise's layer classes, or the nn.Module twin with torch.optim.SGD")
    parser.add_argument("--limit-train", type=_positive_int, help="use only the first N training images")
    parser.add_argument("--limit-test", type=_positive_int, help="use only the first N test images")
    parser.add_argument("--figures-dir", help="where the figures go (default: the --out folder)")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="go on when the loss becomes NaN or infinite, instead of stopping")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-cuda-graphs", action="store_true",
                        help="on a GPU, launch every kernel from Python instead of replaying "
                        "each training step from a CUDA graph (same numbers, slower)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="tritonnet", description="The exercise MLP, trained on fused Triton kernels."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the MLP and draw its loss and accuracy figures")
    _add_run_flags(train)
    train.add_argument("--lr", type=_learning_rate, default=0.1)
    train.add_argument("--out", default="runs/train", help="folder for history, checkpoint and figures")

    sweep = commands.add_parser("sweep", help="train once per learning rate and compare test accuracy")
    _add_run_flags(sweep)
    sweep.add_argument("--lrs", type=_learning_rates, default=_learning_rates(EXERCISE_SWEEP))
    sweep.add_argument("--out", default="runs/sweep", help="folder with one sub-folder per learning rate")

    commands.add_parser("info", help="versions, the CUDA device, the backend 'auto' picks")

    commands.add_parser(
        "bench",
        help="run the benchmark scripts (from a source checkout); other flags go to benchmarks/run.py",
    )
    return parser


def _device(choice: str):
    import torch

    if choice == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if choice == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("--device cuda: no CUDA device is available")
    return torch.device(choice)


def _load_data(args: argparse.Namespace):
    from tritonnet.datasets import load_dataset

    dataset = load_dataset(
        args.dataset, data_dir=args.data_dir, limit_train=args.limit_train, limit_test=args.limit_test
    )
    print(f"dataset: {dataset.name} from {dataset.source}", file=sys.stderr)
    return dataset


def _config(args: argparse.Namespace, lr: float):
    from tritonnet.trainer import TrainConfig

    return TrainConfig(
        epochs=args.epochs,
        batch_size=args.batch_size,
        lr=lr,
        grad_scale=args.grad_scale,
        seed=args.seed,
        api=args.api,
        stop_on_nonfinite=not args.allow_nonfinite,
        progress=not args.no_progress,
        cuda_graphs=not args.no_cuda_graphs,
    )


def _log(message: str) -> None:
    print(message, file=sys.stderr)


def _run_train(args: argparse.Namespace) -> int:
    from tritonnet.plots import plot_history
    from tritonnet.trainer import train

    device = _device(args.device)
    dataset = _load_data(args)
    out = Path(args.out)
    result = train(_config(args, args.lr), dataset, out, device=device, resume=args.resume, log=_log)
    if result.history:
        figures = Path(args.figures_dir or out)
        path = plot_history(
            result.history,
            figures / f"{dataset.name}_loss_accuracy.png",
            f"MLP {'-'.join(map(str, _config(args, args.lr).sizes))} on {dataset.name}: "
            f"lr {args.lr:g}, batch {args.batch_size}, grad scale {args.grad_scale}",
        )
        _log(f"figure: {path}")
    return 130 if result.interrupted else 0


def _sweep_figure_name(dataset: str, grad_scale: str) -> str:
    """`<dataset>_lr_sweep.png`, naming the grad scale when it is not the default."""
    suffix = "" if grad_scale == "batch" else f"_grad-scale-{grad_scale}"
    return f"{dataset}_lr_sweep{suffix}.png"


def _run_sweep(args: argparse.Namespace) -> int:
    from tritonnet.files import atomic_write
    from tritonnet.plots import plot_sweep
    from tritonnet.trainer import train

    device = _device(args.device)
    dataset = _load_data(args)
    out = Path(args.out)
    histories = {}
    for lr in args.lrs:
        _log(f"learning rate {lr:g}")
        run_out = out / f"lr_{lr:g}"
        resume = args.resume and (run_out / "checkpoint.pt").is_file()
        result = train(_config(args, lr), dataset, run_out, device=device, resume=resume, log=_log)
        if result.interrupted:
            return 130
        histories[lr] = result.history
    with atomic_write(out / "sweep.json", "w") as handle:
        summary = {
            "dataset": dataset.name,
            "grad_scale": args.grad_scale,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "histories": {f"{lr:g}": history for lr, history in histories.items()},
        }
        json.dump(summary, handle, indent=2)
        handle.write("\n")
    path = plot_sweep(
        histories,
        Path(args.figures_dir or out) / _sweep_figure_name(dataset.name, args.grad_scale),
        f"Test accuracy by learning rate on {dataset.name} (grad scale {args.grad_scale})",
    )
    _log(f"figure: {path}")
    for lr, history in histories.items():
        print(f"lr {lr:<6g} final test accuracy {history[-1]['test_accuracy']:.4f}")
    return 0


def _run_info() -> int:
    import torch

    from tritonnet.backend import interpreter_enabled, resolve_backend, triton_available

    print(f"tritonnet {__import__('tritonnet').__version__}")
    print(f"torch {torch.__version__}")
    if triton_available():
        import triton

        print(f"triton {triton.__version__}")
    else:
        print("triton not installed")
    if torch.cuda.is_available():
        print(f"cuda device: {torch.cuda.get_device_name()} (capability {torch.cuda.get_device_capability()})")
        device = torch.device("cuda")
    else:
        print("cuda device: none")
        device = torch.device("cpu")
    print(f"TRITON_INTERPRET: {'on' if interpreter_enabled() else 'off'}")
    print(f"backend 'auto' picks: {resolve_backend(device, 'auto')} on {device}")
    print(f"float32 matmul precision: {torch.get_float32_matmul_precision()}")
    return 0


def _run_bench(bench_args: list[str]) -> int:
    import importlib.util

    script = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"
    if not script.is_file():
        raise RuntimeError(
            f"the benchmarks ship with the source checkout, not the installed package: no {script}"
        )
    spec = importlib.util.spec_from_file_location("tritonnet_benchmarks_run", script)
    module = importlib.util.module_from_spec(spec)
    sys.path.insert(0, str(script.parent))
    spec.loader.exec_module(module)
    return module.main(bench_args) or 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    # `bench` hands its flags to benchmarks/run.py, which parses them itself.
    args, bench_args = parser.parse_known_args(argv)
    if bench_args and args.command != "bench":
        parser.error(f"unrecognized arguments: {' '.join(bench_args)}")
    from tritonnet.backend import set_backend

    if args.command not in ("info", "bench"):
        set_backend(args.backend)
    try:
        if args.command == "train":
            return _run_train(args)
        if args.command == "sweep":
            return _run_sweep(args)
        if args.command == "info":
            return _run_info()
        return _run_bench(bench_args)
    except (RuntimeError, ValueError, OSError) as error:
        print(f"tritonnet: error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
