"""The 19 ImageNet-C corruptions as batched torch operations (CPU or GPU).

Every function takes `x`: float32 (N, 3, H, W) holding uint8 values 0..255, the severity (1..5)
and `rng`: a `Draws` giving each sample its own random streams (None for deterministic
corruptions). It returns float values in [0, 255]; `corrupt` truncates them to uint8 as the
reference (`np.uint8(...)`) does.

The parameters are ImageNet-C's (constants.py). Where the reference is an inherently sequential
or library-specific algorithm, the batched version is a parallel equivalent with the same
statistics rather than the same pixels (glass_blur's sequential loop is reproduced exactly
in parallel, see `_glass_copy_chain`):
  spatter     OpenCV's Canny / distance transform / histogram equalisation are re-implemented
              (exact Euclidean distance instead of OpenCV's 5x5 chamfer approximation).
  frost       the frost photos are resized with torch's bicubic instead of OpenCV's.
"""

from __future__ import annotations

from contextlib import contextmanager
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from robustart.noises.corruptions import constants as K
from robustart.noises.corruptions import ops
from robustart.registry import Registry


def _i64(c: int) -> int:
    return c - (1 << 64) if c >= (1 << 63) else c


_GOLDEN, _MIX1, _MIX2 = _i64(0x9E3779B97F4A7C15), _i64(0xBF58476D1CE4E5B9), _i64(0x94D049BB133111EB)


def _srl(z: torch.Tensor, k: int) -> torch.Tensor:
    """Logical right shift of int64 (torch's >> is arithmetic)."""
    return (z >> k) & ((1 << (64 - k)) - 1)


def _mix64(z: torch.Tensor) -> torch.Tensor:
    """SplitMix64's finaliser on int64 tensors (multiplication wraps, as in uint64)."""
    z = (z ^ _srl(z, 30)) * _MIX1
    z = (z ^ _srl(z, 27)) * _MIX2
    return z ^ _srl(z, 31)


class Draws:
    """Per-sample random numbers for a batch, generated for the whole batch at once.

    Each sample's 64-bit key comes from its own seeded generator (`gens[n]`, from
    `sample_generator(seed, sample id, salt)`); tensors are then counter-based (SplitMix64 of key,
    call number and element index), so one call draws for every sample with a few batched ops,
    a sample's numbers do not depend on the batch, and integer draws are identical on every
    device. The few scalars that steer Python-side choices (angles, crop offsets) come from the
    generators themselves, with no device sync."""

    def __init__(self, gens: list[torch.Generator], device: str | torch.device = "cpu"):
        self.cpu = gens
        self.device = torch.device(device)
        keys = [int(torch.randint(0, 1 << 62, (), generator=g)) for g in gens]
        self.keys = torch.tensor(keys, dtype=torch.int64, device=self.device)
        self._calls = 0

    def bits(self, shape) -> torch.Tensor:
        """(N, *shape) uniformly random int64 bit patterns; a new stream on every call."""
        self._calls += 1
        stream = _mix64(self.keys + _i64((self._calls * _GOLDEN) % (1 << 64)))
        numel = int(np.prod(shape)) if len(shape) else 1
        idx = torch.arange(1, numel + 1, dtype=torch.int64, device=self.device)
        return _mix64(stream[:, None] + idx[None, :] * _GOLDEN).view(len(self.cpu), *shape)

    def uniform(self, shape, lo=0.0, hi=1.0) -> torch.Tensor:
        """float32 in [lo, hi), 24 random bits."""
        u = _srl(self.bits(shape), 40).to(torch.float32) * (2.0**-24)
        return u * (hi - lo) + lo

    def uniform64(self, shape) -> torch.Tensor:
        """float64 in [0, 1), 53 random bits."""
        return _srl(self.bits(shape), 11).to(torch.float64) * (2.0**-53)

    def normal(self, shape, mean=0.0, std=1.0) -> torch.Tensor:
        """float32 normal (Box-Muller)."""
        u1 = 1.0 - self.uniform(shape)  # (0, 1]: log is finite
        u2 = self.uniform(shape)
        return torch.sqrt(-2.0 * torch.log(u1)) * torch.cos((2 * np.pi) * u2) * std + mean

    def randint(self, shape, lo: int, hi: int) -> torch.Tensor:
        """int64 in [lo, hi)."""
        return _srl(self.bits(shape), 1) % (hi - lo) + lo

    def poisson_of_levels(self, levels: torch.Tensor, scale: float) -> torch.Tensor:
        """Poisson(levels / 255 * scale) for uint8 levels (N, ...), by exact inversion of the 256
        possible distributions' CDFs (one sorted table, one searchsorted)."""
        table, k = _poisson_table(float(scale), str(self.device))
        u = self.uniform64(tuple(levels.shape[1:]))
        lv = levels.to(torch.int64)
        pos = torch.searchsorted(table, u + 2.0 * lv, right=True) - lv * k
        return pos.clamp(max=k - 1).to(torch.float32)

    def scalar_uniform(self, lo, hi) -> list[float]:
        return [float(torch.rand((), generator=g, dtype=torch.float64)) * (hi - lo) + lo for g in self.cpu]

    def scalar_int(self, lo, hi) -> list[int]:
        return [int(torch.randint(lo, hi, (), generator=g)) for g in self.cpu]


@lru_cache(maxsize=16)
def _poisson_table(scale: float, device_str: str):
    """CDFs of Poisson(level / 255 * scale), level 0..255, offset by 2 * level and flattened so
    that one sorted 1-D table serves every level."""
    k = int(np.ceil(scale + 12 * np.sqrt(scale) + 20))
    lam = np.arange(256)[:, None] / 255.0 * scale
    ks = np.arange(k)[None, :]
    from scipy.special import gammaln

    with np.errstate(divide="ignore"):
        logp = np.where(lam > 0, ks * np.log(np.where(lam > 0, lam, 1.0)) - lam - gammaln(ks + 1), np.where(ks == 0, 0.0, -np.inf))
    cdf = np.minimum(np.cumsum(np.exp(logp), axis=1), 1.0)
    cdf[:, -1] = 1.0
    table = (cdf + 2.0 * np.arange(256)[:, None]).ravel()
    return torch.from_numpy(table).to(device_str), k


# ---------------------------------------------------------------- noise

def gaussian_noise(x, severity, rng):
    c = K.GAUSSIAN_NOISE[severity - 1]
    x = x / 255.0
    return (x + rng.normal(x.shape[1:], std=c)).clamp(0, 1) * 255


def shot_noise(x, severity, rng):
    c = K.SHOT_NOISE[severity - 1]
    return (rng.poisson_of_levels(x, c) / c).clamp(0, 1) * 255


def impulse_noise(x, severity, rng):
    c = K.IMPULSE_NOISE[severity - 1]
    x = x / 255.0
    u = rng.uniform((2, *x.shape[1:]), 0.0, 1.0)
    flipped, salted = u[:, 0] <= c, u[:, 1] <= 0.5
    x = torch.where(flipped & salted, torch.ones_like(x), x)
    x = torch.where(flipped & ~salted, torch.zeros_like(x), x)
    return x * 255


def speckle_noise(x, severity, rng):
    c = K.SPECKLE_NOISE[severity - 1]
    x = x / 255.0
    return (x + x * rng.normal(x.shape[1:], std=c)).clamp(0, 1) * 255


# ---------------------------------------------------------------- blur

def gaussian_blur(x, severity, rng=None):
    c = K.GAUSSIAN_BLUR[severity - 1]
    return ops.gaussian_blur(x / 255.0, c, "nearest").clamp(0, 1) * 255


def _glass_copy_chain(xs: torch.Tensor, h: int, w: int, delta: int, offs: torch.Tensor) -> torch.Tensor:
    """One pass of the reference's glass-blur loop, in parallel.

    The reference visits pixels (delta+1 .. size-delta) in descending raster order and sets each
    to its neighbour at a random offset in [-delta, delta) (its tuple "swap" of array views is
    in effect a copy). A visited pixel is written once, at its visit, so its final value is the
    final value of its source if that source was visited earlier (a larger raster index), else
    the source's original value. Following these pointers (pointer jumping, log steps) gives
    the sequential result exactly. xs: (N, H*W, C); offs: (N, 2, H*W) holding (dx, dy)."""
    n = xs.shape[0]
    pos = torch.arange(h * w, device=xs.device)
    r, c = pos // w, pos % w
    visited = (r >= delta + 1) & (r <= h - delta) & (c >= delta + 1) & (c <= w - delta)
    src = pos + offs[:, 1] * w + offs[:, 0]
    src = torch.where(visited, src, pos).expand(n, -1)
    chained = visited & visited[src] & (src > pos)
    ptr = torch.where(chained, src, pos)
    for _ in range(64):
        nxt = ptr.gather(1, ptr)
        if torch.equal(nxt, ptr):
            break
        ptr = nxt
    take = src.gather(1, ptr)  # the root's source: an original value
    return xs.gather(1, take[:, :, None].expand(-1, -1, xs.shape[2]))


def glass_blur(x, severity, rng):
    sigma, delta, iterations = K.GLASS_BLUR[severity - 1]
    n, ch, h, w = x.shape
    x = torch.floor(ops.gaussian_blur(x / 255.0, sigma, "nearest") * 255)  # the reference's uint8 step
    xs = x.permute(0, 2, 3, 1).reshape(n, h * w, ch)
    for _ in range(iterations):
        # one (dx, dy) per pixel and sample, in [-delta, delta), as the reference draws them
        offs = rng.randint((2, h * w), -delta, delta)
        xs = _glass_copy_chain(xs, h, w, delta, offs)
    x = xs.view(n, h, w, ch).permute(0, 3, 1, 2)
    return ops.gaussian_blur(x / 255.0, sigma, "nearest").clamp(0, 1) * 255


@lru_cache(maxsize=None)
def _disk(radius: int, alias_blur: float) -> np.ndarray:
    """The reference's anti-aliased disk kernel (OpenCV GaussianBlur of a binary disk)."""
    if radius <= 8:
        L, ksize = np.arange(-8, 9), 3
    else:
        L, ksize = np.arange(-radius, radius + 1), 5
    X, Y = np.meshgrid(L, L)
    d = (X**2 + Y**2 <= radius**2).astype(np.float32)
    d /= d.sum()
    t = np.arange(ksize) - (ksize - 1) / 2
    g = np.exp(-(t**2) / (2 * alias_blur**2))
    g = (g / g.sum()).astype(np.float32)
    r = ksize // 2
    p = np.pad(d, r, mode="reflect")  # OpenCV's default border (REFLECT_101)
    p = np.apply_along_axis(lambda v: np.convolve(v, g, mode="valid"), 0, p)
    p = np.apply_along_axis(lambda v: np.convolve(v, g, mode="valid"), 1, p)
    return p.astype(np.float32)


def defocus_blur(x, severity, rng=None):
    radius, alias = K.DEFOCUS_BLUR[severity - 1]
    k = torch.from_numpy(_disk(radius, alias)).to(x.device)
    return ops.conv2d_same(x / 255.0, k, "reflect").clamp(0, 1) * 255


def motion_blur(x, severity, rng):
    radius, sigma = K.MOTION_BLUR[severity - 1]
    angles = rng.scalar_uniform(-45.0, 45.0)
    return ops.motion_blur(x, radius, sigma, angles).clamp(0, 255)


@lru_cache(maxsize=64)
def _zoom_pair(h: int, w: int, z: float, device_str: str):
    dev = torch.device(device_str)
    return (ops.zoom_matrix(h, z, torch.float32)[:h].to(dev), ops.zoom_matrix(w, z, torch.float32)[:w].to(dev))


def zoom_blur(x, severity, rng=None):
    start, stop, stepv = K.ZOOM_BLUR[severity - 1]
    zooms = np.arange(start, stop, stepv)
    n, c, h, w = x.shape
    x = x / 255.0
    out = torch.zeros_like(x)
    for z in zooms:
        mh, mw = _zoom_pair(h, w, float(z), str(x.device))
        out += mh @ x @ mw.T
    return ((x + out) / (len(zooms) + 1)).clamp(0, 1) * 255


# ---------------------------------------------------------------- weather

def _plasma(n: int, mapsize: int, decay: float, rng: Draws, device) -> torch.Tensor:
    """Diamond-square height maps in [0, 1], one per sample: (N, mapsize, mapsize)."""
    m = torch.zeros(n, mapsize, mapsize, device=device)
    step, wibble = mapsize, 100.0

    def wibbled(a):
        return a / 4 + wibble * rng.uniform(a.shape[1:], -wibble, wibble)

    while step >= 2:
        half = step // 2
        corner = m[:, 0::step, 0::step]
        sq = corner + torch.roll(corner, -1, 1)
        sq = sq + torch.roll(sq, -1, 2)
        m[:, half::step, half::step] = wibbled(sq)
        dr = m[:, half::step, half::step]
        ul = m[:, 0::step, 0::step]
        lt = dr + torch.roll(dr, 1, 1) + ul + torch.roll(ul, -1, 2)
        m[:, 0::step, half::step] = wibbled(lt)
        tt = dr + torch.roll(dr, 1, 2) + ul + torch.roll(ul, -1, 1)
        m[:, half::step, 0::step] = wibbled(tt)
        step //= 2
        wibble /= decay
    flat = m.view(n, -1)
    m = m - flat.amin(1).view(n, 1, 1)
    return m / m.view(n, -1).amax(1).view(n, 1, 1)


def fog(x, severity, rng):
    strength, decay = K.FOG[severity - 1]
    n, c, h, w = x.shape
    size = 1 << (max(h, w) - 1).bit_length()
    x = x / 255.0
    max_val = x.reshape(n, -1).amax(1).view(n, 1, 1, 1)
    x = x + strength * _plasma(n, size, decay, rng, x.device)[:, None, :h, :w]
    return (x * max_val / (max_val + strength)).clamp(0, 1) * 255


@lru_cache(maxsize=None)
def _frost_photo(i: int) -> torch.Tensor:
    import importlib.resources

    from PIL import Image

    from robustart.errors import need

    need("imagecorruptions", "the frost corruption (its frost photos)")
    ref = importlib.resources.files("imagecorruptions") / "frost" / K.FROST_FILES[i]
    with importlib.resources.as_file(ref) as path, Image.open(path) as im:
        arr = np.asarray(im.convert("RGB"))
    return torch.from_numpy(arr.copy()).permute(2, 0, 1).float()


@lru_cache(maxsize=64)
def _frost_resized(i: int, h: int, w: int, device_str: str) -> torch.Tensor:
    """Frost photo i scaled as the reference does: enough to cover the image, then 1.1x."""
    f = _frost_photo(i)
    fh, fw = f.shape[1:]
    scale = 1.0
    if fh < h or fw < w:
        scale = max(h / fh if fh < h else 1.0, w / fw if fw < w else 1.0)
        if fh < h and fw < w:
            scale = max(h / fh, w / fw)
    scale *= 1.1
    size = (int(np.ceil(fh * scale)), int(np.ceil(fw * scale)))
    r = F.interpolate(f[None], size=size, mode="bicubic", align_corners=False)[0]
    return r.round().clamp(0, 255).to(device_str)


def frost(x, severity, rng):
    a, b = K.FROST[severity - 1]
    n, c, h, w = x.shape
    idx = rng.scalar_int(0, len(K.FROST_FILES))
    layers = []
    for k, i in enumerate(idx):
        f = _frost_resized(i, h, w, str(x.device))
        g = rng.cpu[k]
        y0 = int(torch.randint(0, f.shape[1] - h, (), generator=g))
        x0 = int(torch.randint(0, f.shape[2] - w, (), generator=g))
        layers.append(f[:, y0:y0 + h, x0:x0 + w])
    return (a * x + b * torch.stack(layers)).clamp(0, 255)


def snow(x, severity, rng):
    loc, scale, zoom, thresh, radius, sigma, blend = K.SNOW[severity - 1]
    n, c, h, w = x.shape
    x = x / 255.0
    layer = rng.normal((h, w), mean=loc, std=scale)
    mh, mw = ops.zoom_matrix(h, zoom, torch.float32).to(x.device), ops.zoom_matrix(w, zoom, torch.float32).to(x.device)
    layer = mh @ layer @ mw.T  # (N, h', w'), at least (h, w)
    layer = torch.where(layer < thresh, torch.zeros_like(layer), layer).clamp(0, 1)
    angles = rng.scalar_uniform(-135.0, -45.0)
    layer = ops.motion_blur(layer[:, None], radius, sigma, angles)
    layer = torch.round(layer * 255) / 255  # the reference rounds the layer to uint8 levels
    layer = layer[:, :, :h, :w]
    gray = 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
    x = blend * x + (1 - blend) * torch.maximum(x, gray * 1.5 + 0.5)
    return (x + layer + layer.flip(-1, -2)).clamp(0, 1) * 255


def brightness(x, severity, rng=None):
    c = K.BRIGHTNESS[severity - 1]
    h, s, v = ops.rgb_to_hsv(x.double() / 255.0)
    v = (v + c).clamp(0, 1)
    return ops.hsv_to_rgb(h, s, v).clamp(0, 1) * 255  # float64: truncation as the reference


def saturate(x, severity, rng=None):
    a, b = K.SATURATE[severity - 1]
    h, s, v = ops.rgb_to_hsv(x.double() / 255.0)
    s = (s * a + b).clamp(0, 1)
    return ops.hsv_to_rgb(h, s, v).clamp(0, 1) * 255  # float64: truncation as the reference


# ---------------------------------------------------------------- digital

def contrast(x, severity, rng=None):
    c = K.CONTRAST[severity - 1]
    x = x.double() / 255.0
    means = x.mean((2, 3), keepdim=True)
    return ((x - means) * c + means).clamp(0, 1) * 255


def jpeg_roundtrip(x: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode each image as baseline JPEG (4:2:0, as Pillow's default) and decode it again.
    x: (N, 3, H, W) float holding uint8 values; CUDA tensors use nvJPEG."""
    from torchvision.io import decode_jpeg, encode_jpeg

    u8 = x.round().clamp(0, 255).to(torch.uint8)
    data = encode_jpeg(list(u8), quality=int(quality))
    dev = x.device
    data = [d.cpu() for d in data]
    out = decode_jpeg(data, device=dev if dev.type == "cuda" else "cpu")
    return torch.stack(out).to(dev).float()


def jpeg_compression(x, severity, rng=None):
    return jpeg_roundtrip(x, K.JPEG_COMPRESSION[severity - 1])


@lru_cache(maxsize=64)
def _pixelate_mats(h: int, w: int, c: float, device_str: str):
    sh, sw = int(h * c), int(w * c)
    dev = torch.device(device_str)
    return (ops.box_resize_matrix_pil(h, sh).to(dev), ops.box_resize_matrix_pil(w, sw).to(dev),
            ops.nearest_index_pil(sh, h).to(dev), ops.nearest_index_pil(sw, w).to(dev))


def pixelate(x, severity, rng=None):
    c = K.PIXELATE[severity - 1]
    n, ch, h, w = x.shape
    kh, kw, ih, iw = _pixelate_mats(h, w, c, str(x.device))
    one = float(1 << 21)
    # Pillow's two passes (horizontal, then vertical), each rounded to uint8 in 22-bit fixed point
    y = x.double() @ kw.T
    y = torch.floor((y + one) / (1 << 22)).clamp(0, 255)
    y = kh @ y
    y = torch.floor((y + one) / (1 << 22)).clamp(0, 255)
    return y[:, :, ih][:, :, :, iw].float()


def elastic_transform(x, severity, rng):
    alpha = K.ELASTIC_TRANSFORM[severity - 1]
    n, c, h, w = x.shape
    x = x / 255.0
    max_d = h * 0.005
    sig = (h * 0.01, w * 0.01)
    d = rng.uniform((2, h, w), -max_d, max_d).double()
    d = ops.gaussian_blur(d, sig, "symmetric", truncate=3) * alpha
    dx, dy = d[:, 0].float(), d[:, 1].float()
    yy = torch.arange(h, device=x.device, dtype=torch.float32).view(1, h, 1)
    xx = torch.arange(w, device=x.device, dtype=torch.float32).view(1, 1, w)
    out = ops.bilinear_sample(x, yy + dy, xx + dx, "symmetric")
    return out.clamp(0, 1) * 255


# ---------------------------------------------------------------- spatter

def _canny(img: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """OpenCV's Canny (3x3 Sobel, L1 magnitude, replicated border) on (N, 1, H, W) uint8 values."""
    sx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]], device=img.device)
    gx = ops.conv2d_same(img, sx, "nearest")[:, 0]
    gy = ops.conv2d_same(img, sx.T.contiguous(), "nearest")[:, 0]
    mag = gx.abs() + gy.abs()
    m = F.pad(mag, (1, 1, 1, 1))  # zero magnitude outside the image
    c = m[:, 1:-1, 1:-1]
    left, right = m[:, 1:-1, :-2], m[:, 1:-1, 2:]
    up, down = m[:, :-2, 1:-1], m[:, 2:, 1:-1]
    ax, ay = gx.abs(), gy.abs()
    tg22 = 0.4142135623730950488
    horiz = ay < ax * tg22
    vert = ay > ax * (tg22 + 2)
    same_sign = (gx * gy) >= 0
    # diagonal neighbours: OpenCV compares (row-1, col-s) and (row+1, col+s), s = sign agreement
    d1 = torch.where(same_sign, m[:, :-2, :-2], m[:, :-2, 2:])
    d2 = torch.where(same_sign, m[:, 2:, 2:], m[:, 2:, :-2])
    keep = torch.where(horiz, (c > left) & (c >= right),
                       torch.where(vert, (c > up) & (c >= down), (c > d1) & (c > d2)))
    cand = keep & (c > low)
    edges = cand & (c > high)
    for _ in range(10_000):  # hysteresis: grow strong edges through connected weak ones
        grown = F.max_pool2d(edges[:, None].float(), 3, 1, 1)[:, 0].bool() & cand
        if torch.equal(grown, edges):
            break
        edges = grown
    return edges


def _distance_to(edges: torch.Tensor, cap: int) -> torch.Tensor:
    """Euclidean distance to the nearest True pixel, exact up to `cap` (larger -> cap)."""
    big = float((cap + 1) ** 2)
    n, h, w = edges.shape
    inf = torch.full_like(edges, big, dtype=torch.float32)
    e = torch.where(edges, torch.zeros_like(inf), inf)
    g = e.clone()
    for k in range(1, cap + 1):  # along rows
        g[:, :, k:] = torch.minimum(g[:, :, k:], e[:, :, :-k] + k * k)
        g[:, :, :-k] = torch.minimum(g[:, :, :-k], e[:, :, k:] + k * k)
    d = g.clone()
    for k in range(1, cap + 1):  # then along columns
        d[:, k:] = torch.minimum(d[:, k:], g[:, :-k] + k * k)
        d[:, :-k] = torch.minimum(d[:, :-k], g[:, k:] + k * k)
    return d.sqrt().clamp(max=float(cap))


def _equalize_hist(v: torch.Tensor) -> torch.Tensor:
    """OpenCV equalizeHist of (N, H, W) uint8 values (as float)."""
    n = v.shape[0]
    flat = v.reshape(n, -1).long()
    hist = torch.zeros(n, 256, device=v.device).scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    total = flat.shape[1]
    i0 = (hist > 0).float().argmax(1)
    h0 = hist.gather(1, i0[:, None])
    cum = hist.cumsum(1) - hist.cumsum(1).gather(1, i0[:, None])
    scale = 255.0 / (total - h0).clamp(min=1)
    lut = torch.round(cum * scale).clamp(0, 255)
    lut = torch.where(h0 == total, i0[:, None].float().expand(-1, 256), lut)
    return lut.gather(1, flat).view_as(v)


def spatter(x, severity, rng):
    loc, scale, sigma, thresh, intensity, mud = K.SPATTER[severity - 1]
    n, c, h, w = x.shape
    x = x / 255.0
    liquid = rng.normal((1, h, w), mean=loc, std=scale).double()
    liquid = ops.gaussian_blur(liquid, sigma, "nearest")
    liquid = torch.where(liquid < thresh, torch.zeros_like(liquid), liquid)
    if not mud:
        lq = torch.floor(liquid * 255).float()  # uint8 in the reference
        edges = _canny(lq, 50, 150)
        dist = _distance_to(edges, 20)[:, None]
        box = torch.full((3, 3), 1 / 9, device=x.device)
        dist = torch.floor(ops.conv2d_same(dist, box, "reflect"))
        dist = _equalize_hist(dist[:, 0])[:, None]
        ker = torch.tensor([[-2.0, -1, 0], [-1, 1, 1], [0, 1, 2]], device=x.device)
        dist = ops.conv2d_same(dist, ker, "reflect").clamp(0, 255)
        dist = torch.round(ops.conv2d_same(dist, box, "reflect"))
        m = lq * dist
        m = m / m.reshape(n, -1).amax(1).clamp(min=1e-12).view(n, 1, 1, 1) * intensity
        color = torch.tensor([175 / 255, 238 / 255, 238 / 255], device=x.device).view(1, 3, 1, 1)
        return (x + m * color).clamp(0, 1) * 255
    m = (liquid > thresh).float()
    m = ops.gaussian_blur(m, intensity, "nearest")
    m = torch.where(m < 0.8, torch.zeros_like(m), m)
    color = torch.tensor([63 / 255, 42 / 255, 20 / 255], device=x.device).view(1, 3, 1, 1) * m
    return (x * (1 - m) + color).clamp(0, 1) * 255


class Corruption:
    """A registered corruption: `fn(x, severity, rng)` maps float images (N, 3, H, W) in 0..255 to
    corrupted ones (truncated to uint8 by `corrupt`); `stochastic` ones draw from `rng`, a
    `Draws` of per-sample generators. `reference`: `imagecorruptions` has it too (impl=reference).
    A new corruption is one function and one `CORRUPTIONS.register(Corruption(...))` line."""

    def __init__(self, name: str, fn, *, stochastic: bool = False, reference: bool = False):
        self.name, self.fn, self.stochastic, self.reference = name, fn, stochastic, reference

    def __repr__(self) -> str:
        return f"Corruption({self.name!r})"


CORRUPTIONS = Registry("corruption", error=ValueError, message="unknown corruption {name!r}.{hint} Corruptions: {names}.")
for _name, _fn in {
    "gaussian_noise": gaussian_noise, "shot_noise": shot_noise, "impulse_noise": impulse_noise,
    "defocus_blur": defocus_blur, "glass_blur": glass_blur, "motion_blur": motion_blur,
    "zoom_blur": zoom_blur, "snow": snow, "frost": frost, "fog": fog, "brightness": brightness,
    "contrast": contrast, "elastic_transform": elastic_transform, "pixelate": pixelate,
    "jpeg_compression": jpeg_compression, "speckle_noise": speckle_noise,
    "gaussian_blur": gaussian_blur, "spatter": spatter, "saturate": saturate,
}.items():
    CORRUPTIONS.register(Corruption(_name, _fn, stochastic=_name in K.STOCHASTIC, reference=True))
assert tuple(CORRUPTIONS) == K.ALL


@contextmanager
def _full_precision(cuda: bool):
    """No TF32 in the corruptions' matmuls and convolutions, whatever the caller's precision
    setting: its 10-bit mantissa would move pixels across uint8 truncation boundaries."""
    if not cuda:
        yield
        return
    matmul = torch.backends.cuda.matmul.allow_tf32
    conv = torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul
        torch.backends.cudnn.allow_tf32 = conv


def corrupt(x_u8: torch.Tensor, name: str, severity: int, rng: Draws | None = None) -> torch.Tensor:
    """Corrupt uint8 images (N, 3, H, W) on any device; returns uint8 of the same shape."""
    c = CORRUPTIONS.get(name)
    if c.stochastic and rng is None:
        raise ValueError(f"corruption {name!r} is random: pass per-sample draws (rng)")
    with torch.no_grad(), _full_precision(x_u8.is_cuda):
        y = c.fn(x_u8.float(), severity, rng)
    # the reference converts with np.uint8(), which truncates
    return torch.floor(y.clamp(0, 255)).to(torch.uint8)
