"""The exercise's layers against torch.autograd in float64, on every backend.

The oracle builds the same computation from torch ops with requires_grad and
differentiates the *summed* output weighted by a random upstream gradient, so
`grad_input` must equal autograd's input gradient and `grad_weight` must equal
autograd's weight gradient times the layer's grad_scale factor.
"""

from __future__ import annotations

import pytest
import torch

import tritonnet
from conftest import TEST_DEVICE
from oracles import sigmoid_layer_against_autograd
from tritonnet.layers import GRAD_SCALES, gradient_scale

# fp32 kernels against a float64 oracle: sums of up to ~100 products of O(1)
# values carry rounding of about 1e-6 relative; 1e-4 leaves room for TF32-free
# accumulation order differences without hiding a wrong formula (which is O(1)).
FP32_TOLERANCE = dict(rtol=1e-4, atol=1e-4)

SMALL_LINEAR_SHAPES = [(8, 20, 12), (5, 33, 17), (1, 16, 3)]


@pytest.mark.parametrize("grad_scale", GRAD_SCALES)
@pytest.mark.parametrize("rows,in_features,out_features", SMALL_LINEAR_SHAPES)
def test_linear_forward_backward_update(backend, grad_scale, rows, in_features, out_features):
    layer = tritonnet.Linear(in_features, out_features, rows, lr=0.3, grad_scale=grad_scale, device=TEST_DEVICE)
    x = torch.randn(rows, in_features, device=TEST_DEVICE)
    grad_output = torch.randn(rows, out_features, device=TEST_DEVICE)

    x64 = x.double().requires_grad_()
    weight64 = layer.weight.double().requires_grad_()
    bias64 = layer.bias.double().requires_grad_()
    expected = x64 @ weight64 + bias64
    expected.backward(grad_output.double())
    scale = gradient_scale(grad_scale, rows, in_features)

    output = layer.forward(x)
    torch.testing.assert_close(output.double(), expected.detach(), **FP32_TOLERANCE)
    grad_input = layer.backward(grad_output)
    torch.testing.assert_close(grad_input.double(), x64.grad, **FP32_TOLERANCE)
    torch.testing.assert_close(layer.grad_weight.double(), weight64.grad * scale, **FP32_TOLERANCE)
    torch.testing.assert_close(layer.grad_bias.double(), bias64.grad * scale, **FP32_TOLERANCE)

    weight_before, bias_before = layer.weight.clone(), layer.bias.clone()
    layer.update()
    torch.testing.assert_close(layer.weight, weight_before - 0.3 * layer.grad_weight)
    torch.testing.assert_close(layer.bias, bias_before - 0.3 * layer.grad_bias)


def test_gradient_scale_factors():
    # The three normalizations the exercise's solutions use (see EXERCISE.md).
    assert gradient_scale("batch", 64, 784) == 1 / 64
    assert gradient_scale("features", 64, 784) == 1 / 784
    assert gradient_scale("none", 64, 784) == 1.0


def test_linear_initialization_follows_the_exercise():
    torch.manual_seed(3)
    layer = tritonnet.Linear(400, 300, 64)
    torch.manual_seed(3)
    std = (1 / 400) ** 0.5
    torch.testing.assert_close(layer.weight, torch.randn(400, 300) * std)
    torch.testing.assert_close(layer.bias, torch.randn(300) * std)
    assert layer.weight.shape == (400, 300) and layer.bias.shape == (300,)


@pytest.mark.parametrize("rows,features", [(8, 20), (3, 1)])
def test_sigmoid_forward_backward(backend, rows, features):
    output, grad_input, expected_output, expected_grad = sigmoid_layer_against_autograd(rows, features)
    torch.testing.assert_close(output.double(), expected_output, **FP32_TOLERANCE)
    torch.testing.assert_close(grad_input.double(), expected_grad, **FP32_TOLERANCE)


def test_softmax_is_stable_for_large_logits(backend):
    logits = torch.tensor([[1000.0, 999.0, -1000.0], [88.0, 89.0, 90.0], [0.0, 0.0, 0.0]], device=TEST_DEVICE)
    probabilities = tritonnet.Softmax(logits)
    assert torch.isfinite(probabilities).all()
    torch.testing.assert_close(probabilities.double(), torch.softmax(logits.double(), dim=1), **FP32_TOLERANCE)


def test_softmax_of_no_classes_is_empty(backend):
    # torch.softmax's answer: there is nothing to normalize.
    for shape in ((4, 0), (0, 3)):
        logits = torch.empty(shape, device=TEST_DEVICE)
        probabilities = tritonnet.Softmax(logits)
        assert probabilities.shape == shape
        torch.testing.assert_close(probabilities, torch.softmax(logits, dim=1))


# Tensors that require grad: the exercise API computes its gradients itself and
# reads them as plain tensors. The oracle is the same calls on detached copies.


def requiring_grad(tensor: torch.Tensor) -> torch.Tensor:
    return tensor.detach().clone().requires_grad_()


def test_layers_read_tensors_that_require_grad_as_plain_ones(backend):
    x = torch.randn(4, 6, device=TEST_DEVICE)
    grad_output = torch.randn(4, 5, device=TEST_DEVICE)
    torch.manual_seed(1)
    plain = tritonnet.Linear(6, 5, 4, device=TEST_DEVICE)
    torch.manual_seed(1)
    tracked = tritonnet.Linear(6, 5, 4, device=TEST_DEVICE)
    tracked.weight, tracked.bias = requiring_grad(tracked.weight), requiring_grad(tracked.bias)

    outputs = [layer.forward(value) for layer, value in ((plain, x), (tracked, requiring_grad(x)))]
    grad_inputs = [layer.backward(value) for layer, value in ((plain, grad_output), (tracked, requiring_grad(grad_output)))]
    for layer in (plain, tracked):
        layer.update()
    for expected, actual in (outputs, grad_inputs, (plain.weight, tracked.weight), (plain.bias, tracked.bias)):
        torch.testing.assert_close(actual.detach(), expected)
    assert not outputs[1].requires_grad and not grad_inputs[1].requires_grad

    sigmoid = tritonnet.Sigmoid(6, 4)
    expected = sigmoid.forward(x)
    output = sigmoid.forward(requiring_grad(x))
    torch.testing.assert_close(output, expected)
    torch.testing.assert_close(sigmoid.backward(requiring_grad(x)), sigmoid.backward(x))
    probabilities = tritonnet.Softmax(requiring_grad(x))
    torch.testing.assert_close(probabilities, tritonnet.Softmax(x))
    assert not output.requires_grad and not probabilities.requires_grad


def test_mlp_reads_tensors_that_require_grad_as_plain_ones(backend):
    sizes = (6, 5, 4)
    x = torch.randn(4, 6, device=TEST_DEVICE)
    labels = torch.tensor([0, 3, 1, 2], device=TEST_DEVICE)
    onehot = torch.nn.functional.one_hot(labels, 4).float()
    torch.manual_seed(2)
    plain = tritonnet.MLP(4, 0.1, sizes, device=TEST_DEVICE)
    torch.manual_seed(2)
    tracked = tritonnet.MLP(4, 0.1, sizes, device=TEST_DEVICE)
    for linear in tracked.linears:
        linear.weight.requires_grad_()
        linear.bias.requires_grad_()

    for model, value in ((plain, x), (tracked, requiring_grad(x))):
        probabilities = model.forward(value)
        model.backward(tritonnet.compute_gradient(onehot, probabilities))
        model.update()
        tritonnet.make_step(model)(value, labels)
    assert not probabilities.requires_grad
    for expected, actual in zip(plain.state_dict().values(), tracked.state_dict().values()):
        torch.testing.assert_close(actual, expected)


def test_compute_loss_and_gradient_against_autograd():
    logits = torch.randn(16, 10, dtype=torch.float64, requires_grad=True)
    target = torch.randint(0, 10, (16,))
    onehot = torch.nn.functional.one_hot(target, 10).double()
    probabilities = torch.softmax(logits, dim=1)
    loss = tritonnet.compute_loss(onehot, probabilities)
    expected = torch.nn.functional.cross_entropy(logits, target)
    torch.testing.assert_close(loss, expected)
    # p - t is the gradient of the summed loss over the logits.
    expected_sum = torch.nn.functional.cross_entropy(logits, target, reduction="sum")
    (grad_logits,) = torch.autograd.grad(expected_sum, logits)
    torch.testing.assert_close(tritonnet.compute_gradient(onehot, probabilities.detach()), grad_logits)


def test_compute_loss_is_finite_when_a_probability_is_zero():
    prediction = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    onehot = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    loss = tritonnet.compute_loss(onehot, prediction)
    assert torch.isfinite(loss)
    # Row 0 pays -log(tiny) = 87.34 (fp32), row 1 pays 0: the mean is half that.
    torch.testing.assert_close(loss, -torch.log(torch.tensor(torch.finfo(torch.float32).tiny)) / 2)
