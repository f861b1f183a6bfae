"""Convergence: the Triton kernels train the MLP exactly as the reference does.

A few hundred steps of `make_step(model)` on fixed random data, once on each backend
from the same initial weights: the loss must match at every step, not only at
the end. Every kernel of the training loop takes part (the fused linear forward
with sigmoid, the fused output layer with softmax and cross-entropy, the linear
backward kernels, the SGD update), so a small error in any of them would
compound from step to step and show here.
"""

from __future__ import annotations

import torch

import tritonnet

from conftest import TEST_DEVICE, requires_triton

SIZES = (64, 32, 16, 10)
BATCH = 16
STEPS = 200
LEARNING_RATE = 2.0  # the loss falls by 40% in these 200 steps; at 0.5, by 25%
SEED = 1

# Both backends compute in fp32; each op differs by a few ulp (summation order
# in the matmuls and row sums, exp implementations), about 1e-7 relative. With
# this learning rate SGD does not amplify those differences over 200 steps: they
# stay near 1e-6 of the loss, and 1e-5 leaves room for that while a wrong
# gradient or update (an O(1) change of the trajectory) fails within a few steps.
LOSS_TOLERANCE = dict(rtol=1e-5, atol=1e-6)


def training_data() -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and the labels a fixed random teacher network gives them: a task the
    MLP can learn, so that the losses fall and the test covers a real descent."""
    generator = torch.Generator().manual_seed(SEED)
    x = torch.randn(STEPS * BATCH // 4, SIZES[0], generator=generator)  # four epochs
    teacher = torch.randn(SIZES[0], SIZES[-1], generator=generator)
    labels = (x @ teacher).argmax(dim=1)
    return x.to(TEST_DEVICE), labels.to(TEST_DEVICE)


def train(backend: str, x: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """The loss of every step, training from weights drawn with SEED."""
    torch.manual_seed(SEED)
    model = tritonnet.MLP(BATCH, LEARNING_RATE, SIZES, device=TEST_DEVICE)
    batches = x.shape[0] // BATCH
    losses = []
    with tritonnet.use_backend(backend):
        train_step = tritonnet.make_step(model)
        for step in range(STEPS):
            rows = slice((step % batches) * BATCH, (step % batches + 1) * BATCH)
            losses.append(train_step(x[rows], labels[rows]))
    return torch.stack(losses).cpu()


@requires_triton
def test_triton_training_matches_the_reference_step_by_step():
    x, labels = training_data()
    reference_losses = train("reference", x, labels)
    triton_losses = train("triton", x, labels)

    # The task is being learned: the last epoch's mean loss is well below the first's.
    epoch = x.shape[0] // BATCH
    assert reference_losses[-epoch:].mean() < 0.7 * reference_losses[:epoch].mean()
    for step, (triton_loss, reference_loss) in enumerate(zip(triton_losses, reference_losses)):
        torch.testing.assert_close(triton_loss, reference_loss, **LOSS_TOLERANCE, msg=lambda m: f"step {step}: {m}")
