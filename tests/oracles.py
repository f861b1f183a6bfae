"""Float64 oracles that several operations' tests check against.

- `cross_entropy_oracle`: softmax, mean cross-entropy and its gradient from logits;
  the oracle of `cross_entropy` and, from float64 logits, of `linear_cross_entropy`.
- `assert_cross_entropy_outputs`: their (probabilities, loss, grad_logits) against it.
- `assert_no_rows`: their outputs for an empty batch.
- `check_out_of_range_targets`: what both operations do with a target that names
  no class.
- `sigmoid_layer_against_autograd`: the exercise's `Sigmoid` layer and autograd on
  the same input, for the layer tests and the sigmoid tests.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import tritonnet
from conftest import REFERENCE_CUDA_TARGET_SKIP, TEST_DEVICE


def cross_entropy_oracle(logits, target, scale):
    """Float64 softmax and mean cross_entropy of exactly the given logits, and the
    gradient of the summed loss by autograd, times scale."""
    logits64 = logits.double().detach().requires_grad_()
    summed = F.cross_entropy(logits64, target, reduction="sum")
    summed.backward()
    return torch.softmax(logits64.detach(), dim=1), summed.detach() / logits.shape[0], logits64.grad * scale


def assert_cross_entropy_outputs(outputs, expected, loss_tolerance, probability_tolerance, gradient_tolerance):
    """The loss is an fp32 scalar; each output is close to the oracle's."""
    probabilities, loss, grad_logits = outputs
    expected_probabilities, expected_loss, expected_grad = expected
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), expected_loss, **loss_tolerance)
    torch.testing.assert_close(probabilities.double(), expected_probabilities, **probability_tolerance)
    torch.testing.assert_close(grad_logits.double(), expected_grad, **gradient_tolerance)


def sigmoid_layer_against_autograd(rows, features):
    """The `Sigmoid` layer's forward and backward of a random x (values up to ~12,
    where the sigmoid saturates) and grad_output, and float64 autograd's:
    (output, grad_input, expected output, expected grad_input)."""
    layer = tritonnet.Sigmoid(features, rows)
    x = torch.randn(rows, features, device=TEST_DEVICE) * 4
    grad_output = torch.randn(rows, features, device=TEST_DEVICE)
    x64 = x.double().requires_grad_()
    expected = torch.sigmoid(x64)
    expected.backward(grad_output.double())
    output = layer.forward(x)
    return output, layer.backward(grad_output), expected.detach(), x64.grad


def assert_no_rows(outputs, classes):
    """Outputs of an empty batch: no rows of probabilities or gradient, and a NaN
    loss, the mean of nothing, as torch.mean gives."""
    probabilities, loss, grad_logits = outputs
    assert probabilities.shape == grad_logits.shape == (0, classes)
    assert torch.isnan(loss)


def check_out_of_range_targets(backend, cross_entropy, logits, target, classes, tolerances):
    """Targets past the last class and below 0 in rows 1 and 4 of 6.

    `cross_entropy(target, *scale)` runs the operation under test on fixed inputs
    whose logits, in float64, are `logits`. The Triton kernels give a NaN loss and
    the gradient p * scale in a bad row, and the oracle's values in the others;
    the reference raises the ValueError that names the target, for -100 too
    (nll_loss's ignore_index, which it would skip). `tolerances`: of the
    probabilities and of the gradient.
    """
    target[1], target[4] = classes, -1
    if backend == "reference":
        if TEST_DEVICE == "cuda":
            pytest.skip(REFERENCE_CUDA_TARGET_SKIP)
        with pytest.raises(ValueError, match=rf"target must lie in \[0, {classes}\), got values from -1 to {classes}"):
            cross_entropy(target)
        for bad in (classes, -1, -100):  # each alone, all other targets valid
            alone = target.clamp(0, classes - 1)
            alone[1] = bad
            with pytest.raises(ValueError, match=rf"target must lie in \[0, {classes}\).*{bad}"):
                cross_entropy(alone)
        return
    probabilities, loss, grad_logits = cross_entropy(target, 0.5)
    assert torch.isnan(loss)
    for bad in (classes, -1):  # each alone, all other targets valid: still NaN
        alone = torch.where(target == bad, target, 0)
        assert torch.isnan(cross_entropy(alone)[1]), f"target {bad}"
    valid = torch.tensor([0, 2, 3, 5], device=TEST_DEVICE)
    expected = cross_entropy_oracle(logits[valid], target[valid], 0.5)
    probability_tolerance, gradient_tolerance = tolerances
    torch.testing.assert_close(probabilities.double(), torch.softmax(logits.double(), dim=1), **probability_tolerance)
    torch.testing.assert_close(grad_logits[valid].double(), expected[2], **gradient_tolerance)
    # No class to subtract: the gradient of a bad row is p * scale.
    torch.testing.assert_close(grad_logits[[1, 4]], probabilities[[1, 4]] * 0.5)
