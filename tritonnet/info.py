"""`tritonnet info`: what a bug report needs to say about this machine.

The versions of tritonnet, torch and triton, the GPU (on a ROCm build of torch,
its gfx architecture), whether Triton's interpreter is on, the backend that
"auto" picks and the float32 matmul precision the kernels follow.
"""

from __future__ import annotations

import torch

from tritonnet import __version__


def print_info() -> int:
    """Print the versions, the GPU and what the backend 'auto' picks on it; return 0."""
    from tritonnet import rocm
    from tritonnet.backend import interpreter_enabled, resolve_backend, triton_available

    print(f"tritonnet {__version__}")
    print(f"torch {torch.__version__}")
    if triton_available():
        import triton

        print(f"triton {triton.__version__}")
    else:
        print("triton not installed")
    if torch.cuda.is_available():
        # On a ROCm build torch.cuda answers for the AMD GPU, named by its architecture.
        if rocm.hip_version():
            details = f"ROCm, HIP {rocm.hip_version()}, {rocm.architecture()}"
        else:
            details = f"capability {torch.cuda.get_device_capability()}"
        print(f"cuda device: {torch.cuda.get_device_name()} ({details})")
        device = torch.device("cuda")
    else:
        print("cuda device: none")
        device = torch.device("cpu")
    print(f"TRITON_INTERPRET: {'on' if interpreter_enabled() else 'off'}")
    print(f"backend 'auto' picks: {resolve_backend(device, 'auto')} on {device}")
    print(f"float32 matmul precision: {torch.get_float32_matmul_precision()}")
    return 0
