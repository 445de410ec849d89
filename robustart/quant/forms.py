"""Model forms: building a quantized (or binarized) zoo model from its float weights.

A form is named after '@' in a model name (`efficientnet_lite0@w8a8`, `resnet18@binary-irnet`,
grammar in qconfig.py). A quantized form is built on demand: the float model is loaded, its
layers are wrapped (fake.py), calibrated on a small image set (ptq.py, optionally reconstructed),
and the result is cached on disk under $ROBUSTART_HOME/quant/, keyed by the entry, the weights'
sha256, the quantization config, the calibration images' fingerprint and robustart's version, so
a second job reuses it.

Calibration images: `calib_data=` in the form, else ROBUSTART_CALIB_DATA, else the dataset being
evaluated; `calib_data=dsg|zeroq|noise` generates them from the model (robustart.quant.dsg); `calib` images (default 64) drawn at random with `seed`. When they come from the
evaluated dataset they are among the evaluated images: the job's meta records how many
(`quant.calibration.overlap`); benchmarks/ptq_accuracy.py also reports accuracy without them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from robustart.quant.qconfig import QuantConfig

CALIB_ENV = "ROBUSTART_CALIB_DATA"
# Bump when calibration / reconstruction / the cached state changes meaning: old caches are then
# not reused (they are also keyed by robustart's version).
CACHE_FORMAT = 1


@dataclass
class CalibSet:
    """The calibration images of a quantized form."""

    source_name: str
    root: str
    samples: list
    fingerprint: str
    same_as_eval: bool
    read: object = None  # in-memory datasets (Fashion-MNIST, CIFAR-10): sample -> uint8 CHW tensor

    def describe(self) -> dict:
        return {"data": self.source_name, "n": len(self.samples), "fingerprint": self.fingerprint}

    def overlap(self, eval_samples) -> int:
        if not self.same_as_eval:
            return 0
        ids = {s.id for s in eval_samples}
        return sum(s.id in ids for s in self.samples)

    def load(self, entry) -> torch.Tensor:
        """Float images in [0, 1] at the model's input geometry, made as the engine makes them (the
        eval transform of decoded files; in-memory images at the entry's size and channels)."""
        from robustart.data.decode import load_rgb
        from robustart.data.transforms import array_transform, eval_transform

        if self.read is not None:
            t = array_transform(entry)
            xs = [t(self.read(s)) for s in self.samples]
            return torch.stack(xs).float().div_(255.0)
        t = eval_transform(entry)
        xs = []
        for s in self.samples:
            img, _ = load_rgb(s.path)
            xs.append(t(img))
        return torch.stack(xs).float().div_(255.0)


def calibration_set(qcfg: QuantConfig, eval_source=None) -> CalibSet:
    from robustart.data.sources import DataSource, open_source
    from robustart.errors import DataError

    spec = qcfg.calib_data or os.environ.get(CALIB_ENV) or None
    from robustart.quant import dsg

    if spec in dsg.METHODS:  # images generated from the model itself (data-free calibration)
        it = getattr(qcfg, "gen_iters", None)
        return dsg.GeneratedCalib(dsg.GenConfig(method=spec, n=qcfg.calib, seed=qcfg.seed,
                                                **({} if it is None else {"iters": it})))
    if spec is None:
        if eval_source is None:
            raise DataError("a quantized form needs calibration images: give calib_data= in the form, set "
                            f"{CALIB_ENV}, or evaluate on a dataset (its images are used).")
        src, same = eval_source, True
    else:
        src = open_source(spec)
        same = eval_source is not None and Path(str(src.root)) == Path(str(eval_source.root)) and src.kind == eval_source.kind
    samples = list(src.samples)
    if not samples:
        raise DataError(f"calibration dataset {src.name} has no images.")
    g = torch.Generator().manual_seed(qcfg.seed)
    order = torch.randperm(len(samples), generator=g).tolist()
    chosen = sorted((samples[i] for i in order[: qcfg.calib]), key=lambda s: s.id)
    return CalibSet(src.name, str(src.root), chosen, DataSource.fingerprint(chosen), same, src.read)


def cache_dir() -> Path:
    from robustart import settings

    return settings.home() / "quant"


def cache_key(entry, weights_sha256: str | None, qcfg: QuantConfig, calib: CalibSet) -> str:
    import robustart
    from robustart.results.store import stable_hash

    return stable_hash({"model": entry.name, "arch": entry.arch, "weights_sha256": weights_sha256,
                        "quant": qcfg.to_dict(), "calibration": calib.describe(),
                        "robustart": robustart.__version__, "format": CACHE_FORMAT})


def quantize_zoo_model(model, qcfg: QuantConfig, calib: CalibSet, *, use_cache: bool = True,
                       progress: bool = False, backend: str = "fake"):
    """Quantize a ZooModel in place (its `.net`); returns it, with `.quant_info` describing how."""
    from robustart.quant import backends as B
    from robustart.quant import fake as Q
    from robustart.quant.ptq import calibrate

    entry = model.entry
    dev = next(model.parameters()).device
    Q.quantize_modules(model.net, qcfg)
    if getattr(qcfg, "softmax", "uniform") == "mpq":  # APQ-ViT's softmax quantizer
        from robustart.quant.apq import use_mpq

        use_mpq(model.net)
    model.to(dev)
    key = cache_key(entry, model.weights_sha256, qcfg, calib)
    path = cache_dir() / f"{entry.name}-{qcfg.form}-{key}.pt"
    reused = False
    if use_cache and path.is_file():
        try:
            state = torch.load(path, map_location=dev, weights_only=True)
            model.net.load_state_dict(state, strict=True)
            Q.set_mode(model, "quant")
            reused = True
        except Exception:  # a stale or damaged file: calibrate again and overwrite it
            path.unlink(missing_ok=True)
    if not reused:
        # generated calibration sets run the float model (its quantizers are still off here)
        images = (calib.load(entry, model=model) if hasattr(calib, "cfg") else calib.load(entry)).to(dev)
        if progress:
            from rich.console import Console
            from rich.progress import Progress

            with Progress(console=Console(stderr=True)) as bar:
                calibrate(model, images, qcfg, progress=bar)
        else:
            calibrate(model, images, qcfg)
        if use_cache:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(f".tmp{os.getpid()}")
            torch.save(model.net.state_dict(), tmp)
            os.replace(tmp, path)
    B.set_backend(model, backend)
    model.quant_info = {"form": qcfg.form, "config": qcfg.to_dict(), "calibration": calib.describe(),
                        "cache": str(path) if use_cache else None, "reused_cache": reused, "backend": backend}
    return model.eval()


def binarize_zoo_model(model, method: str):
    """A binarized form: robustart.quant.binary replaces the network's layers (first and last
    stay float)."""
    from robustart.errors import RobustartError

    try:
        from robustart.quant.binary import binarize_model
    except ImportError as e:
        raise RobustartError(f"binary forms need robustart.quant.binary, which cannot be imported ({e}).") from None
    model.net = binarize_model(model.net, method)
    model.quant_info = {"form": "binary", "method": method}
    return model.eval()
