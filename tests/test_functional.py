"""tritonnet.functional against torch.autograd in float64, on each backend.

The oracle is PyTorch's own functional API (`F.linear`, `torch.sigmoid`,
`torch.softmax`, `F.cross_entropy`) in float64. Tolerances for fp32 results: 1e-5,
several times the rounding of fp32 sums over the few dozen terms these shapes
have. Interpreted kernels are slow, so the shapes stay small.
"""

from __future__ import annotations

import re

import pytest
import torch
import torch.nn.functional as F

from conftest import TEST_DEVICE as DEVICE
from tritonnet import functional, functions, library_ops
from tritonnet.backend import ops_for, use_backend
from tritonnet.nn import MLP

FP32_TOLERANCE = {"rtol": 1e-5, "atol": 1e-5}


@pytest.fixture
def reference():
    """The reference path alone: the kernels have no float64 or autocast-on-CPU story."""
    with use_backend("reference"):
        yield


def forward_and_grads(fn, inputs, probe):
    """`fn(*inputs)` and the gradients of `(output * probe).sum()` for every input
    that requires grad. A random probe keeps errors from cancelling in a plain sum."""
    output = fn(*inputs)
    differentiable = [t for t in inputs if isinstance(t, torch.Tensor) and t.requires_grad]
    grads = torch.autograd.grad((output * probe).sum(), differentiable)
    return output, grads


def float64_copies(*tensors):
    return tuple(
        None if t is None else t.detach().double().requires_grad_(t.requires_grad) for t in tensors
    )


def sigmoid_linear_oracle(x, weight, bias):
    return torch.sigmoid(F.linear(x, weight, bias))


def assert_matches_oracle(ours, oracle, inputs, output_shape, tolerance=FP32_TOLERANCE):
    probe = torch.randn(output_shape, device=DEVICE)
    output, grads = forward_and_grads(ours, inputs, probe)
    expected, expected_grads = forward_and_grads(oracle, float64_copies(*inputs), probe.double())
    torch.testing.assert_close(output, expected.to(output.dtype), **tolerance)
    assert len(grads) == len(expected_grads)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad, expected_grad.to(grad.dtype), **tolerance)


# --- linear and linear_sigmoid ----------------------------------------------------


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(
    "ours, oracle",
    [(functional.linear, F.linear), (functional.linear_sigmoid, sigmoid_linear_oracle)],
    ids=["linear", "linear_sigmoid"],
)
def test_linear_gradcheck_float64(reference, ours, oracle, use_bias):
    x = torch.randn(2, 3, 5, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    bias = torch.randn(4, dtype=torch.float64, requires_grad=True) if use_bias else None
    inputs = (x, weight, bias) if use_bias else (x, weight)
    assert torch.autograd.gradcheck(lambda *args: ours(*args) if use_bias else ours(*args, None), inputs)
    torch.testing.assert_close(ours(x, weight, bias), oracle(x, weight, bias))


@pytest.mark.parametrize("x_layout", ["contiguous", "transposed", "leading-dims"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
@pytest.mark.parametrize(
    "ours, oracle",
    [(functional.linear, F.linear), (functional.linear_sigmoid, sigmoid_linear_oracle)],
    ids=["linear", "linear_sigmoid"],
)
def test_linear_matches_torch(backend, ours, oracle, use_bias, x_layout):
    in_features, out_features = 17, 19
    if x_layout == "transposed":
        x = torch.randn(in_features, 6, device=DEVICE).t()
    elif x_layout == "leading-dims":
        x = torch.randn(2, 3, in_features, device=DEVICE)
    else:
        x = torch.randn(6, in_features, device=DEVICE)
    x.requires_grad_(True)
    weight = torch.randn(out_features, in_features, requires_grad=True, device=DEVICE)
    bias = torch.randn(out_features, requires_grad=True, device=DEVICE) if use_bias else None
    output_shape = x.shape[:-1] + (out_features,)
    assert_matches_oracle(ours, oracle, (x, weight, bias), output_shape)


def test_linear_of_a_vector_drops_the_row_dimension(backend):
    x = torch.randn(5, device=DEVICE)
    weight, bias = torch.randn(3, 5, device=DEVICE), torch.randn(3, device=DEVICE)
    output = functional.linear_sigmoid(x, weight, bias)
    assert output.shape == (3,)
    torch.testing.assert_close(output, torch.sigmoid(F.linear(x, weight, bias)), **FP32_TOLERANCE)


def _double_backward_cases():
    def linear_inputs():
        return (
            torch.randn(3, 4, dtype=torch.float64, requires_grad=True),
            torch.randn(2, 4, dtype=torch.float64, requires_grad=True),
            torch.randn(2, dtype=torch.float64, requires_grad=True),
        )

    target = torch.tensor([1, 0, 1])
    cases = {
        "linear": (functional.linear, linear_inputs),
        "linear_sigmoid": (functional.linear_sigmoid, linear_inputs),
        "softmax": (functional.softmax, lambda: linear_inputs()[:1]),
        "cross_entropy": (lambda z: functional.cross_entropy(z, target), lambda: linear_inputs()[:1]),
        "linear_cross_entropy": (
            lambda *args: functional.linear_cross_entropy(*args, target),
            linear_inputs,
        ),
        "mlp_cross_entropy": (
            lambda x, w0, b0, w1, b1: functional.mlp_cross_entropy(x, [w0, w1], [b0, b1], target),
            lambda: (*linear_inputs(), torch.randn(3, 2, dtype=torch.float64, requires_grad=True),
                     torch.randn(3, dtype=torch.float64, requires_grad=True)),
        ),
        # Three layers, one without bias.
        "mlp_cross_entropy_three_layers": (
            lambda x, w0, b0, w1, w2, b2: functional.mlp_cross_entropy(x, [w0, w1, w2], [b0, None, b2], target),
            lambda: (*linear_inputs(), *(torch.randn(*shape, dtype=torch.float64, requires_grad=True)
                                         for shape in ((3, 2), (2, 3), (2,)))),
        ),
    }
    return [pytest.param(fn, make_inputs, id=name) for name, (fn, make_inputs) in cases.items()]


@pytest.mark.parametrize("fn, make_inputs", _double_backward_cases())
def test_double_backward_gradgradcheck_float64(reference, fn, make_inputs):
    # The backward under create_graph=True composes differentiable ops;
    # gradgradcheck compares its derivatives with finite differences of it.
    assert torch.autograd.gradgradcheck(fn, make_inputs())


# --- softmax and cross-entropy --------------------------------------------------------


@pytest.mark.parametrize("dim", [0, 1, 2, -1])
def test_softmax_matches_torch(backend, dim):
    x = torch.randn(4, 5, 6, requires_grad=True, device=DEVICE)
    assert_matches_oracle(
        lambda t: functional.softmax(t, dim), lambda t: torch.softmax(t, dim), (x,), x.shape
    )


def test_softmax_of_float64_follows_float64_autograd(reference):
    # The reference softmax computes in fp32 whatever the input, so gradcheck's
    # finite differences (steps of 1e-6) cannot see float64 detail: the backward is
    # compared with float64 autograd at fp32 accuracy instead.
    x = torch.randn(3, 7, dtype=torch.float64, requires_grad=True, device=DEVICE)
    assert_matches_oracle(functional.softmax, lambda t: torch.softmax(t, -1), (x,), x.shape)


def logits_with_a_very_negative_target() -> tuple[torch.Tensor, torch.Tensor]:
    """Logits whose first row gives its target a probability that underflows to 0."""
    logits = torch.randn(7, 5, device=DEVICE)
    target = torch.randint(0, 5, (7,), device=DEVICE)
    logits[0, target[0]] = -1e4
    return logits, target


def test_cross_entropy_matches_torch(backend):
    logits, target = logits_with_a_very_negative_target()
    logits.requires_grad_(True)
    # The loss is about 1e4 / 7: the relative tolerance covers it.
    assert_matches_oracle(
        lambda z: functional.cross_entropy(z, target),
        lambda z: F.cross_entropy(z, target),
        (logits,),
        (),
    )
    assert torch.isfinite(functional.cross_entropy(logits, target))


def test_cross_entropy_flattens_leading_dimensions(backend):
    logits = torch.randn(2, 3, 5, requires_grad=True, device=DEVICE)
    target = torch.randint(0, 5, (2, 3), device=DEVICE)
    assert_matches_oracle(
        lambda z: functional.cross_entropy(z, target),
        lambda z: F.cross_entropy(z.reshape(6, 5), target.reshape(6)),
        (logits,),
        (),
    )


@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
def test_linear_cross_entropy_matches_torch(backend, use_bias):
    x = torch.randn(2, 4, 17, requires_grad=True, device=DEVICE)
    weight = torch.randn(5, 17, requires_grad=True, device=DEVICE)
    bias = torch.randn(5, requires_grad=True, device=DEVICE) if use_bias else None
    target = torch.randint(0, 5, (2, 4), device=DEVICE)
    assert_matches_oracle(
        lambda *args: functional.linear_cross_entropy(*args, target),
        lambda x, w, b: F.cross_entropy(F.linear(x, w, b).reshape(8, 5), target.reshape(8)),
        (x, weight, bias),
        (),
    )


def test_loss_gradient_follows_the_incoming_gradient(backend):
    # Autograd hands the loss's backward a gradient other than 1 when the loss is
    # scaled; the fused backward must multiply by it.
    x = torch.randn(6, 8, requires_grad=True, device=DEVICE)
    weight = torch.randn(3, 8, requires_grad=True, device=DEVICE)
    target = torch.randint(0, 3, (6,), device=DEVICE)
    assert_matches_oracle(
        lambda x, w: 2.5 * functional.linear_cross_entropy(x, w, None, target),
        lambda x, w: 2.5 * F.cross_entropy(F.linear(x, w), target),
        (x, weight),
        (),
    )


# --- the whole network as one operation ------------------------------------------------


def mlp_oracle(x, *parameters, target):
    layers = len(parameters) // 2
    for weight, bias in zip(parameters[: layers - 1], parameters[layers:-1]):
        x = sigmoid_linear_oracle(x, weight, bias)
    logits = F.linear(x, parameters[layers - 1], parameters[-1])
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1))


def mlp_inputs(x_shape, sizes=(7, 6, 5, 4), use_bias=True):
    x = torch.randn(*x_shape, sizes[0], requires_grad=True, device=DEVICE)
    weights = [
        torch.randn(n_out, n_in, requires_grad=True, device=DEVICE) for n_in, n_out in zip(sizes, sizes[1:])
    ]
    biases = [
        torch.randn(n_out, requires_grad=True, device=DEVICE) if use_bias else None for n_out in sizes[1:]
    ]
    target = torch.randint(0, sizes[-1], x_shape, device=DEVICE)
    return x, weights, biases, target


@pytest.mark.parametrize("x_shape", [(6,), (2, 3)], ids=["rows", "leading-dims"])
@pytest.mark.parametrize("use_bias", [True, False], ids=["bias", "no-bias"])
def test_mlp_cross_entropy_matches_torch(backend, x_shape, use_bias):
    x, weights, biases, target = mlp_inputs(x_shape, use_bias=use_bias)
    layers = len(weights)

    def split(tensors):
        """`(weights, biases)` from the differentiable tensors after x."""
        return list(tensors[:layers]), list(tensors[layers:]) if use_bias else [None] * layers

    def ours(x, *tensors):
        return functional.mlp_cross_entropy(x, *split(tensors), target)

    def oracle(x, *tensors):
        weights, biases = split(tensors)
        return mlp_oracle(x, *weights, *biases, target=target)

    present = [b for b in biases if b is not None]
    assert_matches_oracle(ours, oracle, (x, *weights, *present), ())


def test_mlp_cross_entropy_matches_the_chain_of_layers(backend):
    # The network as one operation against the layers one by one, as
    # torch.compile runs them: the same values up to fp32 rounding.
    x, weights, biases, target = mlp_inputs((6,))
    parameters = (*weights, *biases)
    fused = functional.mlp_cross_entropy(x, weights, biases, target)
    grads = torch.autograd.grad(fused, (x, *parameters))
    hidden = x
    for weight, bias in zip(weights[:-1], biases[:-1]):
        hidden = functional.linear_sigmoid(hidden, weight, bias)
    chained = functional.linear_cross_entropy(hidden, weights[-1], biases[-1], target)
    expected = torch.autograd.grad(chained, (x, *parameters))
    torch.testing.assert_close(fused, chained, **FP32_TOLERANCE)
    for grad, expected_grad in zip(grads, expected):
        torch.testing.assert_close(grad, expected_grad, **FP32_TOLERANCE)


def _bad_mlp_calls():
    x, weights, biases, target = (t for t in mlp_inputs((4,)))
    weights, biases = [w.detach() for w in weights], [b.detach() for b in biases]
    x = x.detach()
    call = functional.mlp_cross_entropy
    cases = [
        ("weights must be a non-empty list or tuple", TypeError, lambda: call(x, weights[0], biases, target)),
        ("biases must have one entry per weight (3), got 2", ValueError, lambda: call(x, weights, biases[:2], target)),
        (
            "x (the input) must have weight's in_features, 7",
            ValueError,
            lambda: call(x[:, :5], weights, biases, target),
        ),
        (
            "weights[1] must have 6 columns (weights[0]'s out_features), got shape (5, 4)",
            ValueError,
            lambda: call(x, [weights[0], weights[1][:, :4], weights[2]], biases, target),
        ),
        (
            "biases[2] must have shape (4,) (weights[2]'s out_features), got (3,)",
            ValueError,
            lambda: call(x, weights, [biases[0], biases[1], biases[2][:3]], target),
        ),
        (
            "tensors must share one dtype, got x torch.float32, weights[1] torch.float64",
            TypeError,
            lambda: call(x, [weights[0], weights[1].double(), weights[2]], [biases[0], None, biases[2]], target),
        ),
        ("target must lie in [0, 4)", ValueError, lambda: call(x, weights, biases, target + 4)),
        # What the reference's own ops would take without a word: biases that
        # broadcast over the rows or the features, and lists of unequal lengths.
        (
            "bias must have shape (6,) (weight's out_features), got (1,)",
            ValueError,
            lambda: call(x, weights, [biases[0][:1], biases[1], biases[2]], target),
        ),
        (
            "bias must have shape (6,) (weight's out_features), got (4, 1)",
            ValueError,
            lambda: call(x, weights, [torch.zeros(4, 1, device=DEVICE), biases[1], biases[2]], target),
        ),
        ("biases must have one entry per weight (2), got 3", ValueError, lambda: call(x, weights[:2], biases, target)),
        ("target must have shape (4,)", ValueError, lambda: call(x, weights, biases, target[:3])),
        ("target must be on the logits' device", ValueError, lambda: call(x, weights, biases, target.to("meta"))),
    ]
    return [pytest.param(message, error, fn, id=message) for message, error, fn in cases]


@pytest.mark.parametrize("message, error, call", _bad_mlp_calls())
def test_bad_mlp_arguments_are_named(backend, message, error, call):
    # On the reference, `reference_autograd.takes_network` lets good arguments
    # past the checks, to the ops' own; what they refuse is named all the same.
    with pytest.raises(error, match=re.escape(message)):
        call()


def test_the_reference_leaves_good_arguments_to_its_ops(monkeypatch, reference):
    # The hot path: arguments the reference's ops check themselves skip
    # `tritonnet.arguments`, and the results are torch's.
    x, weights, biases, target = mlp_inputs((6,))
    checked = []
    for name in ("check_linear", "check_layers", "check_target"):
        real_check = getattr(functional.arguments, name)
        monkeypatch.setattr(
            functional.arguments, name, lambda *args, name=name, check=real_check: checked.append(name) or check(*args)
        )
    hidden = functional.linear_sigmoid(x, weights[0], biases[0])
    logits = functional.linear(hidden, weights[1], biases[1])
    losses = (
        functional.cross_entropy(logits, target),
        functional.linear_cross_entropy(hidden, weights[1], biases[1], target),
        functional.mlp_cross_entropy(x, weights[:2], biases[:2], target),
    )
    assert checked == [], "good arguments took the checks"
    expected_hidden = torch.sigmoid(F.linear(x, weights[0], biases[0]))
    expected_logits = F.linear(expected_hidden, weights[1], biases[1])
    torch.testing.assert_close(hidden, expected_hidden, **FP32_TOLERANCE)
    torch.testing.assert_close(logits, expected_logits, **FP32_TOLERANCE)
    for loss in losses:
        torch.testing.assert_close(loss, F.cross_entropy(expected_logits, target), **FP32_TOLERANCE)
    # int32 targets are not the ops' (nll_loss refuses them): the checks convert them.
    assert torch.equal(functional.mlp_cross_entropy(x, weights[:2], biases[:2], target.int()), losses[2])
    assert torch.equal(functional.cross_entropy(logits, target.int()), losses[0])
    assert "check_target" in checked


def test_mlp_cross_entropy_under_cpu_autocast_matches_its_layers(reference):
    # Under autocast the checks cast the network to bf16, as each layer's do.
    x, weights, biases, target = mlp_inputs((6,))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = functional.mlp_cross_entropy(x, weights, biases, target)
        hidden = x
        for weight, bias in zip(weights[:-1], biases[:-1]):
            hidden = functional.linear_sigmoid(hidden, weight, bias)
        expected = functional.linear_cross_entropy(hidden, weights[-1], biases[-1], target)
    assert loss.dtype == expected.dtype == torch.float32
    torch.testing.assert_close(loss, expected, rtol=0, atol=0)


# --- the custom ops under torch.library's own checks ----------------------------------


def _custom_op_cases():
    def linear_inputs():
        x = torch.randn(7, 5, device=DEVICE).t().requires_grad_(True)  # a strided x
        weight = torch.randn(4, 7, requires_grad=True, device=DEVICE)
        return x, weight, torch.randn(4, requires_grad=True, device=DEVICE)

    def backward_inputs(need_grads):
        x, weight, _ = (t.detach() for t in linear_inputs())
        grad_output, output = torch.randn(5, 4, device=DEVICE), torch.rand(5, 4, device=DEVICE)
        return (grad_output, x, weight, output, "sigmoid", need_grads, need_grads)

    def logits():
        return torch.randn(5, 4, requires_grad=True, device=DEVICE)

    ops = torch.ops.tritonnet
    target = torch.tensor([0, 3, 1, 2, 3], device=DEVICE)
    cases = [
        ("linear-sigmoid", ops.linear.default, lambda: (*linear_inputs(), "sigmoid")),
        ("linear-no-bias", ops.linear.default, lambda: (*linear_inputs()[:2], None, "none")),
        ("linear_backward", ops.linear_backward.default, lambda: backward_inputs(True)),
        ("linear_backward-weight-only", ops.linear_backward.default, lambda: backward_inputs(False)),
        ("softmax", ops.softmax.default, lambda: (logits(),)),
        ("cross_entropy", ops.cross_entropy.default, lambda: (logits(), target)),
        ("linear_cross_entropy", ops.linear_cross_entropy.default, lambda: (*linear_inputs(), target)),
    ]
    return [pytest.param(op, make_inputs, id=name) for name, op, make_inputs in cases]


@pytest.mark.parametrize("op, make_inputs", _custom_op_cases())
def test_custom_op_passes_opcheck(backend, op, make_inputs):
    # opcheck compares the fake implementation with the real one (shapes, dtypes,
    # strides: compiled code trusts the fake ones), checks the autograd
    # registration, and traces the op with AOTAutograd.
    torch.library.opcheck(op, make_inputs())


# --- gradients autograd does not ask for are not computed -------------------------------


# On the CPU reference in fp32, functional composes PyTorch's own ops, whose
# backward autograd itself runs and prunes: no linear_backward call to count.
REFERENCE_AUTOGRAD_SKIP = "the CPU reference composes PyTorch's own ops (reference_autograd): no linear_backward"


@pytest.fixture
def backward_calls(backend, monkeypatch):
    """Records the `need_grad_input` and `need_grad_bias` of every linear_backward call
    on the selected backend, which still does the work."""
    if backend == "reference" and DEVICE == "cpu":
        pytest.skip(REFERENCE_AUTOGRAD_SKIP)
    ops = ops_for(torch.empty(0, device=DEVICE))
    calls = []
    original = ops.linear_backward

    def spy(*args, need_grad_input, need_grad_bias, **kwargs):
        calls.append((need_grad_input, need_grad_bias))
        return original(*args, need_grad_input=need_grad_input, need_grad_bias=need_grad_bias, **kwargs)

    monkeypatch.setattr(ops, "linear_backward", spy)
    return calls


@pytest.mark.parametrize("input_requires_grad", [False, True])
def test_grad_input_only_when_the_input_requires_grad(backend, backward_calls, input_requires_grad):
    x = torch.randn(4, 6, requires_grad=input_requires_grad, device=DEVICE)
    weight = torch.randn(3, 6, requires_grad=True, device=DEVICE)
    bias = torch.randn(3, requires_grad=True, device=DEVICE)
    functional.linear_sigmoid(x, weight, bias).sum().backward()
    assert backward_calls == [(input_requires_grad, True)]
    assert (x.grad is not None) == input_requires_grad
    assert weight.grad is not None and bias.grad is not None


def test_no_grad_bias_without_a_bias(backend, backward_calls):
    x = torch.randn(4, 6, device=DEVICE)
    weight = torch.randn(3, 6, requires_grad=True, device=DEVICE)
    target = torch.randint(0, 3, (4,), device=DEVICE)
    functional.linear_cross_entropy(x, weight, None, target).backward()
    assert backward_calls == [(False, False)]


def test_mlp_skips_only_the_images_gradient(backend, backward_calls):
    model = MLP((6, 5, 4, 3), device=DEVICE)
    images = torch.randn(4, 6, device=DEVICE)
    model.loss(images, torch.randint(0, 3, (4,), device=DEVICE)).backward()
    # Backward runs from the output layer to the first; only the first has no
    # input that needs a gradient.
    assert backward_calls == [(True, True), (True, True), (False, True)]


def test_targets_out_of_range_are_named_by_the_reference_ops(monkeypatch):
    # Without the interpreter, the entry points leave the targets' range on the CPU
    # to the reference's own ops (reference_autograd's nll_loss): the error still
    # names the target, -100 (nll_loss's default ignore_index) and the int64
    # minimum (the ignore_index reference_autograd gives it) included.
    monkeypatch.setattr("tritonnet.arguments.interpreter_enabled", lambda: False)
    x, weights, biases, target = mlp_inputs((4,))
    logits = torch.randn(4, 4, device=DEVICE, requires_grad=True)
    with use_backend("reference"):
        for bad in (4, -1, -100, torch.iinfo(torch.int64).min):
            wrong = target.clone()
            wrong[0] = bad
            for call in (
                lambda: functional.mlp_cross_entropy(x, weights, biases, wrong),
                lambda: functional.cross_entropy(logits, wrong),
                lambda: functional.linear_cross_entropy(x, weights[0][:4], biases[0][:4], wrong),
            ):
                with pytest.raises(ValueError, match=rf"target must lie in \[0, 4\).*{bad}"):
                    call()


def test_no_grad_records_nothing(backend):
    weight = torch.randn(3, 6, requires_grad=True, device=DEVICE)
    with torch.no_grad():
        output = functional.linear_sigmoid(torch.randn(4, 6, device=DEVICE), weight, None)
    assert output.grad_fn is None and not output.requires_grad
    with_grad = functional.linear_sigmoid(torch.randn(4, 6, device=DEVICE), weight, None)
    assert with_grad.requires_grad  # the same call records a graph outside no_grad


@pytest.mark.parametrize(
    "name, function",
    [
        ("linear_sigmoid", functions.Linear),
        ("softmax", functions.Softmax),
        ("cross_entropy", functions.CrossEntropy),
        ("linear_cross_entropy", functions.LinearCrossEntropy),
    ],
)
def test_without_grad_the_operation_runs_without_its_function(backend, name, function, monkeypatch):
    """Under no_grad, or with nothing that requires grad, the backend's operation is
    called without an autograd node (its `apply` would cost host time for
    nothing); its result is the autograd route's, bit for bit."""
    torch.manual_seed(11)
    x = torch.randn(6, 5, device=DEVICE)
    weight = torch.randn(4, 5, device=DEVICE, requires_grad=True)
    bias = torch.randn(4, device=DEVICE)
    target = torch.tensor([0, 3, 1, 2, 3, 1], device=DEVICE)
    arguments = {
        "linear_sigmoid": (x, weight, bias),
        "softmax": (x,),
        "cross_entropy": (x, target),
        "linear_cross_entropy": (x, weight, bias, target),
    }[name]
    call = getattr(functional, name)
    recorded = call(*[a.detach().requires_grad_() if a is x else a for a in arguments])
    assert recorded.grad_fn is not None  # with grad: the Function's node

    def refuse(*args):
        raise AssertionError(f"{function.__name__}.apply called without grad")

    monkeypatch.setattr(function, "apply", refuse)
    with torch.no_grad():
        plain = call(*arguments)
    assert plain.grad_fn is None and torch.equal(plain, recorded.detach())
    if name in ("softmax", "cross_entropy"):  # nothing among their arguments requires grad
        assert torch.equal(call(*arguments), plain)


# --- autocast -----------------------------------------------------------------


def test_linear_under_cpu_autocast_runs_in_bfloat16(reference):
    x = torch.randn(6, 17, requires_grad=True)
    weight = torch.randn(5, 17, requires_grad=True)
    bias = torch.randn(5, requires_grad=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        output = functional.linear_sigmoid(x, weight, bias)
        expected_dtype = F.linear(x, weight, bias).dtype
    assert output.dtype == expected_dtype == torch.bfloat16
    probe = torch.randn(output.shape)
    grads = torch.autograd.grad((output.float() * probe).sum(), (x, weight, bias))
    assert [g.dtype for g in grads] == [torch.float32] * 3

    # The oracle: float64 from the bf16-rounded inputs. The output is rounded to
    # bf16's 8 significant bits (0.4%). The gradients also go through the saved
    # bf16 output: near saturation `1 - s` has an absolute error up to 2^-9, a large
    # relative one, so they get an absolute tolerance of a few such errors times
    # the size of the terms summed (probe and weights of about 1, 5 or 6 terms).
    rounded = [t.detach().bfloat16().double().requires_grad_(True) for t in (x, weight, bias)]
    expected = sigmoid_linear_oracle(*rounded)
    expected_grads = torch.autograd.grad((expected * probe.double()).sum(), rounded)
    torch.testing.assert_close(output.double(), expected, rtol=1e-2, atol=1e-2)
    for grad, expected_grad in zip(grads, expected_grads):
        torch.testing.assert_close(grad.double(), expected_grad, rtol=2e-2, atol=3e-2)


# --- argument checks -----------------------------------------------------------


def _bad_calls():
    x, weight, bias = torch.randn(4, 6), torch.randn(3, 6), torch.randn(3)
    target = torch.tensor([0, 1, 2, 0])
    cases = [
        ("x must be a torch.Tensor", TypeError, lambda: functional.linear([1.0], weight, bias)),
        ("x must have a floating dtype", TypeError, lambda: functional.linear(x.long(), weight)),
        ("x must have at least 1 dimension", ValueError, lambda: functional.linear(x[0, 0], weight)),
        (
            "x (the input) must have weight's in_features, 3, as its last dimension "
            "(weight is [out_features, in_features] = [6, 3]), got x of shape (4, 6)",
            ValueError,
            lambda: functional.linear(x, weight.t()),
        ),
        ("weight must be 2-D", ValueError, lambda: functional.linear(x, weight[0])),
        ("bias must have shape (3,)", ValueError, lambda: functional.linear(x, weight, bias[:2])),
        ("tensors must share one dtype", TypeError, lambda: functional.linear(x, weight.double())),
        ("dim must be an integer in [-2, 2)", ValueError, lambda: functional.softmax(x, 2)),
        ("target must have shape (4,)", ValueError, lambda: functional.cross_entropy(x, target[:3])),
        ("target must hold integer", TypeError, lambda: functional.cross_entropy(x, target.float())),
        ("target must lie in [0, 6)", ValueError, lambda: functional.cross_entropy(x, target + 6)),
        (
            "target must lie in [0, 3)",
            ValueError,
            lambda: functional.linear_cross_entropy(x, weight, bias, target - 1),
        ),
        # What the reference's own ops would take without a word: biases that
        # broadcast over the features or the rows.
        ("bias must have shape (3,) (weight's out_features), got (1,)", ValueError,
         lambda: functional.linear(x, weight, bias[:1])),
        ("bias must have shape (3,) (weight's out_features), got (4, 1)", ValueError,
         lambda: functional.linear(x, weight, torch.zeros(4, 1))),
        (
            "bias must have shape (3,) (weight's out_features), got (1,)",
            ValueError,
            lambda: functional.linear_cross_entropy(x, weight, bias[:1], target),
        ),
        ("target must have shape (4,)", ValueError, lambda: functional.cross_entropy(x, target[:, None])),
        ("target must be on the logits' device", ValueError, lambda: functional.cross_entropy(x, target.to("meta"))),
    ]
    return [pytest.param(message, error, call, id=message) for message, error, call in cases]


@pytest.mark.parametrize("message, error, call", _bad_calls())
def test_bad_arguments_are_named(backend, message, error, call):
    # On the reference, arguments that `reference_autograd.takes_layers` passes go
    # to the ops' own checks; what those refuse is named all the same.
    with pytest.raises(error, match=re.escape(message)):
        call()


# --- the eager route: one autograd.Function per operation ---------------------------


@pytest.mark.parametrize(
    "name, function",
    [
        ("linear", functions.Linear),
        ("softmax", functions.Softmax),
        ("cross_entropy", functions.CrossEntropy),
        ("linear_cross_entropy", functions.LinearCrossEntropy),
    ],
)
def test_eager_route_matches_the_custom_op(backend, name, function):
    """Outside torch.compile, tritonnet.functional calls the Functions of
    `tritonnet.functions`; they must give the custom op's outputs and gradients
    exactly (the same backend operations run)."""

    def inputs():
        torch.manual_seed(7)
        x = torch.randn(6, 5, requires_grad=True, device=DEVICE)
        weight = torch.randn(4, 5, requires_grad=True, device=DEVICE)
        bias = torch.randn(4, requires_grad=True, device=DEVICE)
        target = torch.tensor([0, 3, 1, 2, 3, 1], device=DEVICE)
        return {
            "linear": (x, weight, bias, "sigmoid"),
            "softmax": (x,),
            "cross_entropy": (x, target),
            "linear_cross_entropy": (x, weight, bias, target),
        }[name]

    op = getattr(library_ops, name)
    results = []
    for run in (op, function.apply):
        args = inputs()
        output = run(*args)
        first = output[0] if isinstance(output, tuple) else output  # a custom op's loss
        differentiable = [t for t in args if isinstance(t, torch.Tensor) and t.requires_grad]
        probe = torch.linspace(-1, 1, first.numel(), device=DEVICE).view_as(first)
        grads = torch.autograd.grad((first * probe).sum(), differentiable)
        results.append((first.detach(), grads))
    (custom, custom_grads), (eager, eager_grads) = results
    torch.testing.assert_close(eager, custom, rtol=0, atol=0)
    for ours, theirs in zip(eager_grads, custom_grads):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)
