"""Low-bit GEMM and convolution kernels: int8, int4 (packed weights) and binary (XNOR-popcount).

Every operation has two backends, chosen with ``backend``:

* ``"triton"``: the Triton kernels. CUDA tensors run the compiled, autotuned kernels (int8
  ``tl.dot`` on the tensor cores). CPU tensors run the *same kernel code* in Triton's
  interpreter (what ``TRITON_INTERPRET=1`` selects), exactly but slowly -- so CPU-only
  machines and CI can run and test this backend. This works whatever the order in which
  triton was imported (see ``_launch``).
* ``"torch"``: the reference, exact integer arithmetic in torch (any device).
* ``"auto"`` (default): ``"triton"`` for CUDA tensors, ``"torch"`` otherwise.

Arithmetic (all backends give bit-identical int32 results; the float epilogue is
``((float32(acc) * a_scale) * b_scale[n]) + bias[n]``, then cast to ``out_dtype``):

* int8: ``acc[m, n] = sum_k (a[m, k] - a_zero) * b[n, k]`` with ``a`` int8 (``a_zero`` usually
  0) or uint8 (asymmetric activations, ``a_zero`` in [0, 255]); ``b`` int8 weights, one row
  per output channel. The real value of ``a`` is ``(a - a_zero) * a_scale``; of ``b``,
  ``b * b_scale[n]``. int32 accumulation is exact while ``K * 255 * 128 < 2**31`` (K <= 65793).
* int4: weights in [-8, 7] packed two per byte (``pack_int4``: element 2j in the low nibble of
  byte j, 2j+1 in the high nibble, an odd K pads a zero nibble); activations as for int8.
* binary: rows of signs packed 32 per int32 word (``pack_bits``: bit j of word w is 1 where
  element 32*w + j is >= 0, i.e. sign +1, and 0 where it is negative; padding bits are 0 in
  both operands). ``dot = k - 2 * popcount(a XOR b)`` over the k real bits.
"""

from __future__ import annotations

import numbers

import torch

from . import reference
from .reference import pack_bits, pack_int4, unpack_bits, unpack_int4

__all__ = [
    "int8_gemm_i32", "int8_gemm", "pack_int4", "unpack_int4", "int4_gemm_i32", "int4_gemm",
    "pack_bits", "unpack_bits", "binary_gemm_i32", "binary_gemm",
    "int8_conv2d", "int4_conv2d", "binary_conv2d", "BACKENDS",
]

BACKENDS = ("auto", "triton", "torch")
_OUT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------- argument checks
def _resolve_backend(backend: str, device: torch.device) -> str:
    if backend not in BACKENDS:
        raise ValueError(f"backend={backend!r} is not one of {BACKENDS}")
    if backend == "auto":
        return "triton" if device.type == "cuda" else "torch"
    if backend == "triton" and device.type not in ("cuda", "cpu"):
        raise ValueError(f"backend='triton' runs CUDA tensors (compiled) or CPU tensors (interpreter), "
                         f"not {device.type}; use backend='torch'")
    return backend


def _check(name: str, t, dtypes, ndim: int) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dtype not in dtypes:
        allowed = ", ".join(str(d).replace("torch.", "") for d in dtypes)
        raise TypeError(f"{name} must have dtype {allowed}, got {str(t.dtype).replace('torch.', '')}")
    if t.dim() != ndim:
        raise ValueError(f"{name} must be {ndim}-D, got shape {tuple(t.shape)}")
    return t


def _same_device(ref_name: str, ref: torch.Tensor, **others):
    for name, t in others.items():
        if isinstance(t, torch.Tensor) and t.device != ref.device:
            raise ValueError(f"{name} is on {t.device} but {ref_name} is on {ref.device}; "
                             "put all operands on one device")


def _check_zero(a: torch.Tensor, a_zero) -> int:
    if isinstance(a_zero, torch.Tensor):
        a_zero = a_zero.item()
    if float(a_zero) != int(a_zero):
        raise ValueError(f"a_zero must be an integer, got {a_zero}")
    a_zero = int(a_zero)
    lo, hi = (0, 255) if a.dtype == torch.uint8 else (-128, 127)
    if not lo <= a_zero <= hi:
        raise ValueError(f"a_zero={a_zero} is outside the range of a ({a.dtype}): [{lo}, {hi}]")
    return a_zero


def _scales(m: int, n: int, device, a_scale, b_scale, bias, out_dtype, b_name: str = "b_scale"):
    """-> a_scale (0-d or [m]), b_scale [n], bias [n] or None: float32 on ``device``."""
    if out_dtype not in _OUT_DTYPES:
        raise ValueError(f"out_dtype must be one of {_OUT_DTYPES}, got {out_dtype}")
    a_scale = torch.as_tensor(a_scale)
    if a_scale.is_complex() or not (a_scale.is_floating_point() or a_scale.numel() == 1):
        raise TypeError(f"a_scale must be a float scalar or a float tensor, got {a_scale.dtype}")
    if a_scale.numel() == 1:
        a_scale = a_scale.reshape(())
    elif a_scale.shape != (m,):
        raise ValueError(f"a_scale must be a scalar (per tensor) or of shape [{m}] (per row), "
                         f"got {tuple(a_scale.shape)}")
    if not isinstance(b_scale, torch.Tensor) or b_scale.shape != (n,) or not b_scale.is_floating_point():
        raise ValueError(f"{b_name} must be a float tensor of shape [{n}] (one scale per output "
                         f"channel), got {getattr(b_scale, 'shape', b_scale)!r}")
    if bias is not None and (not isinstance(bias, torch.Tensor) or bias.shape != (n,)
                             or not bias.is_floating_point()):
        raise ValueError(f"bias must be None or a float tensor of shape [{n}], "
                         f"got {getattr(bias, 'shape', bias)!r}")
    f = lambda t: None if t is None else t.to(device=device, dtype=torch.float32).contiguous()
    return f(a_scale), f(b_scale), f(bias)


def _check_k(name: str, k, cols: int, per: int) -> int:
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 0:
        raise ValueError(f"{name} must be a non-negative int (the unpacked length), got {k!r}")
    k = int(k)
    if (k + per - 1) // per != cols:
        raise ValueError(f"{name}={k} needs {(k + per - 1) // per} packed columns, got {cols}")
    return k


def _check_exact_range(a: torch.Tensor, a_zero: int, k: int, w_max: int):
    """int32 accumulation is exact while K * max|a - a_zero| * max|w| < 2**31."""
    lo, hi = (0, 255) if a.dtype == torch.uint8 else (-128, 127)
    a_max = max(abs(lo - a_zero), abs(hi - a_zero))
    if k * a_max * w_max >= 2**31:
        raise ValueError(f"K={k} is too long for exact int32 accumulation with these ranges "
                         f"(K * {a_max} * {w_max} >= 2**31); split K into chunks and add the results")


def _empty(m, n, k):
    return m == 0 or n == 0 or k == 0


# ---------------------------------------------------------------- int8
def _int8_operands(a, b, a_zero):
    """Checks int8 GEMM operands; returns M, K, N and the validated zero point."""
    _check("a", a, (torch.int8, torch.uint8), 2)
    _check("b", b, (torch.int8,), 2)
    _same_device("a", a, b=b)
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"a [M, K] and b [N, K] must share K, got a {tuple(a.shape)}, b {tuple(b.shape)}")
    a_zero = _check_zero(a, a_zero)
    (m, k), n = a.shape, b.shape[0]
    _check_exact_range(a, a_zero, k, 128)
    return m, k, n, a_zero


def int8_gemm_i32(a: torch.Tensor, b: torch.Tensor, backend: str = "auto", *, a_zero: int = 0) -> torch.Tensor:
    """Exact ``(a - a_zero) @ b.T`` as int32 ``[M, N]``.

    a: int8 ``[M, K]`` (or uint8 with zero point ``a_zero``); b: int8 ``[N, K]`` (weights, one row
    per output channel)."""
    m, k, n, a_zero = _int8_operands(a, b, a_zero)
    if _resolve_backend(backend, a.device) == "torch" or _empty(m, n, k):
        return reference.int8_gemm_i32(a, b, a_zero)
    from . import gemm
    out = torch.empty(m, n, dtype=torch.int32, device=a.device)
    gemm.int8_gemm(a.unsqueeze(0), b.unsqueeze(0), out.unsqueeze(0), a_zero)
    return out


def int8_gemm(a, b, a_scale, b_scale, bias=None, a_zero: int = 0, backend: str = "auto",
              out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(((a - a_zero) @ b.T) * a_scale) * b_scale[None, :] + bias``, fused in one kernel.

    a: int8 ``[M, K]``, or uint8 with zero point ``a_zero`` (asymmetric activations);
    b: int8 ``[N, K]``; a_scale: float scalar / 0-d tensor (per tensor) or ``[M]`` (per row);
    b_scale: float ``[N]`` (per output channel); bias: float ``[N]`` or None. The int32
    accumulator is exact; the epilogue runs in float32 and the result is cast to ``out_dtype``."""
    m, k, n, a_zero = _int8_operands(a, b, a_zero)
    a_scale, b_scale, bias = _scales(m, n, a.device, a_scale, b_scale, bias, out_dtype)
    if _resolve_backend(backend, a.device) == "torch" or _empty(m, n, k):
        return reference.int8_gemm(a, b, a_scale, b_scale, bias, a_zero, out_dtype)
    from . import gemm
    out = torch.empty(m, n, dtype=out_dtype, device=a.device)
    gemm.int8_gemm(a.unsqueeze(0), b.unsqueeze(0), out.unsqueeze(0), a_zero, a_scale, b_scale, bias)
    return out


# ---------------------------------------------------------------- int4
def _check_int4(a, w_packed, k, a_zero):
    _check("a", a, (torch.int8, torch.uint8), 2)
    _check("w_packed", w_packed, (torch.uint8,), 2)
    _same_device("a", a, w_packed=w_packed)
    _check_k("k", k, w_packed.shape[1], 2)
    if a.shape[1] != k:
        raise ValueError(f"a must have k={k} columns, got shape {tuple(a.shape)}")
    a_zero = _check_zero(a, a_zero)
    _check_exact_range(a, a_zero, k, 8)
    return a_zero


def int4_gemm_i32(a, w_packed, k: int, backend: str = "auto", *, a_zero: int = 0) -> torch.Tensor:
    """Exact ``(a - a_zero) @ unpack_int4(w_packed, k).T`` as int32 ``[M, N]``.

    a: int8 (or uint8 with ``a_zero``) ``[M, k]``; w_packed: uint8 ``[N, ceil(k/2)]`` from
    ``pack_int4`` (weights in [-8, 7]); k: the unpacked reduction length."""
    a_zero = _check_int4(a, w_packed, k, a_zero)
    m, n = a.shape[0], w_packed.shape[0]
    if _resolve_backend(backend, a.device) == "torch" or _empty(m, n, k):
        return reference.int4_gemm_i32(a, w_packed, k, a_zero)
    from . import gemm
    out = torch.empty(m, n, dtype=torch.int32, device=a.device)
    gemm.int4_gemm(a.unsqueeze(0), w_packed.unsqueeze(0), k, out.unsqueeze(0), a_zero)
    return out


def int4_gemm(a, w_packed, k: int, a_scale, b_scale, bias=None, a_zero: int = 0, backend: str = "auto",
              out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``int4_gemm_i32`` with the fused epilogue of ``int8_gemm`` (weight value = w * b_scale[n])."""
    a_zero = _check_int4(a, w_packed, k, a_zero)
    m, n = a.shape[0], w_packed.shape[0]
    a_scale, b_scale, bias = _scales(m, n, a.device, a_scale, b_scale, bias, out_dtype)
    if _resolve_backend(backend, a.device) == "torch" or _empty(m, n, k):
        return reference.int4_gemm(a, w_packed, k, a_scale, b_scale, bias, a_zero, out_dtype)
    from . import gemm
    out = torch.empty(m, n, dtype=out_dtype, device=a.device)
    gemm.int4_gemm(a.unsqueeze(0), w_packed.unsqueeze(0), k, out.unsqueeze(0), a_zero, a_scale, b_scale, bias)
    return out


# ---------------------------------------------------------------- binary
def _check_binary(a_bits, b_bits, k):
    _check("a_bits", a_bits, (torch.int32,), 2)
    _check("b_bits", b_bits, (torch.int32,), 2)
    _same_device("a_bits", a_bits, b_bits=b_bits)
    if a_bits.shape[1] != b_bits.shape[1]:
        raise ValueError(f"a_bits and b_bits must have the same number of words, got "
                         f"{tuple(a_bits.shape)} and {tuple(b_bits.shape)}")
    _check_k("k", k, a_bits.shape[1], 32)


def binary_gemm_i32(a_bits, b_bits, k: int, backend: str = "auto") -> torch.Tensor:
    """Exact dot products of {-1, +1} rows: ``k - 2 * popcount(a XOR b)`` as int32 ``[M, N]``.

    a_bits: int32 ``[M, ceil(k/32)]``, b_bits: int32 ``[N, ceil(k/32)]`` from ``pack_bits``
    (padding bits must be 0, as ``pack_bits`` leaves them); k: the number of real bits."""
    _check_binary(a_bits, b_bits, k)
    m, n = a_bits.shape[0], b_bits.shape[0]
    if _resolve_backend(backend, a_bits.device) == "torch" or _empty(m, n, k):
        return reference.binary_gemm_i32(a_bits, b_bits, k)
    from . import gemm
    out = torch.empty(m, n, dtype=torch.int32, device=a_bits.device)
    gemm.binary_gemm(a_bits.unsqueeze(0), b_bits.unsqueeze(0), k, out.unsqueeze(0))
    return out


def binary_gemm(a_bits, b_bits, k: int, a_scale, b_scale, bias=None, backend: str = "auto",
                out_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``((dot * a_scale) * b_scale[n]) + bias[n]``: a real activation is ``sign * a_scale``
    (scalar or ``[M]``) and a real weight ``sign * b_scale[n]`` (XNOR-Net style scaling)."""
    _check_binary(a_bits, b_bits, k)
    m, n = a_bits.shape[0], b_bits.shape[0]
    a_scale, b_scale, bias = _scales(m, n, a_bits.device, a_scale, b_scale, bias, out_dtype)
    if _resolve_backend(backend, a_bits.device) == "torch" or _empty(m, n, k):
        return reference.binary_gemm(a_bits, b_bits, k, a_scale, b_scale, bias, out_dtype)
    from . import gemm
    out = torch.empty(m, n, dtype=out_dtype, device=a_bits.device)
    gemm.binary_gemm(a_bits.unsqueeze(0), b_bits.unsqueeze(0), k, out.unsqueeze(0), a_scale, b_scale, bias)
    return out


from .conv import binary_conv2d, int4_conv2d, int8_conv2d  # noqa: E402
