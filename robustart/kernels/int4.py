"""int8 activations x int4 weights (two per byte) -> int32, unpacked in registers.

Weights arrive packed as uint8 ``[N, ceil(K/2)]`` (element 2j in the low nibble of byte j,
element 2j+1 in the high nibble). Each program loads a ``[BLOCK_N, BLOCK_K/2]`` byte tile,
sign-extends both nibbles with shifts on int8 (``(p << 4) >> 4`` and ``p >> 4``), interleaves
them into a ``[BLOCK_N, BLOCK_K]`` int8 tile and feeds the tensor cores with an int8
``tl.dot``: the weight traffic is a quarter of fp16's. Same epilogue as the int8 kernel.
"""

from __future__ import annotations

import triton.language as tl

from ._launch import Kernel, prune_by_m, tile as _cfg
from .tiles import store_tile, tile_position


def _int4_gemm_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, bias_ptr, bsum_ptr,
    M, N, K, corr,
    stride_ag, stride_am, stride_ak,
    stride_bg, stride_bn, stride_bk,
    stride_cg, stride_cm, stride_cn,
    A_UNSIGNED: tl.constexpr, ZERO_CORR: tl.constexpr, DEQUANT: tl.constexpr,
    A_SCALE_PER_ROW: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    HALF_K: tl.constexpr = BLOCK_K // 2
    g = tl.program_id(1)
    pid_m, pid_n = tile_position(M, N, BLOCK_M, BLOCK_N, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    offs_p = tl.arange(0, HALF_K)
    offs_am = offs_m % M
    offs_bn = offs_n % N
    kp = (K + 1) // 2  # packed bytes per row
    a_ptrs = a_ptr + g * stride_ag + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + g * stride_bg + offs_bn[:, None] * stride_bn + offs_p[None, :] * stride_bk

    acc = tl.full((BLOCK_M, BLOCK_N), 0, tl.int32)
    bsum = tl.full((BLOCK_N,), 0, tl.int32)
    for kt in range(0, (K + BLOCK_K - 1) // BLOCK_K):
        a = tl.load(a_ptrs, mask=offs_k[None, :] < K - kt * BLOCK_K, other=0)
        p = tl.load(b_ptrs, mask=offs_p[None, :] < kp - kt * HALF_K, other=0)
        p = p.to(tl.int8, bitcast=True)
        lo = (p << 4) >> 4  # arithmetic shifts sign-extend the nibbles
        hi = p >> 4
        w = tl.reshape(tl.join(lo, hi), (BLOCK_N, BLOCK_K))  # interleave: k = 2j, 2j+1
        if A_UNSIGNED:
            a = (a.to(tl.int16) - 128).to(tl.int8)
        acc = tl.dot(a, tl.trans(w), acc, out_dtype=tl.int32)  # Triton < 3.8 defaults to float32
        if ZERO_CORR == 1:
            bsum += tl.reduce(w.to(tl.int32), 1, tl.standard._sum_combine)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += HALF_K * stride_bk
    if ZERO_CORR == 2:
        bsum = tl.load(bsum_ptr + g * N + offs_bn)
    if ZERO_CORR != 0:
        acc += corr * bsum[None, :]

    store_tile(acc, c_ptr, a_scale_ptr, b_scale_ptr, bias_ptr, g, M, N, offs_m, offs_n, offs_am, offs_bn,
               stride_cg, stride_cm, stride_cn, DEQUANT, A_SCALE_PER_ROW, HAS_BIAS)



INT4_CONFIGS = [
    _cfg(128, 256, 128, 3, 8), _cfg(128, 128, 128, 4, 8), _cfg(128, 128, 64, 4, 4),
    _cfg(64, 128, 128, 4, 4), _cfg(64, 64, 128, 4, 4),
    _cfg(16, 64, 256, 4, 4, 1), _cfg(16, 128, 256, 3, 4, 1), _cfg(16, 32, 512, 4, 4, 1),
    _cfg(32, 64, 256, 4, 4, 1), _cfg(16, 64, 512, 3, 4, 1),
]

int4_gemm_kernel = Kernel(
    _int4_gemm_kernel, INT4_CONFIGS, key=["M", "N", "K", "A_UNSIGNED", "ZERO_CORR", "DEQUANT"],
    interp_meta={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "GROUP_M": 2}, prune=prune_by_m,
)
