"""Quantized layers that simulate integer arithmetic in float ("fake quant") and dispatch to
integer backends (robustart.quant.backends).

`QuantLayer` wraps a Conv2d (timm's TF-'same' Conv2dSame included) or Linear: its input is
quantized per tensor (observed during calibration), its weight per output channel (symmetric);
the integer weight codes live in the `w_int` buffer, so reconstructed (AdaRound) roundings
and plain rounding are stored the same way. `QuantAttention` wraps timm's `Attention` and
quantizes q, k, v (symmetric, per tensor) and the softmax probabilities (unsigned, fixed range
[0, 1]) around its two matmuls, which run unfused so they can be quantized.

Fake quant is differentiable: rounding passes gradients straight through (identity), so
gradient attacks run on quantized models. BatchNorm and activations run in float between
quantized layers (per-channel weight scales make BN folding change nothing on the weight grid).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from robustart.quant import observers as O

MODES = ("fp", "calib", "quant")


def ste(x: torch.Tensor, scale, zp, qmin: int, qmax: int) -> torch.Tensor:
    """Fake-quantized x with an identity (straight-through) gradient."""
    y = O.fake(x.detach(), scale, zp, qmin, qmax)
    return x + (y - x).detach() if x.requires_grad else y


class ActQuant(nn.Module):
    """Per-tensor quantizer of an activation: observes in `calib` mode, quantizes in `quant`."""

    def __init__(self, bits: int, symmetric: bool, fixed_range: tuple[float, float] | None = None):
        super().__init__()
        self.bits, self.symmetric = int(bits), bool(symmetric)
        self.qmin, self.qmax = O.qrange(self.bits, self.symmetric)
        self.register_buffer("scale", torch.tensor(1.0))
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.fixed_range = fixed_range
        if fixed_range is not None:
            s, z = O.params_from_range(torch.tensor(fixed_range[0]), torch.tensor(fixed_range[1]), bits, symmetric)
            self.scale.copy_(s)
            self.zero_point.copy_(z)
        self.mode = "fp"
        self.stats: O.RangeStats | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            return ste(x, self.scale, self.zero_point, self.qmin, self.qmax)
        if self.mode == "calib" and self.fixed_range is None:
            if self.stats is None:
                self.stats = O.RangeStats()
            self.stats.update(x)
        return x

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes of x (float tensor holding integers), zero point not subtracted."""
        return O.quantize(x, self.scale, self.zero_point, self.qmin, self.qmax)

    def finish(self, observer: str, percentile: float) -> None:
        if self.fixed_range is not None:
            return
        s, z = self.stats.params(self.bits, self.symmetric, observer, percentile)
        self.scale.copy_(s)
        self.zero_point.copy_(z)
        self.stats = None

    def extra_repr(self) -> str:
        return f"bits={self.bits}, symmetric={self.symmetric}"


class QuantLayer(nn.Module):
    """A quantized Conv2d / Linear (see the module docstring)."""

    def __init__(self, layer: nn.Module, w_bits: int, a_bits: int, act_symmetric: bool):
        super().__init__()
        from timm.layers import Conv2dSame

        if isinstance(layer, nn.Conv2d):
            if layer.padding_mode != "zeros":
                raise ValueError(f"cannot quantize a Conv2d with padding_mode={layer.padding_mode!r}")
            self.kind = "conv"
        elif isinstance(layer, nn.Linear):
            self.kind = "linear"
        else:
            raise TypeError(f"QuantLayer wraps Conv2d or Linear, not {type(layer).__name__}")
        self.same_pad = isinstance(layer, Conv2dSame)
        self.layer = layer
        self.w_bits = int(w_bits)
        self.wq = O.qrange(self.w_bits, True)
        self.act = ActQuant(a_bits, act_symmetric)
        out = layer.weight.shape[0]
        self.register_buffer("w_scale", torch.ones(out))
        self.register_buffer("w_int", torch.zeros(layer.weight.shape, dtype=torch.int8))
        # output range (after calibration with quantized inputs): the requantization scale of
        # integer backends whose kernels return 8-bit outputs (fbgemm)
        self.register_buffer("out_range", torch.zeros(2))
        self.backend = "fake"
        self.observe_output = False
        self.round_v: nn.Parameter | None = None  # AdaRound variables while reconstructing
        self._int_cache: dict = {}

    @property
    def weight(self) -> torch.Tensor:
        return self.layer.weight

    @property
    def bias(self) -> torch.Tensor | None:
        return self.layer.bias

    @property
    def mode(self) -> str:
        return self.act.mode

    def set_weight_params(self, observer: str, percentile: float) -> None:
        s, _ = O.weight_params(self.weight, self.w_bits, observer, percentile)
        self.w_scale.copy_(s)
        self.w_int.copy_(O.quantize(self.weight.detach().float(), self._ws(), 0, *self.wq).to(torch.int8))
        self._int_cache.clear()

    def _ws(self) -> torch.Tensor:
        return self.w_scale.view(-1, *([1] * (self.weight.dim() - 1)))

    def fake_weight(self) -> torch.Tensor:
        if self.round_v is not None:  # AdaRound: floor + learned soft rounding in [0, 1]
            from robustart.quant.reconstruct import soft_round

            base = torch.floor(self.weight.detach() / self._ws())
            return torch.clamp(base + soft_round(self.round_v), *self.wq) * self._ws()
        return self.w_int.float() * self._ws()

    def op(self, x: torch.Tensor, w: torch.Tensor, bias=None, pad_done: bool = False) -> torch.Tensor:
        """The wrapped layer's computation with weight `w` (x already padded when pad_done)."""
        L = self.layer
        if self.kind == "linear":
            return F.linear(x, w, bias)
        if self.same_pad and not pad_done:
            from timm.layers.padding import pad_same

            x = pad_same(x, w.shape[-2:], L.stride, L.dilation)
        padding = 0 if self.same_pad else L.padding
        return F.conv2d(x, w, bias, L.stride, padding, L.dilation, L.groups)

    def pad(self, x: torch.Tensor) -> torch.Tensor:
        """TF-'same' padding (zeros) before quantization: zero is exact on every grid."""
        if self.kind == "conv" and self.same_pad:
            from timm.layers.padding import pad_same

            return pad_same(x, self.weight.shape[-2:], self.layer.stride, self.layer.dilation)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mode = self.act.mode
        if mode != "quant":
            self.act(x)
            return self.layer(x)
        if self.backend != "fake" and not torch.is_grad_enabled():
            from robustart.quant import backends

            y = backends.int_forward(self, x)
        else:  # fake quant; integer backends take their gradients from here (straight-through)
            y = self.op(self.act(x), self.fake_weight(), self.bias)
        if self.observe_output:
            r = self.out_range
            lo, hi = y.detach().min().float(), y.detach().max().float()
            r.copy_(torch.stack([torch.minimum(r[0], lo), torch.maximum(r[1], hi)]))
        return y

    def extra_repr(self) -> str:
        return f"{self.kind}, w_bits={self.w_bits}, a_bits={self.act.bits}, backend={self.backend}"


class QuantAttention(nn.Module):
    """timm Attention with quantized q, k, v and attention probabilities (unfused matmuls)."""

    def __init__(self, attn: nn.Module, a_bits: int):
        super().__init__()
        self.attn = attn
        self.q_act = ActQuant(a_bits, True)
        self.k_act = ActQuant(a_bits, True)
        self.v_act = ActQuant(a_bits, True)
        self.p_act = ActQuant(a_bits, False, fixed_range=(0.0, 1.0))
        self.backend = "fake"

    def _matmul(self, qa: ActQuant, a: torch.Tensor, qb: ActQuant, b: torch.Tensor) -> torch.Tensor:
        if qa.mode == "quant" and self.backend != "fake" and not torch.is_grad_enabled():
            from robustart.quant import backends

            return backends.get(self.backend).matmul(qa, a, qb, b)
        return qa(a) @ qb(b)

    def forward(self, x: torch.Tensor, attn_mask=None, is_causal: bool = False) -> torch.Tensor:
        from timm.layers.attention import maybe_add_mask, resolve_self_attn_mask

        m = self.attn
        B, N, C = x.shape
        gate = m.gate(x).sigmoid() if getattr(m, "gate", None) is not None else None
        qkv = m.qkv(x).reshape(B, N, 3, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = m.q_norm(q), m.k_norm(k)
        q = q * m.scale
        attn = self._matmul(self.q_act, q, self.k_act, k.transpose(-2, -1))
        attn = maybe_add_mask(attn, resolve_self_attn_mask(N, attn, attn_mask, is_causal))
        attn = m.attn_drop(attn.softmax(dim=-1))
        x = self._matmul(self.p_act, attn, self.v_act, v)
        x = x.transpose(1, 2).reshape(B, N, m.num_heads * m.head_dim)
        x = m.norm(x)
        if gate is not None:
            x = x * gate
        return m.proj_drop(m.proj(x))


class QuantWindowAttention(QuantAttention):
    """timm Swin WindowAttention: the same quantized matmuls, with its relative position bias and
    shifted-window mask added to the quantized scores (as timm's unfused path does)."""

    def forward(self, x: torch.Tensor, mask=None) -> torch.Tensor:
        m = self.attn
        B_, N, C = x.shape
        qkv = m.qkv(x).reshape(B_, N, 3, m.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = self._matmul(self.q_act, q * m.scale, self.k_act, k.transpose(-2, -1))
        attn = attn + m._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, m.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, m.num_heads, N, N)
        attn = m.attn_drop(m.softmax(attn))
        x = self._matmul(self.p_act, attn, self.v_act, v)
        return m.proj_drop(m.proj(x.transpose(1, 2).reshape(B_, N, -1)))


def quant_layers(net: nn.Module) -> list[QuantLayer]:
    return [m for m in net.modules() if isinstance(m, QuantLayer)]


def act_quantizers(net: nn.Module) -> list[ActQuant]:
    return [m for m in net.modules() if isinstance(m, ActQuant)]


def set_mode(net: nn.Module, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    for a in act_quantizers(net):
        a.mode = mode


def quantize_modules(net: nn.Module, cfg) -> nn.Module:
    """Replace, in place, every Conv2d/Linear of `net` by a QuantLayer (the first and the last at
    `cfg.edge_bits()`) and, with cfg.attn, every timm Attention (ViT, DeiT) by a QuantAttention
    and every Swin WindowAttention by a QuantWindowAttention."""
    from timm.layers.attention import Attention
    from timm.models.swin_transformer import WindowAttention

    targets = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not targets:
        raise ValueError("the network has no Conv2d or Linear layer to quantize")
    edge = {targets[0][0], targets[-1][0]}
    ew, ea = cfg.edge_bits()

    def replace(parent: nn.Module, prefix: str) -> None:
        for name, child in list(parent.named_children()):
            full = f"{prefix}.{name}" if prefix else name
            if isinstance(child, (nn.Conv2d, nn.Linear)):
                wb, ab = (ew, ea) if full in edge else (cfg.w_bits, cfg.a_bits)
                setattr(parent, name, QuantLayer(child, wb, ab, cfg.act_symmetric))
                continue
            replace(child, full)
            if cfg.attn and isinstance(child, Attention):
                setattr(parent, name, QuantAttention(child, cfg.a_bits))
            elif cfg.attn and isinstance(child, WindowAttention):
                setattr(parent, name, QuantWindowAttention(child, cfg.a_bits))

    replace(net, "")
    return net
