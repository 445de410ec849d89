"""Data-free calibration images, synthesized from a network's BatchNorm statistics.

`calib_data=dsg` (or `zeroq`, `noise`) in a quantized form calibrates it on images made here
instead of real ones:

  noise   the starting point of both generators, and the floor: images whose normalized pixels
          are N(0, 1) (clipped to the valid [0, 1] range).
  zeroq   ZeroQ-style distillation (Cai et al., CVPR 2020): the pixels are optimized so that,
          over a batch, every BatchNorm layer's input has the mean and standard deviation stored
          in that layer (loss sum_l ||mu_batch - mu_l||^2 + ||sigma_batch - sigma_l||^2).
  dsg     Diverse Sample Generation (Qin, Ding, Zhang et al., "Diverse Sample Generation:
          Pushing the Limit of Generative Data-free Quantization"), on the same optimizer:
          - slack distribution alignment (SDA): each *sample's* per-channel statistics are
            matched to the BN statistics up to a margin, relu(|mu_i - mu_l| - delta_l)^2 +
            relu(|sigma_i - sigma_l| - gamma_l)^2, so samples may differ from one another;
          - layerwise sample enhancement (LSE): sample i weighs one layer (i mod L) more
            (weight 1 + LSE_WEIGHT), so different samples are pushed by different layers.
          The paper's inter-sample correlation term (journal version) and the label / image
          prior losses of its code are left out: here the two generators differ only in
          SDA + LSE.

Choices where the paper (as we could read it) gives no number, marked CHOICE below: the margins
delta_l = gamma_l = margin * sigma_l (the layer's BN standard deviation; `margin`, a form's
gen_margin=, default MARGIN). A first rule took the 90th percentile of the deviation one sample's
statistics would show if its H*W values were i.i.d. N(mu_l, sigma_l^2) (sigma_l z / sqrt(HW), 0.015-0.24
sigma_l on efficientnet_lite0): real images' per-sample means lie 0.5-1 sigma_l from the running mean
(benchmarks/dsg_margins.py), 4-42x farther, and with that rule DSG tied or lost to ZeroQ-style
(59.6% vs 60.4% at reconstructed W4A4 on efficientnet_lite0). With margin 0.25 DSG is 2.3-3.1 points
above ZeroQ-style on each of three seeds (benchmarks/results/dsg_margin_sweep.md). The input image is a
layer too (normalized pixels vs N(0, 1), no slack). Optimizer: Adam on the [0, 1] pixels
(projected back into [0, 1] after each step), cosine-decayed learning rate.

Images are cached as uint8 (like decoded real images) under $ROBUSTART_HOME/calib/, keyed by the
model, its weights' sha256, the method, n, seed and every generation setting; `describe()` (which
goes into the quantized form's cache key and the job key) carries those settings.
"""

from __future__ import annotations

import math
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch import nn

METHODS = ("dsg", "zeroq", "noise")
HELP = {
    "dsg": "Diverse Sample Generation: slack BN-statistics alignment + layerwise sample enhancement",
    "zeroq": "ZeroQ-style: batch BN-statistics matching",
    "noise": "Gaussian noise images (normalized pixels ~ N(0, 1)): the floor",
}
# Bump when generation changes meaning: cached images are then made again.
FORMAT = 1

MARGIN = 0.25  # CHOICE: SDA margin in units of the layer's BN std (see the module docstring)
LSE_WEIGHT = 1.0  # CHOICE: extra weight of each sample's enhanced layer (the layer counts twice)
# a quantized form's generation settings: the GenConfig field each sets, and the methods that read it
FORM_SETTINGS = {"gen_iters": ("iters", ("dsg", "zeroq")), "gen_margin": ("margin", ("dsg",))}


@dataclass(frozen=True)
class GenConfig:
    """How calibration images are generated; every field is in the cache and job keys."""

    method: str
    n: int = 64
    seed: int = 0
    iters: int = 60  # CHOICE (gen_iters= changes it): ZeroQ and DSG use 500; on efficientnet_lite0 60 steps calibrate
    # as well as 200 or better (benchmarks/results/dfq_accuracy_gen200.md) with under a third of the steps
    lr: float = 0.1  # Adam step on [0, 1] pixels, cosine-decayed to 0
    batch: int = 16  # images optimized together (ZeroQ's batch statistics are over these)
    margin: float = MARGIN
    lse: float = LSE_WEIGHT

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"generation method must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.n < 1 or self.iters < 1 or self.batch < 1:
            raise ValueError("n, iters and batch must be >= 1")
        if not (0.0 <= float(self.margin) < 10.0):
            raise ValueError(f"the DSG margin is in units of a layer's BN std, 0 <= margin < 10; got {self.margin}")

    def to_dict(self) -> dict:
        d = asdict(self)
        if self.method == "noise":  # nothing is optimized
            for k in ("iters", "lr", "batch", "margin", "lse"):
                d.pop(k)
        elif self.method == "zeroq":
            d.pop("margin")
            d.pop("lse")
        d["format"] = FORMAT
        return d


# --------------------------------------------------------------------------- statistics


def _bn_layers(net: nn.Module) -> list[nn.BatchNorm2d]:
    return [m for m in net.modules() if isinstance(m, nn.BatchNorm2d) and m.running_mean is not None]


class _Stats:
    """Forward pre-hooks on the BN layers: the per-sample mean / std of each BN input."""

    def __init__(self, bns):
        self.out: list = [None] * len(bns)
        self.handles = [bn.register_forward_pre_hook(self._hook(i)) for i, bn in enumerate(bns)]

    def _hook(self, i):
        def hook(module, args):
            x = args[0]
            self.out[i] = x.float()
        return hook

    def close(self):
        for h in self.handles:
            h.remove()


def _moments(x: torch.Tensor, per_sample: bool):
    """Per-channel mean and std of a [B, C, H, W] tensor: per sample ([B, C]) or over the batch ([C])."""
    if per_sample:
        v = x.flatten(2)
        return v.mean(2), torch.sqrt(v.var(2, unbiased=False) + 1e-6)
    v = x.transpose(0, 1).flatten(1)
    return v.mean(1), torch.sqrt(v.var(1, unbiased=False) + 1e-6)


def slack_margins(sd: torch.Tensor, margin: float) -> tuple[torch.Tensor, torch.Tensor]:
    """SDA's margins (delta, gamma) for the per-sample mean and std of a layer whose BN std is
    `sd` (CHOICE: see the module docstring)."""
    return sd * margin, sd * margin


def bn_loss(feats, bns, cfg: GenConfig, offset: int = 0) -> torch.Tensor:
    """The generation loss of `cfg.method` over the BN inputs `feats` (layer 0: the normalized
    image, target N(0, 1)). `offset`: index of the batch's first sample in the whole set (LSE)."""
    targets = [(torch.zeros(feats[0].shape[1], device=feats[0].device),
                torch.ones(feats[0].shape[1], device=feats[0].device))]
    for bn in bns:
        targets.append((bn.running_mean.float(), torch.sqrt(bn.running_var.float() + bn.eps)))
    L = len(feats)
    total = feats[0].new_zeros(())
    if cfg.method == "zeroq":
        for x, (mu, sd) in zip(feats, targets):
            m, s = _moments(x, per_sample=False)
            total = total + (m - mu).pow(2).sum() + (s - sd).pow(2).sum()
        return total
    B = feats[0].shape[0]
    idx = torch.arange(offset, offset + B, device=feats[0].device)
    for l, (x, (mu, sd)) in enumerate(zip(feats, targets)):
        m, s = _moments(x, per_sample=True)  # [B, C]
        if l == 0:  # the image itself: no slack
            dm = dsd = torch.zeros_like(mu)
        else:
            dm, dsd = slack_margins(sd, cfg.margin)
        per = (torch.relu((m - mu).abs() - dm).pow(2).sum(1) + torch.relu((s - sd).abs() - dsd).pow(2).sum(1))
        w = 1.0 + cfg.lse * (idx % L == l).float()  # LSE: sample i enhances layer i mod L
        total = total + (w * per).mean()
    return total


# --------------------------------------------------------------------------- generation


def initial_images(n: int, mean, std, size, seed: int) -> torch.Tensor:
    """Pixels in [0, 1] whose normalized values are N(0, 1), clipped to [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    c, h, w = size
    z = torch.randn(n, c, h, w, generator=g)
    m = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
    return (m + s * z).clamp_(0, 1)


def generate(model: nn.Module, cfg: GenConfig, *, progress=None) -> torch.Tensor:
    """`cfg.n` images (float in [0, 1], [n, C, H, W]) for `model` (a ZooModel: normalization inside,
    `.entry` with its input size). Deterministic for a seed on one machine and thread count."""
    entry = model.entry
    x0 = initial_images(cfg.n, entry.mean, entry.std, entry.input_size, cfg.seed)
    if cfg.method == "noise":
        return x0
    net = getattr(model, "net", model)
    bns = _bn_layers(net)
    if not bns:
        from robustart.errors import RobustartError

        raise RobustartError(f"calib_data={cfg.method} synthesizes images from BatchNorm statistics; model "
                             f"{entry.name!r} has no BatchNorm layer. Give real images (calib_data=PATH).")
    was = model.training
    model.eval()
    req = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    dev = next(model.parameters()).device
    stats = _Stats(bns)
    norm = getattr(model, "normalize", None)
    out = []
    task = progress.add_task(f"generating {cfg.method} images", total=cfg.n * cfg.iters) if progress else None
    torch.manual_seed(cfg.seed)
    try:
        for start in range(0, cfg.n, cfg.batch):
            x = x0[start:start + cfg.batch].clone().to(dev).requires_grad_(True)
            opt = torch.optim.Adam([x], lr=cfg.lr)
            sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 0.5 * (1 + math.cos(math.pi * t / cfg.iters)))
            for _ in range(cfg.iters):
                opt.zero_grad(set_to_none=True)
                xn = norm(x) if norm is not None else x
                model(x)
                loss = bn_loss([xn] + stats.out, bns, cfg, offset=start)
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():
                    x.clamp_(0, 1)
                if progress is not None:
                    progress.update(task, advance=x.shape[0])
            out.append(x.detach().cpu())
    finally:
        stats.close()
        for p, r in zip(model.parameters(), req):
            p.requires_grad_(r)
        model.train(was)
    return torch.cat(out)


# --------------------------------------------------------------------------- cache + calibration set


def cache_dir() -> Path:
    from robustart import settings

    return settings.home() / "calib"


def cache_path(entry, weights_sha256: str | None, cfg: GenConfig) -> Path:
    from robustart.results.store import stable_hash

    key = stable_hash({"model": entry.name, "arch": entry.arch, "weights_sha256": weights_sha256,
                       "input_size": list(entry.input_size), "gen": cfg.to_dict()})
    from robustart.paths import file_name, inside

    return inside(cache_dir(), file_name(f"{entry.name}-{cfg.method}-n{cfg.n}-s{cfg.seed}") + f"-{key[:16]}.pt",
                  "calibration cache file")


def images_for(model, cfg: GenConfig, *, use_cache: bool = True, progress=None) -> tuple[torch.Tensor, Path]:
    """uint8 images [n, C, H, W] for `model` by `cfg`, from the cache or generated (and cached)."""
    path = cache_path(model.entry, getattr(model, "weights_sha256", None), cfg)
    if use_cache and path.is_file():
        try:
            return torch.load(path, weights_only=True)["images"], path
        except Exception:  # a damaged file: make the images again
            path.unlink(missing_ok=True)
    imgs = generate(model, cfg, progress=progress)
    u8 = (imgs * 255).round_().clamp_(0, 255).to(torch.uint8)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{os.getpid()}")
        torch.save({"images": u8, "config": cfg.to_dict(), "model": model.entry.name}, tmp)
        os.replace(tmp, path)
    return u8, path


@dataclass
class GeneratedCalib:
    """The calibration set of a form calibrated on generated images (`calib_data=dsg|zeroq|noise`);
    used where robustart.quant.forms uses a CalibSet."""

    cfg: GenConfig
    source_name: str = ""
    root: str = ""
    samples: list = field(default_factory=list)
    same_as_eval: bool = False
    read: object = None
    path: str | None = None

    def __post_init__(self) -> None:
        self.source_name = self.source_name or self.cfg.method

    @property
    def fingerprint(self) -> str:
        from robustart.results.store import stable_hash

        return stable_hash(self.cfg.to_dict())

    def describe(self) -> dict:
        return {"data": self.cfg.method, "n": self.cfg.n, "fingerprint": self.fingerprint,
                "generated": self.cfg.to_dict()}

    def overlap(self, eval_samples) -> int:
        return 0  # no evaluated image is used

    def load(self, entry, model=None) -> torch.Tensor:
        if model is None:
            from robustart.errors import RobustartError

            raise RobustartError(f"calib_data={self.cfg.method} needs the float model to generate images from.")
        with _progress_if_tty() as bar:
            u8, path = images_for(model, self.cfg, progress=bar)
        self.path = self.root = str(path)
        return u8.float().div_(255.0)


class _NoBar:
    def __enter__(self):
        return None

    def __exit__(self, *a):
        return False


def _progress_if_tty():
    import sys

    if not sys.stderr.isatty():
        return _NoBar()
    from rich.console import Console
    from rich.progress import Progress

    return Progress(console=Console(stderr=True))


def calibration(method: str, n: int, seed: int) -> GeneratedCalib:
    return GeneratedCalib(GenConfig(method=method, n=n, seed=seed))


def grid_png(images: torch.Tensor, path: str | Path, ncol: int = 8) -> Path:
    """A PNG grid of uint8 (or [0, 1] float) images [n, C, H, W]."""
    from PIL import Image

    x = images if images.dtype == torch.uint8 else (images * 255).round().clamp(0, 255).to(torch.uint8)
    n, c, h, w = x.shape
    if c == 1:
        x = x.expand(n, 3, h, w)
    ncol = min(ncol, n)
    nrow = (n + ncol - 1) // ncol
    canvas = torch.full((3, nrow * (h + 2) + 2, ncol * (w + 2) + 2), 255, dtype=torch.uint8)
    for i in range(n):
        r, q = divmod(i, ncol)
        canvas[:, 2 + r * (h + 2): 2 + r * (h + 2) + h, 2 + q * (w + 2): 2 + q * (w + 2) + w] = x[i, :3]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(canvas.permute(1, 2, 0).numpy()).save(path)
    return path
