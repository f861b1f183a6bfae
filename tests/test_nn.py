"""tritonnet.nn against its torch.nn twin, on each backend.

The twin of `MLP((6, 5, 4, 3))` is `nn.Sequential(nn.Linear(6, 5), nn.Sigmoid(),
nn.Linear(5, 4), nn.Sigmoid(), nn.Linear(4, 3))` with the same weights; in float64
it is the oracle. fp32 tolerances: 1e-5, several times the rounding of fp32 sums
over the few terms these sizes have.
"""

from __future__ import annotations

import re
import time

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import tritonnet
import tritonnet.nn as tnn
from conftest import TEST_DEVICE as DEVICE
from tritonnet.backend import use_backend

SIZES = (6, 5, 4, 3)
FP32_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


def torch_twin(sizes=SIZES) -> nn.Sequential:
    layers = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:]):
        layers += [nn.Linear(n_in, n_out), nn.Sigmoid()]
    return nn.Sequential(*layers[:-1])


def to_twin_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """`layers.{i}.weight` -> `{2 i}.weight`: the twin has a Sigmoid between Linears."""
    renamed = {}
    for key, value in state.items():
        _, index, name = key.split(".")
        renamed[f"{2 * int(index)}.{name}"] = value
    return renamed


def from_twin_keys(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {f"layers.{int(key.split('.')[0]) // 2}.{key.split('.')[1]}": v for key, v in state.items()}


def twin_of(model: tnn.MLP, dtype: torch.dtype = torch.float32) -> nn.Sequential:
    twin = torch_twin(model.sizes).to(device=model.layers[0].weight.device, dtype=dtype)
    twin.load_state_dict(to_twin_keys(model.state_dict()))
    return twin


def parameter_grads(module: nn.Module) -> list[torch.Tensor]:
    return [p.grad for p in module.parameters()]


# --- parameters: names, layout, initialization ------------------------------------------


@pytest.mark.parametrize("module_class", [tnn.Linear, tnn.LinearSigmoid])
@pytest.mark.parametrize("bias", [True, False])
def test_initialization_and_state_dict_are_nn_linears(module_class, bias):
    torch.manual_seed(5)
    ours = module_class(7, 4, bias=bias)
    torch.manual_seed(5)
    theirs = nn.Linear(7, 4, bias=bias)
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value)

    theirs.reset_parameters()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(3, 7)
    expected = theirs(x) if module_class is tnn.Linear else torch.sigmoid(theirs(x))
    with use_backend("reference"):
        torch.testing.assert_close(ours(x), expected, **FP32_TOLERANCE)


def test_mlp_state_dict_round_trip_with_torch_sequential(backend):
    model = tnn.MLP(SIZES, device=DEVICE)
    twin = torch_twin().to(DEVICE)
    twin.load_state_dict(to_twin_keys(model.state_dict()))
    x = torch.randn(5, SIZES[0], device=DEVICE)
    torch.testing.assert_close(model(x), twin(x), **FP32_TOLERANCE)

    fresh = torch_twin().to(DEVICE)
    model.load_state_dict(from_twin_keys(fresh.state_dict()))
    torch.testing.assert_close(model(x), fresh(x), **FP32_TOLERANCE)


def test_mlp_gradcheck_float64():
    model = tnn.MLP(SIZES, dtype=torch.float64)
    names = [name for name, _ in model.named_parameters()]
    x = torch.randn(3, SIZES[0], dtype=torch.float64, requires_grad=True)

    def logits(x, *parameters):
        return torch.func.functional_call(model, dict(zip(names, parameters)), (x,))

    parameters = [p.detach().clone().requires_grad_(True) for p in model.parameters()]
    with use_backend("reference"):  # the kernels take no float64
        assert torch.autograd.gradcheck(logits, (x, *parameters))


# --- forward, loss and gradients against the float64 twin ------------------------------


@pytest.mark.parametrize("loss_path", ["fused", "logits"])
def test_mlp_matches_float64_twin(backend, loss_path):
    model = tnn.MLP(SIZES, device=DEVICE)
    twin = twin_of(model, torch.float64)
    x = torch.randn(2, 4, SIZES[0], device=DEVICE)
    target = torch.randint(0, SIZES[-1], (2, 4), device=DEVICE)

    if loss_path == "fused":
        loss = model.loss(x, target)
    else:
        loss = tnn.CrossEntropyLoss()(model(x), target)
    loss.backward()
    expected = F.cross_entropy(twin(x.double()).reshape(8, SIZES[-1]), target.reshape(8))
    expected.backward()

    torch.testing.assert_close(model(x), twin(x.double()).float(), **FP32_TOLERANCE)
    torch.testing.assert_close(loss, expected.float(), **FP32_TOLERANCE)
    for grad, expected_grad in zip(parameter_grads(model), parameter_grads(twin)):
        torch.testing.assert_close(grad, expected_grad.float(), **FP32_TOLERANCE)


def test_mlp_loss_reads_parametrized_weights_and_biases(backend):
    # MLP.loss reads the layers' parameter dicts; a parametrized tensor is not in
    # them, and must still be the one its layer's forward uses.
    class Doubled(nn.Module):
        def forward(self, value):
            return 2 * value

    model = tnn.MLP(SIZES, device=DEVICE)
    torch.nn.utils.parametrize.register_parametrization(model.layers[1], "weight", Doubled())
    torch.nn.utils.parametrize.register_parametrization(model.layers[2], "bias", Doubled())
    twin = torch_twin(model.sizes).to(device=DEVICE, dtype=torch.float64)
    linears = [module for module in twin if isinstance(module, nn.Linear)]
    with torch.no_grad():  # the parametrized values, as plain parameters
        for layer, linear in zip(model.layers, linears):
            linear.weight.copy_(layer.weight)
            linear.bias.copy_(layer.bias)
    x = torch.randn(5, SIZES[0], device=DEVICE)
    target = torch.randint(0, SIZES[-1], (5,), device=DEVICE)
    expected = F.cross_entropy(twin(x.double()), target)
    torch.testing.assert_close(model.loss(x, target), expected.float(), **FP32_TOLERANCE)


def test_cross_entropy_loss_with_a_very_negative_target_logit(backend):
    logits = torch.randn(6, 4, device=DEVICE)
    target = torch.randint(0, 4, (6,), device=DEVICE)
    logits[2, target[2]] = -1e4  # its probability underflows to 0 in fp32
    ours = logits.clone().requires_grad_(True)
    theirs = logits.double().requires_grad_(True)
    loss = tnn.CrossEntropyLoss()(ours, target)
    expected = nn.CrossEntropyLoss()(theirs, target)
    loss.backward()
    expected.backward()
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, expected.float(), **FP32_TOLERANCE)  # about 1e4 / 6
    torch.testing.assert_close(ours.grad, theirs.grad.float(), **FP32_TOLERANCE)


def test_softmax_module_matches_nn_softmax(backend):
    x = torch.randn(3, 4, 5, device=DEVICE)
    torch.testing.assert_close(tnn.Softmax(dim=1)(x), nn.Softmax(dim=1)(x), **FP32_TOLERANCE)


# --- torch.optim, no_grad, autocast ------------------------------------------------


@pytest.mark.parametrize(
    "make_optimizer",
    [lambda p: torch.optim.SGD(p, lr=0.5, momentum=0.9), lambda p: torch.optim.Adam(p, lr=1e-2)],
    ids=["SGD", "Adam"],
)
def test_optimizer_steps_match_the_twin(backend, make_optimizer):
    model = tnn.MLP(SIZES, device=DEVICE)
    twin = twin_of(model)
    initial = [p.detach().clone() for p in model.parameters()]
    optimizers = [make_optimizer(model.parameters()), make_optimizer(twin.parameters())]
    x = torch.randn(8, SIZES[0], device=DEVICE)
    target = torch.randint(0, SIZES[-1], (8,), device=DEVICE)
    for _ in range(3):
        for optimizer in optimizers:
            optimizer.zero_grad()
        model.loss(x, target).backward()
        F.cross_entropy(twin(x), target).backward()
        for optimizer in optimizers:
            optimizer.step()
    # Adam divides each gradient by its own size: rounding in tiny gradients is
    # amplified, hence 1e-4 after three steps of size 1e-2.
    for ours, theirs, start in zip(model.parameters(), twin.parameters(), initial):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-4)
        assert (ours - start).abs().max() > 1e-3  # the steps moved every parameter


def test_no_grad_builds_no_graph(backend):
    model = tnn.MLP(SIZES, device=DEVICE)
    with torch.no_grad():
        logits = model(torch.randn(4, SIZES[0], device=DEVICE))
        target = torch.randint(0, SIZES[-1], (4,), device=DEVICE)
        loss = model.loss(torch.randn(4, SIZES[0], device=DEVICE), target)
    assert logits.grad_fn is None and loss.grad_fn is None


def test_mlp_under_cpu_autocast():
    model = tnn.MLP(SIZES)
    twin = twin_of(model, torch.float64)
    x = torch.randn(8, SIZES[0])
    target = torch.randint(0, SIZES[-1], (8,))
    with use_backend("reference"):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            logits = model(x)
            loss = model.loss(x, target)
        loss.backward()
    assert logits.dtype == torch.bfloat16 and loss.dtype == torch.float32
    assert all(p.grad.dtype == torch.float32 for p in model.parameters())
    # Three layers, each rounding its inputs and output to bf16 (8 significant bits,
    # 0.4%): a few percent of logits and a loss of about 1.
    bf16_tolerance = {"rtol": 5e-2, "atol": 5e-2}
    torch.testing.assert_close(logits.double(), twin(x.double()), **bf16_tolerance)
    expected = F.cross_entropy(twin(x.double()), target)
    torch.testing.assert_close(loss.double(), expected, **bf16_tolerance)


# --- double backward --------------------------------------------------------------


@pytest.mark.parametrize("loss_path", ["fused", "logits"])
def test_double_backward_matches_float64_twin(backend, loss_path):
    # A gradient penalty: the loss plus the squared norm of its gradient over the
    # input, whose backward differentiates the first backward (create_graph).
    model = tnn.MLP(SIZES, device=DEVICE)
    twin = twin_of(model, torch.float64)
    x = torch.randn(5, SIZES[0], device=DEVICE)
    target = torch.randint(0, SIZES[-1], (5,), device=DEVICE)

    def penalized(loss_of, x):
        x = x.clone().requires_grad_(True)
        (grad_x,) = torch.autograd.grad(loss_of(x), x, create_graph=True)
        return loss_of(x) + 10 * grad_x.pow(2).sum()

    if loss_path == "fused":
        penalized(lambda x: model.loss(x, target), x).backward()
    else:
        penalized(lambda x: tnn.CrossEntropyLoss()(model(x), target), x).backward()
    penalized(lambda x: F.cross_entropy(twin(x), target), x.double()).backward()
    for grad, expected_grad in zip(parameter_grads(model), parameter_grads(twin)):
        torch.testing.assert_close(grad, expected_grad.float(), **FP32_TOLERANCE)


# --- torch.compile ----------------------------------------------------------------


@pytest.mark.slow  # about 5 s with a warm Inductor cache, 20 s on a cold one (2 cores)
def test_torch_compile_traces_the_model_in_one_graph():
    model = tnn.MLP(SIZES)
    x = torch.randn(8, SIZES[0])
    target = torch.randint(0, SIZES[-1], (8,))

    def loss_of(x, target):
        return model.loss(x, target) + tnn.CrossEntropyLoss()(tnn.Softmax()(model(x)), target)

    with use_backend("reference"):
        explanation = torch._dynamo.explain(loss_of)(x, target)
        assert explanation.graph_break_count == 0 and explanation.graph_count == 1

        loss_of(x, target).backward()
        expected_grads = [p.grad.clone() for p in model.parameters()]
        model.zero_grad()

        started = time.perf_counter()
        # fullgraph=True: any graph break is an error.
        compiled = torch.compile(loss_of, fullgraph=True)
        loss = compiled(x, target)
        loss.backward()
        seconds = time.perf_counter() - started
        expected_loss = loss_of(x, target).detach()
    torch._dynamo.reset()
    print(f"torch.compile of the loss, forward and backward: {seconds:.1f} s")

    torch.testing.assert_close(loss, expected_loss, **FP32_TOLERANCE)
    for grad, expected in zip(parameter_grads(model), expected_grads):
        torch.testing.assert_close(grad, expected, **FP32_TOLERANCE)


# --- argument checks --------------------------------------------------------------


def test_bad_sizes_are_named():
    with pytest.raises(ValueError, match="sizes must list at least an input and an output"):
        tnn.MLP((784,))
    with pytest.raises(ValueError, match="sizes must be a positive integer"):
        tnn.MLP((784, 0, 10))
    with pytest.raises(ValueError, match="in_features must be a positive integer"):
        tnn.Linear(-1, 3)


def test_a_wrong_input_width_names_the_input():
    # The layer's weight is right by construction: the error is the input's.
    with pytest.raises(ValueError, match=r"x \(the input\) must have weight's in_features, 8, "
                       r"as its last dimension .* got x of shape \(3, 7\)"):
        tnn.Linear(8, 4)(torch.randn(3, 7))


# --- the exercise's state and plain torch.nn ----------------------------------------


def test_exercise_state_converts_both_ways_and_into_a_sequential():
    torch.manual_seed(4)
    exercise = tritonnet.MLP(8, 0.1, SIZES)  # the CLI's network and its checkpoint's parameters
    state = exercise.state_dict()
    x = torch.randn(5, SIZES[0])
    with use_backend("reference"):
        model = tnn.MLP.from_exercise_state_dict(state)
        sequential = model.to_sequential()
        probabilities = exercise.forward(x)
        logits = model(x)
    assert model.sizes == SIZES and type(sequential) is nn.Sequential
    assert [type(m) for m in sequential] == [nn.Linear, nn.Sigmoid, nn.Linear, nn.Sigmoid, nn.Linear]
    torch.testing.assert_close(torch.softmax(logits, 1), probabilities, **FP32_TOLERANCE)
    torch.testing.assert_close(sequential(x), logits.detach(), **FP32_TOLERANCE)

    back = model.to_exercise_state_dict()
    assert back.keys() == state.keys()
    for key, value in state.items():
        assert torch.equal(back[key], value) and back[key].is_contiguous()
    # The copies are the model's own: training it leaves the state and the Sequential.
    with torch.no_grad():
        model.layers[0].weight.add_(1.0)
    assert torch.equal(model.to_sequential()[0].weight, model.layers[0].weight)
    assert not torch.equal(sequential[0].weight, model.layers[0].weight)


def test_bad_exercise_states_are_named():
    state = tritonnet.MLP(8, 0.1, SIZES).state_dict()
    model = tnn.MLP(SIZES)
    cases = [
        ([1, 2], TypeError, "state must be a mapping of names to tensors, got list"),
        ({}, ValueError, "state is missing 'linears.0.weight'"),
        ({**state, "linears.1.weight": state["linears.1.weight"][:3]}, ValueError,
         "state['linears.1.weight'] must have 5 rows, got shape (3, 4)"),
    ]
    for bad, error, message in cases:
        with pytest.raises(error, match=re.escape(message)):
            tnn.MLP.from_exercise_state_dict(bad)
    loads = [
        ({k: v for k, v in state.items() if k != "linears.2.bias"}, ValueError,
         "state is missing 'linears.2.bias'"),
        ({**state, "linears.0.bias": [0.0] * 5}, TypeError, "state['linears.0.bias'] must be a torch.Tensor"),
        ({**state, "linears.0.weight": state["linears.0.weight"].t()}, ValueError,
         "state['linears.0.weight'] has shape (5, 6), expected (6, 5)"),
        ({**state, "linears.3.weight": torch.zeros(3, 2)}, ValueError, "state has keys this network"),
    ]
    for bad, error, message in loads:
        with pytest.raises(error, match=re.escape(message)):
            model.load_exercise_state_dict(bad)

