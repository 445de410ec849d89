"""Operations of the ABanditNAS search space (Chen et al., "Anti-Bandit Neural Architecture
Search for Model Defense", ECCV 2020, Sec. 3.1).

The paper's search space has K = 9 operations per edge: 3x3 max and average pooling, skip
(identity), 3x3 and 5x5 convolutions with rate (dilation) 2, 3x3 and 5x5 depth-wise separable
convolutions, a 3x3 Gabor filter and a denoising block. The authors' public evaluation code
(github.com/RunwenHu/ABanditNAS, mirrored as anonymous-paper/anonymous1789) names them
`max_pool_3x3, avg_pool_3x3, skip_connect, conv_3x3, conv_5x5, sep_conv_3x3, sep_conv_5x5,
gab_filt_3x3, dtp_blok_3x3`; its published genotypes also use `dil_conv_3x3/5x5` (DARTS' dilated
separable convolutions) and `sep_conv_m_3x3/5x5` (DARTS-style separable convolutions), so those
are built here too. Each operation keeps the channel count; `stride=2` halves the resolution.
The structure of each block follows the paper's description and the layer order of the public
code (ReLU - conv - BN); the code here is our own.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

# The paper's nine operations (the search space), in the order of its Sec. 3.1.
SEARCH_SPACE = (
    "max_pool_3x3",
    "avg_pool_3x3",
    "skip_connect",
    "conv_3x3",
    "conv_5x5",
    "sep_conv_3x3",
    "sep_conv_5x5",
    "gab_filt_3x3",
    "dtp_blok_3x3",
)


class ReLUConvBN(nn.Sequential):
    """ReLU - conv (optionally dilated / grouped) - BN."""

    def __init__(self, c_in, c_out, k, stride=1, padding=0, dilation=1, groups=1, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_out, k, stride, padding, dilation=dilation, groups=groups, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class PoolBN(nn.Sequential):
    def __init__(self, kind: str, c, stride, affine=True):
        pool = nn.MaxPool2d(3, stride, 1) if kind == "max" else nn.AvgPool2d(3, stride, 1, count_include_pad=False)
        super().__init__(pool, nn.BatchNorm2d(c, affine=affine))


class DilatedSepConv(nn.Sequential):
    """DARTS' `dil_conv`: ReLU - dilated depth-wise conv - pointwise conv - BN."""

    def __init__(self, c_in, c_out, k, stride, padding, dilation, affine=True):
        super().__init__(
            nn.ReLU(inplace=False),
            nn.Conv2d(c_in, c_in, k, stride, padding, dilation=dilation, groups=c_in, bias=False),
            nn.Conv2d(c_in, c_out, 1, bias=False),
            nn.BatchNorm2d(c_out, affine=affine),
        )


class SepConv(nn.Sequential):
    """The public code's `sep_conv`: a depth-wise k x k ReLU-conv-BN, then a full k x k one."""

    def __init__(self, c, k, stride, affine=True):
        p = k // 2
        super().__init__(
            ReLUConvBN(c, c, k, stride, p, groups=c, affine=affine),
            ReLUConvBN(c, c, k, 1, p, affine=affine),
        )


class SepConvM(nn.Sequential):
    """`sep_conv_m`: DARTS' separable convolution, two (depth-wise, pointwise, BN) blocks."""

    def __init__(self, c, k, stride, affine=True):
        p = k // 2
        super().__init__(
            DilatedSepConv(c, c, k, stride, p, 1, affine=affine),
            DilatedSepConv(c, c, k, 1, p, 1, affine=affine),
        )


class FactorizedReduce(nn.Module):
    """Skip connection at stride 2: two offset 1x1 stride-2 convolutions, concatenated."""

    def __init__(self, c_in, c_out, affine=True):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv1 = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv2 = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x):
        x = self.relu(x)
        # Pad odd sizes so both branches agree (28 -> 14 -> 7 -> 4 on Fashion-MNIST).
        if x.shape[-1] % 2 or x.shape[-2] % 2:
            x = F.pad(x, (0, x.shape[-1] % 2, 0, x.shape[-2] % 2))
        return self.bn(torch.cat([self.conv1(x), self.conv2(x[:, :, 1:, 1:])], dim=1))


class GaborFilter(nn.Module):
    """A depth-wise k x k Gabor filter whose orientation theta, phase psi, scale sigma, aspect
    ratio gamma and wavelength lambda are learned per channel:

        g(x, y) = exp(-(x'^2 + gamma^2 y'^2) / (2 sigma^2)) cos(2 pi x' / lambda + psi),
        x' = x cos theta + y sin theta,  y' = -x sin theta + y cos theta.

    Raw parameters are squashed into valid ranges (sigma and lambda positive), as in the public
    code. Ours is depth-wise (each channel its own Gabor kernel); the public code applies each
    output channel's kernel to the sum of all input channels."""

    def __init__(self, c: int, k: int = 3):
        super().__init__()
        self.c, self.k = c, k
        self.theta = nn.Parameter(torch.rand(c) * math.pi)  # orientation
        self.psi = nn.Parameter(torch.randn(c) * 0.02)  # phase
        self.sigma = nn.Parameter(torch.zeros(c))  # scale, via 0.5 + 1.5 * sigmoid
        self.gamma = nn.Parameter(torch.zeros(c))  # aspect ratio, via exp
        self.lambd = nn.Parameter(torch.zeros(c))  # wavelength, via 2 + 4 * sigmoid
        r = torch.arange(k, dtype=torch.float32) - (k - 1) / 2
        self.register_buffer("gy", r.view(1, k, 1).expand(1, k, k).clone(), persistent=False)
        self.register_buffer("gx", r.view(1, 1, k).expand(1, k, k).clone(), persistent=False)

    def kernel(self) -> torch.Tensor:
        th = self.theta.view(-1, 1, 1)
        sigma = (0.5 + 1.5 * torch.sigmoid(self.sigma)).view(-1, 1, 1)
        gamma = torch.exp(self.gamma).view(-1, 1, 1)
        lam = (2.0 + 4.0 * torch.sigmoid(self.lambd)).view(-1, 1, 1)
        xr = self.gx * torch.cos(th) + self.gy * torch.sin(th)
        yr = -self.gx * torch.sin(th) + self.gy * torch.cos(th)
        g = torch.exp(-(xr**2 + (gamma * yr) ** 2) / (2 * sigma**2)) * torch.cos(
            2 * math.pi * xr / lam + self.psi.view(-1, 1, 1)
        )
        return g.unsqueeze(1)  # (C, 1, k, k): depth-wise

    def forward(self, x):
        return F.conv2d(x, self.kernel(), padding=self.k // 2, groups=self.c)


class DotProductDenoise(nn.Module):
    """Non-local means with a dot-product affinity (Xie et al., Feature Denoising, CVPR 2019),
    the public code's `dtp_blok`: y_p = (1 / C(x)) sum_q <x_p, x_q> x_q with C(x) = C*H*W.
    Computed as X (X^T X) when channels are fewer than positions (the same value, cheaper)."""

    def forward(self, x):
        n, c, h, w = x.shape
        v = x.reshape(n, c, h * w)  # (N, C, HW)
        if c < h * w:
            y = torch.bmm(torch.bmm(v, v.transpose(1, 2)), v)  # (C x C) then (C x HW)
        else:
            y = torch.bmm(v, torch.bmm(v.transpose(1, 2), v))  # (HW x HW)
        return (y / (c * h * w)).reshape(n, c, h, w)


class DenoisingBlock(nn.Module):
    """Residual denoising block: x + BN(filter(x)), BN's scale and shift start at zero so the
    block starts as the identity (Xie et al.); stride 2 resizes the sum bilinearly. The paper's
    figure of the generic block also wraps the filter with a 1x1 convolution; the public code's
    `gab_filt` / `dtp_blok` blocks, with which the published genotypes were evaluated, have none,
    and neither does this one."""

    def __init__(self, c: int, stride: int, filt: nn.Module, affine=True):
        super().__init__()
        self.stride = stride
        self.filter = filt
        self.bn = nn.BatchNorm2d(c, affine=affine)
        if affine:
            nn.init.zeros_(self.bn.weight)
            nn.init.zeros_(self.bn.bias)

    def forward(self, x):
        out = x + self.bn(self.filter(x))
        if self.stride != 1:
            h, w = (x.shape[-2] + 1) // 2, (x.shape[-1] + 1) // 2
            out = F.interpolate(out, size=(h, w), mode="bilinear", align_corners=True)
        return out


OPS = {
    "max_pool_3x3": lambda c, s, a: PoolBN("max", c, s, a),
    "avg_pool_3x3": lambda c, s, a: PoolBN("avg", c, s, a),
    "skip_connect": lambda c, s, a: nn.Identity() if s == 1 else FactorizedReduce(c, c, a),
    # "3x3 / 5x5 convolution with rate 2" (receptive fields 5x5 / 9x9)
    "conv_3x3": lambda c, s, a: ReLUConvBN(c, c, 3, s, 2, dilation=2, affine=a),
    "conv_5x5": lambda c, s, a: ReLUConvBN(c, c, 5, s, 4, dilation=2, affine=a),
    "sep_conv_3x3": lambda c, s, a: SepConv(c, 3, s, a),
    "sep_conv_5x5": lambda c, s, a: SepConv(c, 5, s, a),
    "sep_conv_m_3x3": lambda c, s, a: SepConvM(c, 3, s, a),
    "sep_conv_m_5x5": lambda c, s, a: SepConvM(c, 5, s, a),
    "dil_conv_3x3": lambda c, s, a: DilatedSepConv(c, c, 3, s, 2, 2, a),
    "dil_conv_5x5": lambda c, s, a: DilatedSepConv(c, c, 5, s, 4, 2, a),
    "gab_filt_3x3": lambda c, s, a: DenoisingBlock(c, s, GaborFilter(c, 3), a),
    "dtp_blok_3x3": lambda c, s, a: DenoisingBlock(c, s, DotProductDenoise(), a),
}


def make_op(name: str, c: int, stride: int, affine: bool = True) -> nn.Module:
    try:
        return OPS[name](c, stride, affine)
    except KeyError:
        raise ValueError(f"unknown operation {name!r}; known: {', '.join(OPS)}") from None
