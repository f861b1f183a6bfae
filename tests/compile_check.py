"""Compile a Triton kernel for a GPU architecture on a machine without a GPU.

`triton.compile(ASTSource(...), target=GPUTarget("cuda", arch, 32))` runs the whole
compiler down to a cubin, which catches what the interpreter lets through (block
sizes tl.dot refuses, layouts that do not fit shared memory). `ptxas -v`, shipped
in the triton wheel, then reports the registers, shared memory and spills of the
machine code.
"""

from __future__ import annotations

import re
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import triton
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource

ARCHITECTURES = (90, 80)  # Hopper, Ampere


@dataclass(frozen=True)
class Resources:
    registers: int
    shared_bytes: int
    spill_stores: int
    spill_loads: int


def _ptxas(arch: int) -> str:
    """The ptxas that triton itself uses for this architecture (it ships two)."""
    from triton.backends.nvidia.compiler import get_ptxas

    return get_ptxas(arch).path


def compile_kernel(
    kernel,
    signature: dict[str, str],
    constexprs: dict[str, object],
    arch: int,
    num_warps: int = 4,
    num_stages: int = 3,
) -> Resources:
    """Compile `kernel` for sm_<arch> and return the resources its machine code uses.

    `signature` maps every argument name to a Triton type ("*fp32", "i32", ...,
    "constexpr"); `constexprs` gives the constexpr values. A compile error raises.
    """
    source = ASTSource(fn=kernel, signature=signature, constexprs=constexprs)
    options = {"num_warps": num_warps, "num_stages": num_stages}
    compiled = triton.compile(source, target=GPUTarget("cuda", arch, 32), options=options)
    ptx = compiled.asm["ptx"]
    gpu_name = re.search(r"^\.target\s+(\w+)", ptx, re.MULTILINE).group(1)
    with tempfile.TemporaryDirectory() as tmp:
        ptx_file = Path(tmp) / "kernel.ptx"
        ptx_file.write_text(ptx)
        # ptxas -v prints the registers, spills and shared memory of the final code.
        ptxas = subprocess.run(
            [_ptxas(arch), f"-arch={gpu_name}", "-v", str(ptx_file), "-o", str(Path(tmp) / "k.cubin")],
            capture_output=True,
            text=True,
        )
    if ptxas.returncode != 0:
        raise RuntimeError(f"ptxas failed for sm_{arch}: {ptxas.stderr.strip()}")
    report = ptxas.stderr

    def number(pattern: str) -> int:
        match = re.search(pattern, report)
        return int(match.group(1)) if match else 0

    return Resources(
        registers=number(r"Used (\d+) registers"),
        shared_bytes=max(number(r"(\d+) bytes smem"), compiled.metadata.shared),
        spill_stores=number(r"(\d+) bytes spill stores"),
        spill_loads=number(r"(\d+) bytes spill loads"),
    )
