"""APQ-ViT post-training quantization for vision transformers (Ding, Qin, Yan et al., "Towards
Accurate Post-training Quantization for Vision Transformer", ACM MM 2022): `NAME@w4a4:method=apq`.

Two parts, on top of robustart's quantized layers (fake.py) and calibration (ptq.py):

Bottom-elimination Blockwise Calibration (BBC, `calibrate_blocks`). After the ranges are observed,
the quantizers are calibrated block by block (timm transformer / mixer blocks; quantized layers
outside blocks are units of their own), each block fed with the *quantized* model's input to it.
Every quantizer of the block in turn (each layer's input and weight, then q, k, v and the attention
probabilities) tries clip fractions of its range (GRID) and keeps the one that minimizes a
second-order estimate of the block's effect on the final loss:

    metric = mean over kept elements of (g * (y_q - y_fp))^2,    g = dL/dy at the float model,

the diagonal (Fisher) approximation of the Hessian-weighted output error that PTQ4ViT and BRECQ
use, here over the whole block output so each quantizer sees its neighbours' errors. L is the
cross-entropy of the float model's logits against its own top-1 class (no labels needed).
Bottom elimination: the elements whose error |y_q - y_fp| lies in the bottom ELIM fraction of the
block (the unavoidable rounding noise) are dropped from the metric, so the search is spent on
the errors that matter (clipping outliers, dominant attention entries).

Matthew-effect Preserving Quantization of softmax (MPQ, `MPQuant`). Attention probabilities
follow a power law: a few large entries carry the attention. A uniform 4-bit grid on [0, 1]
rounds most entries to 0 and can zero whole rows; MPQ keeps the dominance of the large entries:
  - codes c = clamp(round(p / s), 0, 2^b - 1) on an unsigned linear grid whose top is the
    calibrated maximum probability (asymmetric, zero point 0: 0 stays exact);
  - the largest entry of each row keeps at least code 1 (the rich never vanish);
  - each row is renormalized: q = c / sum(c), so rows sum to 1 and the mass of the zeroed tail
    goes to the entries that survive, in proportion to them.
Specified properties (tests/test_apq.py): q sums to 1 per row, p_i >= p_j implies q_i >= q_j
(monotone), q = c / sum(c) with integer c in [0, 2^b - 1] and max(c) >= 1 per row. On integer
backends the row factor 1 / sum(c) is a per-row output scale of the probabilities x v product.

CHOICES (no number found in what we could read of the paper): ELIM = 0.5, GRID of 8 clip
fractions in [0.3, 1], one pass over the block's quantizers, the search on the first
SEARCH_IMAGES calibration images, `g` from the pseudo-label cross-entropy. With every quantizer off (mode "fp"), a model quantized this way computes exactly
the original network: MPQ attention then calls timm's own attention module.
"""

from __future__ import annotations

import torch
from torch import nn

from robustart.quant import fake as Q
from robustart.quant import observers as O

ELIM = 0.5  # CHOICE: share of the smallest block-output errors left out of the metric
GRID = torch.linspace(0.3, 1.0, 8)  # CHOICE: clip fractions tried per quantizer
SEARCH_IMAGES = 32  # CHOICE (CPU budget): calibration images the search evaluates (ranges see all)
BATCH = 32


# --------------------------------------------------------------------------- MPQ


class MPQuant(Q.ActQuant):
    """Matthew-effect preserving quantizer of attention probabilities (see the module doc)."""

    def __init__(self, bits: int):
        super().__init__(bits, symmetric=False)

    def codes(self, p: torch.Tensor) -> torch.Tensor:
        c = O.quantize(p, self.scale, 0, 0, self.qmax)
        top = p == p.amax(-1, keepdim=True)
        return torch.where(top, c.clamp_min(1), c)

    def quantize_rows(self, p: torch.Tensor) -> torch.Tensor:
        c = self.codes(p.detach())
        return c / c.sum(-1, keepdim=True)

    def forward(self, p: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            q = self.quantize_rows(p)
            return p + (q - p).detach() if p.requires_grad else q
        return super().forward(p)


class _MPQMixin:
    def _matmul(self, qa, a, qb, b):
        if isinstance(qa, MPQuant) and qa.mode == "quant" and self.backend != "fake" and not torch.is_grad_enabled():
            # exact integer product of the probability codes with v's codes, then the per-row
            # factor 1 / sum(c) and v's scale
            ia = qa.codes(a).double()
            ib = (qb.codes(b) - qb.zero_point).double()
            return ((ia @ ib) * (qb.scale.double() / ia.sum(-1, keepdim=True))).to(a.dtype)
        return super()._matmul(qa, a, qb, b)


class MPQAttention(_MPQMixin, Q.QuantAttention):
    """QuantAttention with the MPQ softmax quantizer; with quantizers off it runs timm's module."""

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        if self.q_act.mode == "fp":
            return self.attn(x, attn_mask=attn_mask, is_causal=is_causal)
        return super().forward(x, attn_mask=attn_mask, is_causal=is_causal)


class MPQWindowAttention(_MPQMixin, Q.QuantWindowAttention):
    def forward(self, x, mask=None):
        if self.q_act.mode == "fp":
            return self.attn(x, mask=mask)
        return super().forward(x, mask=mask)


def use_mpq(net: nn.Module) -> nn.Module:
    """Swap every QuantAttention / QuantWindowAttention of `net` (after `quantize_modules`) for its
    MPQ form, keeping its q, k, v quantizers."""
    for name, m in list(net.named_modules()):
        if type(m) not in (Q.QuantAttention, Q.QuantWindowAttention):
            continue
        cls = MPQWindowAttention if isinstance(m, Q.QuantWindowAttention) else MPQAttention
        new = cls(m.attn, m.p_act.bits)
        new.q_act, new.k_act, new.v_act = m.q_act, m.k_act, m.v_act
        new.p_act = MPQuant(m.p_act.bits)
        new.backend = m.backend
        parent_name, _, child = name.rpartition(".")
        setattr(net.get_submodule(parent_name) if parent_name else net, child, new)
    return net


# --------------------------------------------------------------------------- BBC


def units(model: nn.Module) -> list[nn.Module]:
    """Calibration units in forward order: the children of every `blocks` Sequential (ViT, DeiT,
    Mixer, and each Swin stage's blocks), then quantized layers outside them on their own."""
    net = getattr(model, "net", model)
    blocks = []
    for name, m in net.named_modules():
        if name.rsplit(".", 1)[-1] == "blocks" and isinstance(m, nn.Sequential):
            blocks.extend(m.children())
    blocks = [b for b in blocks if Q.quant_layers(b) or Q.act_quantizers(b)]
    covered = {id(q) for b in blocks for q in Q.act_quantizers(b)}
    lone = [m for m in Q.quant_layers(net) if id(m.act) not in covered]
    order = {id(m): i for i, m in enumerate(net.modules())}
    return sorted(blocks + lone, key=lambda u: order[id(u)])


class _Stop(Exception):
    pass


def _capture(model, unit, images, mode: str, want: str) -> torch.Tensor:
    got = []

    def hook(m, args, out):
        got.append((args[0] if want == "in" else out).detach())
        raise _Stop

    h = unit.register_forward_hook(hook)
    Q.set_mode(model, mode)
    try:
        with torch.no_grad():
            for i in range(0, images.shape[0], BATCH):
                try:
                    model(images[i:i + BATCH])
                except _Stop:
                    pass
    finally:
        h.remove()
        Q.set_mode(model, "quant")
    return torch.cat(got)


def output_grads(model, us, images) -> dict:
    """{id(unit): (float output, dL/d output)} of every unit, from the float model: L is the
    cross-entropy of the logits against the float model's own top-1 class."""
    import torch.nn.functional as F

    store: dict = {}

    def hook_for(u):
        def hook(m, args, out):
            if out.requires_grad:
                out.retain_grad()
            store.setdefault(id(u), []).append(out)
        return hook

    hs = [u.register_forward_hook(hook_for(u)) for u in us]
    Q.set_mode(model, "fp")
    res = {id(u): ([], []) for u in us}
    try:
        for i in range(0, images.shape[0], BATCH):
            store.clear()
            x = images[i:i + BATCH].clone().requires_grad_(True)  # so every unit output has a grad
            with torch.enable_grad():
                logits = model(x)
                loss = F.cross_entropy(logits, logits.argmax(1).detach(), reduction="sum")
                loss.backward()
            for u in us:
                out = store[id(u)][0]
                g = out.grad if out.grad is not None else torch.zeros_like(out)
                res[id(u)][0].append(out.detach())
                res[id(u)][1].append(g.detach())
    finally:
        for h in hs:
            h.remove()
        Q.set_mode(model, "quant")
    return {k: (torch.cat(a), torch.cat(b)) for k, (a, b) in res.items()}


def bbc_metric(y_q: torch.Tensor, y_fp: torch.Tensor, g: torch.Tensor, elim: float = ELIM) -> float:
    """The bottom-eliminated, gradient-weighted block output error (see the module doc)."""
    d = (y_q - y_fp).flatten()
    w = (g.flatten() * d).pow(2)
    if elim > 0 and d.numel() > 1:
        k = max(1, int(elim * d.numel()))
        thr = d.abs().kthvalue(k).values
        keep = d.abs() > thr
        return float(w[keep].sum() / keep.sum().clamp_min(1))
    return float(w.mean())


def _run(unit, x):
    with torch.no_grad():
        return torch.cat([unit(x[i:i + BATCH]) for i in range(0, x.shape[0], BATCH)])


class _ActKnob:
    """A clip fraction applied to an activation quantizer's calibrated range."""

    def __init__(self, a: Q.ActQuant):
        self.a = a
        s, z = a.scale.clone(), a.zero_point.clone()
        self.saved = (s, z)
        self.lo = (a.qmin - z.float()) * s
        self.hi = (a.qmax - z.float()) * s

    def set(self, alpha: float):
        s, z = O.params_from_range(self.lo * alpha, self.hi * alpha, self.a.bits, self.a.symmetric)
        self.a.scale.copy_(s)
        self.a.zero_point.copy_(z)

    def restore(self):
        self.a.scale.copy_(self.saved[0])
        self.a.zero_point.copy_(self.saved[1])


class _WeightKnob:
    def __init__(self, layer: Q.QuantLayer):
        self.layer = layer
        self.hi = layer.weight.detach().float().flatten(1).abs().amax(1)
        self.saved = (layer.w_scale.clone(), layer.w_int.clone())

    def restore(self):
        self.layer.w_scale.copy_(self.saved[0])
        self.layer.w_int.copy_(self.saved[1])
        self.layer._int_cache.clear()

    def set(self, alpha: float):
        L = self.layer
        s, _ = O.params_from_range(-self.hi * alpha, self.hi * alpha, L.w_bits, True)
        L.w_scale.copy_(s)
        L.w_int.copy_(O.quantize(L.weight.detach().float(), L._ws(), 0, *L.wq).to(torch.int8))
        L._int_cache.clear()


def _knobs(unit) -> list:
    out = []
    for m in unit.modules():
        if isinstance(m, Q.QuantLayer):
            if m.act.fixed_range is None:
                out.append(_ActKnob(m.act))
            out.append(_WeightKnob(m))
        elif isinstance(m, Q.QuantAttention):
            for a in (m.q_act, m.k_act, m.v_act, m.p_act):
                if a.fixed_range is None:
                    out.append(_ActKnob(a))
    return out


def unit_error(model, unit, images, grads=None, elim: float = ELIM) -> dict:
    """{mse, bbc}: the unit's quantized output (quantized input) against its float output."""
    x_q = _capture(model, unit, images, "quant", "in")
    if grads is None:
        grads = output_grads(model, [unit], images)
    y_fp, g = grads[id(unit)]
    y_q = _run(unit, x_q)
    return {"mse": float((y_q - y_fp).pow(2).mean()), "bbc": bbc_metric(y_q, y_fp, g, elim)}


def calibrate_blocks(model: nn.Module, images: torch.Tensor, cfg=None, progress=None) -> list[dict]:
    """BBC over every unit in order (each unit sees the already calibrated units before it);
    returns per unit the metric before and after."""
    elim = float(getattr(cfg, "elim", ELIM)) if cfg is not None else ELIM
    model.eval()
    images = images[:SEARCH_IMAGES]
    us = units(model)
    grads = output_grads(model, us, images)
    task = progress.add_task("blockwise calibration", total=len(us)) if progress is not None else None
    log = []
    for u in us:
        x_q = _capture(model, u, images, "quant", "in")
        y_fp, g = grads[id(u)]
        best = bbc_metric(_run(u, x_q), y_fp, g, elim)
        before = best
        for knob in _knobs(u):
            choice = None
            for alpha in GRID.tolist():
                knob.set(alpha)
                m = bbc_metric(_run(u, x_q), y_fp, g, elim)
                if m < best:
                    best, choice = m, alpha
            if choice is None:  # nothing better: keep the observer's calibration
                knob.restore()
            else:
                knob.set(choice)
        log.append({"unit": type(u).__name__, "before": before, "after": best})
        if progress is not None:
            progress.update(task, advance=1)
    return log

