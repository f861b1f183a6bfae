"""Config lists that differ between NVIDIA and AMD GPUs.

Triton compiles the same kernels for both, but a config does not ask the same of
both. `num_warps` counts 32-lane warps on NVIDIA and 64-lane wavefronts on AMD's
CDNA GPUs (gfx90a, gfx942): twice the threads, at most 16 of them (1024 threads)
per workgroup. And a workgroup has 64 KiB of LDS (shared memory) there, where an
H100 program may have 227 KiB: the tensor-core tiles' 3 and 4 stages do not fit
TF32 operands, so their AMD builds take 2, Triton's default on AMD.

Where a kernel's list differs, `autotune_per_target` gives its autotuner both
lists, and keeps those of the GPU at hand when it tunes.
"""

import triton


def current_backend() -> str:
    """What Triton compiles for on the current device: "cuda" or "hip" (AMD)."""
    return triton.runtime.driver.active.get_current_target().backend


def autotune_per_target(cuda_configs: list, hip_configs: list, key: list[str], **options):
    """`triton.autotune` over both lists, pruned to the current GPU's at tuning time;
    `options` are `triton.autotune`'s others (`restore_value`).

    The pruning runs when the autotuner meets a new key, not at import, so
    importing a kernel module touches no GPU.
    """
    every = cuda_configs + [config for config in hip_configs if all(config is not c for c in cuda_configs)]

    def current_target_configs(configs, named_args, **kwargs):
        wanted = hip_configs if current_backend() == "hip" else cuda_configs
        return [config for config in wanted if any(config is c for c in configs)]

    return triton.autotune(
        configs=every, key=key, prune_configs_by={"early_config_prune": current_target_configs}, **options
    )
