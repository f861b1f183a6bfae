"""The one way every Triton kernel of tritonnet is launched: config, grid,
precision, and a cached launch path.

Why a cache: called from Python, an operation is bound by host time. Triton's
`kernel[grid](...)` binds and specializes every argument on every call, and the
autotuner adds its own dispatch; our checks add more. So each operation keeps
a plan per launch key (`plans.py`: its tensors' dtypes, shapes, strides,
devices and 16-byte alignment, its options, the matmul precision), made once by
the full argument checks: output shapes, the kernels' size and stride
arguments, and one `Launch` per kernel. A later call with the same key skips
the checks (the key decided them) and re-checks only the scalars (`scale`, `lr`).

A `Launch` resolves on its first call: the config (below), the grid, and the
compiled kernel, which Triton's own launch returns. Later calls hand the
compiled kernel's launcher its arguments directly, as `JITFunction.run` does
after its own cache lookup (`CompiledKernel.run`, the same protocol in triton
3.6 and 3.9). Triton's interpreter compiles nothing: there every call goes
through `kernel[grid]`, with the plan and config still cached.

Config choice, once per launch key:
- a heuristic the launcher computes (the row-wise kernels);
- the kernel's fixed config in the interpreter, or with TRITONNET_AUTOTUNE=0;
- the tuned table of this GPU (`tuned.py`), where it has the shape class;
- else Triton's autotuner, as before the table existed.
A kernel may offer a config list per alignment class (`alignment.py`:
tensor-core tiles where every pointer and integer is what Triton compiles as
16-divisible), since some tiles are valid only there; the class is a function of
the launch key.

TRITONNET_FAST_LAUNCH=0 keeps every launch on `kernel[grid]` (read once per
launch key). TRITONNET_PDL=1 launches the kernels that take `USE_PDL` with
programmatic dependent launch where the GPU has it (`pdl_enabled`). See
docs/launch.md.
"""

from __future__ import annotations

import os
import warnings
from typing import Callable, Mapping

import torch
import triton
from triton import knobs
from triton.runtime import driver

from tritonnet import rocm
from tritonnet.environment import interpreter_enabled
from tritonnet.kernels.tiling import ALIGNED, UNALIGNED
from tritonnet.triton_backend import alignment, tuned

# Triton 3.9 warns when a kernel compiles with fp fusion left to its default,
# which changes in 3.10. Fusing a*b+c into one FMA is what every build so far
# did (the default of 3.6 and 3.9): chosen explicitly, the numbers stay.
COMPILE_OPTIONS = {"enable_fp_fusion": True}

# torch.get_float32_matmul_precision() -> tl.dot input_precision for fp32 operands.
# "highest" keeps full fp32 products (ieee). "high" and "medium" allow TF32 tensor
# cores, as torch's own fp32 matmuls on CUDA do under those settings (torch's
# "medium" would also allow bf16 products; TF32 is the closer and safer choice).
# fp16 and bf16 operands use their own tensor-core path; the setting does not apply.
# AMD GPUs without TF32 (gfx90a) run "ieee" instead (tritonnet.rocm.tf32_dots).
FLOAT32_PRECISION = {"highest": "ieee", "high": "tf32", "medium": "tf32"}

ALIGNED, UNALIGNED = "aligned", "unaligned"


def dot_precision(dtype: torch.dtype, matmul_precision: str) -> str:
    """The `input_precision` for a tl.dot on operands of `dtype`, given
    `torch.get_float32_matmul_precision()`."""
    if dtype == torch.float32:
        precision = FLOAT32_PRECISION[matmul_precision]
        if precision == "tf32" and not interpreter_enabled() and not rocm.tf32_dots():
            return "ieee"
        return precision
    return "ieee"


def fixed_configs() -> bool:
    """True when kernels run their one fixed config instead of a tuned or autotuned one.

    Always in the interpreter: it is slow, and its autotuner would time every config.
    On a GPU when TRITONNET_AUTOTUNE=0: autotuning times every config once per new
    shape (about 0.1 s each), which a test trying hundreds of random shapes cannot
    afford, and a fixed config gives the same kernel on every run. Read once per
    launch key.
    """
    return interpreter_enabled() or os.environ.get("TRITONNET_AUTOTUNE", "1") == "0"


def fast_launch_enabled() -> bool:
    """False when TRITONNET_FAST_LAUNCH=0 asks for Triton's own `kernel[grid]` launch."""
    return os.environ.get("TRITONNET_FAST_LAUNCH", "1") != "0"


def pdl_enabled(device: torch.device) -> bool:
    """True when kernels on `device` launch with programmatic dependent launch
    (`tritonnet.kernels.pdl`): asked for with TRITONNET_PDL=1, on an NVIDIA GPU of
    compute capability 9.0 or newer, outside the interpreter. Off by default until a
    GPU run measures it faster (docs/cuda-graphs.md). Read once per launch key.
    """
    if os.environ.get("TRITONNET_PDL", "0") != "1" or device.type != "cuda" or interpreter_enabled():
        return False
    return torch.version.hip is None and torch.cuda.get_device_capability(device)[0] >= 9


def _by_alignment(value: object) -> dict[str, object]:
    if isinstance(value, Mapping):
        return dict(value)
    return {ALIGNED: value, UNALIGNED: value}


class Kernel:
    """A `@triton.jit` kernel, its grid and its configs.

    `grid(arguments)` takes the kernel's arguments by name, the config's included,
    as Triton's grid callables do. `autotuned` (Triton autotuners of this kernel)
    and `fixed` (configs) each are one object, or a dict by alignment class. A
    kernel with neither has its config computed by its launcher (`Launch(config=)`).
    `name` (the kernel's own by default) names its entries in the tuned table: two
    uses of one kernel with different config lists need two.
    """

    def __init__(self, kernel, grid: Callable[[dict], tuple], autotuned=None, fixed=None, name: str | None = None) -> None:
        self.kernel = kernel
        self.name = name or kernel.__name__
        self.arg_names = list(kernel.arg_names)
        self.grid = grid
        self.autotuned = _by_alignment(autotuned)
        self.fixed = _by_alignment(fixed)
        if any(tuner is not None and tuner.fn is not kernel for tuner in self.autotuned.values()):
            raise ValueError(f"the autotuners given for {self.name} must wrap that kernel")


def _three(grid: tuple) -> tuple[int, int, int]:
    return tuple(grid) + (1,) * (3 - len(grid))


_direct_failed = False


def _cannot_launch_directly(error: BaseException) -> None:
    """Turn the direct path off for the process, saying why once."""
    global _direct_failed
    if not _direct_failed:
        warnings.warn(
            f"tritonnet: launching compiled kernels directly failed ({type(error).__name__}: "
            f"{error}); every kernel now launches through Triton's kernel[grid], which is "
            "correct but costs more host time. Set TRITONNET_FAST_LAUNCH=0 to choose that path.",
            RuntimeWarning,
            stacklevel=3,
        )
    _direct_failed = True


class Launch:
    """One kernel launch, resolved for one launch key on its first call.

    Called with the kernel's runtime arguments in order (the constexprs were given
    here). `config`, `source` ("heuristic", "fixed", "tuned" or "autotuned"),
    `grid` and `tuning_key` are set once resolved.
    """

    def __init__(self, kernel: Kernel, config: triton.Config | None = None, **constexprs) -> None:
        self.kernel = kernel
        self.constexprs = constexprs
        self.config = config
        self.source = "heuristic" if config is not None else None
        self.grid = None
        self.tuning_key = None
        self.launch_options = None
        self.compiled = None  # set once the direct path has launched once
        self._candidate = None  # the compiled kernel, before its first direct launch

    def __call__(self, *args) -> None:
        compiled = self.compiled
        if compiled is None:
            self._launch_slowly(args)
            return
        arguments = args + self.tail
        stream = self.current_stream(self.device)
        enter, leave = self.hooks.launch_enter_hook, self.hooks.launch_exit_hook
        # The launch metadata is read by profiling hooks only: none registered, none built.
        metadata = compiled.launch_metadata(self.grid, stream, *arguments) if getattr(enter, "calls", True) else None
        self.run(*self.grid, stream, self.function, self.packed_metadata, metadata, enter, leave, *arguments)

    def _launch_slowly(self, args: tuple) -> None:
        if self.launch_options is None:
            self._resolve(args)
        elif self._candidate is not None:
            self._first_direct_launch(args)
        else:
            self.kernel.kernel[self.grid](*args, **self.launch_options)

    def _resolve(self, args: tuple) -> None:
        """Choose the config, launch through Triton once, keep what it compiled."""
        kernel = self.kernel
        options = COMPILE_OPTIONS
        if "USE_PDL" in kernel.arg_names:
            pdl = pdl_enabled(args[0].device)
            self.constexprs = {**self.constexprs, "USE_PDL": pdl}
            options = {**options, "launch_pdl": True} if pdl else options
        arguments = dict(zip(kernel.arg_names, args), **self.constexprs)
        compiled = None
        if self.config is None:  # a kernel with configs, per alignment class
            aligned = alignment.alignment_class(arguments)
            autotuner = kernel.autotuned[aligned]
            self.tuning_key = tuned.tuning_key(autotuner, arguments, aligned)
            self.config, self.source = _choose_config(kernel, aligned, self.tuning_key, args)
        # The autotuner launches the kernel itself once it has chosen; a second
        # launch would apply an in-place kernel (the SGD epilogue) twice. (In the
        # interpreter its launch returns None, not the compiled kernel.)
        autotuned = self.config is None
        if autotuned:
            compiled = autotuner[kernel.grid](*args, **self.constexprs, **options)
            self.config, self.source = autotuner.best_config, "autotuned"
            tuned.record(kernel.name, self.tuning_key, self.config)
        self.launch_options = {**self.constexprs, **self.config.all_kwargs(), **options}
        arguments.update(self.config.kwargs)
        self.grid = _three(kernel.grid(arguments))
        if not autotuned:
            compiled = kernel.kernel[self.grid](*args, **self.launch_options)
        if compiled is not None and fast_launch_enabled() and not _direct_failed:
            self._prepare_direct(compiled, args, arguments)

    def _prepare_direct(self, compiled, args: tuple, arguments: dict) -> None:
        """Keep what a direct launch needs; a Triton without it turns the path off."""
        try:
            if hasattr(compiled, "result"):  # an asynchronous compile's future
                compiled = compiled.result()
            device = args[0].device.index
            if device != driver.active.get_current_device():
                return  # Triton launches on the current device; keep its path then
            self.tail = tuple(arguments[name] for name in self.kernel.arg_names[len(args) :])
            self.run = compiled.run
            self.function = compiled.function
            self.packed_metadata = compiled.packed_metadata
            self.current_stream = driver.active.get_current_stream
            self.device = device
            self.hooks = knobs.runtime
        except Exception as error:  # noqa: BLE001 - any Triton that lacks the path keeps working
            _cannot_launch_directly(error)
            return
        self._candidate = compiled

    def _first_direct_launch(self, args: tuple) -> None:
        """The first direct launch: a launcher that refuses the arguments does so
        before anything runs (a TypeError), and the call goes through Triton instead."""
        candidate, self._candidate = self._candidate, None
        self.compiled = candidate
        try:
            self(*args)
        except TypeError as error:
            self.compiled = None
            _cannot_launch_directly(error)
            self.kernel.kernel[self.grid](*args, **self.launch_options)


def _choose_config(kernel: Kernel, aligned: str, tuning_key: str, args: tuple):
    """(config, source) for a kernel with configs of alignment class `aligned`:
    fixed, tuned, or (None, None) to autotune."""
    if fixed_configs():
        return kernel.fixed[aligned], "fixed"
    config = tuned.lookup(tuned.device_name(args[0].device), kernel.name, tuning_key, kernel.autotuned[aligned])
    return (config, "tuned") if config is not None else (None, None)
