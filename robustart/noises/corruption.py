"""Natural corruptions (ImageNet-C, Hendrycks & Dietterich 2019), applied on the fly.

  imagenet-c                         the 15 corruptions x severities 1..5 (75 jobs), then mCE
  imagenet-c:severity=3              the 15 corruptions at one severity
  corruption:glass_blur:3            one corruption at one severity
  corruption:glass_blur              one corruption at severities 1..5
  corruption:all:severity=3          all 19 (15 + speckle_noise, gaussian_blur, spatter, saturate)
  corruption:noise|blur|weather|digital|extra[:SEVERITY]   a group
  ...,impl=reference                 the `imagecorruptions` reference instead of batched torch
  ...,jpeg=true                      save as JPEG quality 85 after corrupting, as the released
                                     ImageNet-C files were, so numbers match the dataset's

A corruption acts on the image at the model's input geometry (after the eval resize and crop) as
uint8, as in ImageNet-C. Random corruptions draw from (seed, sample id, corruption), so a sample's
corruption does not depend on batching, and severities of one corruption share their draws.
"""

from __future__ import annotations

import torch

from robustart.errors import DataError, need_extra
from robustart.noises.base import Noise, NoiseFamily, NoiseOutput, sample_generator
from robustart.noises.corruptions import constants as K
from robustart.noises.spec import NoiseSpecError, take
from robustart.registry import did_you_mean

NAMES = {
    "corruption": "one natural corruption (ImageNet-C): corruption:NAME[:SEVERITY], e.g. corruption:glass_blur:3",
    "imagenet-c": "the ImageNet-C suite: 15 corruptions x severities 1-5, summarised as mCE",
}

IMPLS = ("torch", "reference")

_SELECTIONS = {
    "all": None,  # every registered corruption (the 19 of ImageNet-C, and any registered since)
    "common": K.COMMON,
    "imagenet-c": K.COMMON,
    "extra": K.EXTRA,
    "validation": K.EXTRA,
    **K.GROUPS,
}


def _registry():
    from robustart.noises.corruptions.torch_impl import CORRUPTIONS

    return CORRUPTIONS


def _selection(key: str):
    sel = _SELECTIONS[key]
    return tuple(_registry().names()) if sel is None else sel

_PARAMS = {
    "corruption": "corruption name, `all` (19), `common` (15) or a group (noise, blur, weather, digital, extra)",
    "severity": "1..5 (default: all five)",
    "impl": "torch (batched, CPU or GPU; default) or reference (imagecorruptions, CPU)",
    "jpeg": "true: JPEG-compress at quality 85 after corrupting, like the released ImageNet-C files",
}


def _corruptions(value, spec: str) -> tuple[str, ...]:
    names = _registry().names()
    if not isinstance(value, str):
        raise NoiseSpecError(f"noise spec {spec!r}: corruption must be a name, got {value!r}. Corruptions: {', '.join(names)}.")
    key = value.strip().lower().replace("-", "_")
    if key in names:
        return (key,)
    for k in (key, key.replace("_", "-")):
        if k in _SELECTIONS:
            return _selection(k)
    raise NoiseSpecError(
        f"noise spec {spec!r}: unknown corruption {value!r}.{did_you_mean(key, list(names) + list(_SELECTIONS))} "
        f"Corruptions: {', '.join(names)}; or a selection: {', '.join(_SELECTIONS)}."
    )


def _severities(value, spec: str) -> tuple[int, ...]:
    if value is None:
        return K.SEVERITIES
    if isinstance(value, bool) or not isinstance(value, int) or value not in K.SEVERITIES:
        raise NoiseSpecError(f"noise spec {spec!r}: severity must be an integer 1..5, got {value!r}.")
    return (value,)


def _impl(value, spec: str, corruptions=()) -> str:
    v = str(value).lower()
    if v not in IMPLS:
        raise NoiseSpecError(f"noise spec {spec!r}: impl must be one of {', '.join(IMPLS)}, got {value!r}.")
    if v == "reference":
        missing = [c for c in corruptions if not _registry().get(c).reference]
        if missing:
            raise NoiseSpecError(f"noise spec {spec!r}: imagecorruptions has no {', '.join(missing)}; "
                                 "use impl=torch for them.")
    return v


def _jpeg(value, spec: str) -> bool:
    if not isinstance(value, bool):
        raise NoiseSpecError(f"noise spec {spec!r}: jpeg must be true or false, got {value!r}.")
    return value


def _config(corruption: str, severity: int, impl: str, jpeg: bool) -> dict:
    return {"name": "corruption", "corruption": corruption, "severity": severity, "impl": impl, "jpeg": jpeg}


def parse(name: str, args: list, kwargs: dict, spec: str):
    kwargs = dict(take(kwargs, spec, _PARAMS))
    if name == "imagenet-c":
        if args:
            raise NoiseSpecError(
                f"noise spec {spec!r}: imagenet-c takes only keywords (severity, impl, jpeg); "
                "for one corruption use corruption:NAME[:SEVERITY]."
            )
        if "corruption" in kwargs:
            raise NoiseSpecError(f"noise spec {spec!r}: imagenet-c is the 15 corruptions; use corruption:NAME for others.")
        kwargs["corruption"] = "common"
    else:
        if len(args) > 2:
            raise NoiseSpecError(f"noise spec {spec!r}: expected corruption:NAME[:SEVERITY], got {len(args)} positional parts.")
        for key, value in zip(("corruption", "severity"), args):
            if key in kwargs:
                raise NoiseSpecError(f"noise spec {spec!r}: {key} is given twice.")
            kwargs[key] = value
        if "corruption" not in kwargs:
            raise NoiseSpecError(
                f"noise spec {spec!r}: which corruption? e.g. corruption:glass_blur:3 or corruption:all:severity=3. "
                f"Corruptions: {', '.join(_registry().names())}."
            )
    corruptions = _corruptions(kwargs["corruption"], spec)
    severities = _severities(kwargs.get("severity"), spec)
    impl = _impl(kwargs.get("impl", "torch"), spec, corruptions)
    jpeg = _jpeg(kwargs.get("jpeg", False), spec)
    if impl == "reference":
        need_extra("corruptions", f"noise spec {spec!r} (impl=reference runs imagecorruptions)")
    elif "frost" in corruptions:
        need_extra("corruptions", f"noise spec {spec!r} (frost overlays the frost photos of imagecorruptions)")
    configs = [_config(c, s, impl, jpeg) for c in corruptions for s in severities]
    return configs[0] if len(configs) == 1 and name == "corruption" else configs


def check_config(config: dict) -> dict:
    """Validate a config given as a dict (e.g. read back from a store)."""
    spec = repr(config)
    extra = sorted(set(config) - {"name", "corruption", "severity", "impl", "jpeg"})
    if config.get("name") != "corruption" or extra:
        raise NoiseSpecError(f"not a corruption config: {spec} (unexpected keys: {extra})")
    c = _corruptions(config.get("corruption"), spec)
    if len(c) != 1:
        raise NoiseSpecError(f"config {spec}: corruption must name one corruption.")
    (s,) = _severities(config.get("severity"), spec)
    return _config(c[0], s, _impl(config.get("impl", "torch"), spec, c), _jpeg(config.get("jpeg", False), spec))


class CorruptionNoise(Noise):
    """One corruption at one severity, applied to each batch."""

    fields: list = []

    def __init__(self, config: dict):
        super().__init__(check_config(config))
        self.corruption = self.config["corruption"]
        self.severity = self.config["severity"]
        self.impl = self.config["impl"]
        self.jpeg = self.config["jpeg"]

    def corrupt_uint8(self, x_u8: torch.Tensor, ids: list[str], seed: int) -> torch.Tensor:
        """uint8 (N, 3, H, W) on any device -> corrupted uint8 on the same device."""
        if len(ids) != x_u8.shape[0]:
            raise ValueError(f"{len(ids)} sample ids for a batch of {x_u8.shape[0]} images")
        if self.impl == "reference":
            return self._reference(x_u8, ids, seed)
        from robustart.noises.corruptions import torch_impl as T

        rng = None
        if T.CORRUPTIONS.get(self.corruption).stochastic:
            salt = f"corruption/{self.corruption}"
            rng = T.Draws([sample_generator(seed, i, salt) for i in ids], x_u8.device)
        out = T.corrupt(x_u8, self.corruption, self.severity, rng)
        if self.jpeg:
            out = T.jpeg_roundtrip(out, K.RELEASE_JPEG_QUALITY)
        return out

    def _reference(self, x_u8: torch.Tensor, ids: list[str], seed: int) -> torch.Tensor:
        import numpy as np

        from robustart.noises.corruptions import reference as R

        imgs = x_u8.permute(0, 2, 3, 1).cpu().numpy()
        out = []
        for img, i in zip(imgs, ids):
            y = R.corrupt_one(np.ascontiguousarray(img), self.corruption, self.severity,
                              seed=R.numpy_seed(seed, i, f"corruption/{self.corruption}"))
            if self.jpeg:
                y = R.jpeg_roundtrip_pil(y, K.RELEASE_JPEG_QUALITY)
            out.append(y)
        return torch.from_numpy(np.stack(out)).permute(0, 3, 1, 2).contiguous().to(x_u8.device)

    def check(self, entry, source) -> None:
        if entry.input_size[0] != 3:
            raise DataError(f"corruptions need RGB images; model {entry.name!r} takes {entry.input_size[0]}-channel "
                            "images. Use clean, adversarial or precision noises with it.")

    def apply(self, model, x, y, ids, clean_logits, seed, variant=None) -> NoiseOutput:
        if x.ndim != 4 or x.shape[1] != 3:
            raise ValueError(f"corruptions need RGB batches (N, 3, H, W), got shape {tuple(x.shape)}")
        x_u8 = (x * 255).round().clamp(0, 255).to(torch.uint8)
        return NoiseOutput(self.corrupt_uint8(x_u8, list(ids), seed).to(x.dtype) / 255.0)


def summarize(results) -> dict:
    """mCE and friends over the finished corruption jobs of a suite, in percent (see
    corruptions/metrics.py): scalars `mce`, `relative_mce`, `mean_corruption_error`,
    `clean_error` (and `corruption_note` when the 15 x 5 grid is incomplete), and the tables
    `corruption_errors` (corruption -> severity -> error), `ce`, `relative_ce`. Jobs with another
    impl or jpeg setting are summarised apart, their keys suffixed `@impl[+jpeg]`, so numbers
    from different implementations never mix."""
    import pandas as pd

    from robustart.noises.corruptions import metrics as M

    groups: dict = {}
    for res in results:
        cfg = res.meta["config"]["noise"]
        groups.setdefault((cfg.get("impl", "torch"), bool(cfg.get("jpeg", False))), []).append(res)
    out = {}
    for (impl, jpeg), group in groups.items():
        cells, cleans = [], []
        for res in group:
            cfg = res.meta["config"]["noise"]
            rec = res.records
            cells.append((cfg["corruption"], cfg["severity"], rec))
            if "clean_correct" in rec:
                cleans.append(rec[["sample_id", "status", "clean_correct"]])
        table = M.error_table(cells)
        clean = None
        if cleans:
            # each sample's clean prediction once: the same samples appear in every job
            allc = pd.concat(cleans)
            allc = allc[allc["status"] == "ok"].drop_duplicates("sample_id")
            clean = M.clean_error(allc) if len(allc) else None
        s = M.summary(table, clean)
        flat = {
            "mce": s["mce"],
            "relative_mce": s["relative_mce"],
            "mean_corruption_error": s["mean_corruption_error"],
            "clean_error": s["clean_error"],
        }
        if "note" in s:
            flat["corruption_note"] = s["note"]
        flat.update(corruption_errors=s["corruption_error"], ce=s["ce"], relative_ce=s["relative_ce"])
        suffix = "" if len(groups) == 1 else f"@{impl}{'+jpeg' if jpeg else ''}"
        out.update({k + suffix: v for k, v in flat.items()})
    return out


def prerendered_metrics(results) -> dict:
    """mCE and friends of a clean run over pre-rendered ImageNet-C folders (sample ids are
    `<corruption>/<severity>/...`). Relative mCE needs a clean error from an ImageNet val run."""
    from robustart.noises.corruptions import metrics as CM

    out = {}
    for j in results:
        if j.meta["config"]["noise"]["name"] != "clean":
            continue
        s = CM.summary(CM.error_table(CM.prerendered_cells(j.records)), None)
        out.update({k: s[k] for k in ("mce", "mean_corruption_error") if s.get(k) is not None})
        if "note" in s:
            out["corruption_note"] = s["note"]
        out.update(corruption_errors=s["corruption_error"], ce=s["ce"])
    return out


class CorruptionFamily(NoiseFamily):
    section = "corruption"

    def names(self):
        return NAMES

    def params(self, name):
        return _PARAMS

    def examples(self, name):
        if name == "imagenet-c":
            return ["imagenet-c:severity=1"]
        return ["corruption:glass_blur:3", "corruption:gaussian_noise:2,impl=reference,jpeg=true"]

    def parse(self, name, args, kwargs, spec):
        return parse(name, args, kwargs, spec)

    def build(self, config):
        return CorruptionNoise(config)

    def label(self, cfg):
        parts = ["corruption", str(cfg.get("corruption")), str(cfg.get("severity"))]
        if cfg.get("impl", "torch") != "torch" or cfg.get("jpeg"):
            parts.append(f"[{cfg.get('impl', 'torch')}{'+jpeg' if cfg.get('jpeg') else ''}]")
        return " ".join(parts)

    def summarize(self, results):
        return summarize(results)

    def dataset_metrics(self, kind, results):
        return prerendered_metrics(results) if kind == "imagenet-c" else {}


FAMILY = CorruptionFamily()
