"""Quantized 2-D convolutions as im2col + the low-bit GEMMs.

The input is padded (int8/int4: with the zero point ``a_zero``, i.e. a real 0), its sliding
windows are gathered into an integer ``[N*H'*W', C*kh*kw]`` matrix with one strided view and
one copy (no float round trip), and each group multiplies its slice of that matrix with its
weights ``[O/groups, C/groups*kh*kw]`` in one batched kernel launch (grid axis 1 = group), so
depthwise convolutions are one launch too. The result is returned as a contiguous NCHW tensor.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from . import _check, _check_exact_range, _check_zero, _resolve_backend, _same_device, _scales, reference


def _pair(name, v):
    if isinstance(v, int) and not isinstance(v, bool):
        v = (v, v)
    if not (isinstance(v, (tuple, list)) and len(v) == 2 and all(isinstance(i, int) for i in v)):
        raise ValueError(f"{name} must be an int or a pair of ints, got {v!r}")
    return tuple(v)


def _geometry(x, w_shape, stride, padding, dilation, groups):
    stride, padding, dilation = _pair("stride", stride), _pair("padding", padding), _pair("dilation", dilation)
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"need stride >= 1, dilation >= 1, padding >= 0; got {stride}, {dilation}, {padding}")
    if len(w_shape) != 4:
        raise ValueError(f"w_shape must be (O, C/groups, kh, kw), got {tuple(w_shape)}")
    o, cg, kh, kw = (int(s) for s in w_shape)
    n, c, h, w = x.shape
    if not isinstance(groups, int) or groups < 1 or c % groups or o % groups:
        raise ValueError(f"groups={groups} must divide the input channels ({c}) and the outputs ({o})")
    if cg != c // groups:
        raise ValueError(f"the weights expect {cg} channels per group but x has {c} channels "
                         f"in {groups} groups ({c // groups} per group)")
    ho = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ValueError(f"the {kh}x{kw} kernel (dilation {dilation}) does not fit the padded "
                         f"{h}x{w} input (padding {padding})")
    return dict(o=o, cg=cg, kh=kh, kw=kw, ho=ho, wo=wo, stride=stride, padding=padding,
                dilation=dilation, groups=groups)


# Largest im2col matrix / output per launch: the kernels use 32-bit offsets.
MAX_ELEMENTS = 2**31 - 1


def _batch_chunk(x, geo):
    """How many images fit one launch (the whole batch unless the im2col matrix gets too big)."""
    per_image = geo["ho"] * geo["wo"] * max(x.shape[1] * geo["kh"] * geo["kw"], geo["o"])
    return max(1, MAX_ELEMENTS // per_image)


def _im2col(x, geo, pad_value):
    """x [N, C, H, W] -> [N*H'*W', C*kh*kw] in x's dtype, columns ordered (c, i, j) like
    ``w.reshape(O, -1)``."""
    n, c, h, w = x.shape
    (ph, pw), (sh, sw), (dh, dw) = geo["padding"], geo["stride"], geo["dilation"]
    if ph or pw:
        xp = x.new_full((n, c, h + 2 * ph, w + 2 * pw), pad_value)
        xp[:, :, ph:ph + h, pw:pw + w] = x
    else:
        xp = x.contiguous()
    s = xp.stride()
    win = xp.as_strided(
        (n, geo["ho"], geo["wo"], c, geo["kh"], geo["kw"]),
        (s[0], sh * s[2], sw * s[3], s[1], dh * s[2], dw * s[3]),
    )
    return win.reshape(n * geo["ho"] * geo["wo"], c * geo["kh"] * geo["kw"])


def _to_nchw(out2d, n, geo):
    return out2d.reshape(n, geo["ho"], geo["wo"], geo["o"]).permute(0, 3, 1, 2).contiguous()


def _grouped(cols, wmat, geo):
    """Group views: a3 [G, M, Kg], b3 [G, Og, cols_per_group]."""
    g = geo["groups"]
    m = cols.shape[0]
    a3 = cols.view(m, g, -1).permute(1, 0, 2)
    b3 = wmat.view(g, geo["o"] // g, wmat.shape[1])
    return a3, b3


def _out3(m, geo, dtype, device):
    g = geo["groups"]
    out = torch.empty(m, geo["o"], dtype=dtype, device=device)
    return out, out.view(m, g, geo["o"] // g).permute(1, 0, 2)


def _ref_grouped(fn, a3, b3):
    # Reference: one exact GEMM per group, concatenated along the output channels.
    return torch.cat([fn(a3[i], b3[i]) for i in range(a3.shape[0])], dim=1)


def _check_conv_scales(a_scale, w_scale, bias, o, device, out_dtype):
    a_scale = torch.as_tensor(a_scale)
    if a_scale.numel() != 1:
        raise ValueError(f"a_scale of a convolution must be a scalar (per tensor), got shape {tuple(a_scale.shape)}")
    return _scales(1, o, device, a_scale, w_scale, bias, out_dtype, b_name="w_scale")


def int8_conv2d(x, w, a_scale, w_scale, bias=None, stride=1, padding=0, dilation=1, groups=1,
                a_zero: int = 0, backend: str = "auto", out_dtype: torch.dtype = torch.float32):
    """Quantized convolution: ``conv2d(x - a_zero, w) * a_scale * w_scale[o] + bias[o]``.

    x: int8 NCHW (or uint8 with zero point ``a_zero``), real value ``(x - a_zero) * a_scale``;
    w: int8 ``[O, C/groups, kh, kw]``, real value ``w * w_scale[o]``; a_scale: scalar;
    w_scale, bias: ``[O]``. Zero padding pads with ``a_zero`` (a real 0), as int8 convolutions
    do. The int32 accumulators are exact; see ``int8_gemm`` for the epilogue."""
    _check("x", x, (torch.int8, torch.uint8), 4)
    _check("w", w, (torch.int8,), 4)
    _same_device("x", x, w=w)
    a_zero = _check_zero(x, a_zero)
    geo = _geometry(x, w.shape, stride, padding, dilation, groups)
    _check_exact_range(x, a_zero, geo["cg"] * geo["kh"] * geo["kw"], 128)
    a_scale, w_scale, bias = _check_conv_scales(a_scale, w_scale, bias, geo["o"], x.device, out_dtype)
    chunk = _batch_chunk(x, geo)
    if chunk < x.shape[0]:
        return torch.cat([int8_conv2d(xc, w, a_scale, w_scale, bias, stride, padding, dilation, groups,
                                      a_zero, backend, out_dtype) for xc in x.split(chunk)])
    cols = _im2col(x, geo, a_zero)
    a3, b3 = _grouped(cols, w.reshape(geo["o"], -1), geo)
    if _resolve_backend(backend, x.device) == "torch" or cols.shape[0] == 0:
        acc = _ref_grouped(lambda a, b: reference.int8_gemm_i32(a, b, a_zero), a3, b3)
        return _to_nchw(reference.dequantize(acc, a_scale, w_scale, bias, out_dtype), x.shape[0], geo)
    from . import gemm
    out, out3 = _out3(cols.shape[0], geo, out_dtype, x.device)
    gemm.int8_gemm(a3, b3, out3, a_zero, a_scale, w_scale, bias)
    return _to_nchw(out, x.shape[0], geo)


def int4_conv2d(x, w_packed, w_shape, a_scale, w_scale, bias=None, stride=1, padding=0, dilation=1,
                groups=1, a_zero: int = 0, backend: str = "auto", out_dtype: torch.dtype = torch.float32):
    """``int8_conv2d`` with int4 weights: ``w_packed = pack_int4(w.reshape(O, -1))`` (uint8
    ``[O, ceil(C/groups*kh*kw / 2)]``) and ``w_shape = w.shape = (O, C/groups, kh, kw)``."""
    _check("x", x, (torch.int8, torch.uint8), 4)
    _check("w_packed", w_packed, (torch.uint8,), 2)
    _same_device("x", x, w_packed=w_packed)
    a_zero = _check_zero(x, a_zero)
    geo = _geometry(x, w_shape, stride, padding, dilation, groups)
    kg = geo["cg"] * geo["kh"] * geo["kw"]
    _check_exact_range(x, a_zero, kg, 8)
    if tuple(w_packed.shape) != (geo["o"], (kg + 1) // 2):
        raise ValueError(f"w_packed must be pack_int4(w.reshape(O, -1)) of shape "
                         f"{(geo['o'], (kg + 1) // 2)} for w_shape {tuple(w_shape)}, got {tuple(w_packed.shape)}")
    a_scale, w_scale, bias = _check_conv_scales(a_scale, w_scale, bias, geo["o"], x.device, out_dtype)
    chunk = _batch_chunk(x, geo)
    if chunk < x.shape[0]:
        return torch.cat([int4_conv2d(xc, w_packed, w_shape, a_scale, w_scale, bias, stride, padding, dilation,
                                      groups, a_zero, backend, out_dtype) for xc in x.split(chunk)])
    cols = _im2col(x, geo, a_zero)
    a3, b3 = _grouped(cols, w_packed, geo)
    if _resolve_backend(backend, x.device) == "torch" or cols.shape[0] == 0:
        acc = _ref_grouped(lambda a, b: reference.int4_gemm_i32(a, b, kg, a_zero), a3, b3)
        return _to_nchw(reference.dequantize(acc, a_scale, w_scale, bias, out_dtype), x.shape[0], geo)
    from . import gemm
    out, out3 = _out3(cols.shape[0], geo, out_dtype, x.device)
    gemm.int4_gemm(a3, b3, kg, out3, a_zero, a_scale, w_scale, bias)
    return _to_nchw(out, x.shape[0], geo)


def binary_conv2d(x, w_bits, w_shape, a_scale, w_scale, bias=None, stride=1, padding=0, dilation=1,
                  groups=1, backend: str = "auto", out_dtype: torch.dtype = torch.float32):
    """Binary convolution: ``conv2d(sign(x), sign(w)) * a_scale * w_scale[o] + bias[o]``.

    x: a real (or integer) NCHW tensor, binarised here with ``sign(v) = +1 if v >= 0 else -1``;
    w_bits: ``pack_bits(w.reshape(O, -1))`` (int32 ``[O, ceil(C/groups*kh*kw / 32)]``) with
    ``w_shape = (O, C/groups, kh, kw)``; a_scale: scalar; w_scale, bias: ``[O]``.
    Zero padding contributes 0, exactly like ``F.conv2d(sign(x), sign(w), padding=p)``: the
    padded taps are packed as +1 and their contribution, ``conv2d(pad_mask, sum_c sign(w))``,
    is subtracted exactly afterwards (so with padding the epilogue runs in torch)."""
    _check("x", x, (torch.float32, torch.float16, torch.bfloat16, torch.float64, torch.int8,
                    torch.uint8, torch.int16, torch.int32), 4)
    _check("w_bits", w_bits, (torch.int32,), 2)
    _same_device("x", x, w_bits=w_bits)
    geo = _geometry(x, w_shape, stride, padding, dilation, groups)
    kg = geo["cg"] * geo["kh"] * geo["kw"]
    if tuple(w_bits.shape) != (geo["o"], (kg + 31) // 32):
        raise ValueError(f"w_bits must be pack_bits(w.reshape(O, -1)) of shape "
                         f"{(geo['o'], (kg + 31) // 32)} for w_shape {tuple(w_shape)}, got {tuple(w_bits.shape)}")
    a_scale, w_scale, bias = _check_conv_scales(a_scale, w_scale, bias, geo["o"], x.device, out_dtype)
    chunk = _batch_chunk(x, geo)
    if chunk < x.shape[0]:
        return torch.cat([binary_conv2d(xc, w_bits, w_shape, a_scale, w_scale, bias, stride, padding, dilation,
                                        groups, backend, out_dtype) for xc in x.split(chunk)])
    g = geo["groups"]
    signs = (x >= 0).to(torch.int8)  # 1 = +1, 0 = -1; padding -> 1 (+1), corrected below
    cols = _im2col(signs, geo, 1)
    m = cols.shape[0]
    a_bits = reference.pack_bits(cols.view(m * g, kg) * 2 - 1)  # {0, 1} -> {-1, +1}
    a3 = a_bits.view(m, g, -1).permute(1, 0, 2)
    b3 = w_bits.view(g, geo["o"] // g, -1)
    padded = any(geo["padding"])
    use_torch = _resolve_backend(backend, x.device) == "torch" or m == 0
    if use_torch or padded:
        if use_torch:
            acc = _ref_grouped(lambda a, b: reference.binary_gemm_i32(a, b, kg), a3, b3)
        else:
            from . import gemm
            acc, acc3 = _out3(m, geo, torch.int32, x.device)
            gemm.binary_gemm(a3, b3, kg, acc3)
        if padded:
            acc = acc - _padding_correction(x, w_bits, geo, kg)
        return _to_nchw(reference.dequantize(acc, a_scale, w_scale, bias, out_dtype), x.shape[0], geo)
    from . import gemm
    out, out3 = _out3(m, geo, out_dtype, x.device)
    gemm.binary_gemm(a3, b3, kg, out3, a_scale, w_scale, bias)
    return _to_nchw(out, x.shape[0], geo)


def _padding_correction(x, w_bits, geo, kg):
    """int32 [N*H'*W', O]: what the padded taps (packed as +1) added to each output."""
    n, c, h, w = x.shape
    o, cg, kh, kw = geo["o"], geo["cg"], geo["kh"], geo["kw"]
    wsum = reference.unpack_bits(w_bits, kg, torch.float64).view(o, cg, kh, kw).sum(1, keepdim=True)
    (ph, pw) = geo["padding"]
    mask = torch.ones(1, 1, h + 2 * ph, w + 2 * pw, dtype=torch.float64, device=x.device)
    mask[:, :, ph:ph + h, pw:pw + w] = 0
    corr = F.conv2d(mask, wsum, stride=geo["stride"], dilation=geo["dilation"])  # [1, O, H', W']
    corr = corr[0].permute(1, 2, 0).reshape(1, geo["ho"] * geo["wo"], o).expand(n, -1, -1)
    return corr.reshape(n * geo["ho"] * geo["wo"], o).to(torch.int32)
