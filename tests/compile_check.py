"""Compile Triton kernels for real GPUs on a machine without one, and read what
their machine code uses.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))` runs the whole
compiler down to a cubin, which catches what the interpreter lets through (block
sizes tl.dot refuses, layouts that do not fit shared memory). Triton runs
`ptxas -v` itself but keeps its report only on a GPU, where the driver loads the
cubin (`CompiledKernel.n_regs`, `n_spills`); here `cuobjdump -res-usage`, shipped
in the triton wheel as ptxas is, reads the registers and the stack frame from the
very cubin Triton built, whether fresh or from its cache, and no second ptxas runs.
ptxas puts every spilled register in the stack frame, so a frame of 0 bytes
means no spills. `cuobjdump -sass` disassembles the same cubin, for the tests
that check which units a kernel's dot runs on (`TENSOR_CORE_INSTRUCTIONS`).

A launch specializes the kernel on its arguments: Triton compiles a pointer
whose address is a multiple of 16 bytes, and an integer that is a multiple of
16, with the attribute `tt.divisibility = 16`, which lets it use 16-byte vector
loads and the tensor cores' asynchronous copies. `compile_job(divisible=...)`
marks those arguments the same way (`ASTSource(attrs=...)`, the attribute from
the backend's own `parse_attr("D")`, as the launcher asks for it); without it,
no argument is marked, the worst case of unaligned operands.

For AMD targets (`GPUTarget("hip", "gfx942", 64)`) the same call runs down to a
code object (hsaco) without ROCm, and the amdgcn text Triton keeps
(`compiled.asm["amdgcn"]`) ends with the code object's metadata: `.vgpr_count`,
`.vgpr_spill_count`, `.sgpr_spill_count` and `.private_segment_fixed_size` (the
scratch, AMD's stack frame). Spilled VGPRs go to scratch, spilled SGPRs to lanes
of VGPRs, so both counts are read. The text also shows the matrix-core
instructions (`v_mfma`). A launch on AMD also marks every pointer to a tensor
under 2 GB with `tt.pointer_range = 32` (the backend's "S", for buffer loads), so
the AMD jobs are compiled so too.

The kernel tests use it in three steps:
1. `compile_job` describes one compilation: kernel, argument types, constexprs,
   architecture, warps and stages.
2. `compile_in_child` compiles a batch of jobs in a child process (why a child:
   see there) and returns each job's `Resources` as a dict; `compile_cases`
   does so for a test module's parametrized cases.
3. `assert_compiled_without_spills` checks one result and records its registers.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

from tritonnet.rocm import CDNA_WAVEFRONT, dot_input_precisions

ARCHITECTURES = (90, 80)  # Hopper, Ampere

# AMD Instinct MI300 (CDNA3) and MI200 (CDNA2). Both run 64-lane wavefronts
# (CDNA_WAVEFRONT), and `num_warps` counts wavefronts there: 4 are 256 threads.
AMD_ARCHITECTURES = ("gfx942", "gfx90a")

# The most threads an AMD workgroup (a program) may have.
AMD_MAX_THREADS = 1024

# Every target the kernel tests compile for.
TARGETS = ARCHITECTURES + AMD_ARCHITECTURES

# The tests compile a sample of the AMD builds (`compiled_by_default`), every one
# under TRITONNET_AMD_COMPILE_ALL=1 (docs/amd.md has the times).
AMD_COMPILE_ALL = os.environ.get("TRITONNET_AMD_COMPILE_ALL") == "1"

# (pointer dtype, tl.dot input_precision) of the kernels with a dot: fp32 on the
# CUDA cores ("ieee", torch's default), fp32 on the tensor cores ("tf32"), and
# bf16, whose dots ignore the setting. fp16 compiles as bf16 does.
DOT_PRECISIONS = [("fp32", "ieee"), ("fp32", "tf32"), ("bf16", "ieee")]

# Those whose dots run on the tensor cores: the ones the configs for aligned
# operands serve (tritonnet.kernels.tiling).
TENSOR_CORE_PRECISIONS = [("fp32", "tf32"), ("bf16", "ieee")]

# The most shared memory one program may ask for on each architecture
# (cudaDevAttrMaxSharedMemoryPerBlockOptin of the H100 and the A100; a workgroup's
# 64 KiB of LDS on both AMD GPUs): a config over it fails to launch there, and the
# autotuner skips it.
SHARED_MEMORY_LIMITS = {90: 232448, 80: 166912, "gfx942": 65536, "gfx90a": 65536}

# The inner stride of a weight w `[K, N]` that is 1, compiled as that constant:
# a contiguous w (the exercise's layers) or the transposed view of nn.Linear's
# `[N, K]` weight (tritonnet.functional's). Triton specializes whichever stride
# is 1, and the two builds differ in their registers.
WEIGHT_UNIT_STRIDES = {"w": "stride_wn", "w.t()": "stride_wk"}

# The loss kernels' mean (tritonnet.kernels.loss_mean): the 0-dim fp32 loss, its
# fp32 partial sums and int32 ticket counter, whatever the operands' dtype.
LOSS_MEAN_POINTERS = {"loss_ptr": "*fp32", "partials_ptr": "*fp32", "counter_ptr": "*i32"}

# Triton's default, which the launchers of the row-wise kernels keep.
DEFAULT_NUM_STAGES = 3

# The SASS mnemonics of the tensor cores' matrix multiplies: HGMMA is Hopper's
# warpgroup MMA (wgmma), HMMA the warp-level MMA of Ampere and later (mma.sync);
# both run fp16, bf16 and TF32 inputs.
TENSOR_CORE_INSTRUCTIONS = ("HGMMA", "HMMA")

# The PTX of programmatic dependent launch (tritonnet.kernels.pdl), counted in the
# PTX: the SASS has no one mnemonic for them.
PDL_INSTRUCTIONS = ("griddepcontrol.wait", "griddepcontrol.launch_dependents")

# AMD's matrix-core multiplies, for bf16, fp16, xf32 ("tf32") and fp32 alike.
MFMA_INSTRUCTION = "v_mfma"

_TESTS = Path(__file__).resolve().parent

# Results of the jobs compiled so far in this test session, by the job's JSON:
# test modules that need the same build share one compilation.
_COMPILED: dict[str, dict] = {}


@dataclasses.dataclass(frozen=True)
class Resources:
    """What one compiled kernel uses per thread (registers, stack) and per program (shared)."""

    registers: int
    shared_bytes: int
    stack_bytes: int
    # How often each of TENSOR_CORE_INSTRUCTIONS occurs in the SASS (and of
    # PDL_INSTRUCTIONS in the PTX), empty unless asked; on AMD, how often
    # MFMA_INSTRUCTION occurs in the amdgcn.
    instructions: dict = dataclasses.field(default_factory=dict)
    # Registers spilled, as AMD's metadata counts them (on CUDA a spill shows as stack).
    spilled_registers: int = 0


def compile_kernel(
    kernel,
    signature: dict[str, str],
    constexprs: dict[str, object],
    arch: int | str,
    num_warps: int = 4,
    num_stages: int = DEFAULT_NUM_STAGES,
    divisible: tuple[str, ...] = (),
    count_instructions: bool = False,
) -> Resources:
    """Compile `kernel` for sm_<arch> (an int) or an AMD target (a str, one of
    AMD_ARCHITECTURES) and return the resources its machine code uses.

    `signature` maps every argument name to a Triton type ("*fp32", "i32", ...,
    "constexpr"); `constexprs` gives the constexpr values; the arguments named in
    `divisible` are compiled as a launch with 16-byte-aligned pointers and
    integers that are multiples of 16 compiles them. `count_instructions` counts
    the tensor-core instructions in the SASS and the PDL ones in the PTX. A
    compile error raises. Needs a
    process that imported triton without TRITON_INTERPRET=1 (see
    `compile_in_child`).
    """
    # Imported here: the test modules import this one in the interpreted parent,
    # and stay collectable where triton is not installed.
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource, make_backend

    from tritonnet.triton_backend.launch import COMPILE_OPTIONS

    amd = isinstance(arch, str)
    target = GPUTarget("hip", arch, CDNA_WAVEFRONT) if amd else GPUTarget("cuda", arch, 32)
    backend = make_backend(target)
    attrs = {}
    for index, name in enumerate(kernel.arg_names):
        specialization = ("D" if name in divisible else "") + ("S" if amd and signature[name].startswith("*") else "")
        if specialization:
            attrs[(index,)] = backend.parse_attr(specialization)
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs, attrs=attrs)
    # The options every launch passes (fp fusion chosen), so that what compiles here
    # is what the launchers compile.
    options = {"num_warps": num_warps, "num_stages": num_stages, **COMPILE_OPTIONS}
    if constexprs.get("USE_PDL"):
        options["launch_pdl"] = True  # as `Launch` compiles a kernel it launches with PDL
    compiled = triton.compile(source, target=target, options=options)
    if amd:
        # Both would fail only when a GPU loads the code object.
        if compiled.metadata.shared > SHARED_MEMORY_LIMITS[arch]:
            raise RuntimeError(f"{compiled.metadata.shared} bytes of LDS, over {arch}'s {SHARED_MEMORY_LIMITS[arch]}")
        if num_warps * CDNA_WAVEFRONT > AMD_MAX_THREADS:
            raise RuntimeError(f"{num_warps} wavefronts are {num_warps * CDNA_WAVEFRONT} threads, over {AMD_MAX_THREADS}")
        return amd_resources(compiled.asm["amdgcn"], compiled.metadata.shared)
    cuobjdump = triton.knobs.nvidia.cuobjdump.path
    with tempfile.TemporaryDirectory() as folder:
        cubin = Path(folder) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        report = subprocess.run(
            [cuobjdump, "-res-usage", str(cubin)], capture_output=True, text=True, check=True
        ).stdout
        sass = ""
        if count_instructions:
            sass = subprocess.run(
                [cuobjdump, "-sass", str(cubin)], capture_output=True, text=True, check=True
            ).stdout
    # e.g. "Function softmax_kernel:\n  REG:48 STACK:0 SHARED:0 LOCAL:0 CONSTANT[0]:400 ..."
    usage = dict(re.findall(r"\b(REG|STACK|SHARED):(\d+)", report))
    if len(usage) != 3:
        raise RuntimeError(f"cuobjdump reported no resource usage for sm_{arch}:\n{report}")
    return Resources(
        registers=int(usage["REG"]),
        # Static shared memory (barriers) plus what Triton asks for at launch.
        shared_bytes=int(usage["SHARED"]) + compiled.metadata.shared,
        stack_bytes=int(usage["STACK"]),
        instructions={
            **{name: len(re.findall(rf"\b{name}\.", sass)) for name in TENSOR_CORE_INSTRUCTIONS if sass},
            **{name: compiled.asm["ptx"].count(name) for name in PDL_INSTRUCTIONS if count_instructions},
        },
    )


def amd_resources(amdgcn: str, shared_bytes: int) -> Resources:
    """The resources in the metadata at the end of AMD assembly (`compiled.asm["amdgcn"]`).

    `shared_bytes` is Triton's LDS request (`compiled.metadata.shared`): Triton
    allocates LDS at launch, so the code object's own group segment is 0.
    """
    # e.g. "    .vgpr_count:     72" and "    .private_segment_fixed_size: 0"
    fields = dict(re.findall(
        r"^\s*\.(vgpr_count|vgpr_spill_count|sgpr_spill_count|private_segment_fixed_size):\s*(\d+)$",
        amdgcn,
        re.MULTILINE,
    ))
    if len(fields) != 4:
        raise RuntimeError(f"no register and scratch counts in the amdgcn metadata, found {fields}")
    return Resources(
        registers=int(fields["vgpr_count"]),
        shared_bytes=shared_bytes,
        stack_bytes=int(fields["private_segment_fixed_size"]),
        instructions={MFMA_INSTRUCTION: len(re.findall(rf"^\s*{MFMA_INSTRUCTION}_", amdgcn, re.MULTILINE))},
        spilled_registers=int(fields["vgpr_spill_count"]) + int(fields["sgpr_spill_count"]),
    )


def compile_job(
    kernel,
    arch: int | str,
    *,
    dtype: str = "fp32",
    pointers: dict[str, str] | None = None,
    constexprs: dict[str, object] | None = None,
    config=None,
    unit_strides: tuple[str, ...] = (),
    floats: tuple[str, ...] = (),
    num_warps: int = 4,
    num_stages: int = DEFAULT_NUM_STAGES,
    aligned: bool = False,
    count_instructions: bool = False,
) -> dict:
    """One compilation of `kernel` (a @triton.jit function) for sm_<arch> or an
    AMD target ("gfx942"), as a job for `compile_in_child`.

    Argument types: every `*_ptr` argument points to `dtype` ("fp32", "bf16", ...)
    unless `pointers` gives its type ("*i64"); names in `constexprs`, in `config`'s
    kwargs and in `unit_strides` are constexprs; names in `floats` are "fp32";
    the rest (sizes and strides) "i32". A `config` (triton.Config) also gives
    the warps and stages. The strides in `unit_strides` are compiled as the
    constant 1: Triton specializes a stride of 1 into the code it launches on
    contiguous tensors, which is what the library runs. No pointer is marked
    16-byte aligned, as at odd shapes: no vector loads, the most registers.
    `aligned` marks every pointer and every integer argument (sizes and strides)
    divisible by 16, as a launch on aligned operands at aligned shapes compiles
    them (the configs chosen for aligned operands). `count_instructions` asks for
    the tensor-core instruction counts (`Resources.instructions`).
    """
    constexprs = {**(constexprs or {}), **dict.fromkeys(unit_strides, 1)}
    if "USE_PDL" in kernel.arg_names:
        constexprs.setdefault("USE_PDL", False)  # the default launch: no PDL
    if config is not None:
        constexprs.update(config.kwargs)
        num_warps, num_stages = config.num_warps, config.num_stages
    pointers = pointers or {}

    def type_of(name: str) -> str:
        if name in constexprs:
            return "constexpr"
        if name.endswith("_ptr"):
            return pointers.get(name, f"*{dtype}")
        return "fp32" if name in floats else "i32"

    signature = {name: type_of(name) for name in kernel.arg_names}
    divisible = ()
    if aligned:
        divisible = tuple(name for name, kind in signature.items() if kind.startswith("*") or kind == "i32")
    return {
        "module": kernel.fn.__module__,
        "kernel": kernel.__name__,
        "signature": signature,
        "constexprs": constexprs,
        "arch": arch,
        "num_warps": num_warps,
        "num_stages": num_stages,
        "divisible": divisible,
        "count_instructions": count_instructions,
    }


# Runs in the child: compiles the jobs read as JSON from stdin in a pool of forked
# workers, which inherit triton's imports, and prints the results as JSON.
_COMPILE_CHILD = r"""
import dataclasses, importlib, json, multiprocessing, os, sys
from compile_check import compile_kernel

def compile_one(job):
    kernel = getattr(importlib.import_module(job.pop("module")), job.pop("kernel"))
    try:
        return dataclasses.asdict(compile_kernel(kernel, **job))
    except Exception as error:
        return {"error": f"{type(error).__name__}: {error}"}

jobs = json.load(sys.stdin)
with multiprocessing.get_context("fork").Pool(max(min(len(jobs), os.cpu_count() or 1), 1)) as pool:
    print(json.dumps(pool.map(compile_one, jobs, chunksize=1)))
"""


def compile_in_child(jobs: dict[str, dict]) -> dict[str, dict]:
    """Compile the jobs (`compile_job`), keyed by test id, in a child Python process.

    Returns, under each id, the job's `Resources` as a dict, or {"error": message}.

    Why a child: under TRITON_INTERPRET=1, which conftest sets on a machine
    without CUDA, `@triton.jit` returns InterpretedFunctions, and it did so for
    triton.language's own jit helpers (tl.cdiv, tl.max, tl.sigmoid) when triton
    was first imported. A kernel module re-imported with the interpreter switched
    off gets real JITFunctions, but the compiler still meets those interpreted
    helpers and fails; only a process that imports triton without the interpreter
    compiles.
    """
    pending = {key: job for key, job in jobs.items() if json.dumps(job, sort_keys=True) not in _COMPILED}
    if pending:
        for job, result in zip(pending.values(), _compile_in_child(list(pending.values()))):
            _COMPILED[json.dumps(job, sort_keys=True)] = result
    return {key: _COMPILED[json.dumps(job, sort_keys=True)] for key, job in jobs.items()}


def compile_cases(cases, case_id, job) -> dict[str, dict]:
    """`compile_in_child` of `job(*case)` (a `compile_job`) for every case, keyed by
    `case_id(case)`, the id of the case's test."""
    return compile_in_child({case_id(case): job(*case) for case in cases})


def _compile_in_child(jobs: list[dict]) -> list[dict]:
    """`compile_in_child`'s work for jobs not compiled yet in this session."""
    environment = {name: value for name, value in os.environ.items() if name != "TRITON_INTERPRET"}
    child = subprocess.run(
        [sys.executable, "-c", _COMPILE_CHILD],
        input=json.dumps(jobs),
        capture_output=True,
        text=True,
        cwd=_TESTS,
        env=environment,
        timeout=600,
    )
    if child.returncode != 0:
        raise RuntimeError(f"the compile child failed:\n{child.stderr[-4000:]}")
    return json.loads(child.stdout)


def assert_compiled_without_spills(result: dict, record_property) -> None:
    """The job compiled, and its machine code keeps everything in registers.

    `record_property` (pytest's fixture) puts the registers and stack bytes into
    the test report (`--junitxml`), so a change that grows them shows there.
    """
    assert "error" not in result, result.get("error")
    record_property("registers", result["registers"])
    record_property("stack_bytes", result["stack_bytes"])
    assert result["stack_bytes"] == 0, f"spills (a stack frame): {result}"
    assert result["spilled_registers"] == 0, f"spills: {result}"


def assert_uses_tensor_cores(result: dict, arch: int | str) -> None:
    """The job's machine code multiplies on the tensor cores (SASS HGMMA or HMMA;
    AMD's v_mfma), and its shared memory fits `arch`. Needs a CUDA job compiled
    with `count_instructions`; AMD jobs always count."""
    assert "error" not in result, result.get("error")
    found = {name: count for name, count in result["instructions"].items() if count}
    names = (MFMA_INSTRUCTION,) if arch in AMD_ARCHITECTURES else TENSOR_CORE_INSTRUCTIONS
    assert found, f"no tensor-core instruction ({', '.join(names)}) in the machine code: {result}"
    assert result["shared_bytes"] <= SHARED_MEMORY_LIMITS[arch], (
        f"{result['shared_bytes']} bytes of shared memory, over {target_name(arch)}'s {SHARED_MEMORY_LIMITS[arch]}"
    )


def assert_config_compiled(result: dict, alignment: str, arch: int | str, record_property) -> None:
    """No spills; a build of an aligned config also multiplies on the tensor cores,
    in the shared memory `arch` has. On AMD every build does: CDNA's matrix cores
    take fp32 "ieee" products too."""
    assert_compiled_without_spills(result, record_property)
    if alignment == "aligned" or arch in AMD_ARCHITECTURES:
        assert_uses_tensor_cores(result, arch)


def compiled_by_default(
    arch: int | str, *, alignment: str = "unaligned", layout: str | None = "w", dtype: str = "fp32",
    precision: str = "ieee",
) -> bool:
    """Whether the tests compile this build unless TRITONNET_AMD_COMPILE_ALL=1:
    every CUDA build, and on AMD each config once per target where the variants
    differ least. With w contiguous (the transposed view took about as many
    registers), unaligned configs in fp32 "ieee" (their most registers), aligned
    ones at every precision they serve (TF32 takes the most LDS, bf16 shows MFMA),
    the row-wise kernels in fp32."""
    if isinstance(arch, int) or AMD_COMPILE_ALL:
        return True
    if layout == "w.t()":
        return False
    return alignment == "aligned" or (dtype, precision) == ("fp32", "ieee")


def warp_size(arch: int | str) -> int:
    """Lanes in a warp on `arch`: 32 on NVIDIA, CDNA_WAVEFRONT on AMD."""
    return CDNA_WAVEFRONT if arch in AMD_ARCHITECTURES else 32


def vendor(arch: int | str) -> str:
    """Triton's backend for `arch`: "cuda", or "hip" for AMD."""
    return "hip" if arch in AMD_ARCHITECTURES else "cuda"


def target_name(arch: int | str) -> str:
    """A target in a test id: "sm90" for CUDA's sm_90, an AMD target as it is ("gfx942")."""
    return arch if isinstance(arch, str) else f"sm{arch}"


def dot_precisions_on(arch: int | str, precisions: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """`precisions` ((dtype, input_precision) pairs) as the launchers use them on
    `arch`: "tf32" only where Triton compiles it. On AMD that is CDNA3 (gfx942,
    whose xf32 Triton calls tf32); gfx90a runs "ieee" instead, compiled already."""
    if isinstance(arch, int):
        return precisions
    return [(dtype, precision) for dtype, precision in precisions if precision in dot_input_precisions(arch)]


def config_id(config) -> str:
    """A test id for a triton.Config: its BLOCK sizes, warps and stages."""
    blocks = "x".join(str(value) for name, value in config.kwargs.items() if name.startswith("BLOCK"))
    return f"{blocks}-w{config.num_warps}-s{config.num_stages}"
