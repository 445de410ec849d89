"""Batched image operations the torch corruptions are built from.

Images are float tensors (N, C, H, W). Border modes follow the libraries the reference uses:
  "nearest"   edge value repeated          (scipy/skimage 'nearest', OpenCV REPLICATE)
  "symmetric" half-sample mirror  dcba|abcd (scipy 'reflect')
  "reflect"   whole-sample mirror  dcb|abcd (OpenCV's default REFLECT_101, torch 'reflect')
"""

from __future__ import annotations

import math
from functools import lru_cache

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


@lru_cache(maxsize=64)
def blur_matrix(n: int, sigma: float, truncate: float, mode: str, dtype=torch.float32, device_str: str = "cpu") -> torch.Tensor:
    """(n, n) matrix M of scipy's 1-D Gaussian filter along an axis of length n, the border mode
    folded in: (M @ v)[i] = sum_j k[j] v[border(i + j - radius)]. Built in float64."""
    k = gaussian_kernel1d(sigma, truncate, torch.float64)
    r = k.numel() // 2
    src = border_index(n, r, r, mode, "cpu")
    m = torch.zeros(n, n, dtype=torch.float64)
    rows = torch.arange(n)
    for j in range(2 * r + 1):
        m.index_put_((rows, src[j:j + n]), k[j].expand(n), accumulate=True)
    return m.to(dtype=dtype, device=device_str)


def gaussian_blur(x: torch.Tensor, sigma, mode: str = "nearest", truncate: float = 4.0) -> torch.Tensor:
    """skimage.filters.gaussian / scipy gaussian_filter over the last two dims (H, W) of x.

    Two matrix products with the filter's (H, H) and (W, W) matrices, borders folded in: they run
    at the BLAS's full rate on CPU and GPU alike and need no padded copies, where torch's
    convolution of single-channel planes is slow on the CPU. On the CPU the products skip the
    band's zeros (see band_matmul)."""
    sy, sx = (sigma, sigma) if np.isscalar(sigma) else sigma
    h, w = x.shape[-2:]
    dev = str(x.device)
    if x.is_cuda:
        mh = blur_matrix(h, float(sy), float(truncate), mode, x.dtype, dev)
        mw = blur_matrix(w, float(sx), float(truncate), mode, x.dtype, dev)
        return torch.matmul(mh, torch.matmul(x, mw.T))
    bh = blur_bands(h, float(sy), float(truncate), mode, x.dtype, dev)
    bw = blur_bands(w, float(sx), float(truncate), mode, x.dtype, dev)
    return band_matmul(bh, band_matmul(bw, x, -1), -2)


_BAND_BLOCK = 32


@lru_cache(maxsize=64)
def blur_bands(n: int, sigma: float, truncate: float, mode: str, dtype=torch.float32, device_str: str = "cpu") -> list:
    """blur_matrix in row blocks, each with the column range its nonzeros span (see band_matmul)."""
    m = blur_matrix(n, sigma, truncate, mode, dtype, device_str)
    out = []
    for s in range(0, m.shape[0], _BAND_BLOCK):
        e = min(s + _BAND_BLOCK, m.shape[0])
        cols = (m[s:e] != 0).any(0).nonzero()
        lo, hi = int(cols[0]), int(cols[-1]) + 1
        blk = m[s:e, lo:hi]
        out.append((s, e, lo, hi, blk.contiguous(), blk.T.contiguous()))
    return out


def band_matmul(bands: list, x: torch.Tensor, dim: int) -> torch.Tensor:
    """A banded matrix m (given as blur_bands) applied along dim -1 (x @ m.T) or -2 (m @ x) of
    x: 32 outputs at a time from the inputs their band spans, so a narrow filter costs a
    fraction of the dense product (the terms skipped are exact zeros)."""
    shape = x.shape
    n = bands[-1][1]
    if dim == -1:
        x2 = x.reshape(-1, shape[-1])
        out = torch.empty(x2.shape[0], n, dtype=x.dtype, device=x.device)
        for s, e, lo, hi, _, blk_t in bands:
            out[:, s:e] = x2[:, lo:hi] @ blk_t
        return out.view(*shape[:-1], n)
    x3 = x.reshape(-1, *shape[-2:])
    out = torch.empty(x3.shape[0], n, shape[-1], dtype=x.dtype, device=x.device)
    for s, e, lo, hi, blk, _ in bands:
        out[:, s:e] = torch.matmul(blk, x3[:, lo:hi])
    return out.view(*shape[:-2], n, shape[-1])


#: torch's names of the border modes (torch's "reflect" is OpenCV's REFLECT_101)
_PAD_MODE = {"nearest": "replicate", "reflect": "reflect"}


def _fast_len(n: int) -> int:
    """The smallest m >= n whose only prime factors are 2, 3 and 5 (fast FFT sizes)."""
    m = n
    while True:
        r = m
        for p in (2, 3, 5):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 1


@lru_cache(maxsize=32)
def _kernel_rfft(kernel: bytes, kh: int, kw: int, size: tuple, device_str: str) -> torch.Tensor:
    k = torch.from_numpy(np.frombuffer(kernel, dtype=np.float32).reshape(kh, kw).copy())
    pad = torch.zeros(size, dtype=torch.float32)
    pad[:kh, :kw] = k
    return torch.fft.rfft2(pad).conj().to(device_str)


def conv2d_fft(x: torch.Tensor, k: np.ndarray, mode: str) -> torch.Tensor:
    """Correlate every channel of (N, C, H, W) with one odd-sized 2-D kernel (OpenCV filter2D
    semantics) by FFT, as a circular correlation of the border-padded image: for kernels too large
    to apply directly (torch's convolution of single-channel planes is slow on the CPU)."""
    h, w = x.shape[-2:]
    ry, rx = k.shape[0] // 2, k.shape[1] // 2
    size = (_fast_len(h + 2 * ry), _fast_len(w + 2 * rx))
    kf = _kernel_rfft(np.ascontiguousarray(k, dtype=np.float32).tobytes(), k.shape[0], k.shape[1], size, str(x.device))
    xf = torch.fft.rfft2(F.pad(x, (rx, rx, ry, ry), mode=_PAD_MODE[mode]), s=size)
    return torch.fft.irfft2(xf.mul_(kf), s=size)[..., :h, :w]


def conv3x3(x: torch.Tensor, k, mode: str) -> torch.Tensor:
    """Correlate the last two dims of float x with a 3x3 kernel (nested tuples of numbers),
    border "nearest" or "reflect", by shifted slices: far faster on the CPU than torch's
    convolution of single-channel planes."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1), mode=_PAD_MODE[mode])
    out = None
    for a in range(3):
        for b in range(3):
            if k[a][b]:
                s = xp[..., a:a + h, b:b + w]
                out = s * k[a][b] if out is None else out.add_(s, alpha=k[a][b])
    return out


def conv3_separable(x: torch.Tensor, ky, kx, mode: str) -> torch.Tensor:
    """conv3x3 with the kernel outer(ky, kx), one axis at a time."""
    h, w = x.shape[-2:]
    xp = F.pad(x, (1, 1, 1, 1), mode=_PAD_MODE[mode])
    r = None
    for b in range(3):
        if kx[b]:
            s = xp[..., b:b + w]
            r = s * kx[b] if r is None else r.add_(s, alpha=kx[b])
    out = None
    for a in range(3):
        if ky[a]:
            s = r[..., a:a + h, :]
            out = s * ky[a] if out is None else out.add_(s, alpha=ky[a])
    return out


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


def displace_symmetric(x: torch.Tensor, dy: torch.Tensor, dx: torch.Tensor) -> torch.Tensor:
    """x (N, C, H, W) sampled at (row + dy, column + dx), dy and dx (N, H, W), as scipy's
    map_coordinates(order=1, mode='reflect') samples, by grid_sample: with reflection padding and
    align_corners=False torch folds coordinates about -0.5 and size - 0.5 (the half-sample mirror)
    and clamps them into [0, size - 1], which gives the same values."""
    n, c, h, w = x.shape
    gx = (dx + torch.arange(w, device=x.device, dtype=dx.dtype)).add_(0.5).mul_(2.0 / w).sub_(1.0)
    gy = (dy + torch.arange(h, device=x.device, dtype=dy.dtype)[:, None]).add_(0.5).mul_(2.0 / h).sub_(1.0)
    grid = torch.stack((gx, gy), -1)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def rgb_to_hsv(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """skimage.color.rgb2hsv on (N, 3, H, W) in [0, 1]: hue in [0, 1). Every value is computed
    by the reference's own operations (same divisions, same additions), so in float64 the
    results are bit-identical; the hue's three cases are selected before one division."""
    r, g, b = x.unbind(1)
    v = torch.maximum(torch.maximum(r, g), b)
    delta = v - torch.minimum(torch.minimum(r, g), b)
    s = (delta / v).nan_to_num_(0.0)  # 0/0 where v == 0 (so delta == 0): 0, as the reference
    # the reference assigns red, then green, then blue: the last channel equal to the max wins
    bmax, gmax = b == v, g == v
    num = torch.where(bmax, r - g, torch.where(gmax, b - r, g - b))
    off = torch.where(bmax, 4.0, torch.where(gmax, 2.0, 0.0))
    h = num.div_(delta).add_(off).div_(6.0)  # in [-1/6, 5/6]
    h = torch.where(h < 0, h + 1.0, h)  # the reference's h % 1.0 (exactly so for |h| < 1)
    h = h.masked_fill_(delta == 0, 0.0)
    return h, s, v


def hsv_to_rgb(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """skimage.color.hsv2rgb, back to (N, 3, H, W), with the same operations (bit-identical in
    float64). In sector hi = floor(6 h) % 6 each channel takes v, p or the sector's middle value
    (t in even sectors, q in odd ones): two selections per channel."""
    h6 = h * 6
    hi = torch.floor(h6)
    f = h6.sub_(hi)
    p = v * (1 - s)
    q = v * (1 - f * s)
    t = v * (1 - (1 - f) * s)
    s0, s1, s2, s3, s4, s5, s6 = (hi == k for k in range(7))  # hi is 0..6; the reference takes hi % 6
    s0 |= s6
    mid = torch.where(s1 | s3 | s5, q, t)
    r = torch.where(s0 | s5, v, torch.where(s1 | s4, mid, p))
    g = torch.where(s1 | s2, v, torch.where(s0 | s3, mid, p))
    b = torch.where(s3 | s4, v, torch.where(s2 | s5, mid, p))
    return torch.stack((r, g, b), 1)


def apply_lut(x: torch.Tensor, lut: torch.Tensor) -> torch.Tensor:
    """Per-plane lookup tables: x uint8 (N, C, H, W), lut (N, C, 256) -> lut[n, c, x[n, c]]."""
    n, c = x.shape[:2]
    off = torch.arange(n * c, device=x.device).mul_(256).view(n, c, 1, 1)
    return lut.reshape(-1).take(x.to(torch.int64).add_(off))


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


def box_taps_pil(n_in: int, n_out: int, device=None):
    """Pillow's BOX downscale along one axis as taps: output i is the sum of inputs
    idx[t, i] over the taps t with mask[t, i], times one 22-bit fixed-point weight[i] (a box's
    taps all weigh the same), so a pass is a few gathers and integer arithmetic."""
    m = box_resize_matrix_pil(n_in, n_out)
    nz = m > 0
    count = nz.sum(1)
    lo = nz.to(torch.int8).argmax(1)
    weight = m.amax(1)
    if not torch.equal(m[nz], weight.repeat_interleave(count)):
        raise AssertionError("Pillow BOX taps of one output must weigh the same")
    taps = int(count.max())
    t = torch.arange(taps)[:, None]
    idx = (lo[None, :] + t).clamp(max=n_in - 1)
    mask = (t < count[None, :]).to(torch.int32)
    full = int(count.min())  # taps that every output uses need no mask
    return idx.to(device), mask.to(device), weight.to(torch.int32).to(device), full


def box_rows_pil(x: torch.Tensor, plan) -> torch.Tensor:
    """One BOX pass (see box_taps_pil) over the rows (dim -2) of uint8 x, rounded and clipped
    as Pillow does."""
    idx, mask, weight, full = plan
    s = x.index_select(-2, idx[0]).to(torch.int32)
    for t in range(1, idx.shape[0]):
        v = x.index_select(-2, idx[t])
        s += v if t < full else v * mask[t].view(-1, 1)
    return s.mul_(weight.view(-1, 1)).add_(1 << 21).bitwise_right_shift_(22).clamp_(max=255).to(torch.uint8)
