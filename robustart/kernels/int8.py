"""int8 x int8 -> int32 GEMM on tensor cores, with fused zero-point correction and dequantisation.

``acc[m, n] = sum_k (a[m, k] - a_zero) * b[n, k]`` exactly in int32, then optionally
``out = ((float(acc) * a_scale) * b_scale[n]) + bias[n]`` in float32, stored as the output
dtype. uint8 activations are shifted into int8 in registers (``a - 128``) so that ``tl.dot``
runs int8 x int8 on the tensor cores; the shift and the zero point are folded into one
correction ``(128 - a_zero) * sum_k b[n, k]``, accumulated from the same b tiles.
Batched over a group axis (grid axis 1) for grouped convolutions.
"""

from __future__ import annotations

import triton.language as tl

from ._launch import Kernel, prune_by_m, tile as _cfg
from .tiles import store_tile, tile_position


def _int8_gemm_kernel(
    a_ptr, b_ptr, c_ptr, a_scale_ptr, b_scale_ptr, bias_ptr, bsum_ptr,
    M, N, K, corr,
    stride_ag, stride_am, stride_ak,
    stride_bg, stride_bn, stride_bk,
    stride_cg, stride_cm, stride_cn,
    A_UNSIGNED: tl.constexpr, ZERO_CORR: tl.constexpr, DEQUANT: tl.constexpr,
    A_SCALE_PER_ROW: tl.constexpr, HAS_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    g = tl.program_id(1)
    pid_m, pid_n = tile_position(M, N, BLOCK_M, BLOCK_N, GROUP_M)

    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    offs_k = tl.arange(0, BLOCK_K)
    # Rows past the edge are wrapped (never stored); only K needs a mask.
    offs_am = offs_m % M
    offs_bn = offs_n % N
    a_ptrs = a_ptr + g * stride_ag + offs_am[:, None] * stride_am + offs_k[None, :] * stride_ak
    b_ptrs = b_ptr + g * stride_bg + offs_k[:, None] * stride_bk + offs_bn[None, :] * stride_bn

    acc = tl.full((BLOCK_M, BLOCK_N), 0, tl.int32)
    bsum = tl.full((BLOCK_N,), 0, tl.int32)
    for kt in range(0, (K + BLOCK_K - 1) // BLOCK_K):
        k_left = K - kt * BLOCK_K
        a = tl.load(a_ptrs, mask=offs_k[None, :] < k_left, other=0)
        b = tl.load(b_ptrs, mask=offs_k[:, None] < k_left, other=0)
        if A_UNSIGNED:
            a = (a.to(tl.int16) - 128).to(tl.int8)  # padded k: b is 0 there
        acc = tl.dot(a, b, acc, out_dtype=tl.int32)  # Triton < 3.8 defaults to float32
        if ZERO_CORR == 1:
            bsum += tl.reduce(b.to(tl.int32), 0, tl.standard._sum_combine)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    if ZERO_CORR == 2:
        bsum = tl.load(bsum_ptr + g * N + offs_bn)
    if ZERO_CORR != 0:
        acc += corr * bsum[None, :]

    store_tile(acc, c_ptr, a_scale_ptr, b_scale_ptr, bias_ptr, g, M, N, offs_m, offs_n, offs_am, offs_bn,
               stride_cg, stride_cm, stride_cn, DEQUANT, A_SCALE_PER_ROW, HAS_BIAS)



# H100: big tiles for the compute-bound regime (int8 wgmma wants BLOCK_M >= 64), thin tiles with
# long K steps and many programs along N for the memory-bound small-M regime.
INT8_CONFIGS = [
    _cfg(128, 256, 128, 3, 8), _cfg(256, 128, 128, 3, 8), _cfg(128, 128, 128, 4, 8),
    _cfg(128, 128, 64, 4, 4), _cfg(64, 128, 128, 4, 4), _cfg(64, 64, 64, 4, 4),
    _cfg(16, 64, 256, 4, 4, 1), _cfg(16, 128, 256, 3, 4, 1), _cfg(32, 64, 256, 4, 4, 1),
    _cfg(16, 32, 512, 3, 4, 1),
]

int8_gemm_kernel = Kernel(
    _int8_gemm_kernel, INT8_CONFIGS, key=["M", "N", "K", "A_UNSIGNED", "ZERO_CORR", "DEQUANT"],
    interp_meta={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_K": 32, "GROUP_M": 2}, prune=prune_by_m,
)
