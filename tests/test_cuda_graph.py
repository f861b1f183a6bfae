"""GraphedTrainStep where there is no GPU: the eager step, unchanged.

The graphs themselves need CUDA: tests/test_gpu.py checks them against the eager
step, over batch-size, learning-rate and weight changes.
"""

from __future__ import annotations

import pytest
import torch

import tritonnet
from tritonnet.cuda_graph import GraphedTrainStep
from tritonnet.trainer import TrainConfig, make_train_step


def small_mlp() -> tritonnet.MLP:
    torch.manual_seed(3)
    return tritonnet.MLP(8, 0.5, (12, 6, 3))


def test_on_the_cpu_it_is_the_eager_step():
    eager, graphed = small_mlp(), small_mlp()
    step = GraphedTrainStep(graphed)
    generator = torch.Generator().manual_seed(0)
    for rows in (8, 8, 8, 5):
        x = torch.randn(rows, 12, generator=generator)
        labels = torch.randint(0, 3, (rows,), generator=generator)
        expected = eager.train_step(x, labels, keep_gradients=False)
        torch.testing.assert_close(step(x, labels), expected, rtol=0, atol=0)
    for ours, theirs in zip(graphed.state_dict().values(), eager.state_dict().values()):
        torch.testing.assert_close(ours, theirs, rtol=0, atol=0)


def test_it_checks_its_arguments():
    with pytest.raises(TypeError, match="model must be a tritonnet.MLP"):
        GraphedTrainStep(torch.nn.Linear(3, 4))
    step = GraphedTrainStep(small_mlp())
    with pytest.raises(TypeError, match="x"):
        step([[1.0] * 12], torch.zeros(1, dtype=torch.int64))
    with pytest.raises(ValueError, match="labels"):
        step(torch.randn(4, 12), torch.tensor([0, 1, 5, 2]))


@pytest.mark.parametrize("cuda_graphs", [True, False])
def test_the_trainer_graphs_the_exercise_mlp_only(cuda_graphs):
    config = TrainConfig(cuda_graphs=cuda_graphs, sizes=(12, 6, 3), batch_size=8)
    step = make_train_step(small_mlp(), config)
    assert isinstance(step, GraphedTrainStep) and step.enabled is cuda_graphs

    from tritonnet.module_model import ModuleModel

    module_step = make_train_step(ModuleModel(8, 0.5, (12, 6, 3)), config)
    assert not isinstance(module_step, GraphedTrainStep)


@pytest.mark.parametrize("flags,expected", [([], True), (["--no-cuda-graphs"], False)])
def test_the_cli_flag_reaches_the_config(flags, expected):
    from tritonnet.cli import _config, build_parser

    args = build_parser().parse_args(["train", *flags])
    assert _config(args, 0.1).cuda_graphs is expected
