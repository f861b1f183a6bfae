"""`ModuleModel`: `tritonnet.nn.MLP` with its `torch.optim.SGD`, behind the trainer's protocol.

The trainer drives a model through `make_step`, `evaluate`, `state_dict`,
`load_state_dict` and `lr`. This adapter offers the same for the nn.Module twin,
trained with autograd and `torch.optim.SGD` (`module_step.ModuleStep`), so that
both APIs train the same network from the same seed and can be compared run for run:

- Initialization: the weights are the exercise's (`randn * sqrt(1 / in_features)`,
  drawn by building a `tritonnet.MLP` with the same arguments), transposed into
  nn.Linear's `[out, in]` layout. Building the module draws nothing more from the
  random generator, so what the trainer draws next (the shuffles) is the same too.
- `grad_scale`: the exercise's gradient scaling, which the step applies.
- `state_dict` has the exercise's keys and layout (`linears.{i}.weight` `[in, out]`),
  so checkpoints move between the two APIs.
"""

from __future__ import annotations

import torch

from tritonnet import checks, functional
from tritonnet.layers import GRAD_SCALES
from tritonnet.model import EXERCISE_SIZES, MLP
from tritonnet.nn import MLP as ModuleMLP


class ModuleModel:
    """The trainer's model protocol over `tritonnet.nn.MLP` and `torch.optim.SGD`.

    `seed_init_from`: an exercise `MLP` whose current weights to start from, instead
    of drawing new ones; its sizes must equal `sizes`.
    """

    def __init__(
        self,
        batch_size: int,
        lr: float,
        sizes: tuple[int, ...] = EXERCISE_SIZES,
        *,
        grad_scale: str = "batch",
        device: torch.device | str | None = None,
        seed_init_from: MLP | None = None,
    ) -> None:
        self.batch_size = checks.check_positive_int("batch_size", batch_size)
        self.grad_scale = checks.check_choice("grad_scale", grad_scale, GRAD_SCALES)
        lr = checks.check_learning_rate("lr", lr)
        if seed_init_from is None:
            seed_init_from = MLP(batch_size, lr, sizes, grad_scale=grad_scale)
        elif not isinstance(seed_init_from, MLP):
            raise TypeError(
                f"seed_init_from must be a tritonnet.MLP, got {type(seed_init_from).__name__}"
            )
        elif tuple(seed_init_from.sizes) != tuple(sizes):
            raise ValueError(
                f"seed_init_from must have sizes {tuple(sizes)}, got {seed_init_from.sizes}"
            )
        self.sizes = tuple(seed_init_from.sizes)
        # Built on the meta device, the module draws no initial weights of its own.
        self.module = ModuleMLP(self.sizes, device="meta").to_empty(device=device or "cpu")
        self.load_state_dict(seed_init_from.state_dict())
        self.optimizer = torch.optim.SGD(self.module.parameters(), lr=lr)

    @property
    def lr(self) -> float:
        return self.optimizer.param_groups[0]["lr"]

    @lr.setter
    def lr(self, value: float) -> None:
        value = checks.check_learning_rate("lr", value)
        for group in self.optimizer.param_groups:
            group["lr"] = value

    @property
    def device(self) -> torch.device:
        return self.module.layers[0].weight.device

    def check_batch(self, x: object, labels: object) -> tuple[torch.Tensor, torch.Tensor]:
        """`x` and `labels` checked as a batch for this network; the labels' range
        only on the CPU, where reading them back does not wait for a GPU."""
        weight = self.module.layers[0].weight
        x, labels = checks.check_batch(x, labels, weight, self.sizes[0], self.sizes[-1])
        if x.device.type == "cpu":
            checks.check_label_range("labels", labels, self.sizes[-1])
        return x, labels

    @torch.no_grad()
    def evaluate(self, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean loss and the number of correct predictions on a batch, as 0-dim tensors."""
        x, labels = self.check_batch(x, labels)
        logits = self.module(x)
        correct = (logits.argmax(dim=1) == labels).sum()
        return functional.cross_entropy(logits, labels), correct

    def state_dict(self) -> dict[str, torch.Tensor]:
        """The parameters under the exercise's names and layout, as CPU tensors."""
        return self.module.to_exercise_state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        """Copy parameters saved by `state_dict` (either API's), checking shapes."""
        self.module.load_exercise_state_dict(state)

    def __repr__(self) -> str:
        return f"ModuleModel(sizes={self.sizes}, lr={self.lr}, grad_scale={self.grad_scale!r})"
