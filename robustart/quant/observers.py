"""Range observers: from calibration values to quantization parameters (scale, zero point).

  minmax      the observed range
  percentile  the central `percentile`% of values (clips rare outliers)
  mse         the clipping range (a fraction of min-max) that minimises the mean squared
              quantization error of the observed values (grid search, as in PPQ/BRECQ's init)

Weights: per output channel, symmetric, narrow range [-(2^(b-1)-1), 2^(b-1)-1] (int4 -> -7..7).
Activations: per tensor, asymmetric [0, 2^b-1] with an integer zero point, or symmetric like the
weights. Activation statistics are kept as exact min/max plus a fixed-size random subsample of
the values, so calibration memory does not grow with the calibration set.
"""

from __future__ import annotations

import torch

SAMPLE_SIZE = 1 << 18  # values kept per observed tensor for percentile / MSE
MSE_GRID = torch.linspace(0.02, 1.0, 50)  # clip fractions tried


def qrange(bits: int, symmetric: bool) -> tuple[int, int]:
    if symmetric:
        m = 2 ** (bits - 1) - 1
        return -m, m
    return 0, 2 ** bits - 1


def params_from_range(lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool):
    """(scale, zero_point) for ranges [lo, hi] (tensors of any shape); the range always holds 0,
    so zero padding and ReLU zeros are exact."""
    lo = torch.minimum(lo.float(), torch.zeros_like(lo, dtype=torch.float32))
    hi = torch.maximum(hi.float(), torch.zeros_like(hi, dtype=torch.float32))
    qmin, qmax = qrange(bits, symmetric)
    if symmetric:
        scale = torch.maximum(-lo, hi) / qmax
        zp = torch.zeros_like(scale, dtype=torch.int32)
    else:
        scale = (hi - lo) / (qmax - qmin)
        zp = None
    scale = torch.clamp(scale, min=1e-8)
    if zp is None:
        zp = torch.clamp(torch.round(qmin - lo / scale), qmin, qmax).to(torch.int32)
    return scale, zp


def quantize(x: torch.Tensor, scale, zp, qmin: int, qmax: int) -> torch.Tensor:
    """Integer codes (as float) of x; scale/zp broadcast against x."""
    return torch.clamp(torch.round(x / scale) + zp, qmin, qmax)


def fake(x, scale, zp, qmin, qmax):
    return (quantize(x, scale, zp, qmin, qmax) - zp) * scale


def _mse_search(v: torch.Tensor, lo: torch.Tensor, hi: torch.Tensor, bits: int, symmetric: bool):
    """v: [C, S] values per channel; lo/hi: [C]. Best clip fraction per channel."""
    qmin, qmax = qrange(bits, symmetric)
    best_err = torch.full_like(lo, float("inf"))
    best_lo, best_hi = lo.clone(), hi.clone()
    for a in MSE_GRID.tolist():
        s, z = params_from_range(lo * a, hi * a, bits, symmetric)
        err = (fake(v, s[:, None], z[:, None], qmin, qmax) - v).pow(2).mean(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_lo = torch.where(better, lo * a, best_lo)
        best_hi = torch.where(better, hi * a, best_hi)
    return best_lo, best_hi


def weight_params(w: torch.Tensor, bits: int, observer: str = "minmax", percentile: float = 99.99):
    """Per-output-channel symmetric (scale [O], zero_point [O]) of a weight [O, ...]."""
    v = w.detach().float().flatten(1)
    hi = v.abs().amax(1)
    if observer == "percentile" and v.shape[1] > 1:
        hi = torch.quantile(v.abs(), percentile / 100.0, dim=1)
    elif observer == "mse":
        _, hi = _mse_search(v, -hi, hi, bits, True)
    return params_from_range(-hi, hi, bits, True)


class RangeStats:
    """Running min/max and a random subsample of an activation tensor's values."""

    def __init__(self, seed: int = 0):
        self.lo = None
        self.hi = None
        self.sample = None
        self.seen = 0
        self.gen = torch.Generator().manual_seed(seed)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().float().flatten()
        lo, hi = x.min().cpu(), x.max().cpu()
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        # reservoir-like: keep up to SAMPLE_SIZE values, drawn uniformly from each batch in
        # proportion to its size
        k = min(x.numel(), SAMPLE_SIZE)
        idx = torch.randint(0, x.numel(), (k,), generator=self.gen)
        pick = x.cpu()[idx]
        self.seen += x.numel()
        self.sample = pick if self.sample is None else torch.cat([self.sample, pick])
        if self.sample.numel() > 4 * SAMPLE_SIZE:
            keep = torch.randperm(self.sample.numel(), generator=self.gen)[:SAMPLE_SIZE]
            self.sample = self.sample[keep]

    def params(self, bits: int, symmetric: bool, observer: str = "minmax", percentile: float = 99.99):
        if self.lo is None:
            raise RuntimeError("no calibration values were observed for this tensor")
        lo, hi = self.lo.clone(), self.hi.clone()
        if observer == "percentile":
            q = percentile / 100.0
            s = self.sample
            if symmetric:
                hi = torch.quantile(s.abs(), q)
                lo = -hi
            else:
                lo = torch.quantile(s, 1 - q) if lo < 0 else lo
                hi = torch.quantile(s, q)
        elif observer == "mse":
            if symmetric:
                m = torch.maximum(-lo, hi)
                lo, hi = -m, m
            blo, bhi = _mse_search(self.sample[None], lo.view(1), hi.view(1), bits, symmetric)
            lo, hi = blo[0], bhi[0]
        elif symmetric:
            m = torch.maximum(-lo, hi)
            lo, hi = -m, m
        return params_from_range(lo, hi, bits, symmetric)
