"""The `tritonnet` command: train, sweep learning rates, print info, run benchmarks.

    tritonnet train --epochs 30 --batch-size 64 --lr 0.1 --out runs/main
    tritonnet sweep --lrs 1,0.5,0.25,0.01,0.001 --epochs 30 --out runs/sweep
    tritonnet info
    tritonnet bench --quick          # in the root of a source checkout

Bad flags or values give an argparse error naming the flag (exit code 2): those
that need the file system or the data (`tritonnet.flags`) are checked before
training starts. A run that cannot start (no data set found, a checkpoint from
another run, an --out in use or holding a run) or a disk error prints one line
and exits with 1. Ctrl-C or SIGTERM in `train` or `sweep` prints one line, what
is saved and the command that resumes, and exits with 128 + the signal's number.
None prints a traceback. `docs/cli.md` describes every flag.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Sequence

from tritonnet import __version__, distributed, flags
from tritonnet.backend import BACKENDS
from tritonnet.interrupts import Interrupted, SignalGuard

DEVICE_CHOICES = ("auto", "cpu", "cuda")
API_CHOICES = ("exercise", "module")
EXERCISE_SWEEP = "1,0.5,0.25,0.01,0.001"


def _add_run_flags(parser: argparse.ArgumentParser) -> None:
    from tritonnet.datasets import DATASET_NAMES
    from tritonnet.layers import GRAD_SCALES

    parser.add_argument("--epochs", type=flags.positive_int, default=30,
                        help="passes over the training set (default: %(default)s)")
    parser.add_argument("--batch-size", type=flags.positive_int, default=64,
                        help="images per SGD step, at most the training set (default: %(default)s)")
    parser.add_argument(
        "--grad-scale",
        choices=GRAD_SCALES,
        default="batch",
        help="how weight gradients are normalized: by the batch rows (the mean loss), "
        "by in_features (the report's solution), or not at all (default: %(default)s)",
    )
    parser.add_argument("--dataset", choices=DATASET_NAMES, default="auto",
                        help="auto: MNIST where it is found or can be downloaded, else Fashion-MNIST "
                        "where it is on disk (default: %(default)s)")
    parser.add_argument("--data-dir", type=flags.folder,
                        help="the only folder to look in for the IDX files (default: TRITONNET_DATA if set, "
                        "else the cache, the system folders, then a download)")
    parser.add_argument("--backend", choices=BACKENDS, default="auto",
                        help="Triton kernels, the PyTorch reference, or auto: Triton where it can run "
                        "on the device, else the reference (default: %(default)s)")
    parser.add_argument("--device", choices=DEVICE_CHOICES, default="auto",
                        help="auto: cuda where a GPU is available, else cpu (default: %(default)s)")
    parser.add_argument("--seed", type=flags.seed, default=1,
                        help="seeds the initial weights and the batch order (default: %(default)s)")
    parser.add_argument("--api", choices=API_CHOICES, default="exercise",
                        help="the exercise's layer classes, or the nn.Module twin with torch.optim.SGD "
                        "(default: %(default)s)")
    parser.add_argument("--limit-train", type=flags.positive_int,
                        help="use only the first N training images (default: all)")
    parser.add_argument("--limit-test", type=flags.positive_int,
                        help="use only the first N test images (default: all)")
    parser.add_argument("--figures-dir", type=flags.folder, help="where the figures go (default: the --out folder)")
    folder_use = parser.add_mutually_exclusive_group()
    folder_use.add_argument("--resume", action="store_true",
                            help="continue from the checkpoint in --out (default: off)")
    folder_use.add_argument("--overwrite", action="store_true",
                            help="replace the run in --out; without it a non-empty --out is refused (default: off)")
    parser.add_argument("--allow-nonfinite", action="store_true",
                        help="go on when the loss becomes NaN or infinite, instead of stopping (default: off)")
    parser.add_argument("--no-progress", action="store_true",
                        help="no progress bar (default: off)")
    parser.add_argument("--no-cuda-graphs", action="store_true",
                        help="on a GPU, launch every kernel from Python instead of replaying "
                        "64 training steps at a time from a CUDA graph: slower, and the batch "
                        "order is drawn on the CPU, so it differs (default: off)")


def build_parser() -> argparse.ArgumentParser:
    from tritonnet.bench_flags import add_bench_flags

    parser = argparse.ArgumentParser(
        prog="tritonnet", description="The exercise MLP, trained on fused Triton kernels."
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train the MLP and draw its loss and accuracy figures")
    _add_run_flags(train)
    train.add_argument("--lr", type=flags.learning_rate, default=0.1,
                       help="the SGD learning rate (default: %(default)s)")
    train.add_argument("--out", type=flags.folder, default="runs/train",
                       help="folder for history, checkpoint and figures (default: %(default)s)")

    sweep = commands.add_parser("sweep", help="train once per learning rate and compare test accuracy")
    _add_run_flags(sweep)
    sweep.add_argument("--lrs", type=flags.learning_rates, default=EXERCISE_SWEEP,
                       help="comma-separated learning rates, each trained into <out>/lr_<rate> "
                       "(default: %(default)s)")
    sweep.add_argument("--out", type=flags.folder, default="runs/sweep",
                       help="folder with one sub-folder per learning rate (default: %(default)s)")

    commands.add_parser("info", help="versions, the CUDA device, the backend 'auto' picks")

    bench = commands.add_parser(
        "bench",
        help="run the benchmarks of the source checkout in the current folder",
        description="Run benchmarks/run.py of the tritonnet checkout in the current folder: "
        "the benchmarks ship with the source, not the installed package.",
    )
    add_bench_flags(bench)
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


def _check_folders(args: argparse.Namespace) -> None:
    flags.check_writable_folder("--out", args.out)
    if args.figures_dir is not None:
        flags.check_writable_folder("--figures-dir", args.figures_dir)


def _hold_out(args: argparse.Namespace, held: contextlib.ExitStack) -> Path:
    """--out, held by this command until it ends (`tritonnet.run_folder`): once the
    flags are checked, so that a bad flag leaves nothing behind."""
    from tritonnet.run_folder import claim_run_folder

    return held.enter_context(claim_run_folder(args.out, resume=args.resume, overwrite=args.overwrite))


def _run_train(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    from tritonnet.plots import plot_history
    from tritonnet.trainer import train

    # Under torchrun, rank 0 alone holds --out and draws the figure (docs/distributed.md).
    ranks, device = held.enter_context(distributed.start(_device(args.device)))
    _check_folders(args)
    dataset = _load_data(args)
    flags.check_batch_size(args.batch_size, len(dataset.train_images))
    out = _hold_out(args, held) if ranks.is_writer else Path(args.out)
    result = train(_config(args, args.lr), dataset, out, device=device, resume=args.resume,
                   overwrite=args.overwrite, log=_log, ranks=ranks)
    if result.interrupted:
        raise Interrupted(result.stop_signal)
    if result.history and ranks.is_writer:
        figures = Path(args.figures_dir or out)
        path = plot_history(
            result.history,
            figures / f"{dataset.name}_loss_accuracy.png",
            f"MLP {'-'.join(map(str, _config(args, args.lr).sizes))} on {dataset.name}: "
            f"lr {args.lr:g}, batch {args.batch_size}, grad scale {args.grad_scale}",
        )
        _log(f"figure: {path}")
    return 0


def _sweep_figure_name(dataset: str, grad_scale: str) -> str:
    """`<dataset>_lr_sweep.png`, naming the grad scale when it is not the default."""
    suffix = "" if grad_scale == "batch" else f"_grad-scale-{grad_scale}"
    return f"{dataset}_lr_sweep{suffix}.png"


def _run_sweep(args: argparse.Namespace, held: contextlib.ExitStack) -> int:
    from tritonnet.files import atomic_write
    from tritonnet.history import json_safe
    from tritonnet.plots import plot_sweep
    from tritonnet.trainer import train

    distributed.refuse_under_torchrun("sweep", "under torchrun, run `train` once per learning rate")
    device = _device(args.device)
    _check_folders(args)
    dataset = _load_data(args)
    flags.check_batch_size(args.batch_size, len(dataset.train_images))
    out = _hold_out(args, held)
    histories = {}
    for lr in args.lrs:
        _log(f"learning rate {lr:g}")
        run_out = out / flags.sweep_folder(lr)
        resume = args.resume and (run_out / "checkpoint.pt").is_file()
        result = train(_config(args, lr), dataset, run_out, device=device, resume=resume,
                       overwrite=args.overwrite, log=_log)
        if result.interrupted:
            raise Interrupted(result.stop_signal)
        histories[lr] = result.history
    with atomic_write(out / "sweep.json", "w") as handle:
        summary = {
            "dataset": dataset.name,
            "grad_scale": args.grad_scale,
            "batch_size": args.batch_size,
            "epochs": args.epochs,
            "histories": {f"{lr:g}": history for lr, history in histories.items()},
        }
        json.dump(json_safe(summary), handle, indent=2, allow_nan=False)
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


def _run_bench(bench_argv: list[str]) -> int:
    """Run the checkout's benchmarks/run.py with the flags given, in a process of its own."""
    script = Path("benchmarks") / "run.py"
    if not script.is_file():
        raise RuntimeError(
            "the benchmarks run from a source checkout, not the installed package: run "
            f"`tritonnet bench` in the root of a tritonnet checkout (no {script} in {Path.cwd()})"
        )
    try:
        return subprocess.run([sys.executable, str(script), *bench_argv]).returncode
    except KeyboardInterrupt:  # the benchmarks got it too, and stopped
        return 130


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser()
    args = parser.parse_args(argv)
    from tritonnet.backend import set_backend

    if args.command in ("train", "sweep"):
        set_backend(args.backend)
    try:
        if args.command in ("train", "sweep"):
            with SignalGuard(), contextlib.ExitStack() as held:
                return (_run_train if args.command == "train" else _run_sweep)(args, held)
        if args.command == "info":
            from tritonnet.info import print_info

            return print_info()
        return _run_bench(argv[argv.index("bench") + 1:])
    except Interrupted as stop:
        from tritonnet.stop_report import stop_report

        if distributed.writer_process():  # under torchrun, one line for the run
            print(f"tritonnet: {stop_report(args.command, args.out, argv)}", file=sys.stderr)
        return 128 + stop.signum
    except flags.FlagError as error:
        parser.exit(2, f"{parser.prog} {args.command}: error: argument {error.flag}: {error}\n")
    except (RuntimeError, ValueError, OSError) as error:
        print(f"tritonnet: error: {distributed.rank_label()}{error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
