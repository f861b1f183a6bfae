"""Plain SGD on a layer's weight and bias, both in one launch.

Math. `w -= lr * grad_w` and `b -= lr * grad_b`, element by element, in fp32 and
rounded once to the parameter's dtype.

Shapes and strides. Each tensor is read as a flat run of `numel` elements, so
the launcher passes contiguous tensors only (the layers allocate them so).

Blocks and programs. A 1-D grid of BLOCK-element programs: the first
`weight_programs` cover the weight, the rest cover the bias. An update is
memory-bound and tiny (the exercise's largest weight is 784 x 512): two launches,
one per tensor, would cost more in launch overhead than the bias costs to update,
so the bias rides along at the end of the weight's grid.
"""

import triton
import triton.language as tl

# Memory-bound: each thread moves a few 16-byte vectors; docs/kernels.md has how
# the blocks were sized.
SGD_CONFIGS = [
    triton.Config({"BLOCK": 1024}, num_warps=4),
    triton.Config({"BLOCK": 2048}, num_warps=8),
    triton.Config({"BLOCK": 4096}, num_warps=8),
]

# The interpreter runs programs one after another: few large blocks are fastest.
SGD_INTERPRETER_CONFIG = triton.Config({"BLOCK": 4096}, num_warps=4)


@triton.jit
def sgd_update_block(param_ptr, grad_ptr, numel, block, lr, BLOCK: tl.constexpr):
    """`param -= lr * grad` on the `block`-th BLOCK of `numel` contiguous elements."""
    offsets = block * BLOCK + tl.arange(0, BLOCK)
    mask = offsets < numel
    param = tl.load(param_ptr + offsets, mask=mask).to(tl.float32)
    grad = tl.load(grad_ptr + offsets, mask=mask).to(tl.float32)
    updated = param - lr * grad
    tl.store(param_ptr + offsets, updated.to(param_ptr.dtype.element_ty), mask=mask)


@triton.jit
def sgd_update_kernel(
    w_ptr,
    grad_w_ptr,
    w_numel,
    b_ptr,
    grad_b_ptr,
    b_numel,
    lr,
    BLOCK: tl.constexpr,
):
    """One BLOCK of `w -= lr * grad_w` or, past the weight's programs, of `b -= lr * grad_b`.

    Args:
        w_ptr, grad_w_ptr: weight and its gradient, `w_numel` contiguous elements each.
        b_ptr, grad_b_ptr: bias and its gradient, `b_numel` contiguous elements each;
            without a bias `b_numel` is 0 and the grid has no bias programs.
        lr: the learning rate.
        BLOCK: elements per program.
    """
    # int64 ids keep the offsets below exact past 2**31 elements.
    pid = tl.program_id(axis=0).to(tl.int64)
    weight_programs = tl.cdiv(w_numel, BLOCK)
    if pid < weight_programs:
        sgd_update_block(w_ptr, grad_w_ptr, w_numel, pid, lr, BLOCK)
    else:
        sgd_update_block(b_ptr, grad_b_ptr, b_numel, pid - weight_programs, lr, BLOCK)


# The autotuner runs every config on the same tensors before the real launch;
# restoring the parameters keeps those trial runs from updating them.
sgd_update_autotuned = triton.autotune(
    configs=SGD_CONFIGS, key=["w_numel", "b_numel"], restore_value=["w_ptr", "b_ptr"]
)(sgd_update_kernel)
