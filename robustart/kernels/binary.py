"""Binary GEMM: bit-packed {-1, +1} operands, XOR + popcount on int32 words.

Rows are packed 32 signs per int32 word (bit 1 = +1, bit 0 = -1, padding bits 0 in both
operands, see ``pack_bits``). For the k real bits, ``dot = k - 2 * popcount(a XOR b)``: equal
signs contribute +1, different signs -1, and the padding bits (0 XOR 0) count nothing.
Each program XORs a ``[BLOCK_M, BLOCK_KW]`` word tile of a with a ``[BLOCK_N, BLOCK_KW]``
word tile of b into ``[BLOCK_M, BLOCK_N, BLOCK_KW]`` and reduces the popcounts over the
words. On CUDA the popcount is the hardware ``popc`` (libdevice); the interpreter has no
libdevice, so there the kernel uses the classic SWAR bit count on uint32, which is exact too.
"""

from __future__ import annotations

import triton.language as tl

from ._launch import Kernel, prune_by_m, tile
from .tiles import popcount, store_tile, tile_position


def _binary_gemm_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, bias_ptr,
    M, N, KW, K,
    stride_ag, stride_am, stride_ak,
    stride_bg, stride_bn, stride_bk,
    stride_cg, stride_cm, stride_cn,
    DEQUANT: tl.constexpr, A_SCALE_PER_ROW: tl.constexpr, HAS_BIAS: tl.constexpr,
    HW_POPC: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_KW: tl.constexpr, GROUP_M: tl.constexpr,
):
    g = tl.program_id(1)
    pid_m, pid_n = tile_position(M, N, BLOCK_M, BLOCK_N, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_w = tl.arange(0, BLOCK_KW)
    offs_am = offs_m % M
    offs_bn = offs_n % N
    a_ptrs = a_ptr + g * stride_ag + offs_am[:, None] * stride_am + offs_w[None, :] * stride_ak
    b_ptrs = b_ptr + g * stride_bg + offs_bn[:, None] * stride_bn + offs_w[None, :] * stride_bk

    cnt = tl.full((BLOCK_M, BLOCK_N), 0, tl.int32)
    for kt in range(0, (KW + BLOCK_KW - 1) // BLOCK_KW):
        w_left = KW - kt * BLOCK_KW
        a = tl.load(a_ptrs, mask=offs_w[None, :] < w_left, other=0)  # 0 XOR 0 counts nothing
        b = tl.load(b_ptrs, mask=offs_w[None, :] < w_left, other=0)
        x = a[:, None, :] ^ b[None, :, :]
        pc = popcount(x, HW_POPC)
        cnt += tl.reduce(pc, 2, tl.standard._sum_combine)
        a_ptrs += BLOCK_KW * stride_ak
        b_ptrs += BLOCK_KW * stride_bk
    acc = K - 2 * cnt

    store_tile(acc, c_ptr, a_scale_ptr, b_scale_ptr, bias_ptr, g, M, N, offs_m, offs_n, offs_am, offs_bn,
               stride_cg, stride_cm, stride_cn, DEQUANT, A_SCALE_PER_ROW, HAS_BIAS)


def _cfg(bm, bn, bkw, stages, warps, group_m=8):
    return tile(bm, bn, bkw, stages, warps, group_m, k_name="BLOCK_KW")


# The [BLOCK_M, BLOCK_N, BLOCK_KW] XOR tile lives in registers: keep it near 16-32K elements.
BINARY_CONFIGS = [
    _cfg(64, 64, 4, 3, 4), _cfg(64, 64, 8, 3, 8), _cfg(128, 64, 4, 3, 8), _cfg(128, 128, 2, 3, 8),
    _cfg(16, 64, 8, 3, 4, 1), _cfg(16, 128, 4, 3, 4, 1), _cfg(16, 32, 16, 3, 4, 1),
    _cfg(32, 64, 8, 3, 4, 1),
]

binary_gemm_kernel = Kernel(
    _binary_gemm_kernel, BINARY_CONFIGS, key=["M", "N", "KW", "DEQUANT"],
    interp_meta={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_KW": 2, "GROUP_M": 2}, prune=prune_by_m,
)
