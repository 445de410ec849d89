"""Launchers of the Triton GEMM kernels on grouped operands.

All three take a group axis: ``a3 [G, M, Ka]``, ``b3 [G, N, Kb]`` and ``out3 [G, M, N]`` may be
strided views (a grouped convolution passes its im2col matrix and weights without copies);
``b_scale`` and ``bias`` are flat ``[G * N]`` and ``a_scale`` is a 0-d tensor or ``[M]``.
"""

from __future__ import annotations

import inspect

import torch

from . import _launch  # noqa: F401  (first: a missing triton names the 'kernels' extra)


def _check_offsets(**tensors):
    # The kernels index with 32-bit offsets (as Triton does for 32-bit strides).
    for name, t in tensors.items():
        span = sum((n - 1) * abs(st) for n, st in zip(t.shape, t.stride()) if n > 0)
        if span >= 2**31:
            raise ValueError(f"{name} spans {span} elements, more than 32-bit offsets reach; "
                             "split the batch into smaller calls")


def _grid(m, n, g, bm="BLOCK_M", bn="BLOCK_N"):
    return lambda meta: (((m + meta[bm] - 1) // meta[bm]) * ((n + meta[bn] - 1) // meta[bn]), g)


def _epilogue_args(out3, a_scale, b_scale, bias):
    dequant = a_scale is not None
    dummy = out3  # never read when the matching flag is off
    return dict(
        a_scale=a_scale if dequant else dummy,
        b_scale=b_scale if dequant else dummy,
        bias=bias if (dequant and bias is not None) else dummy,
        DEQUANT=dequant,
        A_SCALE_PER_ROW=dequant and a_scale.dim() == 1,
        HAS_BIAS=dequant and bias is not None,
    )


def _interpreter_bf16(fn):
    """Triton's interpreter converts float32 to bfloat16 by truncation, the GPU (and torch) by
    rounding to nearest even: on the CPU, bfloat16 outputs go through a float32 buffer."""

    sig = inspect.signature(fn)

    def run(*args, **kwargs):
        bound = sig.bind(*args, **kwargs)
        out3 = bound.arguments["out3"]
        if out3.dtype != torch.bfloat16 or out3.is_cuda:
            return fn(*args, **kwargs)
        bound.arguments["out3"] = torch.empty(out3.shape, dtype=torch.float32, device=out3.device)
        fn(*bound.args, **bound.kwargs)
        out3.copy_(bound.arguments["out3"])
        return out3

    return run


# Up to this M the kernel sums the weight rows itself while it streams them (the GEMM is
# memory-bound, the ALUs idle); above it, summing in the K loop would cost about as much as the
# tensor-core work, so the row sums come from one torch reduction instead.
ROWSUM_IN_KERNEL_MAX_M = 32


def _zero_point(a3, a_zero, rowsum):
    """uint8 a is shifted to int8 in the kernel (a - 128); the shift and the zero point become
    one correction ``c * sum_k b[n, k]`` with ``c = 128 - a_zero`` (or ``-a_zero`` for int8).
    -> (unsigned, c, mode, row sums or None); mode 0: no correction, 1: summed in the kernel,
    2: read from the row sums (``rowsum()``, int32 [G * N])."""
    unsigned = a3.dtype == torch.uint8
    corr = (128 - a_zero) if unsigned else -a_zero
    if corr == 0:
        return unsigned, corr, 0, None
    if a3.shape[1] <= ROWSUM_IN_KERNEL_MAX_M:
        return unsigned, corr, 1, None
    return unsigned, corr, 2, rowsum().reshape(-1).contiguous()


def _int4_rowsum(p3):
    p = p3.to(torch.int32)
    return ((((p & 0xF) ^ 8) - 8) + (((p >> 4) ^ 8) - 8)).sum(-1, dtype=torch.int32)


@_interpreter_bf16
def int8_gemm(a3, b3, out3, a_zero=0, a_scale=None, b_scale=None, bias=None):
    from .int8 import int8_gemm_kernel

    _check_offsets(a=a3, b=b3, out=out3)
    g, m, k = a3.shape
    n = b3.shape[1]
    unsigned, corr, mode, bsum = _zero_point(a3, a_zero, lambda: b3.sum(-1, dtype=torch.int32))
    e = _epilogue_args(out3, a_scale, b_scale, bias)
    int8_gemm_kernel(
        _grid(m, n, g), a3.device,
        a3, b3, out3, e["a_scale"], e["b_scale"], e["bias"], out3 if bsum is None else bsum, m, n, k, corr,
        *a3.stride(), *b3.stride(), *out3.stride(),
        A_UNSIGNED=unsigned, ZERO_CORR=mode, DEQUANT=e["DEQUANT"],
        A_SCALE_PER_ROW=e["A_SCALE_PER_ROW"], HAS_BIAS=e["HAS_BIAS"],
    )
    return out3


@_interpreter_bf16
def int4_gemm(a3, p3, k, out3, a_zero=0, a_scale=None, b_scale=None, bias=None):
    from .int4 import int4_gemm_kernel

    _check_offsets(a=a3, b=p3, out=out3)
    g, m, _ = a3.shape
    n = p3.shape[1]
    unsigned, corr, mode, bsum = _zero_point(a3, a_zero, lambda: _int4_rowsum(p3))
    e = _epilogue_args(out3, a_scale, b_scale, bias)
    int4_gemm_kernel(
        _grid(m, n, g), a3.device,
        a3, p3, out3, e["a_scale"], e["b_scale"], e["bias"], out3 if bsum is None else bsum, m, n, k, corr,
        *a3.stride(), *p3.stride(), *out3.stride(),
        A_UNSIGNED=unsigned, ZERO_CORR=mode, DEQUANT=e["DEQUANT"],
        A_SCALE_PER_ROW=e["A_SCALE_PER_ROW"], HAS_BIAS=e["HAS_BIAS"],
    )
    return out3


@_interpreter_bf16
def binary_gemm(a3, b3, k, out3, a_scale=None, b_scale=None, bias=None):
    from .binary import binary_gemm_kernel

    _check_offsets(a=a3, b=b3, out=out3)
    g, m, kw = a3.shape
    n = b3.shape[1]
    e = _epilogue_args(out3, a_scale, b_scale, bias)
    binary_gemm_kernel(
        _grid(m, n, g), a3.device,
        a3, b3, out3, e["a_scale"], e["b_scale"], e["bias"], m, n, kw, k,
        *a3.stride(), *b3.stride(), *out3.stride(),
        DEQUANT=e["DEQUANT"], A_SCALE_PER_ROW=e["A_SCALE_PER_ROW"], HAS_BIAS=e["HAS_BIAS"],
        HW_POPC=a3.is_cuda,
    )
    return out3
