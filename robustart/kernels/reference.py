"""Torch reference implementations of the low-bit kernels (exact integer arithmetic).

The integer products are computed as float64 matrix products of the integer values: every
partial sum is an integer below 2**53, so float64 is exact here (for K < 2**37) and it runs on
any device (torch has no integer matmul on CUDA). The dequantisation is done in float32 in
the order ``((acc * a_scale) * b_scale) + bias`` -- the same order as the Triton epilogues.
"""

from __future__ import annotations

import sys

import torch

__all__ = [
    "int8_gemm_i32", "int8_gemm", "pack_int4", "unpack_int4", "int4_gemm_i32", "int4_gemm",
    "pack_bits", "unpack_bits", "binary_gemm_i32", "binary_gemm", "dequantize",
]


def _exact_mm_i32(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """a [..., M, K] x b [..., N, K] -> int32 [..., M, N], exact for integer-valued inputs."""
    return torch.matmul(a.to(torch.float64), b.to(torch.float64).transpose(-1, -2)).to(torch.int32)


def dequantize(acc: torch.Tensor, a_scale, b_scale: torch.Tensor, bias=None,
               out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``((acc * a_scale) * b_scale[None, :]) + bias`` in float32, then cast to ``out_dtype``.

    ``a_scale`` is a scalar (per tensor) or ``[M]`` (per row); ``b_scale`` is ``[N]``."""
    out = acc.to(torch.float32)
    a_scale = torch.as_tensor(a_scale, dtype=torch.float32, device=acc.device)
    out = out * (a_scale if a_scale.dim() == 0 else a_scale.reshape(-1, 1))
    out = out * b_scale.to(torch.float32).reshape(1, -1)
    if bias is not None:
        out = out + bias.to(torch.float32).reshape(1, -1)
    return out.to(out_dtype)


def int8_gemm_i32(a: torch.Tensor, b: torch.Tensor, a_zero: int = 0) -> torch.Tensor:
    """Exact ``(a - a_zero) @ b.T`` in int32 for a int8/uint8 [M, K] and b int8 [N, K]."""
    return _exact_mm_i32(a.to(torch.int32) - int(a_zero), b)


def int8_gemm(a, b, a_scale, b_scale, bias=None, a_zero: int = 0, out_dtype=torch.float32):
    return dequantize(int8_gemm_i32(a, b, a_zero), a_scale, b_scale, bias, out_dtype)


def pack_int4(w: torch.Tensor) -> torch.Tensor:
    """int8 [N, K] in [-8, 7] -> uint8 [N, ceil(K/2)]: element 2j in the low nibble of byte j,
    element 2j+1 in the high nibble (two's complement nibbles); an odd K pads a zero nibble."""
    if not isinstance(w, torch.Tensor) or w.dim() != 2 or w.is_floating_point() or w.dtype == torch.bool:
        raise TypeError(f"w must be a 2-D integer tensor [N, K], got {getattr(w, 'dtype', type(w))} "
                        f"{tuple(getattr(w, 'shape', ()))}")
    if w.numel() and (int(w.min()) < -8 or int(w.max()) > 7):
        raise ValueError(f"w must hold int4 values in [-8, 7], got [{int(w.min())}, {int(w.max())}]")
    n, k = w.shape
    w = w.to(torch.int16)
    if k % 2:
        w = torch.cat([w, w.new_zeros(n, 1)], dim=1)
    nib = w & 0xF
    return (nib[:, 0::2] | (nib[:, 1::2] << 4)).to(torch.uint8)


def unpack_int4(p: torch.Tensor, k: int) -> torch.Tensor:
    """uint8 [N, ceil(k/2)] -> int8 [N, k] (sign-extended nibbles)."""
    if not isinstance(p, torch.Tensor) or p.dtype != torch.uint8 or p.dim() != 2:
        raise TypeError(f"p must be a 2-D uint8 tensor from pack_int4, got {getattr(p, 'dtype', type(p))}")
    if (k + 1) // 2 != p.shape[1]:
        raise ValueError(f"k={k} needs {(k + 1) // 2} packed columns, got {p.shape[1]}")
    p = p.to(torch.int16)
    lo, hi = p & 0xF, (p >> 4) & 0xF
    w = torch.stack([lo, hi], dim=-1).reshape(p.shape[0], -1)[:, :k]
    return (w - ((w & 0x8) << 1)).to(torch.int8)  # sign-extend: subtract 16 where bit 3 is set


def int4_gemm_i32(a, w_packed, k: int, a_zero: int = 0):
    return int8_gemm_i32(a, unpack_int4(w_packed, k), a_zero)


def int4_gemm(a, w_packed, k, a_scale, b_scale, bias=None, a_zero: int = 0, out_dtype=torch.float32):
    return dequantize(int4_gemm_i32(a, w_packed, k, a_zero), a_scale, b_scale, bias, out_dtype)


def pack_bits(x: torch.Tensor) -> torch.Tensor:
    """[R, K] real or integer -> int32 [R, ceil(K/32)]: bit j of word w is 1 where
    ``x[:, 32*w + j] >= 0`` (sign +1) and 0 where it is negative (sign -1); the padding bits of
    the last word are 0."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_complex():
        raise TypeError(f"x must be a 2-D real or integer tensor [R, K], got "
                        f"{getattr(x, 'dtype', type(x))} {tuple(getattr(x, 'shape', ()))}")
    if sys.byteorder != "little":  # the four bytes below are assembled little-endian
        raise RuntimeError("pack_bits assumes a little-endian machine")
    r, k = x.shape
    kw = (k + 31) // 32
    bits = (x >= 0).to(torch.uint8)
    if kw * 32 != k:
        bits = torch.cat([bits, bits.new_zeros(r, kw * 32 - k)], dim=1)
    # one byte per 8 bits (uint8 throughout: memory stays at one byte per element), then the
    # four bytes of a word are reinterpreted as one int32
    shifts = torch.arange(8, device=x.device, dtype=torch.uint8)
    by = (bits.reshape(r, kw * 4, 8) << shifts).sum(-1, dtype=torch.uint8)
    return by.view(torch.int32).reshape(r, kw)


def unpack_bits(bits: torch.Tensor, k: int, dtype=torch.int8) -> torch.Tensor:
    """int32 [R, ceil(k/32)] -> [R, k] of +1 / -1 (``dtype``)."""
    if not isinstance(bits, torch.Tensor) or bits.dtype != torch.int32 or bits.dim() != 2:
        raise TypeError(f"bits must be a 2-D int32 tensor from pack_bits, got {getattr(bits, 'dtype', type(bits))}")
    if (k + 31) // 32 != bits.shape[1]:
        raise ValueError(f"k={k} needs {(k + 31) // 32} words, got {bits.shape[1]}")
    r, kw = bits.shape
    shifts = torch.arange(32, device=bits.device, dtype=torch.int64)
    b = (bits.to(torch.int64).unsqueeze(-1) >> shifts) & 1
    return (b.reshape(r, kw * 32)[:, :k] * 2 - 1).to(dtype)


def binary_gemm_i32(a_bits, b_bits, k: int):
    """Exact dot products of the {-1, +1} rows (computed from the unpacked signs)."""
    return _exact_mm_i32(unpack_bits(a_bits, k), unpack_bits(b_bits, k))


def binary_gemm(a_bits, b_bits, k, a_scale, b_scale, bias=None, out_dtype=torch.float32):
    return dequantize(binary_gemm_i32(a_bits, b_bits, k), a_scale, b_scale, bias, out_dtype)
