"""Binarized layers (weights and activations in {-1, +1}, weights times a per-channel scale) as
drop-in replacements for nn.Conv2d / nn.Linear, and `binarize_model` that swaps them in.

Methods (`METHODS`), each as its paper defines weights, activations and gradients:

  bnn       Courbariaux, Hubara et al., "Binarized Neural Networks" (NeurIPS 2016).
            W_b = sign(W), A_b = sign(A); backward: the clipped straight-through estimator
            dL/dx = dL/dx_b * 1{|x| <= 1}. Latent weights are clipped to [-1, 1] after each update.
  xnor      Rastegari et al., "XNOR-Net" (ECCV 2016). W_b = alpha * sign(W) with
            alpha = mean |W| per output channel (the L2-optimal scale; gradient flows through it);
            A_b = sign(A) with the clipped STE. The activation scale K of the paper (a box-filtered
            mean |A|) is left out, as most re-implementations do: the BatchNorm after every
            binarized conv absorbs a per-channel scale, and K costs a full-precision conv.
  irnet     Qin et al., "Forward and Backward Information Retention for Accurate Binary Neural
            Networks" (CVPR 2020). Libra-PB: W is balanced and standardised per output channel,
            W_s = (W - mean) / std, then W_b = sign(W_s) * 2^s with s = round(log2(mean |W_s|))
            (a bit shift, no multiply). EDE: forward sign, backward the derivative of
            k * tanh(t * x), i.e. k * t * (1 - tanh^2(t x)), with t going log-linearly from
            t_min = 0.1 to t_max = 10 over training and k = max(1 / t, 1) (`set_progress`).
  dirnet    DIR-Net style: Qin et al., "Distribution-sensitive Information Retention for
            Accurate Binary Neural Network" (IJCV 2023, arXiv 2109.12338). IMB: weights balanced
            and standardised as in Libra-PB, scaled by the L2-optimal alpha = mean |W_s| per
            output channel (our simplification: one real scale per channel). DTE: the two-stage
            tanh estimator of EDE (stage 1, t < 1: k t = 1, a soft identity that keeps weights
            updating; stage 2, t >= 1: k = 1, sharpening towards sign), made distribution-
            sensitive by measuring x in units of its per-channel standard deviation sigma:
            backward k * t * (1 - tanh^2(t * x / sigma)), so the estimator's width follows the
            spread of the values it binarizes (our reading of "distribution-sensitive"). The
            paper's feature-level distillation (RBD) is not here; `robustart.quant.train`
            distils logits.
  reactnet  Liu et al., "ReActNet" (ECCV 2020). RSign: A_b = sign(A + b_c) with a learnable
            per-input-channel shift b_c (ReActNet's `LearnableBias` before the sign); backward
            the ApproxSign derivative 2 - 2|x| on |x| < 1 (piecewise polynomial, from Bi-Real
            Net). W_b = alpha * sign(W) with alpha = mean |W| per output channel, detached, and
            the gradient passed to W clipped to |W| <= 1. Activations become RPReLU
            (learnable shifts around a PReLU). Its distributional loss (KL to the FP teacher)
            is the distillation loss in `robustart.quant.train`.

Every binarized weight is exactly +-alpha per output channel (`binary_weight()`); every
binarized activation is exactly +-1 (sign(0) is taken as +1, so there are no zeros).

What `binarize_model` replaces, and why:
  - Every nn.Conv2d / nn.Linear except the first conv and the classifier (kept full precision,
    as all the papers above do: the image and the logits carry too much information for 1 bit).
  - Depthwise convs stay full precision by default (`binarize_depthwise=False`): each output of a
    3x3 depthwise conv sums only 9 products, so a binary one takes one of 10 values, and those
    convs hold a tiny share of an EfficientNet's multiply-adds and parameters.
  - Activations (ReLU, ReLU6, SiLU, GELU, ...) become Hardtanh (BNN, XNOR, IR-Net, DIR-Net, as
    the papers' ResNets use) or RPReLU (ReActNet). Without this a binarized conv after a ReLU
    would see sign(relu(x)) = +1 everywhere: no information at all.
Zero padding pads the binarized input with 0, as the reference implementations do.

Layers compute conv(sign(x), signs) * alpha + bias: the conv of +-1 values is an exact integer
in float32, so `use_kernels(net)` (robustart.kernels' XNOR/popcount `binary_gemm` and
`binary_conv2d`, run whenever autograd is off) gives the same logits up to rounding of the
epilogue. With autograd on (training, gradient attacks) the fake-binarized forward runs.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from robustart.registry import Registry

# The methods `binarize_model` implements (their layers below branch on these names).
METHODS = ("bnn", "xnor", "irnet", "dirnet", "reactnet")

# Activation modules that binarize_model swaps out.
ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.SiLU, nn.GELU, nn.Hardswish, nn.Mish, nn.ELU,
               nn.PReLU)


def check_method(method: str) -> str:
    if method not in METHODS:
        raise ValueError(f"unknown binarization method {method!r}; choose one of {', '.join(METHODS)}")
    return method


def sign(x: torch.Tensor) -> torch.Tensor:
    """+1 where x >= 0, -1 elsewhere (torch.sign maps 0 to 0, which is not a binary value)."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


# --------------------------------------------------------------------------- sign estimators


class SignSTE(torch.autograd.Function):
    """sign forward; clipped straight-through backward, 1{|x| <= 1} (BNN, XNOR-Net)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (x.abs() <= 1).to(g.dtype)


class SignClipScaled(torch.autograd.Function):
    """sign forward; backward 1{|w| <= 1} / alpha: with the layer's `* alpha` after the conv,
    W gets exactly ReActNet's gradient, that of clamp(W, -1, 1) (alpha detached)."""

    @staticmethod
    def forward(ctx, w, inv_alpha):
        ctx.save_for_backward(w, inv_alpha)
        return sign(w)

    @staticmethod
    def backward(ctx, g):
        w, inv_alpha = ctx.saved_tensors
        return g * (w.abs() <= 1).to(g.dtype) * inv_alpha, None


class SignTanh(torch.autograd.Function):
    """sign forward; backward d/dx [k tanh(t x / s)] * s = k t (1 - tanh^2(t x / s)).
    IR-Net's EDE with s = 1; DIR-Net-style DTE with s = the per-channel std of x."""

    @staticmethod
    def forward(ctx, x, k, t, s):
        ctx.save_for_backward(x, s)
        ctx.k, ctx.t = float(k), float(t)
        return sign(x)

    @staticmethod
    def backward(ctx, g):
        x, s = ctx.saved_tensors
        return g * ctx.k * ctx.t * (1 - torch.tanh(ctx.t * x / s) ** 2), None, None, None


class SignApprox(torch.autograd.Function):
    """sign forward; ApproxSign backward (ReActNet / Bi-Real Net): 2 - 2|x| on |x| < 1, else 0."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        return sign(x)

    @staticmethod
    def backward(ctx, g):
        (x,) = ctx.saved_tensors
        return g * (2 - 2 * x.abs()).clamp_min(0)


def ede_schedule(progress: float, t_min: float = 0.1, t_max: float = 10.0) -> tuple[float, float]:
    """IR-Net's EDE schedule: t = t_min * (t_max / t_min) ** progress, k = max(1 / t, 1)."""
    p = min(max(float(progress), 0.0), 1.0)
    t = 10 ** (math.log10(t_min) + p * (math.log10(t_max) - math.log10(t_min)))
    return max(1.0 / t, 1.0), t


# --------------------------------------------------------------------------- layers


def _channel_std(x: torch.Tensor) -> torch.Tensor:
    """Per-channel (dim 1) std of x, detached, broadcastable to x; 1 when a channel has a single
    value (DTE then falls back to EDE)."""
    if x.numel() // x.shape[1] < 2:
        return torch.ones((), dtype=x.dtype, device=x.device)
    dims = [d for d in range(x.dim()) if d != 1]
    return x.detach().std(dim=dims, keepdim=True).clamp_min(1e-5)


class BinaryMixin:
    """Shared by BinaryConv2d and BinaryLinear: weight and activation binarization by `method`."""

    method: str
    weight: nn.Parameter

    def _init_binary(self, method: str) -> None:
        self.method = check_method(method)
        # EDE / DTE state (k, t); set from the training progress by `set_progress`.
        self.register_buffer("ede", torch.tensor(ede_schedule(0.0)), persistent=True)
        if method == "reactnet":
            # RSign's learnable threshold per input channel (starts at 0: plain sign)
            self.shift = nn.Parameter(torch.zeros(self.weight.shape[1] * self._groups()))

    def _groups(self) -> int:
        return getattr(self, "groups", 1)

    def _rows(self) -> torch.Tensor:
        return self.weight.reshape(self.weight.shape[0], -1)

    def _view(self, v: torch.Tensor) -> torch.Tensor:
        return v.reshape(-1, *([1] * (self.weight.dim() - 1)))

    # ---- weights

    def standardized_weight(self) -> torch.Tensor:
        """Libra-PB / IMB: each output channel balanced (zero mean) and standardised (unit std)."""
        w = self._rows()
        w = w - w.mean(1, keepdim=True)
        w = w / w.std(1, keepdim=True).clamp_min(1e-8)
        return w.reshape_as(self.weight)

    def alpha(self) -> torch.Tensor:
        """The per-output-channel scale of the binarized weight, as the method defines it."""
        with torch.no_grad():
            src = self.standardized_weight() if self.method in ("irnet", "dirnet") else self.weight
            return self._alpha(src)

    def _alpha(self, w: torch.Tensor) -> torch.Tensor:
        """Scale per output channel of `w` (the standardised weight for irnet / dirnet)."""
        m = self.method
        if m == "bnn":
            return torch.ones(w.shape[0], dtype=w.dtype, device=w.device)
        mean_abs = w.reshape(w.shape[0], -1).abs().mean(1)
        if m == "xnor":  # the gradient flows through alpha too, as in XNOR-Net
            return mean_abs
        if m == "irnet":  # a power of two: the scale is a bit shift
            return torch.pow(2.0, torch.round(torch.log2(mean_abs))).detach()
        return mean_abs.detach()  # reactnet, dirnet

    def scale_and_signs(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(alpha [out], +-1 signs shaped as the weight), each with the method's gradient to the
        latent full-precision weight. Layers compute conv(x_b, signs) * alpha: the conv of +-1
        values is an exact integer in float32, so the result matches the XNOR/popcount kernels."""
        w, m = self.weight, self.method
        if m in ("bnn", "xnor"):  # the clipped STE; XNOR's alpha keeps its gradient
            return self._alpha(w), SignSTE.apply(w)
        if m == "reactnet":
            alpha = self._alpha(w)
            return alpha, SignClipScaled.apply(w, self._view(1 / alpha.clamp_min(1e-12)))
        # irnet (EDE) / dirnet (DTE): standardised weights have unit std per channel, so the
        # distribution-sensitive width of DTE is 1 here.
        ws = self.standardized_weight()
        k, t = self.ede.tolist()
        one = torch.ones((), dtype=ws.dtype, device=ws.device)
        return self._alpha(ws), SignTanh.apply(ws, k, t, one)

    def binary_weight(self) -> torch.Tensor:
        """The binarized weight: exactly +-alpha per output channel, with the method's gradient
        to the latent full-precision weight."""
        alpha, signs = self.scale_and_signs()
        return self._view(alpha) * signs

    def weight_signs(self) -> torch.Tensor:
        """+-1 signs of the binarized weight (for bit packing)."""
        with torch.no_grad():
            return sign(self.standardized_weight() if self.method in ("irnet", "dirnet") else self.weight)

    # ---- activations

    def binarize_input(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's binarized input, exactly +-1, with the method's backward."""
        m = self.method
        if m in ("bnn", "xnor"):
            return SignSTE.apply(x)
        if m == "reactnet":
            shape = (1, -1) + (1,) * (x.dim() - 2)
            return SignApprox.apply(x + self.shift.view(shape))
        k, t = self.ede.tolist()
        if m == "irnet":
            return SignTanh.apply(x, k, t, torch.ones((), dtype=x.dtype, device=x.device))
        return SignTanh.apply(x, k, t, _channel_std(x))  # dirnet: distribution-sensitive

    # ---- the binary kernel path

    kernel_backend: str | None = None  # set by `use_kernels`

    def _packed_weight(self, backend_module):
        signs = self.weight_signs()
        return backend_module.pack_bits(signs.reshape(signs.shape[0], -1)), self.alpha().float()

    def _shifted(self, x: torch.Tensor) -> torch.Tensor:
        if self.method == "reactnet":
            return x + self.shift.view((1, -1) + (1,) * (x.dim() - 2))
        return x

    def _use_kernel(self) -> bool:
        # the kernels compute no gradient: with autograd on (training, attacks) the fake path
        # runs, which gives the same numbers
        return self.kernel_backend is not None and not torch.is_grad_enabled()

    def set_progress(self, progress: float, t_min: float = 0.1, t_max: float = 10.0) -> None:
        self.ede.copy_(torch.tensor(ede_schedule(progress, t_min, t_max)))

    @torch.no_grad()
    def after_step(self) -> None:
        """BNN keeps its latent weights in [-1, 1] (Courbariaux et al.)."""
        if self.method == "bnn":
            self.weight.clamp_(-1, 1)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, method={self.method}"


class BinaryConv2d(BinaryMixin, nn.Conv2d):
    """nn.Conv2d with binarized weights and inputs. Keeps `weight` and `bias` names, so the
    state dict of the full-precision conv loads into it. `same_pad`: TF 'SAME' padding (timm's
    Conv2dSame)."""

    def __init__(self, *args, method: str, same_pad: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.same_pad = same_pad
        self._init_binary(method)

    @classmethod
    def from_float(cls, conv: nn.Conv2d, method: str) -> "BinaryConv2d":
        from timm.layers import Conv2dSame

        if conv.padding_mode != "zeros":
            raise ValueError(f"binarized convs support zero padding only, not {conv.padding_mode!r}")
        new = cls(
            conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding,
            conv.dilation, conv.groups, conv.bias is not None, method=method,
            same_pad=isinstance(conv, Conv2dSame), device=conv.weight.device, dtype=conv.weight.dtype,
        )
        with torch.no_grad():
            new.weight.copy_(conv.weight)
            if conv.bias is not None:
                new.bias.copy_(conv.bias)
        new.train(conv.training)
        return new

    def kernel_forward(self, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """The same output from robustart.kernels.binary_conv2d: bit-packed signs, XNOR and
        popcount, then alpha per output channel and the bias."""
        from robustart import kernels as K

        if self.same_pad:
            raise ValueError("the binary kernel path does not take TF 'same' padding (timm Conv2dSame)")
        w_bits, alpha = self._packed_weight(K)
        out = K.binary_conv2d(self._shifted(x), w_bits, tuple(self.weight.shape), 1.0, alpha, self.bias,
                              stride=self.stride, padding=self.padding, dilation=self.dilation,
                              groups=self.groups, backend=backend)
        return out.to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_kernel():
            return self.kernel_forward(x, self.kernel_backend)
        xb = self.binarize_input(x)
        alpha, signs = self.scale_and_signs()
        if self.same_pad:
            from timm.layers import conv2d_same

            y = conv2d_same(xb, signs, None, self.stride, (0, 0), self.dilation, self.groups)
        else:
            y = F.conv2d(xb, signs, None, self.stride, self.padding, self.dilation, self.groups)
        y = y * alpha.view(1, -1, 1, 1)
        return y if self.bias is None else y + self.bias.view(1, -1, 1, 1)


class BinaryLinear(BinaryMixin, nn.Linear):
    """nn.Linear with binarized weights and inputs (same parameter names as nn.Linear)."""

    def __init__(self, *args, method: str, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_binary(method)

    @classmethod
    def from_float(cls, lin: nn.Linear, method: str) -> "BinaryLinear":
        new = cls(lin.in_features, lin.out_features, lin.bias is not None, method=method,
                  device=lin.weight.device, dtype=lin.weight.dtype)
        with torch.no_grad():
            new.weight.copy_(lin.weight)
            if lin.bias is not None:
                new.bias.copy_(lin.bias)
        new.train(lin.training)
        return new

    def kernel_forward(self, x: torch.Tensor, backend: str = "auto") -> torch.Tensor:
        """The same output from robustart.kernels.binary_gemm (XNOR and popcount on bit-packed
        signs of inputs and weights, then alpha per output and the bias)."""
        from robustart import kernels as K

        w_bits, alpha = self._packed_weight(K)
        flat = self._shifted(x).reshape(-1, self.in_features)
        out = K.binary_gemm(K.pack_bits(flat), w_bits, self.in_features, 1.0, alpha, self.bias, backend=backend)
        return out.reshape(*x.shape[:-1], self.out_features).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._use_kernel():
            return self.kernel_forward(x, self.kernel_backend)
        alpha, signs = self.scale_and_signs()
        y = F.linear(self.binarize_input(x), signs) * alpha
        return y if self.bias is None else y + self.bias


class RPReLU(nn.Module):
    """ReActNet's RPReLU: PReLU(x - gamma) + zeta, with per-channel gamma, zeta and slope
    (init: gamma = zeta = 0, slope 0.25 as nn.PReLU). Channels on dim 1."""

    def __init__(self, channels: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(channels))
        self.zeta = nn.Parameter(torch.zeros(channels))
        self.prelu = nn.PReLU(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = (1, -1) + (1,) * (x.dim() - 2)
        return self.prelu(x - self.gamma.view(shape)) + self.zeta.view(shape)


# --------------------------------------------------------------------------- model surgery


def _classifier(net: nn.Module) -> nn.Module | None:
    for m in net.modules():
        if hasattr(m, "get_classifier"):
            c = m.get_classifier()
            if isinstance(c, (nn.Linear, nn.Conv2d)):
                return c
    return None


def binary_layers(net: nn.Module) -> list[BinaryMixin]:
    return [m for m in net.modules() if isinstance(m, BinaryMixin)]


def set_progress(net: nn.Module, progress: float, t_min: float = 0.1, t_max: float = 10.0) -> None:
    """Move every EDE/DTE estimator of `net` to training progress in [0, 1]."""
    for m in binary_layers(net):
        m.set_progress(progress, t_min, t_max)


def use_kernels(net: nn.Module, backend: str | None = "auto") -> nn.Module:
    """Run the binarized layers of `net` on robustart.kernels (backend "auto", "triton" or
    "torch") whenever autograd is off; None switches back to the fake-binarized forward."""
    if backend is not None and backend not in ("auto", "triton", "torch"):
        raise ValueError(f"backend must be 'auto', 'triton', 'torch' or None, got {backend!r}")
    for m in binary_layers(net):
        m.kernel_backend = backend
    return net


def binarize_model(
    net: nn.Module,
    method: str,
    *,
    keep_first_last: bool = True,
    binarize_depthwise: bool = False,
    replace_activations: bool = True,
) -> nn.Module:
    """Replace, in place, nn.Conv2d / nn.Linear of `net` by binarized layers of `method` (one of
    METHODS) and its activations by the method's (see the module doc). Returns `net`.

    keep_first_last: the first conv and the classifier (timm's `get_classifier()`, else the last
    conv/linear) stay full precision. binarize_depthwise: also binarize depthwise convs."""
    check_method(method)
    layers = [(n, m) for n, m in net.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    if not layers:
        raise ValueError(f"binarize_model: {type(net).__name__} has no nn.Conv2d or nn.Linear to binarize")
    if any(isinstance(m, BinaryMixin) for _, m in layers):
        raise ValueError("binarize_model: the network is binarized already")
    keep: set[int] = set()
    if keep_first_last:
        keep.add(id(layers[0][1]))
        last = _classifier(net)
        keep.add(id(last if last is not None else layers[-1][1]))

    swaps: list[tuple[str, nn.Module]] = []
    channels = None  # output channels of the latest conv/linear/norm: sizes RPReLU
    for name, m in net.named_modules():
        if isinstance(m, nn.Conv2d):
            channels = m.out_channels
            depthwise = m.groups > 1 and m.groups == m.in_channels
            if id(m) not in keep and (binarize_depthwise or not depthwise):
                swaps.append((name, BinaryConv2d.from_float(m, method)))
        elif isinstance(m, nn.Linear):
            channels = m.out_features
            if id(m) not in keep:
                swaps.append((name, BinaryLinear.from_float(m, method)))
        elif isinstance(m, (nn.BatchNorm2d, nn.BatchNorm1d)):
            channels = m.num_features
        elif replace_activations and isinstance(m, ACTIVATIONS):
            if method == "reactnet":
                if channels is None:
                    raise ValueError(f"binarize_model: cannot size RPReLU for {name!r} (no layer before it)")
                swaps.append((name, RPReLU(channels)))
            else:
                swaps.append((name, nn.Hardtanh()))
    for name, new in swaps:
        parent_name, _, child = name.rpartition(".")
        parent = net.get_submodule(parent_name) if parent_name else net
        setattr(parent, child, new)
    ref = next(net.parameters())
    return net.to(ref.device)


# --------------------------------------------------------------------------- the method registry


class BinarizationMethod:
    """A binarized form's method (`NAME@binary-<name>`): `binarize(net)` turns a full-precision
    network into the binarized one, in place, and returns it. A new method is one subclass (or
    instance) registered in `BINARIZATION_METHODS` (one line in robustart/plugins.py for a
    built-in one); the five built-in ones are `binarize_model`'s."""

    def __init__(self, name: str, help: str = ""):
        self.name = name
        self.help = help

    def binarize(self, net: nn.Module) -> nn.Module:
        return binarize_model(net, self.name)

    def __repr__(self) -> str:
        return f"BinarizationMethod({self.name!r})"


def _check_method(name, obj) -> None:
    if not callable(getattr(obj, "binarize", None)):
        raise TypeError(f"binarization method {name!r} needs a binarize(net) method, got {obj!r}")


BINARIZATION_METHODS = Registry("binarization method", "binarization_methods", error=ValueError,
                                check=_check_method,
                                message="unknown binarization method {name!r}.{hint} Methods: {names}.")

BNN = BinarizationMethod("bnn", "BNN: sign weights and activations, clipped straight-through estimator")
XNOR = BinarizationMethod("xnor", "XNOR-Net: sign weights scaled by mean |W| per channel")
IRNET = BinarizationMethod("irnet", "IR-Net: Libra-PB balanced weights, power-of-two scales, EDE gradients")
DIRNET = BinarizationMethod("dirnet", "DIR-Net style: balanced weights, distribution-sensitive tanh estimator")
REACTNET = BinarizationMethod("reactnet", "ReActNet: RSign and RPReLU, ApproxSign gradients")
