"""The adversarial noise family: FGSM, PGD (Linf/L2/L1), MIM, C&W-L2, Square, AutoAttack
'standard', transfer attacks, and the `adversarial` suite.

Specs (grammar in spec.py):
  pgd                                   PGD-Linf, eps 4/255, 10 steps, alpha 2.5*eps/steps
  pgd:eps=4/255,steps=20,norm=linf      explicit budget
  pgd:budget=mid,norm=l2                RobustART budgets (BUDGETS below)
  autoattack:eps=4/255                  AutoAttack 'standard' (published settings only)
  transfer:src=efficientnet_lite1       PGD made on another zoo model, evaluated on this one
  adversarial[:budget=mid]              the suite: FGSM, PGD, MIM (Linf), PGD, C&W (L2), PGD (L1)

Each attack is an `Attack` registered in ATTACKS (`@register_attack`; the built-in ones are at
the end of this module, their arithmetic in attacks.py). Only samples the model classifies
correctly are attacked (a misclassified sample is already non-robust; its record keeps the clean
image), so robust accuracy never exceeds clean accuracy. Every adversarial batch is checked:
inside the eps-ball (+1e-6), in [0, 1], no NaN.
"""

from __future__ import annotations

import contextlib
import math

import torch

from robustart.errors import RobustartError, need_extra
from robustart.noises import attacks as A
from robustart.noises.base import Noise, NoiseFamily, NoiseOutput, sample_generator
from robustart.noises.spec import NoiseSpecError, take
from robustart.registry import Registry, did_you_mean

# RobustART's three budgets per norm, in [0, 1] pixel units (L1/L2 over a 3x224x224 image).
BUDGETS = {
    "linf": {"small": 0.5 / 255, "mid": 2 / 255, "large": 8 / 255},
    "l2": {"small": 0.5, "mid": 2.0, "large": 8.0},
    "l1": {"small": 100.0, "mid": 400.0, "large": 1600.0},
}
# Without eps or budget: Linf 4/255 is the ImageNet threat model of RobustBench (so numbers
# compare with its leaderboard); L2 and L1 take RobustART's mid budget.
DEFAULT_EPS = {"linf": 4 / 255, "l2": 2.0, "l1": 400.0}

SUITE_HELP = "the suite: FGSM, PGD, MIM (Linf), PGD, C&W (L2), PGD (L1) at one budget; WCAR"

COMMON = {
    "eps": "budget in [0, 1] pixel units (e.g. 4/255)",
    "budget": "small | mid | large (RobustART budgets per norm)",
    "norm": "linf | l2 | l1",
}
SPEED = {
    "amp": "none | bf16 | fp16: autocast for the attack's forward/backward passes",
    "channels_last": "run the model in channels_last memory format",
}
SUITE_PARAMS = {"budget": "small | mid | large (mid)", "attacks": "subset, e.g. fgsm+pgd-linf+mim+square",
                "amp": SPEED["amp"], "channels_last": SPEED["channels_last"]}


# --------------------------------------------------------------------------- parameter helpers


def positive_int(kw: dict, key: str, default, spec: str) -> int:
    v = kw.get(key, default)
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise NoiseSpecError(f"noise spec {spec!r}: {key} must be a positive integer, got {v!r}.")
    return v


def number(kw: dict, key: str, default, spec: str, lo: float = 0.0) -> float:
    v = kw.get(key, default)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v < lo:
        raise NoiseSpecError(f"noise spec {spec!r}: {key} must be a number >= {lo}, got {v!r}.")
    return float(v)


def _norm(value, spec, allowed) -> str:
    n = str(value).lower().replace("-", "")
    n = {"inf": "linf", "2": "l2", "1": "l1"}.get(n, n)
    if n not in allowed:
        raise NoiseSpecError(f"noise spec {spec!r}: norm {value!r} is not available here; choose from {', '.join(allowed)}.")
    return n


def _eps(kw, norm, spec) -> tuple[float, str | None]:
    if "eps" in kw and "budget" in kw:
        raise NoiseSpecError(f"noise spec {spec!r}: give eps or budget, not both.")
    if "budget" in kw:
        b = str(kw["budget"]).lower()
        if b not in BUDGETS[norm]:
            raise NoiseSpecError(f"noise spec {spec!r}: budget {kw['budget']!r} is not one of small, mid, large.")
        return BUDGETS[norm][b], b
    eps = number(kw, "eps", DEFAULT_EPS[norm], spec)
    if norm == "linf" and eps > 1:
        raise NoiseSpecError(f"noise spec {spec!r}: Linf eps {eps} is over 1; eps is in [0, 1] pixel units (e.g. 4/255).")
    return eps, None


def _speed(kw, spec) -> dict:
    amp = str(kw.get("amp", "none")).lower()
    if amp not in A.AMP_DTYPES:
        raise NoiseSpecError(f"noise spec {spec!r}: amp must be one of {', '.join(A.AMP_DTYPES)}, got {amp!r}.")
    cl = kw.get("channels_last", False)
    if not isinstance(cl, bool):
        raise NoiseSpecError(f"noise spec {spec!r}: channels_last must be true or false.")
    return {"amp": amp, "channels_last": cl}


# --------------------------------------------------------------------------- the attack registry


class Attack:
    """An attack the adversarial family can run: `--noise NAME[:eps=..,norm=..,...]`, and a
    member of `adversarial` suites. A new attack is one subclass registered with
    `@register_attack`; `robustart noises`, the spec parser, the suite and the reports read it
    from the registry.

      name, help        its spec name and one line about it
      norms             the norms it runs in; the first is its default
      params            its own parameters -> help (eps, budget and norm are common to all;
                        amp and channels_last too when `speed` is True)
      blackbox          needs no gradient of the evaluated model (score- or transfer-based)
      suite             the norms in which the default `adversarial` suite runs it
      optional          the norms in which `adversarial:attacks=...` may add it to a suite
      examples          quick specs (a few steps, a few images) that the registry tests run
      extra             the pip extra it needs (`pip install robustart[EXTRA]`), if any

    `configure` adds the attack's settings to a job config (which already has name, norm, eps,
    budget, and amp / channels_last); every setting that can change a result belongs there, as
    the config is the job's key. `run` attacks the samples the model gets right and returns
    adversarial images inside the eps-ball (checked by the family)."""

    name: str = ""
    help: str = ""
    norms: tuple[str, ...] = ("linf",)
    params: dict[str, str] = {}
    blackbox: bool = False
    speed: bool = True
    suite: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    examples: tuple[str, ...] = ()
    extra: str = ""

    def configure(self, cfg: dict, kw: dict, spec: str) -> dict:
        return cfg

    def prepare(self, noise: "AdversarialNoise", model, device) -> None:
        """Once per job (e.g. load a transfer source model)."""

    def run(self, noise: "AdversarialNoise", model, x, y, cfg: dict, gens, seed: int) -> A.AttackOutput:
        raise NotImplementedError

    def all_params(self) -> dict[str, str]:
        return {**COMMON, **(SPEED if self.speed else {}), **self.params}

    def cost(self, cfg: dict) -> dict:
        """Forward and backward passes per attacked image (an upper bound: a sample stops once
        fooled): one of each per step and restart."""
        n = float(cfg.get("steps", 1)) * float(cfg.get("restarts", 1))
        return {"forward": n, "backward": n}


def _check_attack(name, obj) -> None:
    if not (isinstance(obj, Attack) or (isinstance(obj, type) and issubclass(obj, Attack))):
        raise TypeError(f"attack {name!r} must be a robustart.noises.adversarial.Attack, got {obj!r}")
    bad = [n for n in obj.norms if n not in BUDGETS]
    if not obj.norms or bad:
        raise ValueError(f"attack {name!r}: norms must be among {', '.join(BUDGETS)}, got {obj.norms!r}")


ATTACKS = Registry("attack", "attacks", error=NoiseSpecError, check=_check_attack)


def register_attack(cls=None, *, replace: bool = False):
    """Class decorator: register an Attack subclass (an instance of it) under its `name`."""
    def deco(c):
        ATTACKS.register(c.name, c() if isinstance(c, type) else c, replace=replace)
        return c
    return deco(cls) if cls is not None else deco


def attack_config(name: str, kw: dict, spec: str) -> dict:
    """The job config of one attack spec (`pgd:eps=4/255,steps=20`)."""
    atk = ATTACKS.get(name)
    take(kw, spec, atk.all_params())
    norm = _norm(kw.get("norm", atk.norms[0]), spec, atk.norms)
    eps, budget = _eps(kw, norm, spec)
    if atk.extra:
        need_extra(atk.extra, f"noise spec {spec!r} ({name} runs the authors' implementation)")
    elif norm == "l1":
        need_extra("autoattack", f"noise spec {spec!r} (L1 attacks project with AutoAttack's L1 projection)")
    cfg = {"name": name, "norm": norm, "eps": eps}
    if budget:
        cfg["budget"] = budget
    if atk.speed:
        cfg.update(_speed(kw, spec))
    return atk.configure(cfg, kw, spec)


def suite_pool() -> list[tuple[str, str]]:
    """(attack, norm) pairs an `adversarial` suite can hold: the default suite (per norm, every
    attack that joins it in that norm), then the attacks that `attacks=` may add."""
    attacks = ATTACKS.values()
    default = [(a.name, n) for n in BUDGETS for a in attacks if n in a.suite]
    extra = [(a.name, n) for a in attacks for n in a.optional if (a.name, n) not in default]
    return default + extra


def default_suite() -> list[tuple[str, str]]:
    return [(a.name, n) for n in BUDGETS for a in ATTACKS.values() if n in a.suite]


def parse(name: str, args: list, kwargs: dict, spec: str) -> dict | list[dict]:
    if args:
        raise NoiseSpecError(f"noise spec {spec!r}: {name} takes key=value parameters only, e.g. {name}:eps=4/255.")
    if name != "adversarial":
        return attack_config(name, dict(kwargs), spec)
    take(kwargs, spec, SUITE_PARAMS)
    budget = str(kwargs.get("budget", "mid")).lower()
    chosen = default_suite()
    if "attacks" in kwargs:
        # `pgd` takes PGD in every norm of the suite, `pgd-l2` just one; attacks that the default
        # suite leaves out for their cost (square, autoattack) can join.
        wanted = [a.strip().lower() for a in str(kwargs["attacks"]).split("+") if a.strip()]
        pool = suite_pool()
        names = {a for a, _ in pool} | {f"{a}-{n}" for a, n in pool}
        bad = [a for a in wanted if a not in names]
        if bad:
            hints = "".join(did_you_mean(b, names) for b in bad)
            raise NoiseSpecError(f"noise spec {spec!r}: unknown attack(s) {bad} in attacks=.{hints} Choose from "
                                 f"{', '.join(sorted(names))}.")
        chosen = [(a, n) for a, n in pool if a in wanted or f"{a}-{n}" in wanted]
    speed = {k: kwargs[k] for k in ("amp", "channels_last") if k in kwargs}
    out = []
    for attack, norm in chosen:
        kw = {"norm": norm, "budget": budget}
        if ATTACKS.get(attack).speed:
            kw.update(speed)
        out.append(attack_config(attack, kw, spec))
    return out


# --------------------------------------------------------------------------- runtime


class AttackError(RobustartError):
    """An attack broke a rule every adversarial image must keep, or the model cannot be attacked."""


@contextlib.contextmanager
def attack_mode(model: torch.nn.Module):
    """Eval mode and frozen parameters while attacking; the caller's modes come back after."""
    modes = [(m, m.training) for m in model.modules()]
    grads = [(p, p.requires_grad) for p in model.parameters()]
    model.eval()
    for p, _ in grads:
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for m, t in modes:
            m.training = t
        for p, g in grads:
            p.requires_grad_(g)


def verify_adversarial(x_adv: torch.Tensor, x: torch.Tensor, eps: float, norm: str, what: str) -> None:
    """Every adversarial image: no NaN, inside [0, 1], inside the eps-ball (+1e-6 relative)."""
    if not torch.isfinite(x_adv).all():
        raise AttackError(f"{what}: adversarial images contain NaN/inf.")
    lo, hi = float(x_adv.min()), float(x_adv.max())
    if lo < 0 or hi > 1:
        raise AttackError(f"{what}: adversarial images leave [0, 1] (min {lo}, max {hi}).")
    d = A.norm_of(x_adv - x, norm)
    if float(d.max()) > eps + 1e-6 * max(1.0, eps):
        raise AttackError(f"{what}: a {norm} perturbation of {float(d.max())} exceeds eps={eps}.")


class _Resized(torch.nn.Module):
    """A source model that sees the target's input geometry: transfer images are made in the
    target's pixel space (so its eps-ball holds there) and resized for the source."""

    def __init__(self, model, size):
        super().__init__()
        self.model, self.size = model, tuple(size)

    def forward(self, x):
        if tuple(x.shape[-2:]) != self.size:
            x = torch.nn.functional.interpolate(x, size=self.size, mode="bilinear", antialias=True, align_corners=False)
        return self.model(x)


class AdversarialNoise(Noise):
    """One attack job: the registered Attack runs on the samples the model gets right; every
    adversarial batch is verified; the trust checks of the job land in its meta.json."""

    @property
    def fields(self):
        import pyarrow as pa

        return [
            ("attacked", pa.bool_()),  # false: misclassified clean, left as is
            ("success", pa.bool_()),  # clean-correct and fooled
            ("pert_norm", pa.float32()),  # the perturbation's size in the attack's norm
            ("pert_linf", pa.float32()),
            ("min_norm", pa.float32()),  # C&W: smallest adversarial found (inf: none); else NaN
            ("grad_zero", pa.bool_()),  # input gradient all zero at the start (masking sign)
            ("loss_gain", pa.float32()),  # CE at the last iterate minus at the start (NaN: n/a)
        ]

    def __init__(self, config: dict):
        super().__init__(config)
        self.attack = ATTACKS.get(config["name"])
        self.source = None  # a transfer attack's source model
        self._checks: dict = {"warnings": []}
        self._checked = False

    def warn(self, message: str) -> None:
        """Keep a warning in the job's checks (once)."""
        if message not in self._checks["warnings"]:
            self._checks["warnings"].append(message)

    def prepare(self, model, device, data=None):
        self.attack.prepare(self, model, device)
        if self.config.get("channels_last"):
            model.to(memory_format=torch.channels_last)

    # -- the trust checks of a job, on its first batch (after AutoAttack's own checks)
    def _first_batch_checks(self, model, x, clean_logits):
        c = self._checks
        c["eval_mode"] = not any(m.training for m in model.modules())
        p = clean_logits
        looks_like_probs = bool(((p >= 0) & (p <= 1)).all() and torch.allclose(p.sum(1), torch.ones_like(p[:, 0]), atol=1e-3))
        c["outputs_are_logits"] = not looks_like_probs
        if looks_like_probs:
            raise AttackError("the model's outputs are probabilities (rows in [0, 1] summing to 1); attacks "
                              "need logits. Remove the final softmax.")
        with torch.no_grad():
            again = model(x).float()
        diff = float((again - p).abs().max())
        scale = float(p.abs().max()) or 1.0
        c["forward_max_abs_diff"] = diff
        c["deterministic_forward"] = diff <= 1e-3 * scale
        if not c["deterministic_forward"]:
            self.warn(f"two forward passes of the same batch differ by {diff:.3g}: the model is "
                      "randomised; gradient attacks may be weakened (consider EOT).")

    def apply(self, model, x, y, ids, clean_logits, seed, variant=None):
        cfg = self.config
        n = x.shape[0]
        nan = [float("nan")] * n
        if not self._checked:
            self._first_batch_checks(model, x, clean_logits)
            self._checked = True
        target = clean_logits.argmax(1) == y  # attack only what the model gets right
        x_adv = x.clone()
        grad_zero = [False] * n
        loss_gain = list(nan)
        min_norm = list(nan)
        idx = target.nonzero().flatten()
        if idx.numel():
            xs, ys = x[idx], y[idx]
            if cfg.get("channels_last"):
                xs = xs.contiguous(memory_format=torch.channels_last)
            gens = [sample_generator(seed, ids[i], cfg["name"]) for i in idx.tolist()]
            with attack_mode(model), torch.enable_grad():
                out = self._attack_fitting(model, xs, ys, gens, seed)
            verify_adversarial(out.x, xs, cfg["eps"], cfg["norm"], f"{cfg['name']} ({cfg['norm']}, eps={cfg['eps']:.6g})")
            x_adv[idx] = out.x.to(x_adv.dtype).contiguous()
            for k, i in enumerate(idx.tolist()):
                if out.grad_zero is not None:
                    grad_zero[i] = bool(out.grad_zero[k])
                if out.loss_gain is not None:
                    loss_gain[i] = float(out.loss_gain[k])
                if out.min_norm is not None:
                    min_norm[i] = float(out.min_norm[k])
        delta = x_adv - x
        extras = {
            "attacked": target.cpu().tolist(),
            "pert_norm": A.norm_of(delta, cfg["norm"]).cpu().tolist(),
            "pert_linf": A.norm_of(delta, "linf").cpu().tolist(),
            "min_norm": min_norm,
            "grad_zero": grad_zero,
            "loss_gain": loss_gain,
        }
        return NoiseOutput(x_adv, extras)

    def _attack_fitting(self, model, x, y, gens, seed) -> A.AttackOutput:
        """The attack on the batch, or on halves of it when the device runs out of memory
        (attacks keep several copies of the batch and its graph)."""
        from robustart.oom import on_halves

        def run(lo, hi):
            if (lo, hi) == (0, x.shape[0]):
                return self._attack(model, x, y, gens, seed)
            return self._attack(model, x[lo:hi], y[lo:hi], gens[lo:hi], seed)

        def cat(a, b):
            def c(u, v):
                return None if u is None else torch.cat([u, v])

            return A.AttackOutput(torch.cat([a.x, b.x]), c(a.grad_zero, b.grad_zero), c(a.loss_gain, b.loss_gain),
                                  c(a.min_norm, b.min_norm))

        return on_halves(run, x.shape[0], cat)

    def _attack(self, model, x, y, gens, seed) -> A.AttackOutput:
        return self.attack.run(self, model, x, y, self.config, gens, seed)

    def complete(self, extras, clean_logits, logits, y):
        success = (clean_logits.argmax(1) == y) & (logits.argmax(1) != y)
        return {**extras, "success": success.cpu().tolist()}

    def job_checks(self) -> dict:
        return self._checks


def attack(model, x: torch.Tensor, y: torch.Tensor, spec: str | dict = "pgd", *, seed: int = 0,
           ids: list[str] | None = None) -> torch.Tensor:
    """Adversarial images for a batch: `model` takes [0, 1] images and returns logits. Samples the
    model misclassifies are returned unchanged; the model's modes are restored afterwards."""
    from robustart.noises import parse_noise

    cfg = parse_noise(spec)
    if cfg["name"] not in ATTACKS:
        raise NoiseSpecError(f"{spec!r} is not a single attack; choose from {', '.join(ATTACKS.names())}.")
    noise = AdversarialNoise(cfg)
    was_training = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        noise.prepare(model, x.device)
        with torch.no_grad():
            clean = model(x).float()
        ids = ids or [str(i) for i in range(x.shape[0])]
        return noise.apply(model, x, y, ids, clean, seed).x
    finally:
        for m, t in was_training:
            m.training = t


def summarize(results) -> dict:
    """Suite metrics: WCAR over all attacks and per norm (a join of the jobs' records); with
    black-box attacks in the suite, the share of samples only they break (a masking sign)."""
    from robustart.results import metrics as M

    if len(results) < 2:
        return {}
    recs = [r.records for r in results]
    out = {"wcar": M.wcar(recs), "wcar_n_attacks": len(recs)}
    by_norm: dict = {}
    for r in results:
        by_norm.setdefault(r.meta["config"]["noise"]["norm"], []).append(r.records)
    for norm, rs in by_norm.items():
        out[f"wcar_{norm}"] = M.wcar(rs)

    def blackbox(r):
        name = r.meta["config"]["noise"]["name"]
        return name in ATTACKS and ATTACKS.get(name).blackbox

    black = [r.records for r in results if blackbox(r)]
    white = [r.records for r in results if not blackbox(r)]
    if black and white:  # a black-box attack beating the white-box ones is a masking sign
        out["blackbox_only_share"] = M.blackbox_only_share(white, black[0] if len(black) == 1 else M.survivors_frame(black))
    return out


MASKING_WARNING = ("gradient-masking signs: {zero:.1f}% of attacked samples have a zero input gradient, {stuck:.1f}% "
                   "were neither fooled nor had their loss raised; try more restarts, or a black-box attack (square).")


class AdversarialFamily(NoiseFamily):
    section = "adversarial"

    def names(self):
        out = {name: atk.help for name, atk in ATTACKS.items()}
        out["adversarial"] = SUITE_HELP
        return out

    def params(self, name):
        return SUITE_PARAMS if name == "adversarial" else ATTACKS.get(name).all_params()

    def examples(self, name):
        if name == "adversarial":
            return ["adversarial:attacks=fgsm+pgd-l2,budget=small"]
        return list(ATTACKS.get(name).examples) or [f"{name}:eps=1/255"]

    def parse(self, name, args, kwargs, spec):
        return parse(name, args, kwargs, spec)

    def build(self, config):
        return AdversarialNoise(config)

    def summarize(self, results):
        return summarize(results)

    def cost(self, config):
        """The clean pass, the attack's passes and the pass on the adversarial images."""
        atk = ATTACKS.get(config["name"]).cost(config)
        return {"forward": 2.0 + atk.get("forward", 0.0), "backward": float(atk.get("backward", 0.0))}

    def warnings(self, metrics):
        zero, stuck = metrics.get("zero_grad_share", 0), metrics.get("no_loss_gain_share", 0)
        if zero > 0 or stuck > 10:
            return [MASKING_WARNING.format(zero=zero, stuck=stuck)]
        return []


FAMILY = AdversarialFamily()


# --------------------------------------------------------------------------- the built-in attacks


@register_attack
class FGSM(Attack):
    name = "fgsm"
    help = "FGSM, one signed-gradient step (Linf)"
    examples = ("fgsm:eps=2/255",)
    suite = ("linf",)

    def run(self, noise, model, x, y, cfg, gens, seed):
        return A.fgsm(model, x, y, eps=cfg["eps"], amp=cfg.get("amp", "none"))


@register_attack
class PGD(Attack):
    name = "pgd"
    help = "PGD with random start, Linf / L2 / L1 (norm=...)"
    examples = ("pgd:eps=1/255,steps=3", "pgd:norm=l2,eps=0.5,steps=3", "pgd:norm=l1,eps=100,steps=3")
    norms = A.NORMS
    suite = A.NORMS
    params = {"steps": "iterations (10)", "alpha": "step size (2.5*eps/steps)",
              "restarts": "random restarts for samples not yet fooled (1)",
              "random_start": "start from a random point in the ball (true)",
              "l1_sparsity": "L1 only: share of coordinates left untouched per step (0.99)"}

    def configure(self, cfg, kw, spec):
        cfg["steps"] = positive_int(kw, "steps", 10, spec)
        cfg["alpha"] = number(kw, "alpha", 2.5 * cfg["eps"] / cfg["steps"], spec)
        cfg["restarts"] = positive_int(kw, "restarts", 1, spec)
        cfg["random_start"] = bool(kw.get("random_start", True))
        if cfg["norm"] == "l1":
            cfg["l1_sparsity"] = number(kw, "l1_sparsity", 0.99, spec)
            if not cfg["l1_sparsity"] < 1:
                raise NoiseSpecError(f"noise spec {spec!r}: l1_sparsity must be in [0, 1).")
        return cfg

    def run(self, noise, model, x, y, cfg, gens, seed):
        return A.pgd(model, x, y, eps=cfg["eps"], alpha=cfg["alpha"], steps=cfg["steps"], norm=cfg["norm"],
                     random_init=cfg["random_start"], restarts=cfg["restarts"], amp=cfg.get("amp", "none"), gens=gens,
                     l1_sparsity=cfg.get("l1_sparsity", 0.99))


@register_attack
class MIM(Attack):
    name = "mim"
    help = "momentum iterative method, MI-FGSM (Linf)"
    examples = ("mim:eps=1/255,steps=3",)
    suite = ("linf",)
    params = {"steps": "iterations (10)", "alpha": "step size (eps/steps)", "decay": "momentum decay (1.0)"}

    def configure(self, cfg, kw, spec):
        cfg["steps"] = positive_int(kw, "steps", 10, spec)
        cfg["alpha"] = number(kw, "alpha", cfg["eps"] / cfg["steps"], spec)
        cfg["decay"] = number(kw, "decay", 1.0, spec)
        return cfg

    def run(self, noise, model, x, y, cfg, gens, seed):
        return A.pgd(model, x, y, eps=cfg["eps"], alpha=cfg["alpha"], steps=cfg["steps"], norm="linf",
                     random_init=False, decay=cfg["decay"], amp=cfg.get("amp", "none"))


@register_attack
class CW(Attack):
    name = "cw"
    help = "Carlini-Wagner L2 with binary search over c; success if the L2 norm <= eps"
    examples = ("cw:eps=2.0,steps=10,binary_steps=1",)
    norms = ("l2",)
    suite = ("l2",)
    params = {"steps": "Adam steps per binary-search step (100)", "binary_steps": "binary-search steps over c (5)",
              "c": "initial c (1.0)", "kappa": "confidence (0)", "lr": "Adam learning rate (0.01)"}

    def configure(self, cfg, kw, spec):
        cfg.update(steps=positive_int(kw, "steps", 100, spec), binary_steps=positive_int(kw, "binary_steps", 5, spec),
                   c=number(kw, "c", 1.0, spec), kappa=number(kw, "kappa", 0.0, spec), lr=number(kw, "lr", 0.01, spec))
        return cfg

    def cost(self, cfg):
        n = float(cfg["steps"] * cfg["binary_steps"])
        return {"forward": n, "backward": n}

    def run(self, noise, model, x, y, cfg, gens, seed):
        out = A.cw_l2(model, x, y, c=cfg["c"], kappa=cfg["kappa"], steps=cfg["steps"], lr=cfg["lr"],
                      binary_steps=cfg["binary_steps"], amp=cfg.get("amp", "none"))
        # A budgeted evaluation: the minimum-norm adversarial counts only inside eps.
        inside = out.min_norm <= cfg["eps"]
        x_out = torch.where(inside.view(-1, 1, 1, 1), out.x, x)
        return A.AttackOutput(x_out, None, None, out.min_norm)


@register_attack
class Square(Attack):
    name = "square"
    help = "Square Attack, score-based black box (pyautoattack), Linf / L2"
    examples = ("square:eps=8/255,queries=20",)
    norms = ("linf", "l2")
    blackbox = True
    extra = "autoattack"
    optional = ("linf",)  # in a suite on request: 5000 queries per sample
    params = {"queries": "query budget (5000)", "p_init": "initial square size (0.8)"}

    def configure(self, cfg, kw, spec):
        cfg["queries"] = positive_int(kw, "queries", 5000, spec)
        cfg["p_init"] = number(kw, "p_init", 0.8, spec)
        return cfg

    def cost(self, cfg):
        return {"forward": float(cfg["queries"]), "backward": 0.0}  # score-based: forward passes only

    def run(self, noise, model, x, y, cfg, gens, seed):
        return A.square(model, x, y, eps=cfg["eps"], norm=cfg["norm"], queries=cfg["queries"], p_init=cfg["p_init"],
                        seed=seed)


@register_attack
class AutoAttack(Attack):
    name = "autoattack"
    help = "AutoAttack 'standard': APGD-CE, APGD-T, FAB-T, Square (pyautoattack)"
    examples = ("autoattack:eps=1/255",)
    norms = A.NORMS
    speed = False  # the published settings only
    extra = "autoattack"
    optional = ("linf",)

    def configure(self, cfg, kw, spec):
        return {**cfg, "version": "standard"}

    def cost(self, cfg):
        # APGD-CE 100 iterations, APGD-T and FAB-T 9 targets x 100, Square 5000 queries
        return {"forward": 100.0 + 900 + 900 + 5000, "backward": 100.0 + 900 + 900}

    def run(self, noise, model, x, y, cfg, gens, seed):
        log: list = []
        out = A.autoattack(model, x, y, eps=cfg["eps"], norm=cfg["norm"], seed=seed, log=log)
        for m in log:
            noise.warn(m)
        return out


@register_attack
class Transfer(Attack):
    name = "transfer"
    help = "black-box transfer: adversarial images made on src=MODEL, evaluated here"
    examples = ("transfer:src=efficientnet_lite1,eps=8/255,steps=2",)
    norms = ("linf", "l2", "l1")
    blackbox = True
    params = {"src": "source zoo model (required)", "attack": "fgsm | pgd | mim on the source (pgd)",
              "steps": "iterations (10)", "alpha": "step size", "decay": "MIM decay"}

    def configure(self, cfg, kw, spec):
        cfg["steps"] = positive_int(kw, "steps", 10, spec)
        if "src" not in kw:
            raise NoiseSpecError(f"noise spec {spec!r}: transfer needs src=MODEL (a zoo model to craft the images on).")
        from robustart.zoo.registry import get_entry

        eps, norm = cfg["eps"], cfg["norm"]
        cfg["src"] = get_entry(str(kw["src"])).name  # unknown names answer "did you mean"
        attack = str(kw.get("attack", "pgd")).lower()
        if attack not in ("fgsm", "pgd", "mim"):
            raise NoiseSpecError(f"noise spec {spec!r}: transfer attack must be fgsm, pgd or mim.")
        if attack != "pgd" and norm != "linf":
            raise NoiseSpecError(f"noise spec {spec!r}: {attack} is Linf only.")
        cfg["attack"] = attack
        default_alpha = {"fgsm": eps, "pgd": 2.5 * eps / cfg["steps"], "mim": eps / cfg["steps"]}[attack]
        cfg["alpha"] = number(kw, "alpha", default_alpha, spec)
        if attack == "mim":
            cfg["decay"] = number(kw, "decay", 1.0, spec)
        return cfg

    def cost(self, cfg):
        # passes of the source model (counted as this model's); FGSM is one step whatever `steps`
        n = 1.0 if cfg["attack"] == "fgsm" else float(cfg["steps"])
        return {"forward": n, "backward": n}

    def prepare(self, noise, model, device):
        from robustart.zoo.build import load_model

        src = noise.source = load_model(noise.config["src"], device=device, progress=False)
        noise._checks["source_weights_sha256"] = src.weights_sha256
        if noise.config.get("channels_last"):
            src.to(memory_format=torch.channels_last)

    def run(self, noise, model, x, y, cfg, gens, seed):
        src = _Resized(noise.source, noise.source.entry.input_size[-2:])
        with attack_mode(src):
            made = A.pgd(src, x, y, eps=cfg["eps"], alpha=cfg["alpha"], steps=cfg["steps"], norm=cfg["norm"],
                         random_init=cfg["attack"] == "pgd", decay=cfg.get("decay"), amp=cfg.get("amp", "none"),
                         gens=gens, keep_best=False, early_stop=False)
        return A.AttackOutput(made.x)
