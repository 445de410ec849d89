"""Where a quantized model's integer arithmetic runs.

  fake       float simulation of the integer grid (differentiable; the default)
  cpu-int8   PyTorch's x86 quantized kernels (fbgemm / oneDNN through torch.ops.quantized):
             uint8 activations x int8 per-channel weights, int32 accumulation, and requantization
             of each layer's output to uint8 (scale from the calibrated output range), then
             dequantized for the float ops between layers (BatchNorm, activations, softmax).
             Lower bit widths run in the same kernels (a 4-bit code is a valid 8-bit one).
             fbgemm's u8 x s8 inner products go through int16 pair sums that saturate, as the
             hardware instruction does; that, and requantization, is where it parts from fake.
  triton     robustart.kernels (int8 / int4 GEMM and convolutions, int32 accumulation, fused
             dequantization, no output requantization); on a machine without CUDA they run in
             Triton's interpreter (exact, slow: tiny inputs only).

Attention matmuls (q k^T, probabilities x v) run on exact integer products in torch under
both integer backends. Integer backends are not differentiable: under autograd (gradient
attacks) a layer computes its fake-quant simulation instead, so attacks are crafted through the
fake model and evaluated on the integer kernels; the job's config records this
(`gradients: fake`).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn.functional as F

from robustart.errors import RobustartError
from robustart.registry import Registry

class Backend:
    """Where a calibrated model's quantized layers run. A new backend is one subclass with a
    `name`, registered in `BACKENDS` (one line in robustart/plugins.py for a built-in one).

    `layer_forward(layer, x)` computes a QuantLayer's output from its integer codes
    (`layer.w_int`, `layer.w_scale`, `layer.act`, ...); it runs only without autograd, and the
    layer falls back to its fake-quant simulation for gradients. `matmul` computes an attention
    matmul of two quantized operands."""

    name: str = ""
    help: str = ""
    #: False for the float simulation itself (differentiable; no integer arithmetic)
    integer: bool = True

    def unavailable(self) -> str | None:
        """Why this backend cannot run here, or None."""
        return None

    def layer_forward(self, layer, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def matmul(self, qa, a: torch.Tensor, qb, b: torch.Tensor) -> torch.Tensor:
        # exact integer products (float64 holds every partial sum of 8-bit codes exactly), then
        # dequantized
        ia = (qa.codes(a) - qa.zero_point).double()
        ib = (qb.codes(b) - qb.zero_point).double()
        return ((ia @ ib) * (qa.scale.double() * qb.scale.double())).to(a.dtype)


def _check(name, obj) -> None:
    if not isinstance(obj, Backend):
        raise TypeError(f"quantization backend {name!r} must be a robustart.quant.backends.Backend, got {obj!r}")


BACKENDS = Registry("quantization backend", "quant_backends", error=RobustartError, check=_check,
                    message="--backend {name!r} is not a backend.{hint} Backends: {names}.")


def check_backend(name: str) -> str:
    BACKENDS.get(name)
    return name


def get(name: str) -> Backend:
    return BACKENDS.get(name)


def unavailable(name: str) -> str | None:
    """Why backend `name` cannot run here, or None."""
    return BACKENDS.get(name).unavailable()


def set_backend(model: torch.nn.Module, name: str) -> torch.nn.Module:
    from robustart.quant.fake import QuantAttention, QuantLayer

    why = unavailable(name)
    if why:
        raise RobustartError(f"backend {name}: {why}.")
    for m in model.modules():
        if isinstance(m, (QuantLayer, QuantAttention)):
            m.backend = name
            if isinstance(m, QuantLayer):
                m._int_cache.clear()
    return model


def _act_int(layer, x: torch.Tensor) -> torch.Tensor:
    """Integer codes (float tensor) of the layer's input, TF-'same' padding applied first."""
    return layer.act.codes(layer.pad(x))


def int_forward(layer, x: torch.Tensor) -> torch.Tensor:
    """A QuantLayer's output on its (integer) backend."""
    return BACKENDS.get(layer.backend).layer_forward(layer, x)


class FakeBackend(Backend):
    name = "fake"
    help = "float simulation of the integer grid (differentiable)"
    integer = False


class CpuInt8Backend(Backend):
    name = "cpu-int8"
    help = "PyTorch's x86 int8 kernels (fbgemm/oneDNN), 8-bit requantized outputs"

    def unavailable(self):
        engines = torch.backends.quantized.supported_engines
        if not any(e in engines for e in ("x86", "fbgemm")):
            return f"this torch has no x86/fbgemm quantized engine (engines: {engines})"
        return None

    def layer_forward(self, layer, x):
        return _cpu_int8(layer, x)


class TritonBackend(Backend):
    name = "triton"
    help = "robustart.kernels Triton int8/int4 kernels (GPU; CPU interpreter otherwise)"

    def unavailable(self):
        try:
            from robustart.kernels import gemm  # noqa: F401  (imports triton, or names the extra)
        except RobustartError as e:
            return str(e)
        return None

    def layer_forward(self, layer, x):
        return _triton(layer, x)


FAKE, CPU_INT8, TRITON = FakeBackend(), CpuInt8Backend(), TritonBackend()


# --------------------------------------------------------------------------- integer reference


def reference(layer, x: torch.Tensor, requantize: bool) -> torch.Tensor:
    """What integer hardware computes, in exact arithmetic: integer codes, products summed exactly
    (float64 holds every such int32 sum), scaled by a_scale * w_scale, plus bias; with
    `requantize`, rounded to the 8-bit output grid the cpu-int8 kernels use."""
    a = (_act_int(layer, x) - layer.act.zero_point).double()
    w = layer.w_int.double()
    acc = layer.op(a, w, None, pad_done=True)
    shape = (1, -1, 1, 1) if layer.kind == "conv" else (1,) * (acc.dim() - 1) + (-1,)
    y = acc * (layer.act.scale.double() * layer.w_scale.double()).view(shape)
    if layer.bias is not None:
        y = y + layer.bias.detach().double().view(shape)
    if requantize:
        s, z = out_params(layer)
        y = (torch.clamp(torch.round(y / s) + z, 0, 255) - z) * s
    return y.to(x.dtype)


def out_params(layer) -> tuple[float, int]:
    from robustart.quant.observers import params_from_range

    lo, hi = layer.out_range
    if not bool(hi > lo):
        raise RobustartError("a quantized layer has no calibrated output range; recalibrate the model.")
    s, z = params_from_range(lo, hi, 8, False)
    return float(s), int(z)


# --------------------------------------------------------------------------- cpu-int8


def _quint8(layer, x: torch.Tensor):
    """The input as torch's quint8: signed (symmetric) codes are shifted into 0..255."""
    a = _act_int(layer, x)
    shift = 0 if not layer.act.symmetric else 2 ** (layer.act.bits - 1)
    zp = int(layer.act.zero_point) + shift
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch's quantized tensors are deprecated, still shipped
        q = torch._make_per_tensor_quantized_tensor((a + shift).to(torch.uint8), float(layer.act.scale), zp)
    return q


def _packed(layer):
    c = layer._int_cache
    if "cpu-int8" not in c:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            w = torch._make_per_channel_quantized_tensor(layer.w_int.cpu(), layer.w_scale.double().cpu(),
                                                         torch.zeros(layer.w_int.shape[0], dtype=torch.long), 0)
            b = layer.bias.detach().float().cpu() if layer.bias is not None else None
            L = layer.layer
            if layer.kind == "conv":
                padding = (0, 0) if layer.same_pad else tuple(L.padding)
                c["cpu-int8"] = torch.ops.quantized.conv2d_prepack(w, b, list(L.stride), list(padding),
                                                                   list(L.dilation), L.groups)
            else:
                c["cpu-int8"] = torch.ops.quantized.linear_prepack(w, b)
    return c["cpu-int8"]


def _cpu_int8(layer, x: torch.Tensor) -> torch.Tensor:
    dev, dtype = x.device, x.dtype
    x = x.detach().float().cpu()
    s, z = out_params(layer)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        q = _quint8(layer, x)
        if layer.kind == "conv":
            y = torch.ops.quantized.conv2d(q, _packed(layer), s, z)
        else:
            shape = q.shape
            y = torch.ops.quantized.linear(q.reshape(-1, shape[-1]), _packed(layer), s, z)
            y = y.reshape(*shape[:-1], y.shape[-1])
        return y.dequantize().to(device=dev, dtype=dtype)


# --------------------------------------------------------------------------- triton


def _triton(layer, x: torch.Tensor) -> torch.Tensor:
    from robustart import kernels as K

    a = _act_int(layer, x)
    zp = int(layer.act.zero_point)
    if layer.act.symmetric:
        a_t, zp = a.to(torch.int8), 0
    else:
        a_t = a.to(torch.uint8)
    a_scale = layer.act.scale.float()
    w_scale = layer.w_scale.float()
    bias = layer.bias.detach().float() if layer.bias is not None else None
    c = layer._int_cache
    four = layer.w_bits <= 4
    if "triton" not in c:
        w = layer.w_int.to(x.device)
        c["triton"] = K.pack_int4(w.reshape(w.shape[0], -1)) if four else w
    w = c["triton"]
    L = layer.layer
    if layer.kind == "conv":
        padding = 0 if layer.same_pad else L.padding
        kw = dict(bias=bias, stride=L.stride, padding=padding, dilation=L.dilation, groups=L.groups, a_zero=zp,
                  backend="triton")
        if four:
            return K.int4_conv2d(a_t, w, tuple(layer.w_int.shape), a_scale, w_scale, **kw).to(x.dtype)
        return K.int8_conv2d(a_t, w, a_scale, w_scale, **kw).to(x.dtype)
    shape = a_t.shape
    a2 = a_t.reshape(-1, shape[-1])
    if four:
        y = K.int4_gemm(a2, w, shape[-1], a_scale, w_scale, bias=bias, a_zero=zp, backend="triton")
    else:
        y = K.int8_gemm(a2, w, a_scale, w_scale, bias=bias, a_zero=zp, backend="triton")
    return y.reshape(*shape[:-1], y.shape[-1]).to(x.dtype)
