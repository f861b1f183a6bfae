"""The dispatch point: which backend runs where, and how a wrong choice is reported."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import tritonnet
from conftest import TEST_DEVICE, requires_triton
from tritonnet import backend


def test_set_backend_validates_and_use_backend_restores():
    assert tritonnet.get_backend() == "auto"
    with pytest.raises(ValueError, match="backend must be one of"):
        tritonnet.set_backend("cuda")
    with tritonnet.use_backend("reference"):
        assert tritonnet.get_backend() == "reference"
        with pytest.raises(ValueError):
            with tritonnet.use_backend("numpy"):
                pass
        assert tritonnet.get_backend() == "reference"
    assert tritonnet.get_backend() == "auto"


def test_reference_is_picked_by_name():
    with tritonnet.use_backend("reference"):
        assert backend.ops_for(torch.zeros(1)).__name__ == "tritonnet.reference"


def test_auto_on_cpu_follows_the_interpreter(monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert backend.resolve_backend(cpu, "auto") == "reference"
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    expected = "triton" if backend.triton_available() else "reference"
    assert backend.resolve_backend(cpu, "auto") == expected


@pytest.mark.parametrize("interpret", ["0", "1"])
@pytest.mark.parametrize("name", backend.BACKENDS)
def test_the_cpu_shortcut_answers_as_resolve_backend(monkeypatch, interpret, name):
    monkeypatch.setenv("TRITON_INTERPRET", interpret)
    with tritonnet.use_backend(name):
        try:
            expected = backend.resolve_backend(torch.device("cpu")) == "reference"
        except RuntimeError:  # "triton" where it cannot run: the ops raise it, not this test
            expected = False
        assert backend.cpu_runs_reference() == expected


def test_triton_on_cpu_without_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(RuntimeError, match="cannot run on device cpu.*TRITON_INTERPRET=1"):
        backend.resolve_backend(torch.device("cpu"), "triton")


@requires_triton
def test_auto_sends_dtypes_the_kernels_do_not_load_to_the_reference():
    x = torch.randn(4, 5, device=TEST_DEVICE)
    labels = torch.zeros(4, dtype=torch.int64, device=TEST_DEVICE)
    with tritonnet.use_backend("auto"):
        # Integer labels beside fp32 logits stay on the kernels.
        assert backend.ops_for(x, labels).__name__ == "tritonnet.triton_backend"
        ops = backend.ops_for(x.double(), labels)
        assert ops.__name__ == "tritonnet.reference"
        torch.testing.assert_close(ops.softmax(x.double()), torch.softmax(x.double(), dim=1))
    with tritonnet.use_backend("triton"):
        ops = backend.ops_for(x.double())
        assert ops.__name__ == "tritonnet.triton_backend"
        with pytest.raises(TypeError, match="x must have dtype float32, float16, bfloat16 .* got torch.float64"):
            ops.softmax(x.double())


def test_tensors_on_two_devices_are_refused():
    with pytest.raises(ValueError, match="one device"):
        backend.ops_for(torch.zeros(1), torch.zeros(1, device="meta"))


def test_import_touches_neither_triton_nor_cuda():
    # A fresh interpreter: importing tritonnet (and making a network) must not
    # import triton or initialize CUDA, so it works on machines without either.
    code = (
        "import sys, torch, tritonnet\n"
        "tritonnet.MLP(64, 0.1)\n"
        "assert 'triton' not in sys.modules, 'triton imported'\n"
        "assert not torch.cuda.is_initialized(), 'CUDA initialized'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)
