"""Programmatic dependent launch (tritonnet.kernels.pdl): the kernels of the
training step built with it, and when the launch path asks for it.

A PDL kernel's programs may start while the previous kernel still runs, so every
kernel launched so must wait (`griddepcontrol.wait`) before it touches memory;
the PTX shows whether the wait is there. Nothing here can show the overlap or a
race: tests/test_gpu.py trains with PDL on a GPU against the reference, and
benchmarks/bench_step_variants.py ("pdl") times it.
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("triton", reason="the kernel tests need the triton package")

from compile_check import (  # noqa: E402
    LOSS_MEAN_POINTERS,
    PDL_INSTRUCTIONS,
    assert_compiled_without_spills,
    compile_in_child,
    compile_job,
)

HOPPER = 90

# Each kernel of the fused training step at batch 64, in the build the step
# launches (fp32, unaligned: the fixed configs), as (kernel module, kernel,
# compile_job arguments).
STEP_KERNELS = {
    "forward-split": ("linear_forward", "linear_forward_kernel", dict(
        pointers={"partials_ptr": "*fp32", "counters_ptr": "*i32"},
        config="LINEAR_FORWARD_SPLIT_FIXED_CONFIG",
        constexprs={"HAS_BIAS": True, "ACTIVATION": "sigmoid", "INPUT_PRECISION": "ieee", "SPLIT_K": True},
        unit_strides=("stride_xk", "stride_wn", "stride_yn", "stride_b"),
    )),
    "output-layer": ("linear_cross_entropy", "linear_cross_entropy_kernel", dict(
        pointers={"target_ptr": "*i64", **LOSS_MEAN_POINTERS},
        config="LINEAR_CROSS_ENTROPY_INTERPRETER_CONFIG",
        constexprs={"HAS_BIAS": True, "INPUT_PRECISION": "ieee", "BLOCK_N": 16},
        unit_strides=("stride_xk", "stride_wn", "stride_b", "stride_target", "stride_pn", "stride_gn"),
        floats=("scale",),
    )),
    "input-gradient": ("linear_backward", "linear_backward_input_kernel", dict(
        config="LINEAR_BACKWARD_INPUT_UNALIGNED_CONFIGS",
        constexprs={"ACTIVATION": "sigmoid", "INPUT_PRECISION": "ieee"},
        unit_strides=("stride_dyn", "stride_yn", "stride_dxk"),
    )),
    "weight-gradient-sgd": ("linear_backward", "linear_backward_weight_kernel", dict(
        config="LINEAR_BACKWARD_WEIGHT_UNALIGNED_CONFIGS",
        constexprs={"ACTIVATION": "sigmoid", "HAS_BIAS": True, "EPILOGUE": "sgd", "INPUT_PRECISION": "ieee"},
        unit_strides=("stride_xk", "stride_dyn", "stride_yn", "stride_dwn", "stride_db"),
        floats=("scale", "lr"),
    )),
    "one-launch-backward": ("linear_backward_sgd", "linear_backward_sgd_kernel", dict(
        config="LINEAR_BACKWARD_SGD_UNALIGNED_CONFIGS",
        constexprs={"ACTIVATION": "sigmoid", "HAS_BIAS": True, "INPUT_PRECISION": "ieee", "BLOCK_N": 128},
        unit_strides=("stride_xk", "stride_wn", "stride_b", "stride_dyn", "stride_yn", "stride_dxk"),
        floats=("scale", "lr"),
    )),
    "weight-gradient-reduce": ("linear_backward", "linear_weight_gradient_reduce_kernel", dict(
        pointers={"partial_ptr": "*fp32"},
        config="WEIGHT_GRADIENT_REDUCE_CONFIG",
        constexprs={"HAS_BIAS": True, "EPILOGUE": "sgd"},
        unit_strides=("stride_dwn", "stride_db"),
        floats=("scale", "lr"),
    )),
}


def _job(name: str, pdl: bool) -> dict:
    import importlib

    module_name, kernel_name, arguments = STEP_KERNELS[name]
    module = importlib.import_module(f"tritonnet.kernels.{module_name}")
    config = getattr(module, arguments["config"])
    if isinstance(config, list):
        config = config[0]
    return compile_job(
        getattr(module, kernel_name),
        HOPPER,
        **{**arguments, "config": config, "constexprs": {**arguments["constexprs"], "USE_PDL": pdl}},
        count_instructions=True,
    )


@pytest.fixture(scope="module")
def compiled() -> dict:
    jobs = {f"{name}-{pdl}": _job(name, pdl) for name in STEP_KERNELS for pdl in (True, False)}
    return compile_in_child(jobs)


@pytest.mark.parametrize("name", list(STEP_KERNELS))
def test_step_kernels_wait_for_the_previous_kernel_with_pdl_and_not_without(compiled, name, record_property):
    with_pdl, without = compiled[f"{name}-True"], compiled[f"{name}-False"]
    assert_compiled_without_spills(with_pdl, record_property)
    for instruction in PDL_INSTRUCTIONS:
        assert with_pdl["instructions"][instruction] == 1, (instruction, with_pdl["instructions"])
        assert without["instructions"][instruction] == 0, (instruction, without["instructions"])


def test_pdl_is_asked_for_only_on_hopper_and_later(monkeypatch):
    from tritonnet.triton_backend import launch

    cuda = torch.device("cuda", 0)
    capability = {"value": (9, 0)}
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability["value"])
    monkeypatch.setattr(launch, "interpreter_enabled", lambda: False)
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.delenv("TRITONNET_PDL", raising=False)
    assert not launch.pdl_enabled(cuda), "PDL is opt-in until a GPU run measures it"
    monkeypatch.setenv("TRITONNET_PDL", "1")
    assert launch.pdl_enabled(cuda)
    assert not launch.pdl_enabled(torch.device("cpu"))
    capability["value"] = (8, 0)
    assert not launch.pdl_enabled(cuda), "sm_80 has no griddepcontrol"
    capability["value"] = (9, 0)
    monkeypatch.setattr(torch.version, "hip", "6.2")
    assert not launch.pdl_enabled(cuda), "ROCm builds of torch report CUDA devices too"
    monkeypatch.setattr(torch.version, "hip", None)
    monkeypatch.setattr(launch, "interpreter_enabled", lambda: True)
    assert not launch.pdl_enabled(cuda), "the interpreter has no griddepcontrol"
