"""tritonnet's Triton kernels: `@triton.jit` code and its configs, nothing else.

Installed as `tritonnet.kernels`. One module per fused operation; the launchers
that check arguments and pick grids live in `tritonnet.triton_backend`.
"""
