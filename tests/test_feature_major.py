"""The CPU's feature-major training step against the exercise's step.

Both run the reference backend; the exercise's batch-major step (`forward`,
`backward(compute_gradient(...))`, `update`: gradients written out, then SGD) is
the oracle here, and it is itself checked against float64 autograd in
test_model.py. In float64 the two orders of the same sums agree to rounding.
"""

from __future__ import annotations

import pytest
import torch

import tritonnet
from conftest import exercise_step
from tritonnet import feature_major
from tritonnet.backend import use_backend

SIZES = (20, 12, 7, 4)


def twin_models(dtype: torch.dtype, grad_scale: str) -> tuple[tritonnet.MLP, tritonnet.MLP]:
    models = []
    for _ in range(2):
        torch.manual_seed(5)
        models.append(tritonnet.MLP(8, 0.3, SIZES, grad_scale=grad_scale, dtype=dtype))
    return models[0], models[1]


@pytest.fixture(autouse=True)
def reference_backend():
    with use_backend("reference"):
        yield


def feature_major_step(model: tritonnet.MLP) -> feature_major.FeatureMajorStep:
    step = tritonnet.make_step(model)
    assert isinstance(step, feature_major.FeatureMajorStep)
    return step


def test_the_step_stores_the_first_weight_out_in_and_every_weight_is_read_in_out():
    model = tritonnet.MLP(8, 0.3, SIZES)
    assert all(linear.weight.is_contiguous() for linear in model.linears)  # the exercise's layout
    feature_major_step(model)
    for index, (linear, (n_in, n_out)) in enumerate(zip(model.linears, zip(SIZES[:-1], SIZES[1:]))):
        assert linear.weight.shape == (n_in, n_out)
        assert feature_major.stored_transposed(linear.weight) == (index == 0)
        assert linear.weight.is_contiguous() == (index > 0)
    assert all(tensor.is_contiguous() for tensor in model.state_dict().values())


@pytest.mark.parametrize("grad_scale", tritonnet.GRAD_SCALES)
@pytest.mark.parametrize(
    "dtype,tolerance",
    [(torch.float64, dict(rtol=1e-12, atol=1e-12)), (torch.float32, dict(rtol=1e-5, atol=1e-6))],
)
def test_feature_major_steps_follow_the_exercise_steps(dtype, tolerance, grad_scale):
    ours, oracle = twin_models(dtype, grad_scale)
    train_step = feature_major_step(ours)
    generator = torch.Generator().manual_seed(0)
    for step, rows in enumerate([8, 8, 3, 8, 1, 8]):
        x = torch.randn(rows, SIZES[0], generator=generator, dtype=dtype)
        labels = torch.randint(0, SIZES[-1], (rows,), generator=generator)
        loss = train_step(x, labels)
        expected = exercise_step(oracle, x, labels)
        torch.testing.assert_close(loss, expected, **tolerance, msg=f"step {step}")
        for index, (mine, theirs) in enumerate(zip(ours.layers, oracle.layers)):
            for name in ("input", "output"):
                if hasattr(theirs, name):
                    torch.testing.assert_close(getattr(mine, name), getattr(theirs, name), **tolerance)
        assert all(linear.grad_weight is None for linear in ours.linears)
    assert not train_step.fallback.workspaces, "a step ran batch-major"
    for (name, mine), theirs in zip(ours.state_dict().items(), oracle.state_dict().values()):
        torch.testing.assert_close(mine, theirs, **tolerance, msg=name)


def one_step_of_twins(layout) -> tuple[tritonnet.MLP, feature_major.FeatureMajorStep]:
    """`ours` after one step of `make_step`, its second weight replaced since the
    step was made by the same values laid out by `layout`; the step checked
    against the exercise's on a twin."""
    ours, oracle = twin_models(torch.float64, "batch")
    step = feature_major_step(ours)
    ours.linears[1].weight = layout(ours.linears[1].weight)
    x, labels = torch.randn(8, SIZES[0], dtype=torch.float64), torch.randint(0, SIZES[-1], (8,))
    loss = step(x, labels)
    torch.testing.assert_close(loss, exercise_step(oracle, x, labels))
    for mine, theirs in zip(ours.linears, oracle.linears):
        torch.testing.assert_close(mine.weight, theirs.weight)
        torch.testing.assert_close(mine.bias, theirs.bias)
    return ours, step


def every_other_column(weight: torch.Tensor) -> torch.Tensor:
    wide = torch.zeros(weight.shape[0], 2 * weight.shape[1], dtype=weight.dtype)
    wide[:, ::2] = weight
    return wide[:, ::2]


@pytest.mark.parametrize(
    "layout",
    [lambda w: w.t().contiguous().t(), lambda w: w.contiguous()],
    ids=["out-in", "in-out"],
)
def test_a_weight_dense_in_either_order_takes_the_feature_major_step(layout):
    _, step = one_step_of_twins(layout)
    assert not step.fallback.workspaces, "the step ran batch-major"  # its buffers, allocated at first use


def test_a_weight_not_dense_takes_the_batch_major_step():
    ours, step = one_step_of_twins(every_other_column)
    assert step.fallback.workspaces and not step.workspaces, "the step ran feature-major"
    assert not feature_major.dense(ours.linears[1].weight)
    assert ours.linears[1].weight.stride() == (2 * SIZES[2], 2)  # updated in place


@pytest.mark.parametrize("bad_label", [SIZES[-1], -1, -100])
def test_a_label_out_of_range_is_named_and_changes_no_parameter(bad_label):
    model, _ = twin_models(torch.float32, "batch")
    step = feature_major_step(model)
    before = model.state_dict()
    labels = torch.tensor([0, 1, bad_label, 2, 3, 0, 1, 2])
    with pytest.raises(ValueError, match=rf"labels must lie in \[0, {SIZES[-1]}\).*{bad_label}"):
        step(torch.randn(8, SIZES[0]), labels)
    assert not step.fallback.workspaces, "the step ran batch-major"
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, before[name]), name
