"""benchmarks/bench_step_variants.py switches each fusion off, and only that one.

The benchmark decides on a GPU which fusions to keep; its numbers mean something
only if each variant launches what it says and trains the same network. Here, in
Triton's interpreter, one fused step per variant on a small network whose first
layer splits K at this batch: the kernels it launches, and its weights against
the reference backend's step.
"""

from __future__ import annotations

import pytest
import torch

import tritonnet
from benchmark_scripts import load_script
from tritonnet.backend import use_backend

SIZES = (256, 32, 10)  # the first layer splits K in 2 on the interpreter's 8 "SMs" at batch 16
BATCH = 16

variants = load_script("bench_step_variants")


@pytest.fixture
def launched(monkeypatch):
    """(kernel name, split K or not) of every kernel launched, in order."""
    from triton.runtime.interpreter import InterpretedFunction

    names = []
    run = InterpretedFunction.run

    def counting_run(self, *args, **kwargs):
        names.append((self.fn.__name__, bool(kwargs.get("SPLIT_K", False))))
        return run(self, *args, **kwargs)

    monkeypatch.setattr(InterpretedFunction, "run", counting_run)
    return names


def _one_step(backend: str, provider: str | None = None) -> tritonnet.MLP:
    torch.manual_seed(3)
    model = tritonnet.MLP(BATCH, 0.5, SIZES)
    x, labels = torch.rand(BATCH, SIZES[0]), torch.randint(0, SIZES[-1], (BATCH,))
    step = tritonnet.make_step(model, cuda_graph=False)
    with use_backend(backend):
        if provider is None:
            step(x, labels)
        else:
            with variants.variant(provider):
                step(x, labels)
    return model


@pytest.mark.parametrize("provider", [name for name in variants.PROVIDERS if name != "persistent"])
def test_each_variant_launches_what_it_says_and_trains_as_the_reference(provider, launched):
    model = _one_step("triton", provider)
    split_forwards = sum(1 for name, split in launched if name == "linear_forward_kernel" and split)
    separate_steps = sum(1 for name, _ in launched if name == "sgd_update_kernel")
    one_launch_backwards = sum(1 for name, _ in launched if name == "linear_backward_sgd_kernel")
    assert split_forwards == (0 if provider in ("unsplit-forward", "neither") else 1)
    assert separate_steps == (len(SIZES) - 1 if provider in ("separate-sgd", "neither") else 0)
    # The output layer's backward in one launch; the first layer needs no input gradient.
    assert one_launch_backwards == (0 if provider in ("separate-sgd", "two-launch-backward", "neither") else 1)
    expected = _one_step("reference")
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)


@pytest.mark.parametrize("provider", ["neither", "two-launch-backward"])
def test_the_variants_put_everything_back(provider):
    from tritonnet import triton_backend
    from tritonnet.kernels import linear_backward_sgd, linear_forward

    def switches():
        return (triton_backend.linear_backward_sgd, linear_forward.forward_splits,
                linear_backward_sgd.backward_in_one_launch)

    before = switches()
    with variants.variant(provider):
        assert switches() != before
    assert switches() == before


def test_the_pdl_variant_asks_for_pdl_and_puts_the_setting_back(monkeypatch):
    import os

    monkeypatch.delenv("TRITONNET_PDL", raising=False)
    with variants.variant("pdl"):
        assert os.environ["TRITONNET_PDL"] == "1"
    assert "TRITONNET_PDL" not in os.environ
    monkeypatch.setenv("TRITONNET_PDL", "0")
    with variants.variant("pdl"):
        assert os.environ["TRITONNET_PDL"] == "1"
    assert os.environ["TRITONNET_PDL"] == "0"


def test_the_persistent_provider_trains_as_the_fused_one():
    """"persistent" swaps the whole step for `PersistentStep` (its kernel's own tests
    are test_persistent_step.py): a step of the benchmark's epoch on a small data
    set, against the "fused" provider's."""
    from bench_training import Data
    from tritonnet.persistent_step import PersistentStep

    images, labels = torch.rand(BATCH, 784), torch.randint(0, 10, (BATCH,))
    data = Data("tiny", images, labels, images, labels)
    runs = {name: variants.VariantEpochs(name, data, BATCH, limit=1) for name in ("fused", "persistent")}
    assert isinstance(runs["persistent"].steps.step, PersistentStep)
    for run in runs.values():
        run.train_epoch()
    expected = runs["fused"].model.state_dict()
    for name, value in runs["persistent"].model.state_dict().items():
        torch.testing.assert_close(value, expected[name], rtol=1e-5, atol=1e-6, msg=name)
