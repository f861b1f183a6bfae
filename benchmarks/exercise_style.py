"""The exercise's own training code, re-created to time it beside tritonnet.

This is how the "neural network from scratch" exercise trains its MLP (EXERCISE.md,
the project's summary of the exercise: "The network and the training", "The
layer API"), kept as the exercise writes it because that is what is being timed:
- a per-sample `torch.utils.data.Dataset` over the normalized images, read by a
  `DataLoader(batch_size=64, shuffle=True)` that collates every batch sample by
  sample;
- hand-written `Linear` (weight `[in, out]` and bias drawn as
  `randn * sqrt(1 / in_features)`) and `Sigmoid` classes in plain tensor code,
  with explicit `forward`, `backward` and `update`, and no autograd;
- a softmax written as `exp(x) / sum(exp(x))`, without the row max: it overflows
  for logits above about 88, which the exercise's network never reaches;
- a Sigmoid backward that recomputes the sigmoid from its saved input;
- the loss `-sum(t * log(p)) / batch` of a one-hot target, read with `.item()` at
  every step to plot the training loss per epoch, and the gradient `p - t` fed
  to `backward`.
Of the exercise's gradient normalizations (EXERCISE.md, "Gradient
normalization") this takes the division by the batch size, so that it trains
the same network as the other providers' grad_scale "batch".
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset


class ImageDataset(Dataset):
    """One (image, label) pair per index, over already normalized flat images."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        self.images = images
        self.labels = labels

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.images[index], self.labels[index]


class Linear:
    def __init__(
        self, in_features: int, out_features: int, batch_size: int, lr: float, device
    ) -> None:
        self.batch_size = batch_size
        self.lr = lr
        std = math.sqrt(1 / in_features)
        self.weight = (torch.randn(in_features, out_features) * std).to(device)
        self.bias = (torch.randn(out_features) * std).to(device)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.input = input
        return input @ self.weight + self.bias

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        batch = self.input.shape[0]
        self.grad_weight = self.input.T @ grad_output / batch
        self.grad_bias = grad_output.sum(dim=0) / batch
        return grad_output @ self.weight.T

    def update(self) -> None:
        self.weight -= self.lr * self.grad_weight
        self.bias -= self.lr * self.grad_bias


class Sigmoid:
    def __init__(self, in_features: int, batch_size: int) -> None:
        self.in_features = in_features
        self.batch_size = batch_size

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self.input = input
        return 1 / (1 + torch.exp(-input))

    def backward(self, grad_output: torch.Tensor) -> torch.Tensor:
        sigmoid = 1 / (1 + torch.exp(-self.input))
        return grad_output * sigmoid * (1 - sigmoid)


def Softmax(input: torch.Tensor) -> torch.Tensor:
    exp = torch.exp(input)
    return exp / exp.sum(dim=1, keepdim=True)


def compute_loss(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    return -torch.sum(target * torch.log(prediction)) / prediction.shape[0]


def compute_gradient(target: torch.Tensor, prediction: torch.Tensor) -> torch.Tensor:
    return prediction - target


class MLP:
    def __init__(self, batch_size: int, lr: float, device) -> None:
        self.layers = [
            Linear(784, 512, batch_size, lr, device),
            Sigmoid(512, batch_size),
            Linear(512, 128, batch_size, lr, device),
            Sigmoid(128, batch_size),
            Linear(128, 10, batch_size, lr, device),
        ]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer.forward(x)
        return Softmax(x)

    def backward(self, gradient: torch.Tensor) -> None:
        for layer in reversed(self.layers):
            gradient = layer.backward(gradient)

    def update(self) -> None:
        for layer in self.layers:
            if isinstance(layer, Linear):
                layer.update()


def make_loader(
    images: torch.Tensor, labels: torch.Tensor, batch_size: int, generator: torch.Generator
) -> DataLoader:
    """The exercise's shuffled training loader; `generator` fixes its shuffles."""
    return DataLoader(
        ImageDataset(images, labels), batch_size=batch_size, shuffle=True, generator=generator
    )


def train_epoch(model: MLP, loader: DataLoader, limit: int | None = None) -> tuple[float, int]:
    """One epoch as the exercise's loop runs it; the mean training loss and the steps.

    `limit` stops after that many batches (smoke runs).
    """
    total_loss, steps = 0.0, 0
    for images, labels in loader:
        target = torch.nn.functional.one_hot(labels, 10).float()
        prediction = model.forward(images)
        total_loss += compute_loss(target, prediction).item()
        model.backward(compute_gradient(target, prediction))
        model.update()
        steps += 1
        if steps == limit:
            break
    return total_loss / max(steps, 1), steps


def accuracy(model: MLP, images: torch.Tensor, labels: torch.Tensor) -> float:
    """The fraction of `images` whose most probable class is the label."""
    return (model.forward(images).argmax(dim=1) == labels).float().mean().item()
