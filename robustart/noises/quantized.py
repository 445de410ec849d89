"""Hardware-induced precision noise of a quantized form (`--noise precision:w8a8`).

  precision:w8a8                          one job per backend of the model's w8a8 form: fake,
                                          cpu-int8, and triton on CUDA (its CPU interpreter is
                                          too slow for whole models; name it to run it anyway)
  precision:w4a4,backends=fake+cpu-int8   chosen backends
  precision:w8a8,backend=cpu-int8         one job
  precision:w4a8,observer=mse,recon=on    form settings as in model names (NAME@w4a8:observer=mse)

The model is the fp model; each job quantizes it (calibrated once, cached) and runs the images
through one backend. The reference (clean pass, `clean_pred`) is the fp model, so quantization
noise itself shows in the flip rate and accuracy delta; each record also carries the difference
to the fake-quant simulation of the same form (`fake_*` columns), so the simulated-vs-real gap
of integer kernels shows too. Records: logit_diff / logit_mean_diff (max / mean |logit - fp
logit| over classes), fake_pred, fake_logit_diff / fake_logit_mean_diff.
"""

from __future__ import annotations

import copy
import re

import pyarrow as pa
import torch

from robustart.errors import RobustartError
from robustart.noises.base import Noise, NoiseFamily, NoiseOutput
from robustart.noises.spec import NoiseSpecError

FORM_RE = re.compile(r"^w[2-8]a[2-8]$")
PARAMS = {
    "backend": "one backend: fake | cpu-int8 | triton",
    "backends": "the backends of the suite, joined by + (default: fake, cpu-int8, and triton on CUDA)",
}
HELP = "a quantized form across backends: w8a8, w4a4, ... (precision:w8a8); its settings as in model names"


def is_form(value) -> bool:
    return isinstance(value, str) and bool(FORM_RE.match(value.strip().lower()))


def parse(form: str, kwargs: dict, spec: str) -> list[dict] | dict:
    from robustart.quant import backends as B
    from robustart.quant.qconfig import PARAMS as QPARAMS
    from robustart.quant.qconfig import FormError, parse_form

    kw = dict(kwargs)
    one = kw.pop("backend", None)
    many = kw.pop("backends", None)
    if one is not None and many is not None:
        raise NoiseSpecError(f"noise spec {spec!r}: give backend or backends, not both.")
    unknown = sorted(set(kw) - set(QPARAMS))
    if unknown:
        raise NoiseSpecError(f"noise spec {spec!r}: unknown parameter {', '.join(map(repr, unknown))}. It takes: "
                             f"{', '.join(sorted(set(PARAMS) | set(QPARAMS)))}.")
    text = form.strip().lower() + (":" + ",".join(f"{k}={_fmt(v)}" for k, v in kw.items()) if kw else "")
    try:
        _, extra = parse_form(text)
    except FormError as e:
        raise NoiseSpecError(f"noise spec {spec!r}: {e}") from None
    qcfg = extra["quant"]
    try:
        if one is not None:
            chosen = [B.check_backend(str(one))]
        elif many is not None:
            chosen = [B.check_backend(b.strip()) for b in str(many).split("+") if b.strip()]
        else:
            chosen = ["fake", "cpu-int8"] + (["triton"] if torch.cuda.is_available() else [])
    except RobustartError as e:
        raise NoiseSpecError(f"noise spec {spec!r}: {e}") from None
    configs = [{"name": "precision", "variant": f"{qcfg.form}/{b}", "form": qcfg.form, "backend": b,
                "spec": qcfg.spec(), "quant": qcfg.to_dict()} for b in dict.fromkeys(chosen)]
    return configs[0] if one is not None else configs


def _fmt(v) -> str:
    return "on" if v is True else "off" if v is False else str(v)


def with_calibration(config: dict, source):
    """The config with its calibration images' fingerprint (part of the job key), and the set."""
    from robustart.quant.forms import calibration_set
    from robustart.quant.qconfig import parse_form

    qcfg = parse_form(config["spec"])[1]["quant"]
    calib = calibration_set(qcfg, source)
    return {**config, "calibration": calib.describe()}, calib


class QuantizedFamily(NoiseFamily):
    """Narrows `precision`: `precision:<form>` specs and the configs that carry a form."""

    section = "precision"
    extends = {"precision": HELP}

    def names(self):
        return {}

    def syntax(self, name):
        return f"{name}:wNaM"

    def params(self, name):
        from robustart.quant.qconfig import PARAMS as QPARAMS

        return {**PARAMS, **QPARAMS}

    def examples(self, name):
        return ["precision:w8a8,calib=2,backends=fake+cpu-int8"]

    def claims(self, name, args, kwargs):
        return is_form(args[0] if args else kwargs.get("variant"))

    def owns(self, config):
        return config.get("name") == "precision" and "form" in config

    def parse(self, name, args, kwargs, spec):
        if len(args) > 1:
            raise NoiseSpecError(f"noise spec {spec!r}: one form, e.g. precision:w8a8.")
        form = args[0] if args else kwargs["variant"]
        return parse(str(form), {k: v for k, v in kwargs.items() if k != "variant"}, spec)

    def resolve(self, config, source):
        return with_calibration(config, source)[0]

    def build(self, config):
        return QuantPrecisionNoise(config)

    def label(self, cfg):
        return f"precision {cfg.get('variant')}"

    def summarize(self, results):
        return summarize(results)


class QuantPrecisionNoise(Noise):
    fields = [("logit_diff", pa.float32()), ("logit_mean_diff", pa.float32()), ("fake_pred", pa.int32()),
              ("fake_logit_diff", pa.float32()), ("fake_logit_mean_diff", pa.float32())]

    def __init__(self, config: dict):
        from robustart.quant.qconfig import parse_form

        super().__init__(dict(config))
        self.qcfg = parse_form(config["spec"])[1]["quant"]
        self.backend = config["backend"]
        self.calibration = None  # robustart.quant.forms.CalibSet, made in prepare
        self._overlap = None
        self._q = self._fake = None
        self._fake_logits: list = []
        self._info: dict = {}

    def check(self, entry, source) -> None:
        if entry.form != "fp":
            raise RobustartError(f"precision:{self.qcfg.form} quantizes an fp model; --model is already "
                                 f"{entry.form}. Use --model {entry.name}.")

    def prepare(self, model, device, data=None) -> None:
        from robustart.quant import backends as B
        from robustart.quant.forms import calibration_set, quantize_zoo_model

        if data is not None:  # the calibration images: drawn from the evaluated data unless named
            self.calibration = calibration_set(self.qcfg, data.source)
            if "calibration" in self.config and self.calibration.describe() != self.config["calibration"]:
                raise RobustartError(f"precision:{self.qcfg.form}: the calibration images changed since the job "
                                     f"was planned ({self.calibration.describe()} vs {self.config['calibration']}).")
            self._overlap = self.calibration.overlap(data.samples)

        entry = getattr(model, "entry", None)
        if entry is None:
            raise RobustartError("precision:<form> needs a zoo model over all 1000 classes (not a class subset).")
        if entry.form != "fp":
            raise RobustartError(f"precision:{self.qcfg.form} quantizes an fp model; --model is already "
                                 f"{entry.form}. Use --model {entry.name}.")
        if self.calibration is None:
            raise RobustartError("precision:<form> jobs need calibration images: run them through the engine "
                                 "(robustart.evaluate), which draws them from the evaluated dataset.")
        why = B.unavailable(self.backend)
        if why:
            raise RobustartError(f"precision:{self.qcfg.form} backend {self.backend} cannot run here: {why}.")
        q = copy.deepcopy(model)
        q.entry = entry
        self._fake = quantize_zoo_model(q, self.qcfg, self.calibration, backend="fake")
        self._info = dict(self._fake.quant_info)
        if self.backend != "fake":
            self._q = B.set_backend(copy.deepcopy(self._fake), self.backend)
        else:
            self._q = self._fake

    def job_meta(self) -> dict:
        if self.calibration is None:
            return {}
        c = self.calibration
        return {"calibration": {**c.describe(), "overlap_with_evaluated": self._overlap, "source_root": c.root}}

    def apply(self, model, x, y, ids, clean_logits, seed, variant=None) -> NoiseOutput:
        self._fake_logits = []
        return NoiseOutput(x)

    def predict(self, model, x):
        out = self._q(x).float()
        # the engine may call this on halves of a batch (out of memory): collect the pieces
        self._fake_logits.append(out if self._q is self._fake else self._fake(x).float())
        return out

    def complete(self, extras, clean_logits, logits, y) -> dict:
        d = (logits.float() - clean_logits.float()).abs()
        f = torch.cat(self._fake_logits) if self._fake_logits else logits
        self._fake_logits = []
        df = (logits.float() - f).abs()
        return {**extras, "logit_diff": d.amax(1).tolist(), "logit_mean_diff": d.mean(1).tolist(),
                "fake_pred": f.argmax(1).tolist(), "fake_logit_diff": df.amax(1).tolist(),
                "fake_logit_mean_diff": df.mean(1).tolist()}

    def job_checks(self) -> dict:
        return {"quant": self._info}


def summarize(results) -> dict:
    """Per backend (percent): top-1, accuracy delta vs the fp model, flip rate vs fp and vs the
    fake-quant simulation, max / mean logit differences."""
    from robustart.results import metrics as M

    out: dict = {}
    for res in results:
        label = res.meta["config"]["noise"]["variant"]
        r = M.ok(res.records)
        n = len(r)
        nan = float("nan")
        row = {
            "top1": M.top1(res.records),
            "acc_delta": M.top1(res.records) - M.clean_top1(res.records) if n else nan,
            "flip_rate": float(100.0 * (r["pred"] != r["clean_pred"]).mean()) if n else nan,
            "flip_vs_fake": float(100.0 * (r["pred"] != r["fake_pred"]).mean()) if n else nan,
            "max_logit_diff": float(r["logit_diff"].max()) if n else nan,
            "mean_logit_diff": float(r["logit_mean_diff"].mean()) if n else nan,
            "max_logit_diff_vs_fake": float(r["fake_logit_diff"].max()) if n else nan,
            "mean_logit_diff_vs_fake": float(r["fake_logit_mean_diff"].mean()) if n else nan,
        }
        for k, v in row.items():  # metric -> backend: one column per backend
            out.setdefault(k, {})[label] = v
    return {"quant_precision": out}


FAMILY = QuantizedFamily()
