"""The persistent step (kernels/persistent_step.py) against the reference backend's
`FusedStep`, and its compilation for sm_90 and sm_80.

In Triton's interpreter the five phases run one launch each (the tests' default,
on the interpreter's 8 "SMs") or all in one launch of one program, which passes
every grid barrier. The shapes are small: the first two layers split K (the
split's least run lowered to 16), the tiles are partial at the edges, and one
batch is odd.
"""

from __future__ import annotations

import pytest
import torch

import tritonnet
from tritonnet.backend import interpreter_enabled, use_backend
from tritonnet.fused_step import FusedStep

pytest.importorskip("triton", reason="the kernel tests need the triton package")

from compile_check import ARCHITECTURES, assert_compiled_without_spills, compile_cases, compile_job  # noqa: E402
from compile_check import target_name  # noqa: E402
from conftest import TEST_DEVICE, requires_triton  # noqa: E402
from tritonnet.persistent_step import PersistentStep  # noqa: E402

# K = 72 and 64 split in two at batch 20 (SPLIT_MIN_K 16, 8 "SMs"); 40 and 10 are
# no multiple of the 32-wide tiles.
SIZES = (72, 64, 40, 10)
BATCH = 20  # two tiles of 16 rows, the second partial
MODES = {"phase-per-launch": {}, "one-launch": {"programs": 1, "one_launch": True}}


@pytest.fixture
def small_splits(monkeypatch):
    from tritonnet.triton_backend import persistent_step

    monkeypatch.setattr(persistent_step, "SPLIT_MIN_K", 16)


def _models(grad_scale: str, sizes: tuple[int, ...] = SIZES) -> tuple[tritonnet.MLP, tritonnet.MLP]:
    """Two equal networks: one for the persistent step, one for the oracle."""
    models = []
    for _ in range(2):
        torch.manual_seed(5)
        models.append(tritonnet.MLP(BATCH, 0.5, sizes, grad_scale=grad_scale, device=TEST_DEVICE))
    return models[0], models[1]


def _batch(rows: int, sizes: tuple[int, ...] = SIZES) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.rand(rows, sizes[0], device=TEST_DEVICE), torch.randint(0, sizes[-1], (rows,), device=TEST_DEVICE)


def _assert_same_network(model: tritonnet.MLP, expected: tritonnet.MLP) -> None:
    for name, value in expected.state_dict().items():
        torch.testing.assert_close(model.state_dict()[name], value, rtol=1e-5, atol=1e-6, msg=name)


@requires_triton
@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("grad_scale", tritonnet.GRAD_SCALES)
def test_steps_follow_the_reference_fused_step(small_splits, grad_scale, mode):
    """Three steps, then an odd batch: the losses, the stepped weights and biases,
    and the activations the layers keep."""
    model, expected = _models(grad_scale)
    step, oracle = PersistentStep(model, **MODES[mode]), FusedStep(expected)
    for index, rows in enumerate([BATCH, BATCH, BATCH, 13]):
        x, labels = _batch(rows)
        loss = step(x, labels)
        with use_backend("reference"):
            expected_loss = oracle(x, labels)
        torch.testing.assert_close(loss, expected_loss, rtol=1e-5, atol=1e-6, msg=f"step {index}")
    _assert_same_network(model, expected)
    splits = next(iter(step.plans.values())).splits
    assert splits[0] > 1 and splits[2] > 1, f"the forwards did not split K: {splits}"
    for ours, theirs in zip(model.sigmoids, expected.sigmoids):
        torch.testing.assert_close(ours.output, theirs.output, rtol=1e-5, atol=1e-6)
    assert model.linears[0].input is x and model.linears[1].input is model.sigmoids[0].output
    assert all(linear.grad_weight is None and linear.grad_bias is None for linear in model.linears)


@requires_triton
@pytest.mark.parametrize("mode", list(MODES))
def test_tickets_and_barrier_reset_themselves(small_splits, mode):
    """After each step the split-K counters are 0 again, the barrier's counter is
    0 (an even number of barriers, each adding 2**31), and no barrier gave up."""
    model, _ = _models("batch")
    step = PersistentStep(model, **MODES[mode])
    for _ in range(2):
        step(*_batch(BATCH))
        plan = next(iter(step.plans.values()))
        assert all(not counters.any() for counters in plan.counters)
        assert plan.barrier.tolist() == [0, 0]


@pytest.mark.skipif(not interpreter_enabled(), reason="a grid whose programs run one after another is the interpreter's")
def test_barriers_give_up_instead_of_hanging():
    """Three programs in one launch, on the interpreter, which runs them one after
    another: program 0 meets the first barrier alone. With a small `max_spins`
    each barrier gives up and counts it, and the step returns, its loss NaN: the
    numbers of overlapping phases are not to be trained on."""
    model, _ = _models("batch")
    step = PersistentStep(model, programs=3, one_launch=True, max_spins=2)
    loss = step(*_batch(BATCH))
    assert next(iter(step.plans.values())).barrier[1] > 0
    assert loss.isnan()


@requires_triton
def test_rejects_what_it_cannot_run():
    from tritonnet.triton_backend.persistent_step import MAX_CLASSES, MAX_ROWS

    cases = [
        ((8, 6, 3), {}, BATCH, ValueError, "two hidden layers"),
        ((8, 6, 5, MAX_CLASSES + 1), {}, BATCH, ValueError, f"at most {MAX_CLASSES} classes"),
        ((8, 6, 5, 3), {"dtype": torch.float64}, BATCH, TypeError, "float32"),
        ((8, 6, 5, 3), {}, MAX_ROWS + 1, ValueError, f"1 to {MAX_ROWS} rows"),
    ]
    for sizes, options, rows, error, message in cases:
        model = tritonnet.MLP(BATCH, 0.1, sizes, device=TEST_DEVICE, **options)
        x, labels = _batch(rows, sizes)
        with pytest.raises(error, match=message):
            PersistentStep(model)(x.to(model.dtype), labels)
    model, _ = _models("batch")
    with use_backend("reference"), pytest.raises(RuntimeError, match="Triton kernels only"):
        PersistentStep(model)(*_batch(BATCH))
    with pytest.raises(ValueError, match="x must be 2-D"):
        PersistentStep(model)(torch.ones(SIZES[0], device=TEST_DEVICE), torch.zeros(1, dtype=torch.long))
    if interpreter_enabled():
        with pytest.raises(ValueError, match="needs programs=1"):
            PersistentStep(model, programs=2, one_launch=True)(*_batch(BATCH))


@pytest.mark.parametrize("tiles,in_features,programs", [(64, 784, 132), (16, 512, 132), (4, 72, 8), (200, 784, 132), (1, 5, 8)])
def test_forward_splits_cover_k_in_whole_steps(tiles, in_features, programs):
    from tritonnet.triton_backend.persistent_step import SPLIT_MIN_K, forward_splits

    splits, k_per_split = forward_splits(tiles, in_features, programs, 32)
    assert (splits - 1) * k_per_split < in_features <= splits * k_per_split
    if splits > 1:
        assert k_per_split % 32 == 0 and k_per_split >= SPLIT_MIN_K and tiles * splits <= programs


# --- compilation --------------------------------------------------------------

COMPILE_CASES = [(arch, precision) for arch in ARCHITECTURES for precision in ("ieee", "tf32")]


def _case_id(case) -> str:
    arch, precision = case
    return f"{precision}-{target_name(arch)}"


@pytest.fixture(scope="module")
def persistent_compiled() -> dict:
    from tritonnet.kernels.persistent_step import PERSISTENT_STEP_CONFIG, PHASES, persistent_step_kernel

    def job(arch, precision):
        return compile_job(
            persistent_step_kernel,
            arch,
            pointers={"labels_ptr": "*i64", "counters1_ptr": "*i32", "counters2_ptr": "*i32", "barrier_ptr": "*i32"},
            # All five phases and their four barriers: what one cooperative launch runs.
            constexprs={"FIRST_PHASE": 0, "LAST_PHASE": PHASES - 1, "INPUT_PRECISION": precision, "BLOCK_C": 16},
            config=PERSISTENT_STEP_CONFIG,
            unit_strides=(
                "stride_xk", "stride_labels", "stride_w1n", "stride_b1", "stride_w2n", "stride_b2", "stride_w3n", "stride_b3"
            ),
            floats=("scale1", "scale2", "scale3", "lr"),
        )

    return compile_cases(COMPILE_CASES, _case_id, job)


@pytest.mark.parametrize("case", COMPILE_CASES, ids=_case_id)
def test_persistent_step_kernel_compiles_without_spills(persistent_compiled, case, record_property):
    assert_compiled_without_spills(persistent_compiled[_case_id(case)], record_property)
