"""Quantization settings of a model form, and the form grammar.

  NAME@w8a8                          8-bit weights (per output channel, symmetric) and 8-bit
                                     activations (per tensor, asymmetric), min-max calibration
  NAME@w4a4:observer=mse,recon=on    MSE calibration, then BRECQ/AdaRound block reconstruction
  NAME@binary-irnet                  a binarized form (method irnet; see robustart.quant.binary)
  NAME@w4a4:method=apq               APQ-ViT calibration (robustart.quant.apq)
  NAME@bwta                          binary weights, ternary activations (robustart.quant.bwta)

Every setting that can change a result is in `QuantConfig.to_dict()`, which goes into the job key.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, fields

from robustart.errors import RobustartError
from robustart.registry import did_you_mean
from robustart.spec import parse_value

NAMED_FORMS = ("w8a8", "w6a6", "w4a8", "w4a4")
OBSERVERS = ("minmax", "percentile", "mse")
METHODS = ("plain", "apq")  # apq: robustart.quant.apq (APQ-ViT)
SOFTMAX = ("uniform", "mpq")
ACT_MODES = ("asym", "sym")
_FORM = re.compile(r"^w(\d+)a(\d+)$")


class FormError(RobustartError, KeyError):
    """A model form that does not parse; the message says what would."""

    def __str__(self) -> str:
        return str(self.args[0])


# name -> help; the keys a form spec takes after ':'
PARAMS = {
    "observer": "activation/weight range calibration: minmax (default) | percentile | mse",
    "percentile": "percentile of |values| kept by observer=percentile (default 99.99)",
    "act": "activation quantization: asym (zero point, default) | sym",
    "calib": "number of calibration images (default 64)",
    "seed": "seed that draws the calibration images (default 0)",
    "calib_data": "calibration dataset (as --data; default ROBUSTART_CALIB_DATA, else the evaluated dataset), "
                  "or images generated from the model: dsg | zeroq | noise (robustart.quant.dsg)",
    "recon": "BRECQ/AdaRound block reconstruction after calibration: on | off (default off)",
    "iters": "reconstruction iterations per block (default 200)",
    "first_last": "bits of the first conv and the classifier (default 8; 0 = the form's own bits)",
    "attn": "quantize attention matmuls (q, k, v, softmax) in transformers: on (default) | off",
    "method": "calibration: plain (default) | apq (APQ-ViT: bottom-elimination blockwise calibration + MPQ softmax)",
    "softmax": "attention-probability quantizer: uniform (fixed [0, 1] grid) | mpq (Matthew-effect preserving; "
               "the default with method=apq)",
    "elim": "method=apq: share of the smallest block-output errors left out of the metric (default 0.5)",
    "gen_iters": "calib_data=dsg|zeroq: optimizer steps per batch of generated images (default 60)",
    "gen_margin": "calib_data=dsg: slack of each sample's BN statistics, in units of the layer's BN std "
                  "(default 0.25; 0 = exact per-sample matching)",
}


@dataclass(frozen=True)
class QuantConfig:
    w_bits: int = 8
    a_bits: int = 8
    act: str = "asym"
    observer: str = "minmax"
    percentile: float = 99.99
    calib: int = 64
    seed: int = 0
    calib_data: str | None = None
    recon: bool = False
    iters: int = 200
    first_last: int = 8
    attn: bool = True
    method: str = "plain"
    softmax: str | None = None  # None: mpq with method=apq, else uniform
    elim: float = 0.5
    gen_iters: int | None = None  # None: robustart.quant.dsg's default
    gen_margin: float | None = None  # None: robustart.quant.dsg's default

    def __post_init__(self) -> None:
        if self.gen_iters is not None and self.gen_iters < 1:
            raise FormError(f"gen_iters must be >= 1, got {self.gen_iters}.")
        if self.gen_margin is not None:  # the bound lives with the generator
            from robustart.quant.dsg import GenConfig

            try:
                GenConfig(method="dsg", margin=self.gen_margin)
            except ValueError as e:
                raise FormError(f"gen_margin: {e}.") from None
        if self.method not in METHODS:
            raise FormError(f"method must be one of {', '.join(METHODS)}, got {self.method!r}.")
        if self.softmax is None:
            object.__setattr__(self, "softmax", "mpq" if self.method == "apq" else "uniform")
        if self.softmax not in SOFTMAX:
            raise FormError(f"softmax must be one of {', '.join(SOFTMAX)}, got {self.softmax!r}.")
        if not 0.0 <= float(self.elim) < 1.0:
            raise FormError(f"elim must be in [0, 1), got {self.elim}.")
        for b, what in ((self.w_bits, "weight"), (self.a_bits, "activation")):
            if not 2 <= b <= 8:
                raise FormError(f"{what} bits must be between 2 and 8, got {b}.")
        if self.act not in ACT_MODES:
            raise FormError(f"act must be one of {', '.join(ACT_MODES)}, got {self.act!r}.")
        if self.observer not in OBSERVERS:
            raise FormError(f"observer must be one of {', '.join(OBSERVERS)}, got {self.observer!r}.")
        if not 50.0 < float(self.percentile) <= 100.0:
            raise FormError(f"percentile must be in (50, 100], got {self.percentile}.")
        if self.calib < 1:
            raise FormError(f"calib (calibration images) must be >= 1, got {self.calib}.")
        if self.iters < 1:
            raise FormError(f"iters must be >= 1, got {self.iters}.")
        if self.first_last not in (0,) + tuple(range(2, 9)):
            raise FormError(f"first_last must be 0 or 2..8 bits, got {self.first_last}.")

    @property
    def form(self) -> str:
        return f"w{self.w_bits}a{self.a_bits}"

    @property
    def act_symmetric(self) -> bool:
        return self.act == "sym"

    def edge_bits(self) -> tuple[int, int]:
        """(weight, activation) bits of the first and last layers."""
        if self.first_last == 0:
            return self.w_bits, self.a_bits
        return max(self.w_bits, self.first_last), max(self.a_bits, self.first_last)

    def to_dict(self) -> dict:
        d = asdict(self)
        d["form"] = self.form
        if not self.recon:
            d.pop("iters")  # cannot change a result without reconstruction
        # settings at their plain defaults stay out of the dict: keys of existing forms are unchanged
        if self.method == "plain":
            d.pop("method")
            d.pop("elim")  # only BBC reads it
        if self.softmax == "uniform":
            d.pop("softmax")
        for k in ("gen_iters", "gen_margin"):
            if d[k] is None:
                d.pop(k)
        return d

    def spec(self) -> str:
        """The shortest form spec that gives this config back."""
        default = QuantConfig(w_bits=self.w_bits, a_bits=self.a_bits)
        extra = []
        for f in fields(self):
            if f.name in ("w_bits", "a_bits"):
                continue
            v = getattr(self, f.name)
            if f.name == "softmax":  # its default follows the method
                if v != ("mpq" if self.method == "apq" else "uniform"):
                    extra.append(f"softmax={v}")
                continue
            if v != getattr(default, f.name):
                extra.append(f"{f.name}={'on' if v is True else 'off' if v is False else v}")
        return self.form + (":" + ",".join(extra) if extra else "")


def _closest(word: str, options) -> str:
    return did_you_mean(word, options, cutoff=0.5)


def parse_form(text: str, *, model: str = "") -> tuple[str, dict]:
    """`'w4a4:observer=mse,recon=on'` -> ("w4a4", {"quant": QuantConfig(...)});
    `'binary-irnet'` -> ("binary", {"method": "irnet"}). Errors name the input and the choices."""
    where = f"model {model + '@' + text!r}" if model else f"form {text!r}"
    head, _, rest = text.strip().partition(":")
    head = head.strip().lower()
    kwargs: dict = {}
    for part in filter(None, (p.strip() for p in re.split(r"[:,]", rest))):
        if "=" not in part:
            raise FormError(f"{where}: {part!r} is not a setting; write key=value, e.g. observer=mse.")
        k, _, v = part.partition("=")
        kwargs[k.strip().lower().replace("-", "_")] = parse_value(v, FormError)
    if head == "binary" or head.startswith("binary-"):
        method = head.partition("-")[2] or str(kwargs.pop("method", ""))
        untrained = kwargs.pop("untrained", False)
        extra = sorted(set(kwargs) - {"method"})
        if extra:
            raise FormError(f"{where}: binary forms take no settings but untrained=yes ({', '.join(extra)}); "
                            "pick the method in the name, e.g. resnet18@binary-irnet.")
        if untrained not in (True, False, "yes", "no", 1, 0):
            raise FormError(f"{where}: untrained takes yes or no, got {untrained!r}.")
        methods = binary_methods()
        if method not in methods:
            raise FormError(f"{where}: unknown binarization method {method!r}.{_closest(method, methods)} "
                            f"Methods: {', '.join('binary-' + m for m in methods)}.")
        # untrained=yes: the fp weights binarized as they are, without the distillation recipe
        # (at chance on ImageNet); asked for by name, and part of the key and the label
        return "binary", {"method": method, **({"untrained": True} if untrained in (True, "yes", 1) else {})}
    if head == "bwta":  # binary weights, ternary activations (robustart.quant.bwta)
        from robustart.quant.bwta import parse as parse_bwta

        return "bwta", {"quant": parse_bwta(kwargs, where)}
    m = _FORM.match(head)
    if not m:
        raise FormError(f"{where}: unknown form {head!r}.{_closest(head, NAMED_FORMS + ('binary',))} "
                        f"Forms: {', '.join(NAMED_FORMS)} (any wNaM with 2 <= N, M <= 8), "
                        f"binary-<method> ({', '.join(binary_methods())}), bwta (transformers and mixers).")
    unknown = sorted(set(kwargs) - set(PARAMS))
    if unknown:
        hints = [f"{u!r}" + did_you_mean(u, PARAMS, cutoff=0.5, inline=True) for u in unknown]
        raise FormError(f"{where}: unknown setting {', '.join(hints)}. Settings: {', '.join(PARAMS)}.")
    for k in ("recon", "attn"):
        if k in kwargs and not isinstance(kwargs[k], bool):
            raise FormError(f"{where}: {k} must be on or off, got {kwargs[k]!r}.")
    for k in ("calib", "seed", "iters", "first_last", "gen_iters"):
        if k in kwargs and not isinstance(kwargs[k], int):
            raise FormError(f"{where}: {k} must be an integer, got {kwargs[k]!r}.")
    if "calib_data" in kwargs:
        kwargs["calib_data"] = str(kwargs["calib_data"])
    if "observer" in kwargs:
        kwargs["observer"] = str(kwargs["observer"]).lower()
    for k in ("method", "softmax"):
        if k in kwargs:
            kwargs[k] = str(kwargs[k]).lower()
    if "elim" in kwargs and not isinstance(kwargs["elim"], (int, float)):
        raise FormError(f"{where}: elim must be a number in [0, 1), got {kwargs['elim']!r}.")
    if "gen_margin" in kwargs:
        if isinstance(kwargs["gen_margin"], bool) or not isinstance(kwargs["gen_margin"], (int, float)):
            raise FormError(f"{where}: gen_margin must be a number (units of a layer's BN std), "
                            f"got {kwargs['gen_margin']!r}.")
        kwargs["gen_margin"] = float(kwargs["gen_margin"])
    try:
        cfg = QuantConfig(w_bits=int(m.group(1)), a_bits=int(m.group(2)), **kwargs)
    except FormError as e:
        raise FormError(f"{where}: {e}") from None
    return cfg.form, {"quant": cfg}


def binary_methods() -> tuple[str, ...]:
    """The registered binarization methods (robustart.quant.binary.BINARIZATION_METHODS)."""
    try:
        from robustart.quant.binary import BINARIZATION_METHODS
    except ImportError:  # binarization not part of this installation: no binary forms
        return ()
    return tuple(BINARIZATION_METHODS.names())


_binary_methods = binary_methods


def form_spec(form: str | None, quant: dict | None) -> str:
    """The form spec that names a job's form with every setting that changes its key (a job's
    `config.model.quant`): `w4a4:observer=mse`, `binary-reactnet`, `bwta:calib=8`. Reports and the
    CLI label models with it, so two settings of one form never share a label."""
    q = dict(quant or {})
    if not form or form == "fp":
        return "fp"
    if form == "binary":
        return f"binary-{q.get('method', '?')}" + (":untrained" if q.get("untrained") else "")
    try:
        if form == "bwta":
            from robustart.quant.bwta import BWTAConfig

            return BWTAConfig(**{k: v for k, v in q.items() if k != "form"}).spec()
        return QuantConfig(**{k: v for k, v in q.items() if k != "form"}).spec()
    except (TypeError, ValueError, RobustartError):  # a config from another robustart version
        return form
