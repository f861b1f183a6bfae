"""ModuleModel against the exercise's MLP: same seed, same network, same losses.

The oracle is `tritonnet.MLP`, itself tested against float64 autograd. Both train
in fp32 with the same gradients computed in a different order (the MLP scales
each layer's weight gradient, ModuleModel the loss gradient), so the losses
drift apart only by fp32 rounding: rtol 1e-5 over 50 steps.
"""

from __future__ import annotations

import pytest
import torch

from conftest import TEST_DEVICE as DEVICE
from tritonnet import MLP, make_step
from tritonnet.module_model import ModuleModel

SIZES = (20, 12, 8, 5)
BATCH = 16


def random_batches(count: int, rows: int = BATCH, device: str = DEVICE):
    generator = torch.Generator().manual_seed(1)
    for _ in range(count):
        x = torch.randn(rows, SIZES[0], generator=generator)
        labels = torch.randint(0, SIZES[-1], (rows,), generator=generator)
        yield x.to(device), labels.to(device)


def twins(grad_scale: str, lr: float = 0.5) -> tuple[MLP, ModuleModel]:
    torch.manual_seed(3)
    exercise = MLP(BATCH, lr, SIZES, grad_scale=grad_scale, device=DEVICE)
    torch.manual_seed(3)
    module = ModuleModel(BATCH, lr, SIZES, grad_scale=grad_scale, device=DEVICE)
    return exercise, module


@pytest.mark.parametrize("grad_scale", ["batch", "features", "none"])
def test_losses_match_the_exercise_mlp_step_by_step(backend, grad_scale):
    # lr 0.5 and the "none" scaling (gradients 16 times the mean's) make big
    # steps, so a scaling applied wrongly shows within a few steps.
    exercise, module = twins(grad_scale)
    steps = 50 if backend == "reference" else 10  # interpreted kernels are slow
    losses, module_losses = [], []
    exercise_step, module_step = make_step(exercise), make_step(module)
    for x, labels in random_batches(steps):
        losses.append(exercise_step(x, labels))
        module_losses.append(module_step(x, labels))
    torch.testing.assert_close(torch.stack(module_losses), torch.stack(losses), rtol=1e-5, atol=0)
    assert losses[-1] != losses[0]  # training moved the network
    for key, value in exercise.state_dict().items():
        torch.testing.assert_close(module.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_a_short_last_batch_is_scaled_by_its_own_rows(backend):
    exercise, module = twins("none")
    exercise_step, module_step = make_step(exercise), make_step(module)
    for x, labels in random_batches(3, rows=5):
        loss = exercise_step(x, labels)
        torch.testing.assert_close(module_step(x, labels), loss, rtol=1e-5, atol=0)


def test_same_seed_same_network_and_random_state():
    torch.manual_seed(7)
    exercise = MLP(BATCH, 0.1, SIZES)
    after_exercise = torch.random.get_rng_state()
    torch.manual_seed(7)
    module = ModuleModel(BATCH, 0.1, SIZES)
    # The trainer draws its shuffles next: they must not depend on the API.
    assert torch.equal(torch.random.get_rng_state(), after_exercise)
    state = module.state_dict()
    assert state.keys() == exercise.state_dict().keys()
    for key, value in exercise.state_dict().items():
        assert torch.equal(state[key], value)
        assert state[key].is_contiguous() and state[key].device.type == "cpu"


def test_seed_init_from_copies_an_exercise_network():
    exercise = MLP(BATCH, 0.1, SIZES)
    module = ModuleModel(BATCH, 0.1, SIZES, seed_init_from=exercise)
    for key, value in exercise.state_dict().items():
        assert torch.equal(module.state_dict()[key], value)
    assert torch.equal(module.module.layers[0].weight, exercise.linears[0].weight.t())


def test_state_dict_moves_between_the_two_apis(backend):
    exercise, module = twins("batch")
    module_step = make_step(module)
    for x, labels in random_batches(2):
        module_step(x, labels)
    exercise.load_state_dict(module.state_dict())
    x, labels = next(random_batches(1))
    loss, correct = exercise.evaluate(x, labels)
    module_loss, module_correct = module.evaluate(x, labels)
    torch.testing.assert_close(module_loss, loss, rtol=1e-5, atol=0)
    assert int(module_correct) == int(correct)

    fresh = ModuleModel(BATCH, 0.1, SIZES, device=DEVICE)
    fresh.load_state_dict(exercise.state_dict())
    torch.testing.assert_close(fresh.evaluate(x, labels)[0], loss, rtol=1e-5, atol=0)


def test_lr_reaches_the_optimizer():
    module = ModuleModel(BATCH, 0.1, SIZES)
    module.lr = 0.25
    assert module.lr == 0.25 and module.optimizer.param_groups[0]["lr"] == 0.25
    with pytest.raises(ValueError, match="lr must be a finite number >= 0"):
        module.lr = -1.0


def test_bad_arguments_are_named():
    # On the CPU, where the labels' range is checked.
    module = ModuleModel(BATCH, 0.1, SIZES)
    x, labels = next(random_batches(1, device="cpu"))
    with pytest.raises(ValueError, match="x must have 20 columns"):
        make_step(module)(x[:, :3], labels)
    before = module.state_dict()
    # The loss refuses these first; the step's own check names them.
    with pytest.raises(ValueError, match=r"x must be 2-D"):
        make_step(module)(x.unsqueeze(0), labels.unsqueeze(0))
    with pytest.raises(TypeError, match=r"labels must hold integer class indices"):
        make_step(module)(x, labels.float())
    with pytest.raises(ValueError, match=r"labels must have shape \(\d+,\)"):
        make_step(module)(x, labels[:-1])
    with pytest.raises(TypeError, match=r"x torch.float64, weight torch.float32"):
        make_step(module)(x.double(), labels)
    with pytest.raises(TypeError, match=r"x must be a torch.Tensor"):
        make_step(module)(x.tolist(), labels)
    # -100: nll_loss's default ignore_index; the int64 minimum: the one the CPU loss gives it
    for bad in (5, -1, -100, torch.iinfo(torch.int64).min):
        wrong = labels.clone()
        wrong[1] = bad
        with pytest.raises(ValueError, match=rf"labels must lie in \[0, 5\), got values from .*{bad}"):
            make_step(module)(x, wrong)
    for name, value in module.state_dict().items():  # nothing trained on them
        assert torch.equal(value, before[name]), name
    with pytest.raises(ValueError, match="state is missing 'linears.2.bias'"):
        module.load_state_dict({k: v for k, v in module.state_dict().items() if k != "linears.2.bias"})
    with pytest.raises(ValueError, match=r"has shape \(12, 20\), expected \(20, 12\)"):
        module.load_state_dict({**module.state_dict(), "linears.0.weight": torch.zeros(12, 20)})
    with pytest.raises(TypeError, match="seed_init_from must be a tritonnet.MLP"):
        ModuleModel(BATCH, 0.1, SIZES, seed_init_from=module)
    with pytest.raises(ValueError, match="seed_init_from must have sizes"):
        ModuleModel(BATCH, 0.1, SIZES, seed_init_from=MLP(BATCH, 0.1, (20, 5)))
    with pytest.raises(ValueError, match="grad_scale must be one of"):
        ModuleModel(BATCH, 0.1, SIZES, grad_scale="mean")
