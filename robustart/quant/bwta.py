"""BWTA: binary weights and ternary activations for Transformers and MLP-Mixers (Ding, Liu, Jin et
al., "BWTA: Accurate and Efficient Binarized Transformer by Algorithm-Hardware Co-design").

Scheme (`bwta_model`):
  - weights of every nn.Linear except the classifier: binary, alpha * sign(W) with alpha =
    mean |W| per output channel (gradient through alpha; straight-through to W);
  - the inputs of those layers and the attention matmuls' operands (q, k, v): ternary,
    s * clamp(round(x / s), -k, k) with k = 1 at the end of training: {-s, 0, +s}, so tiny values
    are projected to zero instead of being blown up to +-1 (the "zero-point distortion" of
    binarization that BWTA analyses);
  - attention probabilities (non-negative): unsigned, s * clamp(round(p / s), 0, k): {0, s} at
    k = 1 (BWTA's "bool" activations);
  - the patch embedding (the first layer) and the classifier stay in full precision, as in the
    binary forms. LayerNorm, GELU and softmax run in float between quantized operands.
  The scale s of each quantizer is a learnable parameter (LSQ-style straight-through gradient).

Smooth Multi-Stage Quantization (training, `robustart.quant.train.train_bwta`):
  - levelwise degradation: training goes through stages whose activation grid shrinks one level
    pair at a time, k = K0, K0 - 1, ..., 1 (17, 15, ..., 3 signed levels for K0 = 8), rather than by
    halving the bit width;
  - magnitude-alignment projection factor: at each stage switch every quantizer's scale is
    searched again (MSE) on the current batch for the new grid, and its quantized values are
    multiplied by a projection factor p = sum |Q_prev(x)| / sum |Q_new(x)| on that batch (on top
    of the previous factor), so the activation magnitudes the next layers see do not jump. The
    factor multiplies the values, not the grid: the zero threshold stays where the new scale puts
    it (our reading; scaling the grid itself widens the dead zone at every switch).
  CHOICES (not in what we could read of the paper): K0 = 8, stages of equal length except the
  last (ternary) one, which gets STAGE_LAST_SHARE of the steps; initial scales by an MSE search on
  calibration images.

Inference: layers compute (ternary codes @ sign(W)^T) * s * alpha + bias; with autograd off and
`use_kernels`, the product runs on robustart.kernels.bwta (2-bit packed activations against 1-bit
weights, XOR/AND + popcount, fused scales) and the attention products on its ternary x ternary
form. With every quantizer off (mode "fp") the network computes exactly the original one (the
float layers and timm's own attention modules run).

The form `NAME@bwta` (transformer and mixer entries) builds this from the float weights and
initializes the activation scales on calibration images (`calib`, `seed`, `calib_data` as the
quantized forms); without training it is far from the float model, as the binary forms are.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

K_START = 8  # CHOICE: first stage has 2 * 8 + 1 = 17 levels
STAGE_LAST_SHARE = 0.4  # CHOICE: share of the steps spent at the final (ternary) stage
MSE_GRID = torch.linspace(0.02, 1.0, 50)
MODES = ("fp", "calib", "quant")


# --------------------------------------------------------------------------- quantizers


def _ste_round(x: torch.Tensor) -> torch.Tensor:
    return x + (torch.round(x) - x).detach()


class TernaryAct(nn.Module):
    """s * clamp(round(x / s), lo, k): lo = -k (signed) or 0 (unsigned); k = 1: ternary / bool."""

    def __init__(self, unsigned: bool = False, k: int = 1):
        super().__init__()
        self.unsigned = bool(unsigned)
        self.register_buffer("k", torch.tensor(int(k)))
        self.scale = nn.Parameter(torch.tensor(1.0))
        # magnitude-alignment projection factor: multiplies the quantized values, not the grid
        self.register_buffer("gain", torch.tensor(1.0))
        self.mode = "fp"
        self.sample: torch.Tensor | None = None

    @property
    def lo(self) -> int:
        return 0 if self.unsigned else -int(self.k)

    def codes(self, x: torch.Tensor) -> torch.Tensor:
        """Integer codes (float tensor), no gradient."""
        return torch.clamp(torch.round(x.detach() / self.scale.detach()), self.lo, int(self.k))

    def quantize(self, x: torch.Tensor, scale: torch.Tensor | None = None, k: int | None = None,
                 gain: torch.Tensor | None = None) -> torch.Tensor:
        s = self.scale if scale is None else scale
        k = int(self.k) if k is None else k
        g = self.gain if gain is None else gain
        lo = 0 if self.unsigned else -k
        u = torch.clamp(x / s, lo, k)
        return _ste_round(u) * s * g

    def out_scale(self) -> torch.Tensor:
        """The real value of code 1: scale x projection factor."""
        return (self.scale.detach() * self.gain).float()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.mode == "quant":
            return self.quantize(x)
        if self.mode == "calib":
            v = x.detach().flatten().float()
            idx = torch.randint(0, v.numel(), (min(v.numel(), 1 << 16),), generator=torch.Generator().manual_seed(0))
            pick = v[idx.to(v.device)].cpu()
            self.sample = pick if self.sample is None else torch.cat([self.sample, pick])
        return x

    @torch.no_grad()
    def init_scale(self, values: torch.Tensor | None = None) -> None:
        """The scale that minimizes the mean squared error on `values` (default: the calibration
        sample), searched over fractions of max |x| / k."""
        v = self.sample if values is None else values.detach().flatten().float().cpu()
        if v is None or not v.numel():
            raise RuntimeError("a BWTA activation quantizer saw no calibration values")
        k = int(self.k)
        top = (v.clamp_min(0) if self.unsigned else v.abs()).max().clamp_min(1e-8)
        best, best_s = None, top / k
        one = torch.ones(())
        for a in MSE_GRID.tolist():
            s = top * a / k
            err = (self.quantize(v, s, k, one) - v).pow(2).mean()
            if best is None or err < best:
                best, best_s = err, s
        self.scale.copy_(best_s)
        self.gain.fill_(1.0)
        self.sample = None

    def extra_repr(self) -> str:
        return f"unsigned={self.unsigned}, levels={int(self.k) + 1 if self.unsigned else 2 * int(self.k) + 1}"


class BWTALinear(nn.Linear):
    """nn.Linear with binary weights (alpha * sign(W)) and a ternary input quantizer. Same
    parameter names as nn.Linear (a float state dict loads)."""

    kernel_backend: str | None = None

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.act = TernaryAct(unsigned=False)

    @classmethod
    def from_float(cls, lin: nn.Linear) -> "BWTALinear":
        new = cls(lin.in_features, lin.out_features, lin.bias is not None, device=lin.weight.device,
                  dtype=lin.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(lin.weight)
            if lin.bias is not None:
                new.bias.copy_(lin.bias)
        new.train(lin.training)
        return new

    @property
    def mode(self) -> str:
        return self.act.mode

    def alpha(self) -> torch.Tensor:
        return self.weight.abs().mean(1)

    def signs(self) -> torch.Tensor:
        w = self.weight
        s = torch.where(w >= 0, 1.0, -1.0).to(w.dtype)
        return w + (s - w).detach()  # straight through to the latent weight

    def binary_weight(self) -> torch.Tensor:
        return self.alpha()[:, None] * self.signs()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.act.mode != "quant":
            self.act(x)
            return F.linear(x, self.weight, self.bias)
        if self.kernel_backend is not None and not torch.is_grad_enabled():
            return self.kernel_forward(x, self.kernel_backend)
        return F.linear(self.act(x), self.signs(), None) * self.alpha() + (0 if self.bias is None else self.bias)

    @torch.no_grad()
    def kernel_forward(self, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        from robustart.kernels import bwta as KB

        flat = x.reshape(-1, self.in_features)
        am, asg = KB.pack_ternary(self.act.codes(flat))
        wb = KB.pack_bits(torch.where(self.weight >= 0, 1.0, -1.0))
        y = KB.bwta_gemm(am, asg, wb, self.in_features, self.act.out_scale(), self.alpha().float(),
                         None if self.bias is None else self.bias.detach().float(), backend=backend)
        return y.reshape(*x.shape[:-1], self.out_features).to(x.dtype)


def _ternary_matmul(qa: TernaryAct, a: torch.Tensor, qb: TernaryAct, b: torch.Tensor, backend) -> torch.Tensor:
    """a @ b for [..., M, K] x [..., K, N] with both operands quantized; on the BWTA kernel (grouped
    over the leading dims) when `backend` is set and autograd is off."""
    if backend is None or torch.is_grad_enabled():
        return qa(a) @ qb(b)
    from robustart.kernels import bwta as KB

    lead = a.shape[:-2]
    m, kk = a.shape[-2:]
    n = b.shape[-1]
    ca = qa.codes(a).reshape(-1, kk)
    cb = qb.codes(b).transpose(-2, -1).reshape(-1, kk)
    g = ca.shape[0] // m
    am, asg = KB.pack_ternary(ca)
    bm, bs = KB.pack_ternary(cb)
    kw = am.shape[1]
    y = KB.bwta_gemm(am.view(g, m, kw), asg.view(g, m, kw), bs.view(g, n, kw), kk, qa.out_scale(),
                     qb.out_scale().expand(g * n).contiguous(), b_mask=bm.view(g, n, kw), backend=backend)
    return y.reshape(*lead, m, n).to(a.dtype)


class BWTAAttention(nn.Module):
    """timm Attention with ternary q, k, v and unsigned (bool at k = 1) probabilities; with
    quantizers off it runs timm's module itself."""

    kernel_backend: str | None = None

    def __init__(self, attn: nn.Module):
        super().__init__()
        self.attn = attn
        self.q_act, self.k_act, self.v_act = TernaryAct(), TernaryAct(), TernaryAct()
        self.p_act = TernaryAct(unsigned=True)

    @property
    def mode(self) -> str:
        return self.q_act.mode

    def _mm(self, qa, a, qb, b):
        if qa.mode != "quant":
            qa(a), qb(b)
            return a @ b
        return _ternary_matmul(qa, a, qb, b, self.kernel_backend)

    def forward(self, x, attn_mask=None, is_causal: bool = False):
        if self.mode == "fp":
            return self.attn(x, attn_mask=attn_mask, is_causal=is_causal)
        from timm.layers.attention import maybe_add_mask, resolve_self_attn_mask

        m = self.attn
        B, N, C = x.shape
        gate = m.gate(x).sigmoid() if getattr(m, "gate", None) is not None else None
        qkv = m.qkv(x).reshape(B, N, 3, m.num_heads, m.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        q, k = m.q_norm(q), m.k_norm(k)
        attn = self._mm(self.q_act, q * m.scale, self.k_act, k.transpose(-2, -1))
        attn = maybe_add_mask(attn, resolve_self_attn_mask(N, attn, attn_mask, is_causal))
        attn = m.attn_drop(attn.softmax(dim=-1))
        x = self._mm(self.p_act, attn, self.v_act, v)
        x = x.transpose(1, 2).reshape(B, N, m.num_heads * m.head_dim)
        x = m.norm(x)
        if gate is not None:
            x = x * gate
        return m.proj_drop(m.proj(x))


class BWTAWindowAttention(BWTAAttention):
    """timm Swin WindowAttention (relative position bias, shifted-window mask) in BWTA form."""

    def forward(self, x, mask=None):
        if self.mode == "fp":
            return self.attn(x, mask=mask)
        m = self.attn
        B_, N, C = x.shape
        qkv = m.qkv(x).reshape(B_, N, 3, m.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        attn = self._mm(self.q_act, q * m.scale, self.k_act, k.transpose(-2, -1))
        attn = attn + m._get_rel_pos_bias()
        if mask is not None:
            num_win = mask.shape[0]
            attn = attn.view(-1, num_win, m.num_heads, N, N) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, m.num_heads, N, N)
        attn = m.attn_drop(m.softmax(attn))
        x = self._mm(self.p_act, attn, self.v_act, v)
        return m.proj_drop(m.proj(x.transpose(1, 2).reshape(B_, N, -1)))


# --------------------------------------------------------------------------- model surgery


def quantizers(net: nn.Module) -> list[TernaryAct]:
    return [m for m in net.modules() if isinstance(m, TernaryAct)]


def bwta_layers(net: nn.Module) -> list[BWTALinear]:
    return [m for m in net.modules() if isinstance(m, BWTALinear)]


def set_mode(net: nn.Module, mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}")
    for q in quantizers(net):
        q.mode = mode


def use_kernels(net: nn.Module, backend: str | None = "auto") -> nn.Module:
    """Run BWTA layers and attention products on robustart.kernels.bwta whenever autograd is off
    ("auto", "triton", "torch"); None: the float simulation."""
    if backend is not None and backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton', 'torch' or None, got {backend!r}")
    for m in net.modules():
        if isinstance(m, (BWTALinear, BWTAAttention)):
            m.kernel_backend = backend
    return net


def bwta_model(net: nn.Module) -> nn.Module:
    """Replace, in place, every nn.Linear of `net` but the classifier by a BWTALinear and every timm
    Attention / Swin WindowAttention by its BWTA form (quantizers off: call `calibrate` next)."""
    from timm.layers.attention import Attention
    from timm.models.swin_transformer import WindowAttention

    from robustart.quant.binary import _classifier

    if bwta_layers(net):
        raise ValueError("bwta_model: the network is in BWTA form already")
    head = _classifier(net)
    linears = [m for m in net.modules() if isinstance(m, nn.Linear)]
    if head is None and linears:
        head = linears[-1]

    def replace(parent: nn.Module) -> None:
        for name, child in list(parent.named_children()):
            if isinstance(child, nn.Linear) and child is not head:
                setattr(parent, name, BWTALinear.from_float(child))
                continue
            replace(child)
            if isinstance(child, Attention):
                setattr(parent, name, BWTAAttention(child))
            elif isinstance(child, WindowAttention):
                setattr(parent, name, BWTAWindowAttention(child))

    replace(net)
    if not bwta_layers(net):
        raise ValueError(f"bwta_model: {type(net).__name__} has no linear layer to binarize but its classifier")
    return net


@torch.no_grad()
def calibrate(model: nn.Module, images: torch.Tensor, batch_size: int = 16, k: int | None = None) -> nn.Module:
    """Initialize every quantizer's scale (MSE search) on the float network's activations, for
    grids of k (default: each quantizer's current k; training calibrates at its first stage's)."""
    if k is not None:
        for q in quantizers(model):
            q.k.fill_(int(k))
    model.eval()
    set_mode(model, "calib")
    for i in range(0, images.shape[0], batch_size):
        model(images[i:i + batch_size])
    for q in quantizers(model):
        q.init_scale()
    set_mode(model, "quant")
    return model


@torch.no_grad()
def set_levels(model: nn.Module, k: int, batch: torch.Tensor | None = None) -> list[float]:
    """Move every quantizer to k (levels 2k + 1, or k + 1 unsigned). With `batch`: each quantizer's
    scale is searched again (MSE) on its inputs for the new grid, and its magnitude-alignment
    projection factor becomes gain * sum |Q_prev(x)| / sum |Q_new(x)|, so the values the next
    layers see keep their magnitude across the switch (see the module doc). Without a batch the
    clipping range is kept (s * k_prev / k). Returns the factors."""
    qs = quantizers(model)
    inputs: dict = {}
    if batch is not None:
        hs = [q.register_forward_pre_hook(lambda mod, args: inputs.setdefault(id(mod), args[0].detach()))
              for q in qs]
        was = model.training
        model.eval()
        try:
            model(batch)
        finally:
            for h in hs:
                h.remove()
            model.train(was)
    factors = []
    for q in qs:
        k_prev = int(q.k)
        if k_prev == k:
            factors.append(1.0)
            continue
        x = inputs.get(id(q))
        if x is None:
            q.scale.mul_(k_prev / k)
            q.k.fill_(k)
            factors.append(1.0)
            continue
        prev = q.quantize(x).abs().sum()
        gain = q.gain.clone()
        q.k.fill_(k)
        q.init_scale(x)  # resets the gain to 1
        new = q.quantize(x, gain=gain).abs().sum()
        p = float(prev / new) if new > 0 and prev > 0 else 1.0
        q.gain.copy_(gain * p)
        factors.append(p)
    return factors


def stage_schedule(steps: int, k_start: int = K_START, last_share: float = STAGE_LAST_SHARE) -> list[tuple[int, int]]:
    """[(first step, k)] of the levelwise degradation k_start, ..., 1: equal stages, the last one
    (ternary) `last_share` of the steps."""
    if k_start < 1:
        raise ValueError(f"k_start must be >= 1, got {k_start}")
    if k_start == 1:
        return [(0, 1)]
    last = int(round(steps * last_share))
    each = (steps - last) / (k_start - 1)
    return [(int(round(i * each)), k_start - i) for i in range(k_start - 1)] + [(steps - last, 1)]


# --------------------------------------------------------------------------- the form


@dataclass(frozen=True)
class BWTAConfig:
    """Settings of a `NAME@bwta` form (calibration of the activation scales)."""

    calib: int = 64
    seed: int = 0
    calib_data: str | None = None
    # untrained=yes: the float weights in BWTA layers, calibrated but not trained (far from the
    # float model); asked for by name. Only in the key when set, so other keys are unchanged.
    untrained: bool = False

    def __post_init__(self) -> None:
        from robustart.quant.qconfig import FormError

        if self.calib < 1:
            raise FormError(f"calib (calibration images) must be >= 1, got {self.calib}.")

    @property
    def form(self) -> str:
        return "bwta"

    def to_dict(self) -> dict:
        d = {"form": "bwta", **asdict(self)}
        if not self.untrained:
            d.pop("untrained")
        return d

    def spec(self) -> str:
        extra = [f"{k}={v}" if k != "untrained" else "untrained" for k, v in asdict(self).items()
                 if v != getattr(BWTAConfig(), k)]
        return "bwta" + (":" + ",".join(extra) if extra else "")


PARAMS = {"calib": "calibration images for the activation scales (default 64)",
          "seed": "seed that draws the calibration images (default 0)",
          "calib_data": "calibration dataset (as for quantized forms; also dsg | zeroq | noise)",
          "untrained": "yes: evaluate the form without its training recipe (it is far from the float model)"}


def parse(kwargs: dict, where: str) -> BWTAConfig:
    from robustart.quant.qconfig import FormError

    unknown = sorted(set(kwargs) - set(PARAMS))
    if unknown:
        raise FormError(f"{where}: bwta forms take {', '.join(PARAMS)}; not {', '.join(unknown)}.")
    for k in ("calib", "seed"):
        if k in kwargs and not isinstance(kwargs[k], int):
            raise FormError(f"{where}: {k} must be an integer, got {kwargs[k]!r}.")
    if "calib_data" in kwargs:
        kwargs["calib_data"] = str(kwargs["calib_data"])
    if "untrained" in kwargs:
        if kwargs["untrained"] not in (True, False, "yes", "no", 1, 0):
            raise FormError(f"{where}: untrained takes yes or no, got {kwargs['untrained']!r}.")
        kwargs["untrained"] = kwargs["untrained"] in (True, "yes", 1)
    try:
        return BWTAConfig(**kwargs)
    except FormError as e:
        raise FormError(f"{where}: {e}") from None


FAMILIES = ("transformer", "mixer")


def check_form(entry, cfg: BWTAConfig) -> None:
    """A BWTA form of this entry is one robustart builds: a transformer or mixer, trained (or asked
    for untrained on purpose)."""
    from robustart.errors import RobustartError

    if entry.family not in FAMILIES:
        raise RobustartError(f"model {entry.spec!r}: bwta forms are for transformer and mixer models; "
                             f"{entry.name!r} is a {entry.family}. Use a binary form (e.g. @binary-irnet) for CNNs.")
    if isinstance(cfg, dict) and cfg.get("trained"):  # a local entry of a trained BWTA network
        return
    if not cfg.untrained:
        raise RobustartError(
            f"model {entry.spec!r}: {entry.name}'s weights are full-precision; in BWTA layers without the training "
            "recipe they are far from the float model, not a result. Train it with `python -m robustart.quant.train "
            f"--model {entry.name} --method bwta --out RUN.pt --register {entry.name}-bwta` (a local entry in "
            f"$ROBUSTART_HOME/zoo/; then --model {entry.name}-bwta). To measure the untrained form on purpose: "
            f"--model {entry.name}@bwta:untrained=yes.")


def bwta_zoo_model(model, cfg: BWTAConfig, calib, *, backend: str = "fake"):
    """A ZooModel in BWTA form: layers swapped, activation scales calibrated on `calib` images;
    backend "triton" runs the BWTA kernel whenever autograd is off."""
    entry = model.entry
    check_form(entry, cfg)
    dev = next(model.parameters()).device
    images = (calib.load(entry, model=model) if hasattr(calib, "cfg") else calib.load(entry)).to(dev)
    bwta_model(model.net)
    model.to(dev)
    calibrate(model, images)
    use_kernels(model, "triton" if backend == "triton" else None)
    model.quant_info = {"form": "bwta", "config": cfg.to_dict(), "calibration": calib.describe(), "backend": backend}
    return model.eval()
