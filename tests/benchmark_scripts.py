"""The benchmark scripts as modules, for the tests that check them."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

BENCHMARKS_DIR = Path(__file__).resolve().parent.parent / "benchmarks"


def load_script(name: str):
    """benchmarks/<name>.py as a module, loaded by its path as the CLI loads run.py.
    Its imports of its neighbours (`harness`, `bench_training`, ...) resolve as
    they do when it runs as a script."""
    spec = importlib.util.spec_from_file_location(f"benchmarks_{name}", BENCHMARKS_DIR / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    sys.path.insert(0, str(BENCHMARKS_DIR))
    try:
        spec.loader.exec_module(module)
    finally:
        sys.path.remove(str(BENCHMARKS_DIR))
    return module
