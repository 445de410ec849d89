"""Binary x ternary GEMM (BWTA): ternary activations, 2 bits per value, against binary (or ternary)
weights, with a fused dequantization epilogue.

Encoding (``pack_ternary``): a row of values in {-1, 0, +1} becomes two int32 bit planes of
``ceil(K/32)`` words each, packed like ``pack_bits`` (bit j of word w is element 32*w + j):

  mask  bit 1 where the value is non-zero
  sign  bit 1 where the value is +1 (0 for -1 and for 0)

so one activation value costs 2 bits. Padding bits are 0 in both planes. Binary weights {-1, +1}
are the ``pack_bits`` signs (every real bit is "non-zero"); ternary right operands (the attention
products q k^T and p v, where both sides are activations) carry a mask too. For the K real
positions,

  dot = popcount(m) - 2 * popcount(m & (sign_a XOR sign_b)),   m = mask_a (& mask_b)

zeros of either side and the padding contribute nothing; equal signs +1, different signs -1.
The epilogue is the other kernels': ``((float32(dot) * a_scale) * b_scale[n]) + bias[n]``.
Each program XORs / ANDs ``[BLOCK_M, BLOCK_KW]`` word tiles of a with ``[BLOCK_N, BLOCK_KW]``
tiles of b and reduces two popcounts over the words: hardware ``popc`` on CUDA, the SWAR count in
Triton's interpreter (exact too; see binary.py).

Public entry points: ``bwta_gemm_i32``, ``bwta_gemm`` (2-D or grouped 3-D operands), with
``backend`` as everywhere in robustart.kernels ("auto", "triton", "torch"), and the exact torch
reference ``bwta_gemm_reference``.
"""

from __future__ import annotations

import torch
import triton.language as tl

from ._launch import Kernel, prune_by_m, tile
from .reference import pack_bits, unpack_bits
from .tiles import popcount, store_tile, tile_position


def _bwta_gemm_kernel(
    am_ptr, as_ptr, bs_ptr, bm_ptr, c_ptr, a_scale_ptr, b_scale_ptr, bias_ptr,
    M, N, KW,
    stride_ag, stride_am, stride_ak,
    stride_bg, stride_bn, stride_bk,
    stride_cg, stride_cm, stride_cn,
    B_TERNARY: tl.constexpr, DEQUANT: tl.constexpr, A_SCALE_PER_ROW: tl.constexpr, HAS_BIAS: tl.constexpr,
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
    a_off = g * stride_ag + offs_am[:, None] * stride_am + offs_w[None, :] * stride_ak
    b_off = g * stride_bg + offs_bn[:, None] * stride_bn + offs_w[None, :] * stride_bk

    nz = tl.full((BLOCK_M, BLOCK_N), 0, tl.int32)
    neg = tl.full((BLOCK_M, BLOCK_N), 0, tl.int32)
    for kt in range(0, (KW + BLOCK_KW - 1) // BLOCK_KW):
        inside = offs_w[None, :] < KW - kt * BLOCK_KW
        am = tl.load(am_ptr + a_off, mask=inside, other=0)  # masked words count nothing
        asg = tl.load(as_ptr + a_off, mask=inside, other=0)
        bsg = tl.load(bs_ptr + b_off, mask=inside, other=0)
        m = am[:, None, :] & tl.full((1, BLOCK_N, BLOCK_KW), -1, tl.int32)
        if B_TERNARY:
            bm = tl.load(bm_ptr + b_off, mask=inside, other=0)
            m = m & bm[None, :, :]
        x = m & (asg[:, None, :] ^ bsg[None, :, :])
        pm = popcount(m, HW_POPC)
        px = popcount(x, HW_POPC)
        nz += tl.reduce(pm, 2, tl.standard._sum_combine)
        neg += tl.reduce(px, 2, tl.standard._sum_combine)
        a_off += BLOCK_KW * stride_ak
        b_off += BLOCK_KW * stride_bk
    acc = nz - 2 * neg

    if A_SCALE_PER_ROW:  # one scale per row of each group here ([G * M]; the other kernels share [M])
        a_scale_ptr += g * M
    store_tile(acc, c_ptr, a_scale_ptr, b_scale_ptr, bias_ptr, g, M, N, offs_m, offs_n, offs_am, offs_bn,
               stride_cg, stride_cm, stride_cn, DEQUANT, A_SCALE_PER_ROW, HAS_BIAS)

def _cfg(bm, bn, bkw, stages, warps, group_m=8):
    return tile(bm, bn, bkw, stages, warps, group_m, k_name="BLOCK_KW")


# Two [BLOCK_M, BLOCK_N, BLOCK_KW] word tiles live in registers (m and x): half the binary
# kernel's tile volume.
BWTA_CONFIGS = [
    _cfg(64, 64, 2, 3, 4), _cfg(64, 64, 4, 3, 8), _cfg(128, 64, 2, 3, 8), _cfg(128, 128, 1, 3, 8),
    _cfg(16, 64, 4, 3, 4, 1), _cfg(16, 128, 2, 3, 4, 1), _cfg(16, 32, 8, 3, 4, 1),
    _cfg(32, 64, 4, 3, 4, 1),
]

bwta_gemm_kernel = Kernel(
    _bwta_gemm_kernel, BWTA_CONFIGS, key=["M", "N", "KW", "B_TERNARY", "DEQUANT"],
    interp_meta={"BLOCK_M": 16, "BLOCK_N": 16, "BLOCK_KW": 2, "GROUP_M": 2}, prune=prune_by_m,
)


# ---------------------------------------------------------------- packing and the reference


def pack_ternary(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """[R, K] values in {-1, 0, +1} (any real or integer dtype) -> (mask, sign) int32 [R, ceil(K/32)]."""
    if not isinstance(x, torch.Tensor) or x.dim() != 2 or x.is_complex():
        raise TypeError(f"x must be a 2-D real or integer tensor [R, K], got {getattr(x, 'dtype', type(x))} "
                        f"{tuple(getattr(x, 'shape', ()))}")
    if x.numel() and not bool(((x == 0) | (x == 1) | (x == -1)).all()):
        raise ValueError("x must hold ternary values -1, 0, +1")
    one = torch.ones((), dtype=torch.int8, device=x.device)
    mask = pack_bits(torch.where(x != 0, one, -one))
    sign = pack_bits(torch.where(x > 0, one, -one))
    return mask, sign


def unpack_ternary(mask: torch.Tensor, sign: torch.Tensor, k: int, dtype=torch.int8) -> torch.Tensor:
    """(mask, sign) -> [R, k] values in {-1, 0, +1}."""
    nz = (unpack_bits(mask, k) > 0).to(dtype)
    s = unpack_bits(sign, k).to(dtype)
    return nz * s


def bwta_gemm_reference(a_mask, a_sign, b_bits, k: int, b_mask=None, a_scale=None, b_scale=None, bias=None,
                        out_dtype=torch.float32):
    """Exact torch reference: int32 dots of the unpacked values (float64 products), then the
    epilogue when scales are given. 2-D operands."""
    a = unpack_ternary(a_mask, a_sign, k)
    b = unpack_ternary(b_mask, b_bits, k) if b_mask is not None else unpack_bits(b_bits, k)
    acc = torch.matmul(a.double(), b.double().T).to(torch.int32)
    if a_scale is None:
        return acc
    from .reference import dequantize

    return dequantize(acc, a_scale, b_scale, bias, out_dtype)


# ---------------------------------------------------------------- entry points


def _check(a_mask, a_sign, b_bits, b_mask, k):
    from . import _check as check_t, _check_k, _same_device

    nd = a_mask.dim() if isinstance(a_mask, torch.Tensor) else 0
    if nd not in (2, 3):
        raise ValueError(f"a_mask must be 2-D [M, KW] or 3-D [G, M, KW], got {tuple(getattr(a_mask, 'shape', ()))}")
    for name, t in (("a_mask", a_mask), ("a_sign", a_sign), ("b_bits", b_bits)) + ((("b_mask", b_mask),) if b_mask is not None else ()):
        check_t(name, t, (torch.int32,), nd)
    _same_device("a_mask", a_mask, a_sign=a_sign, b_bits=b_bits, b_mask=b_mask)
    if a_sign.shape != a_mask.shape:
        raise ValueError(f"a_sign {tuple(a_sign.shape)} must have a_mask's shape {tuple(a_mask.shape)}")
    if b_mask is not None and b_mask.shape != b_bits.shape:
        raise ValueError(f"b_mask {tuple(b_mask.shape)} must have b_bits' shape {tuple(b_bits.shape)}")
    if a_mask.shape[-1] != b_bits.shape[-1] or (nd == 3 and a_mask.shape[0] != b_bits.shape[0]):
        raise ValueError(f"a and b must have the same groups and words per row, got {tuple(a_mask.shape)} "
                         f"and {tuple(b_bits.shape)}")
    return _check_k("k", k, a_mask.shape[-1], 32)


def bwta_gemm_i32(a_mask, a_sign, b_bits, k: int, b_mask=None, backend: str = "auto") -> torch.Tensor:
    """Exact dots of ternary rows of a with binary (or, with ``b_mask``, ternary) rows of b:
    int32 ``[M, N]`` (``[G, M, N]`` for grouped operands)."""
    return _gemm(a_mask, a_sign, b_bits, k, b_mask, None, None, None, backend, torch.int32)


def bwta_gemm(a_mask, a_sign, b_bits, k: int, a_scale, b_scale, bias=None, b_mask=None, backend: str = "auto",
              out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``((dot * a_scale) * b_scale[n]) + bias[n]``: a real activation is ``t * a_scale`` (t in
    {-1, 0, 1}; a_scale scalar, or ``[M]`` / ``[G, M]`` per row), a real weight ``sign * b_scale[n]``
    (``[N]`` or ``[G, N]``); bias ``[N]`` / ``[G, N]`` or None."""
    return _gemm(a_mask, a_sign, b_bits, k, b_mask, a_scale, b_scale, bias, backend, out_dtype)


def _gemm(a_mask, a_sign, b_bits, k, b_mask, a_scale, b_scale, bias, backend, out_dtype):
    from . import _OUT_DTYPES, _resolve_backend

    k = _check(a_mask, a_sign, b_bits, b_mask, k)
    grouped = a_mask.dim() == 3
    a3 = (a_mask, a_sign) if grouped else (a_mask.unsqueeze(0), a_sign.unsqueeze(0))
    b3 = b_bits if grouped else b_bits.unsqueeze(0)
    bm3 = None if b_mask is None else (b_mask if grouped else b_mask.unsqueeze(0))
    g, m, _ = a3[0].shape
    n = b3.shape[1]
    dev = a_mask.device
    dequant = a_scale is not None
    if dequant:
        if out_dtype not in _OUT_DTYPES:
            raise ValueError(f"out_dtype must be one of {_OUT_DTYPES}, got {out_dtype}")
        a_s = torch.as_tensor(a_scale, dtype=torch.float32).to(dev)
        if a_s.numel() != 1 and a_s.numel() != g * m:
            raise ValueError(f"a_scale must be a scalar or one per row ({g * m}), got shape {tuple(a_s.shape)}")
        a_s = a_s.reshape(()) if a_s.numel() == 1 else a_s.reshape(g * m).contiguous()
        if not isinstance(b_scale, torch.Tensor) or b_scale.numel() != g * n:
            raise ValueError(f"b_scale must be a tensor of {n} scales per group, got {getattr(b_scale, 'shape', b_scale)!r}")
        b_s = b_scale.to(device=dev, dtype=torch.float32).reshape(g * n).contiguous()
        bi = None
        if bias is not None:
            if not isinstance(bias, torch.Tensor) or bias.numel() != g * n:
                raise ValueError(f"bias must be None or {n} values per group, got {getattr(bias, 'shape', bias)!r}")
            bi = bias.to(device=dev, dtype=torch.float32).reshape(g * n).contiguous()
    out3 = torch.empty(g, m, n, dtype=out_dtype if dequant else torch.int32, device=dev)
    if m == 0 or n == 0 or k == 0 or _resolve_backend(backend, dev) == "torch":
        for i in range(g):
            acc = bwta_gemm_reference(a3[0][i], a3[1][i], b3[i], k, None if bm3 is None else bm3[i])
            if dequant:
                from .reference import dequantize

                acc = dequantize(acc, a_s if a_s.dim() == 0 else a_s.view(g, m)[i], b_s.view(g, n)[i],
                                 None if bi is None else bi.view(g, n)[i], out_dtype)
            out3[i] = acc
    else:
        _launch(a3[0], a3[1], b3, bm3, out3, a_s if dequant else None, b_s if dequant else None,
                bi if dequant else None)
    return out3 if grouped else out3[0]


def _launch(am3, as3, bs3, bm3, out3, a_scale, b_scale, bias):
    from .gemm import _check_offsets, _epilogue_args, _grid, _interpreter_bf16

    @_interpreter_bf16
    def run(am3, as3, bs3, bm3, out3, a_scale=None, b_scale=None, bias=None):
        _check_offsets(a=am3, b=bs3, out=out3)
        g, m, kw = am3.shape
        n = bs3.shape[1]
        if bm3 is not None and bm3.stride() != bs3.stride():
            bm3 = bm3.contiguous()
            bs3 = bs3.contiguous()
        if as3.stride() != am3.stride():
            am3, as3 = am3.contiguous(), as3.contiguous()
        e = _epilogue_args(out3, a_scale, b_scale, bias)
        bwta_gemm_kernel(
            _grid(m, n, g), am3.device,
            am3, as3, bs3, bm3 if bm3 is not None else bs3, out3, e["a_scale"], e["b_scale"], e["bias"], m, n, kw,
            *am3.stride(), *bs3.stride(), *out3.stride(),
            B_TERNARY=bm3 is not None, DEQUANT=e["DEQUANT"], A_SCALE_PER_ROW=e["A_SCALE_PER_ROW"],
            HAS_BIAS=e["HAS_BIAS"], HW_POPC=am3.is_cuda,
        )
        return out3

    return run(am3, as3, bs3, bm3, out3, a_scale, b_scale, bias)
