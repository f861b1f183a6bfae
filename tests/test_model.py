"""The MLP and its training steps against the exercise's step-by-step API and float64 autograd."""

from __future__ import annotations

import pytest
import torch

import tritonnet
from conftest import TEST_DEVICE, exercise_step
from tritonnet.fused_step import FusedStep
from tritonnet.layers import GRAD_SCALES, gradient_scale

SIZES = (24, 16, 12, 10)
ROWS = 8
# fp32 against float64 through three layers; see tests/test_layers.py.
FP32_TOLERANCE = dict(rtol=1e-4, atol=1e-5)


def _autograd_mlp(model: tritonnet.MLP, x: torch.Tensor, target: torch.Tensor):
    """The same network in float64 autograd: its summed loss and parameter leaves."""
    params = []
    hidden = x.double()
    for index, linear in enumerate(model.linears):
        weight = linear.weight.double().requires_grad_()
        bias = linear.bias.double().requires_grad_()
        params.append((weight, bias))
        hidden = hidden @ weight + bias
        if index < len(model.linears) - 1:
            hidden = torch.sigmoid(hidden)
    loss_sum = torch.nn.functional.cross_entropy(hidden, target, reduction="sum")
    return torch.softmax(hidden, dim=1), loss_sum, params


@pytest.mark.parametrize("grad_scale", GRAD_SCALES)
def test_backward_matches_autograd(backend, grad_scale):
    model = tritonnet.MLP(ROWS, 0.1, SIZES, grad_scale=grad_scale, device=TEST_DEVICE)
    x = torch.randn(ROWS, SIZES[0], device=TEST_DEVICE)
    target = torch.randint(0, SIZES[-1], (ROWS,), device=TEST_DEVICE)
    expected_probabilities, loss_sum, params = _autograd_mlp(model, x, target)
    loss_sum.backward()

    probabilities = model.forward(x)
    torch.testing.assert_close(probabilities.double(), expected_probabilities.detach(), **FP32_TOLERANCE)
    onehot = torch.nn.functional.one_hot(target, SIZES[-1]).float()
    model.backward(tritonnet.compute_gradient(onehot, probabilities))
    for linear, (weight, bias) in zip(model.linears, params):
        scale = gradient_scale(grad_scale, ROWS, linear.in_features)
        torch.testing.assert_close(linear.grad_weight.double(), weight.grad * scale, **FP32_TOLERANCE)
        torch.testing.assert_close(linear.grad_bias.double(), bias.grad * scale, **FP32_TOLERANCE)


@pytest.mark.parametrize("make", [tritonnet.make_step, FusedStep], ids=["make_step", "fused"])
@pytest.mark.parametrize("grad_scale", GRAD_SCALES)
def test_the_steps_take_the_exercise_step(backend, grad_scale, make):
    # `make_step`'s step (feature-major on the reference, fused on Triton) and the
    # batch-major fused step fuse each layer's backward with its SGD step; the
    # weights must follow the exercise's unfused step up to rounding (the fused
    # update adds lr * scale * x^T dz inside the GEMM instead of after it).
    torch.manual_seed(5)
    fused = tritonnet.MLP(ROWS, 0.5, SIZES, grad_scale=grad_scale, device=TEST_DEVICE)
    torch.manual_seed(5)
    kept = tritonnet.MLP(ROWS, 0.5, SIZES, grad_scale=grad_scale, device=TEST_DEVICE)
    step = make(fused)
    for _ in range(3):
        x = torch.randn(ROWS, SIZES[0], device=TEST_DEVICE)
        target = torch.randint(0, SIZES[-1], (ROWS,), device=TEST_DEVICE)
        loss = step(x, target)
        torch.testing.assert_close(loss, exercise_step(kept, x, target), **FP32_TOLERANCE)
    assert fused.linears[0].grad_weight is None and kept.linears[0].grad_weight is not None
    for ours, theirs in zip(fused.linears, kept.linears):
        torch.testing.assert_close(ours.weight, theirs.weight, **FP32_TOLERANCE)
        torch.testing.assert_close(ours.bias, theirs.bias, **FP32_TOLERANCE)


def test_make_step_handles_a_short_last_batch(backend):
    step = tritonnet.make_step(tritonnet.MLP(ROWS, 0.1, SIZES, device=TEST_DEVICE))
    for rows in (ROWS, 3, ROWS):
        x = torch.randn(rows, SIZES[0], device=TEST_DEVICE)
        loss = step(x, torch.randint(0, SIZES[-1], (rows,), device=TEST_DEVICE))
        assert torch.isfinite(loss)


def test_evaluate_counts_correct_predictions(backend):
    model = tritonnet.MLP(ROWS, 0.1, SIZES, device=TEST_DEVICE)
    x = torch.randn(20, SIZES[0], device=TEST_DEVICE)
    target = torch.randint(0, SIZES[-1], (20,), device=TEST_DEVICE)
    probabilities, loss_sum, _ = _autograd_mlp(model, x, target)
    loss, correct = model.evaluate(x, target)
    torch.testing.assert_close(loss.double(), loss_sum.detach() / 20, **FP32_TOLERANCE)
    assert int(correct) == int((probabilities.argmax(1) == target).sum())


def test_state_dict_round_trip():
    torch.manual_seed(1)
    source = tritonnet.MLP(ROWS, 0.1, SIZES)
    torch.manual_seed(2)
    target = tritonnet.MLP(ROWS, 0.1, SIZES)
    target.load_state_dict(source.state_dict())
    for a, b in zip(source.linears, target.linears):
        assert torch.equal(a.weight, b.weight) and torch.equal(a.bias, b.bias)
    broken = source.state_dict()
    broken["linears.0.weight"] = torch.zeros(3, 3)
    with pytest.raises(ValueError, match=r"linears.0.weight.*shape"):
        target.load_state_dict(broken)


def test_same_seed_same_network():
    torch.manual_seed(1)
    first = tritonnet.MLP(64, 0.1)
    torch.manual_seed(1)
    second = tritonnet.MLP(64, 0.1)
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(first.linears, second.linears))
    assert [tuple(layer.weight.shape) for layer in first.linears] == [(784, 512), (512, 128), (128, 10)]
