"""Batched image operations the torch corruptions are built from.

Images are float tensors (N, C, H, W). Border modes follow the libraries the reference uses:
  "nearest"   edge value repeated          (scipy/skimage 'nearest', OpenCV REPLICATE)
  "symmetric" half-sample mirror  dcba|abcd (scipy 'reflect')
  "reflect"   whole-sample mirror  dcb|abcd (OpenCV's default REFLECT_101, torch 'reflect')
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def border_index(n: int, lo: int, hi: int, mode: str, device) -> torch.Tensor:
    """Source indices for positions -lo .. n-1+hi of a length-n axis under a border mode."""
    i = torch.arange(-lo, n + hi, device=device)
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        period = 2 * n
        i = torch.remainder(i, period)
        return torch.where(i >= n, period - 1 - i, i)
    if mode == "reflect":
        if n == 1:
            return torch.zeros_like(i)
        period = 2 * n - 2
        i = torch.remainder(i, period)
        return torch.where(i >= n, period - i, i)
    raise ValueError(f"unknown border mode {mode!r}")


def pad2d(x: torch.Tensor, py: int, px: int, mode: str) -> torch.Tensor:
    """Pad the last two dims by (py, px) on each side under a border mode."""
    if py:
        x = x.index_select(-2, border_index(x.shape[-2], py, py, mode, x.device))
    if px:
        x = x.index_select(-1, border_index(x.shape[-1], px, px, mode, x.device))
    return x


def gaussian_kernel1d(sigma: float, truncate: float = 4.0, dtype=torch.float32, device="cpu") -> torch.Tensor:
    """scipy.ndimage's 1-D Gaussian: radius int(truncate * sigma + 0.5), normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    t = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.exp(-0.5 * (t / float(sigma)) ** 2)
    return (k / k.sum()).to(dtype=dtype, device=device)


def conv_separable(x: torch.Tensor, ky: torch.Tensor, kx: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel of (N, C, H, W) with ky along H and kx along W."""
    n, c, h, w = x.shape
    ry, rx = ky.numel() // 2, kx.numel() // 2
    y = x.reshape(n * c, 1, h, w)
    y = F.conv2d(pad2d(y, ry, 0, mode), ky.to(y).view(1, 1, -1, 1))
    y = F.conv2d(pad2d(y, 0, rx, mode), kx.to(y).view(1, 1, 1, -1))
    return y.view(n, c, h, w)


def gaussian_blur(x: torch.Tensor, sigma, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian / scipy gaussian_filter over H and W of (N, C, H, W)."""
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    ky = gaussian_kernel1d(sy, truncate, torch.float64)
    kx = gaussian_kernel1d(sx, truncate, torch.float64)
    return conv_separable(x, ky, kx, mode)


def conv2d_same(x: torch.Tensor, k: torch.Tensor, mode: str) -> torch.Tensor:
    """Correlate every channel with one odd-sized 2-D kernel (OpenCV filter2D semantics)."""
    n, c, h, w = x.shape
    ry, rx = k.shape[0] // 2, k.shape[1] // 2
    y = pad2d(x.reshape(n * c, 1, h, w), ry, rx, mode)
    return F.conv2d(y, k.to(y)[None, None]).view(n, c, h, w)


def zoom_matrix(n: int, zoom: float, dtype=torch.float64) -> torch.Tensor:
    """(out, n) linear-interpolation matrix of the reference's clipped zoom along one axis: take
    the central ceil(n / zoom) samples and resize them to round(ceil(n / zoom) * zoom) samples,
    corners aligned (scipy.ndimage.zoom, order 1)."""
    ch = int(math.ceil(n / float(zoom)))
    top = (n - ch) // 2
    out = int(round(ch * zoom))
    m = torch.zeros(out, n, dtype=torch.float64)
    if out == 1 or ch == 1:
        m[:, top] = 1.0
        return m.to(dtype)
    pos = torch.arange(out, dtype=torch.float64) * ((ch - 1) / (out - 1))
    i0 = pos.floor().long().clamp(max=ch - 1)
    frac = pos - i0
    i1 = (i0 + 1).clamp(max=ch - 1)
    rows = torch.arange(out)
    m.index_put_((rows, top + i0), 1.0 - frac, accumulate=True)
    m.index_put_((rows, top + i1), frac, accumulate=True)
    return m.to(dtype)


def motion_offsets(radius: int, angle_deg: float) -> list[tuple[int, int]]:
    """(dy, dx) of each tap of the reference's motion blur, computed as it does (float64)."""
    width = 2 * radius + 1
    a = np.deg2rad(angle_deg)
    p0, p1 = width * np.sin(a), width * np.cos(a)
    hyp = math.hypot(p0, p1)
    return [(-math.ceil((i * p0) / hyp - 0.5), -math.ceil((i * p1) / hyp - 0.5)) for i in range(width)]


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angles: list[float], gather: bool | None = None) -> torch.Tensor:
    """The reference's motion blur: a one-sided Gaussian-weighted sum of copies of the image
    shifted along a line at `angles[n]` degrees, edges repeated. x: (N, C, H, W). On CUDA (or
    with gather=True) each tap is one gather over the batch (few large kernels); on the CPU,
    slices of an edge-padded copy."""
    n, c, h, w = x.shape
    width = 2 * radius + 1
    k = np.exp(-(np.arange(width) ** 2) / (2 * sigma**2)) / (np.sqrt(2 * np.pi) * sigma)
    k = k / k.sum()
    offs = [motion_offsets(radius, a) for a in angles]  # (N, width) of (dy, dx)
    # the reference stops summing once the motion leaves the image
    taps = [next((i for i, (dy, dx) in enumerate(o) if abs(dy) >= h or abs(dx) >= w), width) for o in offs]
    if x.is_cuda if gather is None else gather:
        return _motion_gather(x, k, offs, taps)
    # CPU: slices of an edge-padded copy, no index tensors
    p = max(max(abs(dy), abs(dx)) for o, t in zip(offs, taps) for dy, dx in o[:t]) if n else 0
    xp = pad2d(x, p, p, "nearest")
    out = torch.zeros_like(x)
    for j in range(n):
        for i, (dy, dx) in enumerate(offs[j][: taps[j]]):
            out[j].add_(xp[j, :, p - dy : p - dy + h, p - dx : p - dx + w], alpha=float(k[i]))
    return out


def _motion_gather(x, k, offs, taps):
    n, c, h, w = x.shape
    width = len(k)
    rows, cols = torch.arange(h, device=x.device), torch.arange(w, device=x.device)
    o = torch.tensor(offs, dtype=torch.long, device=x.device)
    kw = torch.tensor([[k[i] if i < t else 0.0 for i in range(width)] for t in taps], dtype=x.dtype, device=x.device)
    flat = x.permute(0, 2, 3, 1).reshape(n * h * w, c)
    base = (torch.arange(n, device=x.device) * (h * w)).view(n, 1, 1)
    out = torch.zeros_like(flat)
    for i in range(width):
        r = (rows[None, :] - o[:, i, 0:1]).clamp(0, h - 1)
        q = (cols[None, :] - o[:, i, 1:2]).clamp(0, w - 1)
        idx = (base + r[:, :, None] * w + q[:, None, :]).reshape(-1)
        out += flat.index_select(0, idx) * kw[:, i].repeat_interleave(h * w)[:, None]
    return out.view(n, h, w, c).permute(0, 3, 1, 2)


def bilinear_sample(x: torch.Tensor, ys: torch.Tensor, xs: torch.Tensor, mode: str) -> torch.Tensor:
    """x (N, C, H, W) sampled at float pixel coordinates ys, xs (N, H', W'), linear
    interpolation, out-of-range neighbours mapped by a border mode (scipy map_coordinates,
    order 1)."""
    n, c, h, w = x.shape
    y0f, x0f = ys.floor(), xs.floor()
    wy, wx = (ys - y0f).to(x.dtype), (xs - x0f).to(x.dtype)
    y0, x0 = y0f.long(), x0f.long()

    ya, yb = _fold(y0, h, mode), _fold(y0 + 1, h, mode)
    xa, xb = _fold(x0, w, mode), _fold(x0 + 1, w, mode)
    flat = x.reshape(n, c, h * w)
    hw = ys.shape[1] * ys.shape[2]

    def g(yi, xi):
        idx = (yi * w + xi).view(n, 1, hw).expand(n, c, hw)
        return flat.gather(2, idx).view(n, c, *ys.shape[1:])

    wy, wx = wy[:, None], wx[:, None]
    return (g(ya, xa) * (1 - wy) * (1 - wx) + g(ya, xb) * (1 - wy) * wx
            + g(yb, xa) * wy * (1 - wx) + g(yb, xb) * wy * wx)


def _fold(i: torch.Tensor, n: int, mode: str) -> torch.Tensor:
    if mode == "nearest":
        return i.clamp(0, n - 1)
    if mode == "symmetric":
        i = torch.remainder(i, 2 * n)
        return torch.where(i >= n, 2 * n - 1 - i, i)
    if mode == "reflect":
        p = 2 * n - 2
        i = torch.remainder(i, p)
        return torch.where(i >= n, p - i, i)
    raise ValueError(mode)


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """skimage.color.rgb2hsv on (N, 3, H, W) in [0, 1]: hue in [0, 1)."""
    r, g, b = x[:, 0], x[:, 1], x[:, 2]
    v = x.amax(1)
    delta = v - x.amin(1)
    safe_v = torch.where(v == 0, torch.ones_like(v), v)
    s = torch.where(v == 0, torch.zeros_like(v), delta / safe_v)
    safe_d = torch.where(delta == 0, torch.ones_like(delta), delta)
    # the reference assigns red, then green, then blue: the last channel equal to the max wins
    h = (g - b) / safe_d
    h = torch.where(g == v, 2.0 + (b - r) / safe_d, h)
    h = torch.where(b == v, 4.0 + (r - g) / safe_d, h)
    h = torch.remainder(h / 6.0, 1.0)
    h = torch.where(delta == 0, torch.zeros_like(h), h)
    return h, s, v


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb, back to (N, 3, H, W)."""
    hi = torch.floor(h * 6)
    f = h * 6 - hi
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    hi = torch.remainder(hi, 6).long()
    choices = torch.stack([
        torch.stack([v, t, p]), torch.stack([q, v, p]), torch.stack([p, v, t]),
        torch.stack([p, q, v]), torch.stack([t, p, v]), torch.stack([v, p, q]),
    ])  # (6, 3, N, H, W)
    out = choices.gather(0, hi[None, None].expand(1, 3, *hi.shape))[0]
    return out.transpose(0, 1)


def box_resize_matrix_pil(n_in: int, n_out: int) -> torch.Tensor:
    """(n_out, n_in) integer weights of Pillow's BOX resampling along one axis, in Pillow's
    22-bit fixed point (so the result can be rounded exactly as Pillow does)."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    filterscale = max(scale, 1.0)
    m = np.zeros((n_out, n_in), dtype=np.float64)
    for i in range(n_out):
        center = (i + 0.5) * scale
        xmin = max(int(center - support + 0.5), 0)
        xmax = min(int(center + support + 0.5), n_in)
        ks = []
        for j in range(xmin, xmax):
            t = (j - center + 0.5) / filterscale
            ks.append(1.0 if -0.5 < t <= 0.5 else 0.0)
        ks = np.array(ks)
        total = ks.sum()
        if total:
            ks = ks / total
        m[i, xmin:xmax] = np.floor(0.5 + ks * (1 << 22))
    return torch.from_numpy(m)


def nearest_index_pil(n_in: int, n_out: int) -> torch.Tensor:
    """Source index of each output sample of Pillow's NEAREST resize along one axis."""
    return torch.tensor([min(int((i + 0.5) * n_in / n_out), n_in - 1) for i in range(n_out)])
