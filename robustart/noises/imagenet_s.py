"""ImageNet-S system noise: the same JPEG through other decoders and resizers.

  imagenet-s                                  one-factor sweeps: every decoder with the model's
                                              resizer, every resizer with Pillow (about 25 jobs)
  imagenet-s:grid=full                        every decoder x every resizer
  imagenet-s:decoder=opencv,resize=pil-bicubic  one variant (resize=model: the model's own)
  imagenet-s:decoders=pil+opencv,resizers=opencv-linear+torch-bilinear-aa,grid=full
  imagenet-s:geometry=square                  ImageNet-S's square resize instead of the model's
  imagenet-s:shards=DIR[,decoder=..,resize=..] read the variants `robustart imagenet-s build` made

The reference pipeline (decoder pil, resize model, geometry eval) is the model's eval transform
exactly, so the clean pass of every job is the reference and `flip_rate` is measured against it.
Decoders and resizers are registries (robustart.imagenet_s.decoders.DECODERS,
robustart.imagenet_s.resize.RESIZERS).
"""

from __future__ import annotations

import pyarrow as pa
import torch

from robustart.errors import RobustartError
from robustart.noises.base import Noise, NoiseFamily, NoiseOutput
from robustart.noises.spec import NoiseSpecError, take

NAMES = {
    "imagenet-s": "ImageNet-S system noise: decoder x resizer variants of each image (sweeps or full grid)",
}

PARAMS = {
    "decoder": "one decoder (pil, pil-simd, opencv, torchvision, torchvision-cuda, ffmpeg, turbo, turbo-fastdct, "
               "turbo-fastupsample, turbo-fast); alone it keeps the model's resizer",
    "resize": "one resizer (pil-*, pil-simd-*, opencv-*, torch-bilinear|bicubic[-aa], or model); alone it keeps pil",
    "grid": "sweep (one factor at a time; default) | full (decoders x resizers) | decoders | resizers",
    "decoders": "the decoders of a suite, joined by + (default: all that can run here)",
    "resizers": "the resizers of a suite, joined by + (default: all that can run here)",
    "geometry": "eval (the model's: shorter side, center crop; default) | square (ImageNet-S's)",
    "shards": "folder written by `robustart imagenet-s build`: read its variants instead of decoding",
}


# --------------------------------------------------------------------------- parsing


def _names(value) -> list[str]:
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

    kw = dict(take(kwargs, spec, PARAMS))
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
    decs = _names(kw["decoders"]) if "decoders" in kw else None
    ress = _names(kw["resizers"]) if "resizers" in kw else None
    _check_backends(decs or [], ress or [], spec)
    return [_imagenet_s_config(d, r, geometry, None) for d, r in G.variants(grid, decs, ress)]


# --------------------------------------------------------------------------- runtime


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

        from robustart.imagenet_s import resize as R

        out = {"clean_logits_reused": self._reused}  # samples whose variant equals the reference
        try:
            out["decoder_version"] = D.get(self.config["decoder"]).version()
            r = self._pipeline.resizer if self._pipeline is not None else self.config["resize"]
            out["resizer"] = r
            out["resizer_version"] = R.RESIZERS.get(r).version()
        except Exception as e:  # versions are informative; never fail a finished job over them
            out["version_error"] = str(e)
        return out


# --------------------------------------------------------------------------- metrics


def variant_label(cfg: dict) -> str:
    geo = cfg.get("geometry", "eval")
    return f"{cfg['decoder']}/{cfg['resize']}" + ("" if geo == "eval" else f"/{geo}")


def summarize(results) -> dict:
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
        s.update(M.spread(top1, "imagenet_s"))
        s["imagenet_s_any_flip"] = float(100.0 * changed.mean()) if changed is not None and len(changed) else float("nan")
        if len(dec_sweep) > 1:
            s.update(M.spread(dec_sweep, "imagenet_s_decoder"))
        if len(res_sweep) > 1:
            s.update(M.spread(res_sweep, "imagenet_s_resize"))
        s.update(imagenet_s_top1=top1, imagenet_s_flip_rate=flips, imagenet_s_pixel_diff=pix)
        suffix = "" if len(groups) == 1 else f"@{geometry}{'+shards' if shards else ''}"
        out.update({k + suffix: v for k, v in s.items()})
    return out


class ImageNetSFamily(NoiseFamily):
    section = "imagenet-s"

    def names(self):
        return NAMES

    def params(self, name):
        return PARAMS

    def examples(self, name):
        return ["imagenet-s:decoder=opencv,resize=pil-bicubic", "imagenet-s:decoder=turbo-fast,geometry=square"]

    def parse(self, name, args, kwargs, spec):
        return _parse_imagenet_s(args, kwargs, spec)

    def build(self, config):
        return ImageNetSNoise(config)

    def label(self, cfg):
        parts = ["imagenet-s", str(cfg.get("decoder")), str(cfg.get("resize"))]
        if cfg.get("geometry", "eval") != "eval":
            parts.append(str(cfg["geometry"]))
        return " ".join(parts)

    def summarize(self, results):
        return summarize(results)

    def cost(self, config):
        # each image is decoded and resized a second time by the variant's backends (read from
        # the build instead with shards=); that, not the model, is what bounds these jobs on a GPU
        return {"forward": 2.0, "backward": 0.0, "decode": 0.0 if config.get("shards") else 1.0}

    def left_out(self, name, args, kwargs, spec):
        """The decoders and resizers a sweep or grid leaves out because they cannot run here
        (only when the spec lets the defaults choose), each with how to make it available."""
        from robustart.imagenet_s import grid as G

        if "shards" in kwargs or "decoder" in kwargs or "resize" in kwargs or args:
            return []
        try:
            return G.left_out(decoders="decoders" not in kwargs, resizers="resizers" not in kwargs)
        except RobustartError:  # the extra is missing: parsing the spec already said so
            return []


FAMILY = ImageNetSFamily()
