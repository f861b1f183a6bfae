"""A catalog of bad inputs at the public entry points, each with its expected error.

Every case must raise the documented exception type with a message that names the
argument and says what came in: never a crash inside a kernel, a hang, or a
silently wrong answer. The command line's catalog follows: each bad flag exits
with 2 and names the flag, before any training starts.
"""

from __future__ import annotations

import fcntl
import re
import shlex
import tempfile
from pathlib import Path

import pytest
import torch

import tritonnet
from conftest import TEST_DEVICE
from test_cli import tiny_dataset
from tritonnet import datasets
from tritonnet.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from tritonnet.cli import main
from tritonnet.datasets import Dataset, load_dataset
from tritonnet.fused_step import FusedStep
from tritonnet.run_folder import LOCK_NAME, RunFolderError, claim_run_folder
from tritonnet.trainer import TrainConfig, train

SIZES = (6, 5, 4)


def linear() -> tritonnet.Linear:
    return tritonnet.Linear(6, 5, 4)


def linear_after_forward() -> tritonnet.Linear:
    layer = linear()
    layer.forward(torch.randn(4, 6))
    return layer


def mlp() -> tritonnet.MLP:
    return tritonnet.MLP(4, 0.1, SIZES)


def step():
    """The step `make_step` chooses here: feature-major, on the reference backend."""
    return tritonnet.make_step(mlp())


def fused_step() -> FusedStep:
    """The batch-major fused step, which checks the labels' range on its own."""
    return FusedStep(mlp())


def load_checkpoint_bytes(data: bytes):
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pt"
        path.write_bytes(data)
        return load_checkpoint(path)


def load_saved(state) -> None:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "checkpoint.pt"
        torch.save(state, path)
        return load_checkpoint(path)


def claim_folder_holding_a_file(**options) -> None:
    with tempfile.TemporaryDirectory() as folder:
        (Path(folder) / "history.json").write_text("{}")
        with claim_run_folder(folder, **options):
            pass


def claim_folder_in_use() -> None:
    with tempfile.TemporaryDirectory() as folder, open(Path(folder) / LOCK_NAME, "a") as other_run:
        fcntl.flock(other_run.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)  # as another process would
        with claim_run_folder(folder):
            pass


def toy_dataset(rows: int) -> Dataset:
    images = torch.randn(rows, SIZES[0], generator=torch.Generator().manual_seed(0))
    labels = torch.zeros(rows, dtype=torch.int64)
    return Dataset("toy", images, labels, images, labels, 0.0, 1.0, Path("memory"))


def resume_on(rows: int | None) -> None:
    """Resume a one-epoch run of 8 rows on `rows` rows (None: with no checkpoint)."""
    settings = TrainConfig(epochs=1, batch_size=4, sizes=SIZES, progress=False)
    with tempfile.TemporaryDirectory() as folder:
        if rows is not None:
            train(settings, toy_dataset(8), folder, log=lambda _message: None)
        train(settings, toy_dataset(rows or 8), folder, resume=True)


CATALOG = [
    # (case, call, exception, message pattern)
    ("Linear in_features 0", lambda: tritonnet.Linear(0, 5, 4), ValueError, r"in_features.*positive.*0"),
    ("Linear out_features float", lambda: tritonnet.Linear(6, 2.5, 4), ValueError, r"out_features.*2\.5"),
    ("Linear batch_size bool", lambda: tritonnet.Linear(6, 5, True), ValueError, r"batch_size.*True"),
    ("Linear negative lr", lambda: tritonnet.Linear(6, 5, 4, lr=-0.1), ValueError, r"lr.*-0\.1"),
    ("Linear nan lr", lambda: tritonnet.Linear(6, 5, 4, lr=float("nan")), ValueError, r"lr.*nan"),
    ("Linear lr past float32", lambda: tritonnet.Linear(6, 5, 4, lr=1e308), ValueError, r"lr must be at most 3.40282e\+38 for torch.float32 weights, got 1e\+308"),
    ("MLP lr past float16", lambda: tritonnet.MLP(4, 1e5, SIZES, dtype=torch.float16), ValueError, r"lr must be at most 65504 for torch.float16 weights, got 100000"),
    ("Linear unknown grad_scale", lambda: tritonnet.Linear(6, 5, 4, grad_scale="mean"), ValueError, r"grad_scale.*'mean'"),
    ("Linear integer dtype", lambda: tritonnet.Linear(6, 5, 4, dtype=torch.int32), TypeError, r"dtype.*int32"),
    ("forward 1-D input", lambda: linear().forward(torch.randn(6)), ValueError, r"input.*2-D.*\(6,\)"),
    ("forward wrong columns", lambda: linear().forward(torch.randn(4, 7)), ValueError, r"input.*6 columns.*\(4, 7\)"),
    ("forward integer input", lambda: linear().forward(torch.ones(4, 6, dtype=torch.int64)), TypeError, r"input.*floating.*int64"),
    ("forward dtype mismatch", lambda: linear().forward(torch.randn(4, 6, dtype=torch.float64)), TypeError, r"input torch.float64.*weight torch.float32"),
    ("forward device mismatch", lambda: linear().forward(torch.randn(4, 6, device="meta")), ValueError, r"input on meta.*weight on cpu"),
    ("forward not a tensor", lambda: linear().forward([[1.0] * 6]), TypeError, r"input.*torch.Tensor.*list"),
    ("backward before forward", lambda: linear().backward(torch.randn(4, 5)), RuntimeError, r"before forward"),
    ("backward batch mismatch", lambda: linear_after_forward().backward(torch.randn(3, 5)), ValueError, r"grad_output.*4 rows.*\(3, 5\)"),
    ("backward wrong columns", lambda: linear_after_forward().backward(torch.randn(4, 6)), ValueError, r"grad_output.*5 columns"),
    ("update before backward", lambda: linear().update(), RuntimeError, r"before backward"),
    ("Sigmoid wrong columns", lambda: tritonnet.Sigmoid(5, 4).forward(torch.randn(4, 3)), ValueError, r"input.*5 columns"),
    ("Softmax 3-D", lambda: tritonnet.Softmax(torch.randn(2, 3, 4)), ValueError, r"input.*2-D.*\(2, 3, 4\)"),
    ("Softmax integer", lambda: tritonnet.Softmax(torch.ones(2, 3, dtype=torch.int32)), TypeError, r"input.*int32"),
    ("compute_loss shape mismatch", lambda: tritonnet.compute_loss(torch.zeros(4, 3), torch.zeros(4, 5)), ValueError, r"target_onehot.*5 columns.*\(4, 3\)"),
    ("compute_gradient rows mismatch", lambda: tritonnet.compute_gradient(torch.zeros(3, 5), torch.zeros(4, 5)), ValueError, r"target_onehot.*4 rows"),
    ("MLP one size", lambda: tritonnet.MLP(4, 0.1, (784,)), ValueError, r"sizes.*\(784,\)"),
    ("MLP zero size", lambda: tritonnet.MLP(4, 0.1, (784, 0, 10)), ValueError, r"sizes.*0"),
    ("step float labels", lambda: step()(torch.randn(4, 6), torch.zeros(4)), TypeError, r"labels.*integer.*float32"),
    ("step labels shape", lambda: step()(torch.randn(4, 6), torch.zeros(4, 1, dtype=torch.int64)), ValueError, r"labels.*\(4,\).*\(4, 1\)"),
    ("fused step label too large", lambda: fused_step()(torch.randn(4, 6), torch.tensor([0, 1, 4, 2])), ValueError, r"labels.*\[0, 4\).*0 to 4"),
    ("fused step negative label", lambda: fused_step()(torch.randn(4, 6), torch.tensor([0, -1, 3, 2])), ValueError, r"labels.*-1"),
    ("step label too large", lambda: step()(torch.randn(4, 6), torch.tensor([0, 1, 4, 2])), ValueError, r"labels.*\[0, 4\).*0 to 4"),
    ("step negative label", lambda: step()(torch.randn(4, 6), torch.tensor([0, -1, 3, 2])), ValueError, r"labels.*-1"),
    ("step label -100", lambda: step()(torch.randn(4, 6), torch.tensor([0, -100, 3, 2], dtype=torch.int32)), ValueError, r"labels.*-100"),
    ("step x columns", lambda: step()(torch.randn(4, 7), torch.tensor([0, 1, 3, 2])), ValueError, r"x must have 6 columns"),
    ("step x dtype", lambda: step()(torch.randn(4, 6, dtype=torch.float64), torch.tensor([0, 1, 3, 2])), TypeError, r"x torch.float64.*weight torch.float32"),
    ("make_step not a model", lambda: tritonnet.make_step(tritonnet.Linear(6, 5, 4)), TypeError, r"model must be a tritonnet.MLP.*Linear"),
    ("MLP backward before forward", lambda: mlp().backward(torch.zeros(4, 4)), RuntimeError, r"before forward"),
    ("load_state_dict missing key", lambda: mlp().load_state_dict({}), ValueError, r"linears.0.weight"),
    ("load_state_dict non-tensor value", lambda: mlp().load_state_dict(dict.fromkeys(mlp().state_dict(), 1.0)), TypeError, r"state\['linears.0.weight'\] must be a torch.Tensor, got float"),
    ("set_backend unknown", lambda: tritonnet.set_backend("cuda"), ValueError, r"backend.*'cuda'"),
    ("load_dataset unknown", lambda: load_dataset("cifar10"), ValueError, r"name.*'cifar10'"),
    ("load_dataset limit 0", lambda: load_dataset("fashion-mnist", limit_train=0), ValueError, r"limit_train.*0"),
    ("load_checkpoint empty file", lambda: load_checkpoint_bytes(b""), CheckpointError, r"checkpoint\.pt is an empty file"),
    ("load_checkpoint not a zip", lambda: load_checkpoint_bytes(b"text"), CheckpointError, r"checkpoint\.pt is damaged or not a checkpoint"),
    ("load_checkpoint pickled object", lambda: load_saved({"lr": Path("x")}), CheckpointError, r"does not unpickle"),
    ("load_checkpoint not a dict", lambda: load_saved([1, 2]), CheckpointError, r"not a tritonnet checkpoint \(it holds a list"),
    ("load_checkpoint no format", lambda: load_saved({"epoch": 1}), CheckpointError, r"'format_version' is missing"),
    ("load_checkpoint missing file", lambda: load_checkpoint("/nonexistent/checkpoint.pt"), FileNotFoundError, r"no checkpoint at /nonexistent"),
    ("save_checkpoint without fields", lambda: save_checkpoint("/nonexistent/checkpoint.pt", {}), CheckpointError, r"refusing to write checkpoint.*'config' is missing"),
    ("run folder holding a run", lambda: claim_folder_holding_a_file(), RunFolderError, r"not empty \(history\.json\).*--resume.*--overwrite"),
    ("run folder resume and overwrite", lambda: claim_folder_holding_a_file(resume=True, overwrite=True), ValueError, r"resume and overwrite contradict"),
    ("run folder in use", claim_folder_in_use, RunFolderError, r"is in use by another tritonnet run"),
    ("train resume without a checkpoint", lambda: resume_on(None), FileNotFoundError, r"no checkpoint at .*checkpoint\.pt"),
    ("train resume on other data", lambda: resume_on(12), ValueError, r"other data: train_rows: 8 in the checkpoint, 12 now"),
]


@pytest.mark.parametrize("call,exception,pattern", [c[1:] for c in CATALOG], ids=[c[0] for c in CATALOG])
def test_bad_input_is_named(call, exception, pattern):
    # The checks run at the entry, before dispatch; the reference keeps this fast.
    with tritonnet.use_backend("reference"), pytest.raises(exception, match=pattern):
        call()


def test_catalog_is_large_enough():
    assert len(CATALOG) >= 20


# One bad command line a line, ` => `, then the pattern its error must match. {a_file}
# stands for a file (this one), where a folder is expected. The training set has
# ten images (test_cli.tiny_dataset).
CLI_CATALOG = r"""
train --lr -0.1                      => argument --lr: expected a positive number .* got '-0.1'
train --lr nan                       => argument --lr: .*got 'nan'
train --lr 1e308                     => argument --lr: expected a positive number up to 3.40282e\+38 \(float32 weights\), got '1e308'
train --batch-size 0                 => argument --batch-size: expected a positive integer up to 2147483647, got '0'
train --batch-size 99999999999999999999999 => argument --batch-size: .*got '99999999999999999999999'
train --batch-size 11                => argument --batch-size: 11 is larger than the training set \(10 images\)
sweep --batch-size 64                => argument --batch-size: 64 is larger than the training set
train --epochs two                   => argument --epochs: .*got 'two'
train --seed 1e23                    => argument --seed: expected an integer from -9223372036854775808 to 18446744073709551615, got '1e23'
train --seed 18446744073709551616    => argument --seed: .*got '18446744073709551616'
train --limit-train 0                => argument --limit-train: .*got '0'
train --dataset cifar                => argument --dataset: invalid choice: 'cifar'
train --backend cuda                 => argument --backend: invalid choice: 'cuda'
train --grad-scale mean              => argument --grad-scale: invalid choice: 'mean'
train --resume --overwrite           => argument --overwrite: not allowed with argument --resume
train --out ""                       => argument --out: expected a folder, got an empty string
sweep --out ""                       => argument --out: expected a folder, got an empty string
train --out {a_file}                 => argument --out: {a_file} is not a folder
train --out {a_file}/run             => argument --out: {a_file} is not a folder
train --figures-dir ""               => argument --figures-dir: expected a folder
train --figures-dir {a_file}         => argument --figures-dir: {a_file} is not a folder
sweep --figures-dir {a_file}         => argument --figures-dir: {a_file} is not a folder
train --data-dir ""                  => argument --data-dir: expected a folder
sweep --lrs 1,x                      => argument --lrs: .*got 'x'
sweep --lrs 0.1,0.5,0.1              => argument --lrs: 0.1 is given twice
sweep --lrs 0.1,0.1000001            => argument --lrs: 0.1 and 0.1000001 would share lr_0.1
sweep --lrs ,                        => argument --lrs: expected a comma-separated list
bench --benchmarks gemm              => argument --benchmarks: expected names from launch,linear,softmax,output_layer,training, got 'gemm'
bench --results-dir ""               => argument --results-dir: expected a folder, got an empty string
bench --quick --smoke                => argument --smoke: not allowed with argument --quick
fly                                  => invalid choice: 'fly'
train --bogus                        => unrecognized arguments: --bogus
"""
A_FILE = str(Path(__file__))
CLI_CASES = [
    (shlex.split(command.replace("{a_file}", A_FILE)), pattern.strip().replace("{a_file}", re.escape(A_FILE)))
    for command, pattern in (line.split(" => ") for line in CLI_CATALOG.strip().splitlines())
]


@pytest.mark.parametrize("arguments,pattern", CLI_CASES, ids=[" ".join(case[0]) for case in CLI_CASES])
def test_bad_flag_exits_2_naming_it(arguments, pattern, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(datasets, "load_dataset", tiny_dataset)
    out = tmp_path / "run"
    if arguments[0] in ("train", "sweep"):
        arguments = [*arguments, "--no-progress"]
        arguments += [] if "--out" in arguments else ["--out", str(out)]
        arguments += [] if "--backend" in arguments else ["--backend", "reference"]
    with pytest.raises(SystemExit) as exit_info:
        main(arguments)
    assert exit_info.value.code == 2
    error = capsys.readouterr().err
    assert re.search(pattern, error), error
    assert "Traceback" not in error
    assert not out.exists(), "nothing runs before the flags are checked"


def test_empty_batch_gives_empty_outputs(backend):
    layer = tritonnet.Linear(6, 5, 4, device=TEST_DEVICE)
    output = layer.forward(torch.empty(0, 6, device=TEST_DEVICE))
    assert output.shape == (0, 5)
    assert layer.backward(torch.empty(0, 5, device=TEST_DEVICE)).shape == (0, 6)
    assert torch.equal(layer.grad_weight, torch.zeros(6, 5, device=TEST_DEVICE))
    model = tritonnet.MLP(4, 0.1, SIZES, device=TEST_DEVICE)
    assert model.forward(torch.empty(0, 6, device=TEST_DEVICE)).shape == (0, 4)


def test_nan_input_propagates_as_in_torch(backend):
    # Documented: NaN and Inf are not checked for (that would read the data back
    # at every call); they propagate to the outputs of their rows, as in torch.
    model = tritonnet.MLP(4, 0.1, SIZES, device=TEST_DEVICE)
    x = torch.randn(4, 6, device=TEST_DEVICE)
    x[1, 2] = float("nan")
    probabilities = model.forward(x)
    assert torch.isnan(probabilities[1]).all()
    assert torch.isfinite(probabilities[[0, 2, 3]]).all()
