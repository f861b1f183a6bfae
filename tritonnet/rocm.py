"""What differs when torch is a ROCm build and the GPU an AMD one.

torch's ROCm builds keep CUDA's names: the device type is "cuda", `torch.cuda.*`
answers for the AMD GPU, and only `torch.version.hip` (set, where CUDA builds
have None) tells them apart. Triton compiles the same kernels for AMD GPUs, so
the dispatch point (tritonnet.backend) needs no branch of its own, and "auto" runs
the kernels there as on NVIDIA. What does differ:

- Warps. A warp is a 64-lane wavefront on AMD's CDNA GPUs, so the row-wise
  kernels' warps, computed from the tile, follow `warp_size`; the GEMM config
  lists that differ say so per target (tritonnet.kernels.targets).
- TF32 dots. NVIDIA GPUs since Ampere have them; on AMD, Triton compiles
  `input_precision="tf32"` only for CDNA3 (gfx942, the MI300 series, whose
  matrix cores call it xf32) and refuses it elsewhere (gfx90a, MI200). There the
  launchers fall back to "ieee", full fp32 products, and warn once.
- What names the GPU: the architecture is `gcnArchName` ("gfx942"), not a
  compute capability.

Nothing here touches the GPU at import time.
"""

from __future__ import annotations

import functools
import warnings

import torch

# The wavefront of the AMD datacenter GPUs (CDNA: gfx90a, gfx942): 64 lanes, where
# a CUDA warp has 32. Triton's `num_warps` counts wavefronts there.
CDNA_WAVEFRONT = 64


def hip_version() -> str | None:
    """The HIP version torch was built with ("6.2.41133-dd7f95766"), None on CUDA and CPU builds."""
    return getattr(torch.version, "hip", None)


def architecture(device: int | None = None) -> str:
    """The AMD GPU's architecture ("gfx942"): `gcnArchName` without its feature
    flags (":sramecc+:xnack-"). Needs a ROCm build of torch and a GPU."""
    return torch.cuda.get_device_properties(device).gcnArchName.split(":")[0]


def warp_size() -> int:
    """Lanes in a warp of the current GPU: 32 on NVIDIA, 64 (a wavefront) on AMD's CDNA."""
    if hip_version() is None:
        return 32
    return _warp_size(torch.cuda.current_device())


@functools.lru_cache(maxsize=None)
def _warp_size(device: int) -> int:
    # Older torch builds lack the property; CDNA's wavefront is the default.
    return getattr(torch.cuda.get_device_properties(device), "warp_size", CDNA_WAVEFRONT)


@functools.lru_cache(maxsize=None)
def dot_input_precisions(arch: str) -> tuple[str, ...]:
    """The `tl.dot` input precisions Triton compiles for the AMD architecture `arch`.

    Asked of the installed Triton's AMD backend, which needs no GPU and no ROCm,
    so the answer follows the Triton version.
    """
    from triton.backends.compiler import GPUTarget
    from triton.compiler.compiler import make_backend

    # fp fusion chosen, as every launch chooses it: left unset, triton 3.9 warns.
    options = make_backend(GPUTarget("hip", arch, CDNA_WAVEFRONT)).parse_options({"enable_fp_fusion": True})
    return tuple(options.allowed_dot_input_precisions)


@functools.lru_cache(maxsize=None)
def _tf32_dots(device: int) -> bool:
    arch = architecture(device)
    if "tf32" in dot_input_precisions(arch):
        return True
    warnings.warn(
        f"{arch} has no TF32 dots in Triton: fp32 matmuls run with full fp32 products "
        f"('ieee') there, whatever torch.get_float32_matmul_precision() says",
        RuntimeWarning,
        stacklevel=2,
    )
    return False


def tf32_dots() -> bool:
    """Whether the current GPU takes `tl.dot(..., input_precision="tf32")`.

    Always on CUDA builds. On ROCm, where the architecture has it (gfx942); the
    first time it has not, a RuntimeWarning says so (once per device).
    """
    if hip_version() is None:
        return True
    return _tf32_dots(torch.cuda.current_device())
