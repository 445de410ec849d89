"""What every GEMM kernel shares: the order in which programs take output tiles, the store
of a finished tile with the dequantisation epilogue, and (the bit-packed kernels) the popcount. ``@triton.jit`` helpers, inlined into each
kernel when it compiles; under the interpreter ``_launch.Kernel`` calls their interpreted forms.
"""

from __future__ import annotations

import triton
import triton.language as tl
from triton.language.extra import libdevice


@triton.jit
def tile_position(M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """(pid_m, pid_n) of this program's output tile. Grouped order: GROUP_M neighbouring
    programs take the M-tiles under one N-tile, so they share its b tiles in L2."""
    pid = tl.program_id(0)
    num_pid_m = (M + BLOCK_M - 1) // BLOCK_M
    num_pid_n = (N + BLOCK_N - 1) // BLOCK_N
    num_pid_in_group = GROUP_M * num_pid_n
    first_pid_m = (pid // num_pid_in_group) * GROUP_M
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


@triton.jit
def store_tile(acc, c_ptr, a_scale_ptr, b_scale_ptr, bias_ptr, g, M, N, offs_m, offs_n, offs_am, offs_bn,
               stride_cg, stride_cm, stride_cn,
               DEQUANT: tl.constexpr, A_SCALE_PER_ROW: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Stores the int32 tile ``acc`` of group ``g``: as it is, or with DEQUANT as
    ``((float32(acc) * a_scale) * b_scale[n]) + bias[n]`` in the output's dtype. ``offs_am`` /
    ``offs_bn`` are the row / column offsets wrapped into range (rows past the edge are read but
    never stored)."""
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    c_ptrs = c_ptr + g * stride_cg + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    if DEQUANT:
        out = acc.to(tl.float32)
        if A_SCALE_PER_ROW:
            out = out * tl.load(a_scale_ptr + offs_am)[:, None]
        else:
            out = out * tl.load(a_scale_ptr)
        out = out * tl.load(b_scale_ptr + g * N + offs_bn)[None, :]
        if HAS_BIAS:
            out = out + tl.load(bias_ptr + g * N + offs_bn)[None, :]
        tl.store(c_ptrs, out.to(c_ptr.dtype.element_ty), mask=mask)
    else:
        tl.store(c_ptrs, acc, mask=mask)


@triton.jit
def popcount(x, HW_POPC: tl.constexpr):
    """Set bits of each int32 word: the hardware ``popc`` on CUDA (libdevice); the classic SWAR
    bit count on uint32, exact too, where there is no libdevice (Triton's interpreter)."""
    if HW_POPC:
        c = libdevice.popc(x)
    else:
        v = x.to(tl.uint32, bitcast=True)
        v = v - ((v >> 1) & 0x55555555)
        v = (v & 0x33333333) + ((v >> 2) & 0x33333333)
        v = (v + (v >> 4)) & 0x0F0F0F0F
        v = v + (v >> 8)
        v = v + (v >> 16)
        c = (v & 0x3F).to(tl.int32)
    return c
