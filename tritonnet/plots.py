"""The exercise's figures, drawn from saved histories.

- `plot_history`: train and test loss against epoch, and test accuracy against
  epoch (exercise 2.2.4), as two panels of one figure.
- `plot_sweep`: test accuracy against epoch, one line per learning rate
  (exercise 2.2.5).

matplotlib is imported when a figure is drawn, not when tritonnet is, and with
the Agg backend, so this works on machines without a display. Figures are written
atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Sequence

from tritonnet.files import atomic_write


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> None:
    with atomic_write(path, "wb") as handle:
        figure.savefig(handle, format=path.suffix.lstrip(".") or "png", dpi=120, bbox_inches="tight")


def _column(history: Sequence[Mapping[str, float]], key: str) -> list[float]:
    return [record[key] for record in history]


def plot_history(history: Sequence[Mapping[str, float]], path: str | Path, title: str) -> Path:
    """Loss (train and test) and test accuracy against epoch, saved to `path`."""
    plt = _pyplot()
    epochs = _column(history, "epoch")
    figure, (loss_axes, accuracy_axes) = plt.subplots(1, 2, figsize=(11, 4))
    loss_axes.plot(epochs, _column(history, "train_loss"), marker="o", markersize=3, label="train")
    loss_axes.plot(epochs, _column(history, "test_loss"), marker="o", markersize=3, label="test")
    loss_axes.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss")
    loss_axes.legend()
    loss_axes.grid(alpha=0.3)
    accuracy = [100 * value for value in _column(history, "test_accuracy")]
    accuracy_axes.plot(epochs, accuracy, marker="o", markersize=3, color="tab:green")
    accuracy_axes.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy")
    accuracy_axes.grid(alpha=0.3)
    figure.suptitle(title)
    path = Path(path)
    _save(figure, path)
    plt.close(figure)
    return path


def plot_sweep(
    histories: Mapping[float, Sequence[Mapping[str, float]]], path: str | Path, title: str
) -> Path:
    """Test accuracy against epoch, one line per learning rate, saved to `path`."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(7, 4.5))
    for lr, history in sorted(histories.items(), reverse=True):
        accuracy = [100 * value for value in _column(history, "test_accuracy")]
        axes.plot(_column(history, "epoch"), accuracy, marker="o", markersize=3, label=f"lr {lr:g}")
    axes.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    axes.legend()
    axes.grid(alpha=0.3)
    path = Path(path)
    _save(figure, path)
    plt.close(figure)
    return path
