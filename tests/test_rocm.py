"""tritonnet on a ROCm build of torch, faked on a machine without one.

A ROCm build sets `torch.version.hip` and keeps CUDA's names: the device type is
"cuda" and torch.cuda answers for the AMD GPU. The fake sets both, so these tests
check what tritonnet decides there: the dispatch point's "auto", `tritonnet info`,
the fp32 dot precision, the autotuners' config lists and the row-wise kernels'
warps. Nothing runs on a GPU;
the kernels' AMD builds are checked by the compile tests
(`pytest -k "gfx942 or gfx90a"`).
"""

from __future__ import annotations

import types
import warnings

import pytest
import torch

from tritonnet import rocm
from tritonnet.backend import ops_for, use_backend
from tritonnet.cli import main

pytest.importorskip("triton", reason="the AMD checks ask the triton package")

from tritonnet.kernels import linear_backward, linear_forward, targets  # noqa: E402
from tritonnet.kernels.softmax import MAX_THREADS, SOFTMAX_MAX_BLOCK_COLS  # noqa: E402
from tritonnet.triton_backend.launch import dot_precision  # noqa: E402
from tritonnet.triton_backend.softmax import row_blocks  # noqa: E402

HIP_VERSION = "6.2.41133-dd7f95766"
GPUS = {"gfx942": "AMD Instinct MI300X", "gfx90a": "AMD Instinct MI250X"}


@pytest.fixture
def fake_rocm(monkeypatch):
    """A function that makes torch look like a ROCm build with one AMD GPU of the
    given architecture (a key of GPUS)."""

    def fake(arch: str) -> None:
        properties = types.SimpleNamespace(
            name=GPUS[arch], gcnArchName=f"{arch}:sramecc+:xnack-", warp_size=rocm.CDNA_WAVEFRONT
        )
        monkeypatch.setattr(torch.version, "hip", HIP_VERSION)
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
        monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: GPUS[arch])
        monkeypatch.setattr(torch.cuda, "get_device_properties", lambda device=None: properties)
        rocm._tf32_dots.cache_clear()
        rocm._warp_size.cache_clear()

    yield fake
    rocm._tf32_dots.cache_clear()
    rocm._warp_size.cache_clear()


def test_auto_runs_the_kernels_on_a_rocm_build(fake_rocm):
    fake_rocm("gfx942")
    # What ops_for reads of a tensor: a real one cannot be on a GPU here.
    on_the_gpu = types.SimpleNamespace(
        device=torch.device("cuda"), is_cuda=True, dtype=torch.float32, is_floating_point=lambda: True
    )
    with use_backend("auto"):
        assert ops_for(on_the_gpu).__name__ == "tritonnet.triton_backend"


@pytest.mark.parametrize("arch", GPUS)
def test_info_names_the_rocm_build_and_the_architecture(fake_rocm, capsys, arch):
    fake_rocm(arch)
    assert main(["info"]) == 0
    output = capsys.readouterr().out
    assert f"cuda device: {GPUS[arch]} (ROCm, HIP {HIP_VERSION}, {arch})" in output
    assert "backend 'auto' picks: triton on cuda" in output


# Triton's AMD backend compiles "tf32" (xf32) for CDNA3 only.
@pytest.mark.parametrize("arch, expected", [("gfx942", "tf32"), ("gfx90a", "ieee")])
def test_tf32_falls_back_to_ieee_with_one_warning_where_triton_has_none(fake_rocm, monkeypatch, arch, expected):
    fake_rocm(arch)
    # The interpreter takes any precision; only a GPU build asks the architecture.
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        precisions = [dot_precision(torch.float32, "high") for _ in range(3)]
    assert precisions == [expected] * 3
    assert dot_precision(torch.float32, "highest") == dot_precision(torch.bfloat16, "high") == "ieee"
    fallbacks = [w for w in caught if issubclass(w.category, RuntimeWarning) and arch in str(w.message)]
    assert len(fallbacks) == (1 if expected == "ieee" else 0)
    assert expected in rocm.dot_input_precisions(arch)


# The config lists of the kernels that have AMD lists of their own, by vendor.
CONFIG_LISTS = [
    (
        linear_forward.linear_forward_autotuned,
        {"cuda": linear_forward.LINEAR_FORWARD_CONFIGS, "hip": linear_forward.LINEAR_FORWARD_AMD_CONFIGS},
    ),
    (
        linear_backward.linear_backward_input_autotuned,
        {"cuda": linear_backward.LINEAR_BACKWARD_INPUT_CONFIGS, "hip": linear_backward.LINEAR_BACKWARD_INPUT_AMD_CONFIGS},
    ),
]


@pytest.mark.parametrize("backend", ["cuda", "hip"])
def test_the_autotuners_tune_the_configs_of_the_gpu_at_hand(monkeypatch, backend):
    monkeypatch.setattr(targets, "current_backend", lambda: backend)
    for autotuned, lists in CONFIG_LISTS:
        for alignment, tuner in autotuned.items():
            kept = tuner.early_config_prune(tuner.configs, {})
            assert [id(config) for config in kept] == [id(config) for config in lists[backend][alignment]]


def test_the_widest_softmax_tile_has_a_workgroups_threads_on_amd(fake_rocm, monkeypatch):
    """16 wavefronts of 64 lanes: 32 warps, the NVIDIA count, would be 2048 threads."""
    row = SOFTMAX_MAX_BLOCK_COLS
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert row_blocks(1, row, row)["num_warps"] * 32 == MAX_THREADS
    fake_rocm("gfx942")
    assert row_blocks(1, row, row)["num_warps"] * rocm.CDNA_WAVEFRONT == MAX_THREADS
