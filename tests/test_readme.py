"""Every Python block of README.md runs, so the README cannot drift from the code.

Each ```python block is executed on its own, in a fresh namespace, as a reader
would paste it. A block that needs a GPU has `<!-- requires: cuda -->` on the
line before its fence and skips elsewhere, saying so. A block that reads a
trained run's checkpoint has `<!-- requires: run -->`: it runs in a fresh folder
where `tritonnet train` has just trained one short epoch into `runs/train`, as
`make demo` would have trained 30. Bash blocks are not run: they set up
environments and train for minutes.

On a machine without CUDA the blocks run with the "reference" backend: that is
what a reader's CPU gets, whereas conftest's TRITON_INTERPRET=1 would send them
through Triton's interpreter, which is the kernel tests' business and far slower.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tritonnet.backend import use_backend

README = Path(__file__).resolve().parent.parent / "README.md"
FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
REQUIREMENTS = ("cuda", "run")
FENCE = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
REQUIREMENT = re.compile(r"<!--\s*requires:\s*(\w+)\s*-->\s*$")


def python_blocks() -> list[tuple[int, str, str | None]]:
    """(line number, code, requirement or None) for each ```python block of the README."""
    text = README.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start()) + 1
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1]
        requirement = REQUIREMENT.search(before)
        blocks.append((line, match.group(1), requirement.group(1) if requirement else None))
    return blocks


BLOCKS = python_blocks()


def test_the_readme_has_python_blocks():
    # Guards the fence pattern: if it stopped matching, every block test would vanish.
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize(("line", "code", "requirement"), BLOCKS, ids=[f"line{b[0]}" for b in BLOCKS])
def test_readme_block_runs(line, code, requirement, tmp_path, monkeypatch):
    if requirement not in (None, *REQUIREMENTS):
        pytest.fail(f"README.md line {line}: unknown requirement {requirement!r}; known: {REQUIREMENTS}")
    if requirement == "cuda" and not torch.cuda.is_available():
        pytest.skip(f"README.md line {line} needs a CUDA GPU, and none is visible")
    if requirement == "run":
        _train_a_short_run(line, tmp_path)
        monkeypatch.chdir(tmp_path)
    backend = "auto" if torch.cuda.is_available() else "reference"
    compiled = compile(code, f"README.md:{line}", "exec")
    with use_backend(backend):
        exec(compiled, {"__name__": f"readme_line{line}"})


def _train_a_short_run(line: int, folder: Path) -> None:
    """`runs/train` under `folder`, as `tritonnet train` leaves it: one epoch on a
    slice of Fashion-MNIST, on the CPU reference, through the real command line."""
    if not FASHION_MNIST.is_dir():
        pytest.skip(f"README.md line {line} reads a trained run; training one needs Fashion-MNIST in {FASHION_MNIST}")
    command = [
        sys.executable, "-m", "tritonnet", "train", "--epochs", "1", "--limit-train", "256",
        "--limit-test", "64", "--dataset", "fashion-mnist", "--data-dir", str(FASHION_MNIST),
        "--backend", "reference", "--device", "cpu", "--no-progress", "--out", "runs/train",
    ]
    environment = {key: value for key, value in os.environ.items() if key != "TRITON_INTERPRET"}
    result = subprocess.run(command, cwd=folder, env=environment, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
