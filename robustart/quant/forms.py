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

    given = {k: v for k in dsg.FORM_SETTINGS if (v := getattr(qcfg, k, None)) is not None}
    # generation settings where nothing is generated would change the job key and nothing else
    unused = [f"{k}={v}" for k, v in given.items() if spec not in dsg.FORM_SETTINGS[k][1]]
    if unused:
        from robustart.quant.qconfig import FormError

        readers = ", ".join(f"{k}: calib_data={'|'.join(m)}" for k, (_, m) in dsg.FORM_SETTINGS.items())
        raise FormError(f"{', '.join(unused)}: these settings shape generated calibration images ({readers}), but "
                        f"the calibration data here is {spec or 'the evaluated images'}; drop them or choose "
                        "calib_data=dsg.")
    if spec in dsg.METHODS:  # images generated from the model itself (data-free calibration)
        kw = {dsg.FORM_SETTINGS[k][0]: v for k, v in given.items()}
        return dsg.GeneratedCalib(dsg.GenConfig(method=spec, n=qcfg.calib, seed=qcfg.seed, **kw))
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
    from robustart.paths import file_name, inside

    path = inside(cache_dir(), file_name(f"{entry.name}-{qcfg.form}") + f"-{key}.pt", "quantized-model cache file")
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
    """A binarized form: the registered binarization method (robustart.quant.binary's
    BINARIZATION_METHODS) replaces the network's layers."""
    from robustart.errors import RobustartError

    try:
        from robustart.quant.binary import BINARIZATION_METHODS
    except ImportError as e:
        raise RobustartError(f"binary forms need robustart.quant.binary, which cannot be imported ({e}).") from None
    model.net = BINARIZATION_METHODS.get(method).binarize(model.net)
    model.quant_info = {"form": "binary", "method": method}
    return model.eval()


def untrained_error(entry):
    """A binarized form of float weights is not a model anyone trained: refuse it, and say how to
    make (and register) a trained one."""
    from robustart.errors import RobustartError

    m = entry.quant["method"]
    return RobustartError(
        f"model {entry.spec!r}: {entry.name}'s weights are full-precision; binarized ({m}) without training they "
        f"are at chance, not a result. Train it first: python -m robustart.quant.train --model {entry.name} "
        f"--method {m} --data DIR --out runs/{entry.name}-{m}.pt --register {entry.name}-{m}, then evaluate "
        f"--model {entry.name}-{m} (a local entry in $ROBUSTART_HOME/zoo/). To measure the untrained network "
        f"on purpose: --model {entry.name}@binary-{m}:untrained=yes.")


# --------------------------------------------------------------------------- the zoo's form provider


class QuantForms:
    """The quantized (`NAME@wNaM[:settings]`) and binarized (`NAME@binary-<method>`) forms of zoo
    models, as the zoo asks for them (robustart.zoo.registry.FORM_PROVIDERS; one line in
    robustart/plugins.py): the zoo never imports robustart.quant."""

    def claims(self, text: str) -> bool:
        import re

        head = str(text).partition(":")[0].strip().lower()
        return bool(re.fullmatch(r"w\d+a\d+", head)) or head.startswith("binary") or head == "bwta"

    def examples(self, entry) -> list[str]:
        """Form specs `robustart zoo info` suggests for an fp entry."""
        from robustart.quant.bwta import FAMILIES as BWTA_FAMILIES
        from robustart.quant.qconfig import NAMED_FORMS, binary_methods

        # binarized forms of float weights are untrained: named so (a trained one is a local entry)
        forms = [f"{entry.name}@{f}" for f in NAMED_FORMS] + [f"{entry.name}@binary-{m}:untrained=yes"
                                                               for m in binary_methods()[:1]]
        if entry.family in BWTA_FAMILIES:  # APQ-ViT calibration and BWTA (robustart.quant.apq / bwta)
            forms += [f"{entry.name}@w4a4:method=apq", f"{entry.name}@bwta:untrained=yes"]
        elif entry.family == "cnn":  # data-free calibration from BatchNorm statistics (robustart.quant.dsg)
            forms += [f"{entry.name}@w4a4:calib_data=dsg"]
        return forms

    def parse(self, text: str, model: str = ""):
        """(form, settings): a QuantConfig, or {"method": ...} for a binary form."""
        from robustart.quant.qconfig import parse_form

        form, extra = parse_form(text, model=model)
        return form, extra.get("quant") or dict(extra)

    def check_backend(self, entry, backend: str) -> None:
        """Before any work (planning): the form runs on `backend` here, and a form that needs
        training has it (or is asked for untrained on purpose)."""
        from robustart.errors import RobustartError
        from robustart.quant import backends as B

        if entry.form == "binary" and not entry.quant.get("trained") and not entry.quant.get("untrained"):
            raise untrained_error(entry)
        B.check_backend(backend)
        if entry.form == "binary":
            if backend != "fake":
                raise RobustartError(f"--backend {backend}: binary forms run as their own modules (--backend fake).")
            return
        if entry.form == "bwta":
            from robustart.quant.bwta import check_form

            check_form(entry, entry.quant)
            if backend not in ("fake", "triton"):
                raise RobustartError(f"--backend {backend}: bwta forms run on fake (simulation) or triton "
                                     "(the BWTA kernel).")
        why = B.unavailable(backend)
        if why:
            raise RobustartError(f"--backend {backend} cannot run here: {why}.")

    def calibration(self, entry, source=None) -> CalibSet | None:
        """The calibration images of a quantized form (from `source`, the evaluated dataset, unless
        the form or ROBUSTART_CALIB_DATA names others); None for forms that need none."""
        if entry.form in ("fp", "binary") or (isinstance(entry.quant, dict) and entry.quant.get("trained")):
            return None  # a trained network's scales are in its checkpoint
        return calibration_set(entry.quant, source)

    def trained_network(self, net, entry):
        """The network a trained form's checkpoint fits (a local entry of a binarized network
        that `python -m robustart.quant.train --register NAME` wrote): its layers are made first,
        then the checkpoint is loaded into them."""
        if entry.form == "bwta":  # BWTA layers (their quantizers' levels and scales are in the checkpoint)
            from robustart.quant.bwta import bwta_model

            return bwta_model(net)
        if entry.form != "binary":
            from robustart.errors import RobustartError

            raise RobustartError(f"model {entry.name!r}: a local entry of form {entry.form!r} is not supported; "
                                 "local entries hold float, binarized (form: binary) or BWTA (form: bwta) networks.")
        from robustart.quant.binary import BINARIZATION_METHODS

        return BINARIZATION_METHODS.get(entry.quant["method"]).binarize(net)

    def build(self, model, entry, *, calibration: CalibSet | None = None, backend: str = "fake",
              progress: bool = False):
        if entry.form == "binary":
            if entry.quant.get("trained"):  # the zoo loaded the trained binary network already
                model.quant_info = {"form": "binary", "method": entry.quant["method"], "trained": True}
                return model.eval()
            if not entry.quant.get("untrained"):
                raise untrained_error(entry)
            return binarize_zoo_model(model, entry.quant["method"])
        if entry.form == "bwta" and isinstance(entry.quant, dict) and entry.quant.get("trained"):
            from robustart.quant.bwta import set_mode, use_kernels

            set_mode(model, "quant")  # the trained levels and scales were loaded with the weights
            use_kernels(model, "triton" if backend == "triton" else None)
            model.quant_info = {"form": "bwta", "trained": True, "backend": backend}
            return model.eval()
        if calibration is None:
            calibration = calibration_set(entry.quant)
        if entry.form == "bwta":
            from robustart.quant.bwta import bwta_zoo_model

            return bwta_zoo_model(model, entry.quant, calibration, backend=backend)
        return quantize_zoo_model(model, entry.quant, calibration, backend=backend, progress=progress)


FORMS = QuantForms()
