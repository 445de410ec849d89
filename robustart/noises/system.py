"""System noise: ImageNet-S (the same JPEG through other decoders and resizers) and numeric
precision (the same images through the model at another precision or memory format).

  imagenet-s                                  one-factor sweeps: every decoder with the model's
                                              resizer, every resizer with Pillow (about 25 jobs)
  imagenet-s:grid=full                        every decoder x every resizer
  imagenet-s:decoder=opencv,resize=pil-bicubic  one variant (resize=model: the model's own)
  imagenet-s:decoders=pil+opencv,resizers=opencv-linear+torch-bilinear-aa,grid=full
  imagenet-s:geometry=square                  ImageNet-S's square resize instead of the model's
  imagenet-s:shards=DIR[,decoder=..,resize=..] read the variants `robustart imagenet-s build` made
  precision                                   fp32 (strict), fp16, bf16, channels_last; with CUDA
                                              also tf32, cudnn-benchmark, cpu
  precision:bf16                              one variant
  precision:w8a8                              a quantized form across backends (fake, cpu-int8,
                                              triton): see robustart/noises/quantized.py

The reference pipeline (decoder pil, resize model, geometry eval) is the model's eval transform
exactly, so the clean pass of every job is the reference and `flip_rate` is measured against it.
"""

from __future__ import annotations

import contextlib
import copy

import pyarrow as pa
import torch

from robustart.errors import RobustartError
from robustart.noises.base import Noise, NoiseOutput
from robustart.noises.spec import NoiseSpecError, take

NAMES = {
    "imagenet-s": "ImageNet-S system noise: decoder x resizer variants of each image (sweeps or full grid)",
    "precision": "numeric precision of the forward pass: fp32, tf32, fp16, bf16, channels_last, cudnn-benchmark, cpu; "
                 "or a quantized form across backends: w8a8, w4a4, ... (precision:w8a8)",
}

PARAMS = {
    "imagenet-s": {
        "decoder": "one decoder (pil, pil-simd, opencv, torchvision, torchvision-cuda, ffmpeg, turbo, turbo-fastdct, "
                   "turbo-fastupsample, turbo-fast); alone it keeps the model's resizer",
        "resize": "one resizer (pil-*, pil-simd-*, opencv-*, torch-bilinear|bicubic[-aa], or model); alone it keeps pil",
        "grid": "sweep (one factor at a time; default) | full (decoders x resizers) | decoders | resizers",
        "decoders": "the decoders of a suite, joined by + (default: all that can run here)",
        "resizers": "the resizers of a suite, joined by + (default: all that can run here)",
        "geometry": "eval (the model's: shorter side, center crop; default) | square (ImageNet-S's)",
        "shards": "folder written by `robustart imagenet-s build`: read its variants instead of decoding",
    },
    "precision": {
        "variant": "fp32 | tf32 | fp16 | bf16 | channels_last | cudnn-benchmark | cpu (also positional: precision:bf16)",
        "variants": "the variants of a suite, joined by + (default: those this machine can run)",
        "backend / backends": "with a quantized form (precision:w8a8): fake | cpu-int8 | triton, joined by +",
        "observer, act, calib, recon, ...": "with a quantized form: its settings, as in model names (NAME@w8a8:observer=mse)",
    },
}

PRECISIONS = {
    "fp32": "strict fp32: TF32 off for matmuls and convolutions (on CPU, the clean pass itself)",
    "tf32": "TF32 matmuls and convolutions (CUDA)",
    "fp16": "autocast to float16",
    "bf16": "autocast to bfloat16",
    "channels_last": "the model and input in channels_last memory format",
    "cudnn-benchmark": "torch.backends.cudnn.benchmark on: cuDNN picks the fastest algorithms (CUDA)",
    "cpu": "the forward pass on the CPU while the job runs on a GPU: CPU vs GPU kernels",
}
CUDA_ONLY = ("tf32", "cudnn-benchmark", "cpu")


# --------------------------------------------------------------------------- parsing


def _names(value, spec: str, what: str) -> list[str]:
    return [v.strip() for v in str(value).split("+") if v.strip()]


def _imagenet_s_config(decoder: str, resize: str, geometry: str, shards: dict | None) -> dict:
    cfg = {"name": "imagenet-s", "decoder": decoder, "resize": resize, "geometry": geometry}
    if shards:
        cfg["shards"] = shards
    return cfg


def _check_backends(decoders, resizers, spec):
    from robustart.imagenet_s import decoders as D
    from robustart.imagenet_s import resize as R

    try:
        for d in decoders:
            D.check_name(d)
        for r in resizers:
            if r != "model":
                R.check_name(r)
    except D.DecoderError as e:
        raise NoiseSpecError(f"noise spec {spec!r}: {e}") from None


def _parse_imagenet_s(args, kwargs, spec):
    from robustart.imagenet_s import grid as G
    from robustart.imagenet_s import resize as R

    kw = dict(take(kwargs, spec, PARAMS["imagenet-s"]))
    if args:
        raise NoiseSpecError(f"noise spec {spec!r}: imagenet-s takes key=value parameters only, "
                             "e.g. imagenet-s:decoder=opencv,resize=pil-bicubic.")
    geometry = str(kw.get("geometry", "eval")).lower()
    if geometry not in R.GEOMETRIES:
        raise NoiseSpecError(f"noise spec {spec!r}: geometry must be one of {', '.join(R.GEOMETRIES)}, got {geometry!r}.")
    one = "decoder" in kw or "resize" in kw
    if one and ({"grid", "decoders", "resizers"} & set(kw)):
        raise NoiseSpecError(f"noise spec {spec!r}: give decoder/resize for one variant, or grid/decoders/resizers "
                             "for a suite, not both.")
    if "shards" in kw:
        from robustart.imagenet_s import build as B

        try:
            manifest = B.read_manifest(kw["shards"])
        except RobustartError as e:
            raise NoiseSpecError(f"noise spec {spec!r}: {e}") from None
        if "geometry" not in kw and not any(v["geometry"] == "eval" for v in manifest["variants"].values()):
            geometry = next(iter(manifest["variants"].values()))["geometry"]  # a square-only build
        where = str(B.resolve_dir(kw["shards"]))
        fps = {(v["decoder"], v["resize"]): v["fingerprint"] for v in manifest["variants"].values()
               if v["geometry"] == geometry}
        built = list(fps)
        if not built:
            raise NoiseSpecError(f"noise spec {spec!r}: {kw['shards']} holds no variant with geometry {geometry!r}.")
        if one:
            d, r = str(kw.get("decoder", "pil")), str(kw.get("resize", "model"))
            if (d, r) not in built:
                raise NoiseSpecError(f"noise spec {spec!r}: variant {d}/{r} is not in {kw['shards']}; it holds "
                                     f"{', '.join(f'{a}/{b}' for a, b in built)}.")
            return _imagenet_s_config(d, r, geometry, {"fingerprint": fps[d, r], "dir": where})
        return [_imagenet_s_config(d, r, geometry, {"fingerprint": fps[d, r], "dir": where}) for d, r in built]
    if one:
        d, r = str(kw.get("decoder", "pil")), str(kw.get("resize", "model"))
        _check_backends([d], [r], spec)
        return _imagenet_s_config(d, r, geometry, None)
    grid = str(kw.get("grid", "sweep")).lower()
    if grid not in G.GRIDS:
        raise NoiseSpecError(f"noise spec {spec!r}: grid must be one of {', '.join(G.GRIDS)}, got {grid!r}.")
    decs = _names(kw["decoders"], spec, "decoders") if "decoders" in kw else None
    ress = _names(kw["resizers"], spec, "resizers") if "resizers" in kw else None
    _check_backends(decs or [], ress or [], spec)
    return [_imagenet_s_config(d, r, geometry, None) for d, r in G.variants(grid, decs, ress)]


def _precision_variant(value, spec) -> str:
    v = str(value).strip().lower().replace("_", "-")
    v = {"channels-last": "channels_last", "cudnn": "cudnn-benchmark", "float16": "fp16", "half": "fp16",
         "bfloat16": "bf16", "float32": "fp32"}.get(v, v)
    if v not in PRECISIONS:
        import difflib

        close = difflib.get_close_matches(v, PRECISIONS, n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise NoiseSpecError(f"noise spec {spec!r}: unknown precision variant {value!r}.{hint} "
                             f"Variants: {', '.join(PRECISIONS)}.")
    return v


def _parse_precision(args, kwargs, spec):
    from robustart.noises import quantized as NQ

    form = args[0] if args else kwargs.get("variant")
    if NQ.is_form(form):  # a quantized form across integer backends
        if len(args) > 1:
            raise NoiseSpecError(f"noise spec {spec!r}: one form, e.g. precision:w8a8.")
        return NQ.parse(str(form), {k: v for k, v in kwargs.items() if k != "variant"}, spec)
    kw = dict(take(kwargs, spec, {k: v for k, v in PARAMS["precision"].items() if "/" not in k and "," not in k}))
    if len(args) > 1 or (args and "variant" in kw):
        raise NoiseSpecError(f"noise spec {spec!r}: one variant, e.g. precision:bf16.")
    if args:
        kw["variant"] = args[0]
    if "variant" in kw:
        if "variants" in kw:
            raise NoiseSpecError(f"noise spec {spec!r}: give variant or variants, not both.")
        return {"name": "precision", "variant": _precision_variant(kw["variant"], spec)}
    if "variants" in kw:
        chosen = [_precision_variant(v, spec) for v in _names(kw["variants"], spec, "variants")]
    else:
        cuda = torch.cuda.is_available()
        chosen = [v for v in PRECISIONS if cuda or v not in CUDA_ONLY]
    return [{"name": "precision", "variant": v} for v in dict.fromkeys(chosen)]


def parse(name: str, args: list, kwargs: dict, spec: str):
    if name == "imagenet-s":
        return _parse_imagenet_s(args, kwargs, spec)
    return _parse_precision(args, kwargs, spec)


# --------------------------------------------------------------------------- ImageNet-S


class ImageNetSNoise(Noise):
    """The model's prediction on another pipeline's image of each sample. The engine makes those
    images in its decoding workers with `loader(entry)`; `apply` passes them on and measures how
    far each is from the reference image."""

    fields = [("pixel_diff", pa.float32()),  # mean |variant - reference| in 0..255 levels
              ("pixel_changed", pa.float32())]  # share of values that differ at all

    def __init__(self, config: dict):
        extra = sorted(set(config) - {"name", "decoder", "resize", "geometry", "shards"})
        if extra:
            raise NoiseSpecError(f"not an imagenet-s config: {config!r} (unexpected keys: {extra})")
        super().__init__(dict(config))
        self._pipeline = None
        self._pending = None  # (variant batch, identical-to-reference mask, clean logits) for predict
        self._reused = 0

    @property
    def loader_in_main_process(self):
        return self.config["decoder"].endswith("-cuda")  # nvJPEG cannot run in forked workers

    def loader(self, entry):
        from robustart.imagenet_s.pipeline import Pipeline

        cfg = self.config
        if "shards" in cfg:
            from robustart.imagenet_s import build as B

            reader = B.ShardReader.for_entry(cfg["shards"]["dir"], cfg["shards"]["fingerprint"], entry,
                                             cfg["decoder"], cfg["resize"], cfg.get("geometry", "eval"))
            self._pipeline = reader.pipeline
            return reader
        p = Pipeline.for_entry(entry, cfg["decoder"], cfg["resize"], cfg.get("geometry", "eval"))
        why = p.unavailable()
        if why:
            raise RobustartError(f"imagenet-s variant {p.label}: {why}")
        self._pipeline = p
        return p

    def apply(self, model, x, y, ids, clean_logits, seed, variant=None) -> NoiseOutput:
        if variant is None:
            raise RobustartError("imagenet-s needs the engine to pass each sample's variant image (Noise.loader).")
        if variant.shape != x.shape:
            raise RobustartError(f"imagenet-s variant images are {tuple(variant.shape)}, the model's are {tuple(x.shape)}")
        d = (variant - x).abs().mul_(255).round_().flatten(1)
        self._pending = (variant, (d == 0).all(1), clean_logits)
        return NoiseOutput(variant, {"pixel_diff": d.mean(1).tolist(), "pixel_changed": (d > 0).float().mean(1).tolist()})

    def predict(self, model, x):
        """A sample whose variant image is the reference image, pixel for pixel, keeps its clean
        logits (the model would compute them again); only the others go through the model. Many
        decoders give Pillow's pixels exactly, so this saves whole forward passes."""
        pending, self._pending = self._pending, None
        if pending is None or x is not pending[0]:  # e.g. the engine's out-of-memory halves
            return model(x)
        _, same, clean = pending
        if not bool(same.any()):
            return model(x)
        out = clean.clone()
        if not bool(same.all()):
            out[~same] = model(x[~same]).to(out.dtype)
        self._reused += int(same.sum())
        return out

    def job_checks(self) -> dict:
        """Backend versions: they decide the pixels, so they stay with the records."""
        from robustart.imagenet_s import decoders as D

        out = {"clean_logits_reused": self._reused}  # samples whose variant equals the reference
        try:
            out["decoder_version"] = D.get(self.config["decoder"]).version()
            r = self._pipeline.resizer if self._pipeline is not None else self.config["resize"]
            out["resizer"] = r
            if r.startswith("pil-simd-"):
                out["resizer_version"] = D.get("pil-simd").version()
            elif r.startswith("pil-"):
                out["resizer_version"] = D.get("pil").version()
            elif r.startswith("opencv-"):
                out["resizer_version"] = D.get("opencv").version()
            else:
                out["resizer_version"] = f"torch {torch.__version__}"
        except Exception as e:  # versions are informative; never fail a finished job over them
            out["version_error"] = str(e)
        return out


# --------------------------------------------------------------------------- precision


@contextlib.contextmanager
def _flags(**values):
    """Set torch.backends flags ("cudnn.benchmark", "cuda.matmul.allow_tf32", ...) and put the
    previous values back afterwards, whatever happens."""
    saved = []
    try:
        for path, v in values.items():
            obj = torch.backends
            *parents, leaf = path.split("__")
            for p in parents:
                obj = getattr(obj, p)
            saved.append((obj, leaf, getattr(obj, leaf)))
            setattr(obj, leaf, v)
        yield
    finally:
        for obj, leaf, v in reversed(saved):
            setattr(obj, leaf, v)


class PrecisionNoise(Noise):
    """The same images (`apply` returns them unchanged); `predict` runs the model another way."""

    fields = [("logit_diff", pa.float32())]  # max |logit - clean logit| over classes

    def __init__(self, config: dict):
        extra = sorted(set(config) - {"name", "variant"})
        if extra or config.get("variant") not in PRECISIONS:
            raise NoiseSpecError(f"not a precision config: {config!r}; variants: {', '.join(PRECISIONS)}")
        super().__init__(dict(config))
        self.variant = config["variant"]
        self._model = None  # a converted copy (channels_last, CPU), made once per job

    def prepare(self, model, device) -> None:
        device = torch.device(device)
        if self.variant in CUDA_ONLY and device.type != "cuda":
            raise RobustartError(
                f"precision:{self.variant} needs a CUDA device ({PRECISIONS[self.variant].replace(' (CUDA)', '')}); this job runs on "
                f"{device.type}. Run it on a GPU (--device cuda), or pick a variant that runs here: "
                f"{', '.join(v for v in PRECISIONS if v not in CUDA_ONLY)}."
            )
        if self.variant == "channels_last":
            self._model = copy.deepcopy(model).to(memory_format=torch.channels_last)
        elif self.variant == "cpu":
            self._model = copy.deepcopy(model).cpu()

    def predict(self, model, x):
        v = self.variant
        if v == "fp32":
            if x.device.type == "cuda":
                with _flags(cuda__matmul__allow_tf32=False, cudnn__allow_tf32=False):
                    return model(x)
            return model(x)
        if v == "tf32":
            with _flags(cuda__matmul__allow_tf32=True, cudnn__allow_tf32=True):
                return model(x)
        if v in ("fp16", "bf16"):
            with torch.autocast(device_type=x.device.type, dtype=torch.float16 if v == "fp16" else torch.bfloat16):
                return model(x).float()
        if v == "channels_last":
            m = self._model if self._model is not None else copy.deepcopy(model).to(memory_format=torch.channels_last)
            return m(x.contiguous(memory_format=torch.channels_last))
        if v == "cudnn-benchmark":
            with _flags(cudnn__benchmark=True):
                return model(x)
        if v == "cpu":
            m = self._model if self._model is not None else copy.deepcopy(model).cpu()
            return m(x.cpu()).to(x.device)
        raise AssertionError(v)

    def apply(self, model, x, y, ids, clean_logits, seed) -> NoiseOutput:
        return NoiseOutput(x)

    def complete(self, extras, clean_logits, logits, y) -> dict:
        return {**extras, "logit_diff": (logits.float() - clean_logits.float()).abs().amax(1).tolist()}


def build(config: dict) -> Noise:
    if config.get("name") == "imagenet-s":
        return ImageNetSNoise(config)
    if "form" in config:
        from robustart.noises.quantized import QuantPrecisionNoise

        return QuantPrecisionNoise(config)
    return PrecisionNoise(config)


# --------------------------------------------------------------------------- metrics


def variant_label(cfg: dict) -> str:
    if cfg["name"] == "precision":
        return cfg["variant"]
    geo = cfg.get("geometry", "eval")
    return f"{cfg['decoder']}/{cfg['resize']}" + ("" if geo == "eval" else f"/{geo}")


def _spread(values: dict, prefix: str) -> dict:
    import numpy as np

    v = np.array([x for x in values.values() if not np.isnan(x)], dtype=float)
    if not len(v):
        return {}
    worst = min(values, key=lambda k: values[k] if not np.isnan(values[k]) else float("inf"))
    return {f"{prefix}_mean_top1": float(v.mean()),
            f"{prefix}_std_top1": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            f"{prefix}_worst_top1": float(v.min()),
            f"{prefix}_range_top1": float(v.max() - v.min()),
            f"{prefix}_worst_variant": worst}


def summarize_imagenet_s(results) -> dict:
    """Grid metrics from the jobs' records (percent; pixel differences in 0..255 levels):
    per variant top-1, flip rate against the reference pipeline (the clean pass) and mean pixel
    difference from the reference image; mean / std (sample) / worst / range of top-1 over the
    grid and over each one-factor sweep; the share of samples whose prediction changes under any
    variant. Jobs of another geometry or read from shards are summarised apart (key suffix)."""
    from robustart.results import metrics as M

    groups: dict = {}
    for res in results:
        cfg = res.meta["config"]["noise"]
        groups.setdefault((cfg.get("geometry", "eval"), "shards" in cfg), []).append(res)
    out = {}
    for (geometry, shards), group in groups.items():
        top1, flips, pix = {}, {}, {}
        changed = None
        clean = None
        dec_sweep, res_sweep = {}, {}
        for res in group:
            cfg = res.meta["config"]["noise"]
            label = variant_label(cfg)
            rec = res.records
            r = M.ok(rec)
            top1[label] = M.top1(rec)
            flips[label] = float(100.0 * (r["pred"] != r["clean_pred"]).mean()) if len(r) else float("nan")
            pix[label] = float(r["pixel_diff"].mean()) if len(r) else float("nan")
            if clean is None and len(r):
                clean = M.clean_top1(rec)
            flip = r.set_index("sample_id")["pred"] != r.set_index("sample_id")["clean_pred"]
            changed = flip if changed is None else (changed.loc[changed.index.intersection(flip.index)]
                                                    | flip.loc[changed.index.intersection(flip.index)])
            if cfg["resize"] == "model":
                dec_sweep[label] = top1[label]
            if cfg["decoder"] == "pil":
                res_sweep[label] = top1[label]
        s = {"imagenet_s_reference_top1": clean}
        s.update(_spread(top1, "imagenet_s"))
        s["imagenet_s_any_flip"] = float(100.0 * changed.mean()) if changed is not None and len(changed) else float("nan")
        if len(dec_sweep) > 1:
            s.update(_spread(dec_sweep, "imagenet_s_decoder"))
        if len(res_sweep) > 1:
            s.update(_spread(res_sweep, "imagenet_s_resize"))
        s.update(imagenet_s_top1=top1, imagenet_s_flip_rate=flips, imagenet_s_pixel_diff=pix)
        suffix = "" if len(groups) == 1 else f"@{geometry}{'+shards' if shards else ''}"
        out.update({k + suffix: v for k, v in s.items()})
    return out


def summarize_precision(results) -> dict:
    from robustart.results import metrics as M

    top1, flips, ldiff = {}, {}, {}
    for res in results:
        label = variant_label(res.meta["config"]["noise"])
        rec = res.records
        r = M.ok(rec)
        top1[label] = M.top1(rec)
        flips[label] = float(100.0 * (r["pred"] != r["clean_pred"]).mean()) if len(r) else float("nan")
        ldiff[label] = float(r["logit_diff"].max()) if len(r) else float("nan")
    out = _spread(top1, "precision")
    out.update(precision_top1=top1, precision_flip_rate=flips, precision_max_logit_diff=ldiff)
    return out


def summarize(results) -> dict:
    ins = [r for r in results if r.meta["config"]["noise"]["name"] == "imagenet-s"]
    prec = [r for r in results if r.meta["config"]["noise"]["name"] == "precision"
            and "form" not in r.meta["config"]["noise"]]
    qprec = [r for r in results if r.meta["config"]["noise"]["name"] == "precision"
             and "form" in r.meta["config"]["noise"]]
    out = {}
    if qprec:
        from robustart.noises.quantized import summarize as summarize_quant

        out.update(summarize_quant(qprec))
    if ins:
        out.update(summarize_imagenet_s(ins))
    if prec:
        out.update(summarize_precision(prec))
    return out
