"""GraphedStep and make_step's graph choice where there is no GPU: the eager step, unchanged.

The graphs themselves need CUDA: tests/test_gpu.py checks them against the eager
step, over batch-size, learning-rate and weight changes.
"""

from __future__ import annotations

import pytest
import torch

import tritonnet
from tritonnet import GraphedStep, make_step
from tritonnet.fused_step import FusedStep


def small_mlp() -> tritonnet.MLP:
    torch.manual_seed(3)
    return tritonnet.MLP(8, 0.5, (12, 6, 3))


def test_on_the_cpu_it_is_the_eager_step():
    eager, graphed = small_mlp(), small_mlp()
    eager_step, step = FusedStep(eager), GraphedStep(FusedStep(graphed))
    generator = torch.Generator().manual_seed(0)
    for rows in (8, 8, 8, 5):
        x = torch.randn(rows, 12, generator=generator)
        labels = torch.randint(0, 3, (rows,), generator=generator)
        expected = eager_step(x, labels)
        torch.testing.assert_close(step(x, labels), expected, rtol=0, atol=0)
    for ours, theirs in zip(graphed.state_dict().values(), eager.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_it_checks_its_arguments():
    with pytest.raises(TypeError, match="step must be a training step with a capture_key"):
        GraphedStep(torch.nn.Linear(3, 4))
    step = GraphedStep(FusedStep(small_mlp()))
    with pytest.raises(TypeError, match="x"):
        step([[1.0] * 12], torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        step(torch.randn(4, 12), torch.tensor([0, 1, 5, 2]))


def test_make_step_graphs_the_exercise_mlp_on_a_gpu_only():
    for cuda_graph in ("auto", False):
        assert not isinstance(make_step(small_mlp(), cuda_graph=cuda_graph), GraphedStep)
    with pytest.raises(ValueError, match="cuda_graph=True needs a model on a CUDA device, got one on cpu"):
        make_step(small_mlp(), cuda_graph=True)
    with pytest.raises(ValueError, match="cuda_graph must be one of"):
        make_step(small_mlp(), cuda_graph="yes")

    from tritonnet.module_model import ModuleModel

    module = ModuleModel(8, 0.5, (12, 6, 3))
    assert not isinstance(make_step(module), GraphedStep)
    with pytest.raises(ValueError, match="cuda_graph=True needs a tritonnet.MLP"):
        make_step(module, cuda_graph=True)
    with pytest.raises(TypeError, match="model must be a tritonnet.MLP or a ModuleModel, got Linear"):
        make_step(torch.nn.Linear(3, 4))


@pytest.mark.parametrize("flags,expected", [([], True), (["--no-cuda-graphs"], False)])
def test_the_cli_flag_reaches_the_config(flags, expected):
    from tritonnet.cli import _config, build_parser

    args = build_parser().parse_args(["train", *flags])
    assert _config(args, 0.1).cuda_graphs is expected
