"""Numeric precision noise: the same images through the model at another precision or memory
format.

  precision                                   fp32 (strict), fp16, bf16, channels_last; with CUDA
                                              also tf32, cudnn-benchmark, cpu
  precision:bf16                              one variant

A quantized form across backends (`precision:w8a8`) is its own family that narrows this name:
robustart/noises/quantized.py. The clean pass of every job is the model as it is (fp32), so
`flip_rate` is measured against it.
"""

from __future__ import annotations

import contextlib
import copy

import pyarrow as pa
import torch

from robustart.errors import RobustartError
from robustart.noises.base import Noise, NoiseFamily, NoiseOutput
from robustart.noises.spec import NoiseSpecError, take
from robustart.registry import did_you_mean

NAMES = {
    "precision": "numeric precision of the forward pass: fp32, tf32, fp16, bf16, channels_last, cudnn-benchmark, cpu",
}

PARAMS = {
    "variant": "fp32 | tf32 | fp16 | bf16 | channels_last | cudnn-benchmark | cpu (also positional: precision:bf16)",
    "variants": "the variants of a suite, joined by + (default: those this machine can run)",
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


def _precision_variant(value, spec) -> str:
    v = str(value).strip().lower().replace("_", "-")
    v = {"channels-last": "channels_last", "cudnn": "cudnn-benchmark", "float16": "fp16", "half": "fp16",
         "bfloat16": "bf16", "float32": "fp32"}.get(v, v)
    if v not in PRECISIONS:
        raise NoiseSpecError(f"noise spec {spec!r}: unknown precision variant {value!r}.{did_you_mean(v, PRECISIONS)} "
                             f"Variants: {', '.join(PRECISIONS)}.")
    return v


def _parse_precision(args, kwargs, spec):
    kw = dict(take(kwargs, spec, PARAMS))
    if len(args) > 1 or (args and "variant" in kw):
        raise NoiseSpecError(f"noise spec {spec!r}: one variant, e.g. precision:bf16.")
    if args:
        kw["variant"] = args[0]
    if "variant" in kw:
        if "variants" in kw:
            raise NoiseSpecError(f"noise spec {spec!r}: give variant or variants, not both.")
        return {"name": "precision", "variant": _precision_variant(kw["variant"], spec)}
    if "variants" in kw:
        chosen = [_precision_variant(v, spec) for v in str(kw["variants"]).split("+") if v.strip()]
    else:
        cuda = torch.cuda.is_available()
        chosen = [v for v in PRECISIONS if cuda or v not in CUDA_ONLY]
    return [{"name": "precision", "variant": v} for v in dict.fromkeys(chosen)]


# --------------------------------------------------------------------------- runtime


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

    def prepare(self, model, device, data=None) -> None:
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

    def apply(self, model, x, y, ids, clean_logits, seed, variant=None) -> NoiseOutput:
        return NoiseOutput(x)

    def complete(self, extras, clean_logits, logits, y) -> dict:
        return {**extras, "logit_diff": (logits.float() - clean_logits.float()).abs().amax(1).tolist()}


# --------------------------------------------------------------------------- metrics


def summarize(results) -> dict:
    from robustart.results import metrics as M

    top1, flips, ldiff = {}, {}, {}
    for res in results:
        label = res.meta["config"]["noise"]["variant"]
        rec = res.records
        r = M.ok(rec)
        top1[label] = M.top1(rec)
        flips[label] = float(100.0 * (r["pred"] != r["clean_pred"]).mean()) if len(r) else float("nan")
        ldiff[label] = float(r["logit_diff"].max()) if len(r) else float("nan")
    out = M.spread(top1, "precision")
    out.update(precision_top1=top1, precision_flip_rate=flips, precision_max_logit_diff=ldiff)
    return out


class PrecisionFamily(NoiseFamily):
    section = "precision"

    def names(self):
        return NAMES

    def params(self, name):
        return PARAMS

    def examples(self, name):
        return ["precision:bf16", "precision:channels_last"]

    def parse(self, name, args, kwargs, spec):
        return _parse_precision(args, kwargs, spec)

    def owns(self, config):
        return config.get("name") == "precision" and config.get("variant") in PRECISIONS

    def build(self, config):
        return PrecisionNoise(config)

    def label(self, cfg):
        return f"precision {cfg.get('variant')}"

    def summarize(self, results):
        return summarize(results)


FAMILY = PrecisionFamily()
