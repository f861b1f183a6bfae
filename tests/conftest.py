"""Test set-up: kernels run in Triton's CPU interpreter where there is no GPU.

TRITON_INTERPRET must be set before any kernel module is imported; tritonnet
imports its kernels lazily, so setting it here, before the tests import anything,
is early enough. On a machine with CUDA the kernels compile for the GPU instead.
"""

from __future__ import annotations

import os

import pytest
import torch
from hypothesis import HealthCheck, settings

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import tritonnet  # noqa: E402
from tritonnet.backend import interpreter_enabled, triton_available, use_backend  # noqa: E402


def triton_runnable() -> bool:
    return triton_available() and (torch.cuda.is_available() or interpreter_enabled())


# The compiled kernels need CUDA tensors; the interpreter runs on CPU tensors.
TEST_DEVICE = "cuda" if torch.cuda.is_available() and not interpreter_enabled() else "cpu"

# The reference trusts its arguments; on the CPU a target past the last class is an
# IndexError, which the out-of-range tests check.
REFERENCE_CUDA_TARGET_SKIP = (
    "on CUDA, ATen's nll_loss meets an out-of-range target with a device-side assert, "
    "which leaves the CUDA context unusable for every later test; the public entry "
    "points check labels before they get here (test_validation)"
)

# Hypothesis' settings for a test over random shapes: 30 examples keep the
# interpreted kernels' time small; the `backend` fixture only selects a backend,
# so it holds no state one example could leave to the next.
random_examples = settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])

requires_triton = pytest.mark.skipif(
    not triton_runnable(), reason="needs the triton package, and CUDA or TRITON_INTERPRET=1"
)


def assert_rejects_bad_x(function) -> None:
    """`function(x)`, a launcher of a row-wise kernel, refuses, naming x, what is
    not a tensor, a 1-D tensor, a float64 one and one off the GPU (on meta)."""
    x = torch.randn(4, 5, device=TEST_DEVICE)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        function([[1.0]])
    with pytest.raises(ValueError, match=r"x must be 2-D .* got shape \(5,\)"):
        function(x[0])
    with pytest.raises(TypeError, match="x must have dtype float32, float16, bfloat16 .* got torch.float64"):
        function(x.double())
    with pytest.raises(ValueError, match="x must be a CUDA tensor .* got device meta"):
        function(x.to("meta"))


def exercise_step(model: tritonnet.MLP, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """One SGD step the exercise's way, `forward`, `compute_loss`,
    `backward(compute_gradient(...))`, `update`: the oracle of the fused steps."""
    onehot = torch.nn.functional.one_hot(labels.long(), model.sizes[-1]).to(x.dtype)
    probabilities = model.forward(x)
    loss = tritonnet.compute_loss(onehot, probabilities)
    model.backward(tritonnet.compute_gradient(onehot, probabilities))
    model.update()
    return loss


@pytest.fixture(params=["reference", pytest.param("triton", marks=requires_triton)])
def backend(request):
    """Runs a test once on each backend, with that backend selected."""
    with use_backend(request.param):
        yield request.param


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _restore_backend():
    """Each test starts on the backend the session started on: a test that selects
    one with `set_backend` must not change what the tests after it run on."""
    selected = tritonnet.get_backend()
    yield
    tritonnet.set_backend(selected)
