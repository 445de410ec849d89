"""The spec grammar shared by noise specs (`pgd:eps=4/255,steps=20`) and model forms
(`NAME@w4a4:observer=mse`): a neutral module, so every layer can parse specs without importing
the noises.

  NAME                              pgd, imagenet-c, adversarial, clean
  NAME:k=v,k=v                      pgd:eps=4/255,steps=20,norm=linf
  NAME:POS[:POS...][,k=v...]        corruption:glass_blur:3, corruption:all:severity=3

Parts after the name are separated by ':' or ','. A part with '=' is a keyword, anything else is
positional. Values are read as a fraction (`4/255`), an int, a float, a bool (true/false/yes/no/
on/off) or a plain string, in that order. Keywords are lower-cased; '-' in them becomes '_'.
"""

from __future__ import annotations

import re
from fractions import Fraction

from robustart.errors import RobustartError
from robustart.registry import did_you_mean

_BOOLS = {"true": True, "yes": True, "on": True, "false": False, "no": False, "off": False}
_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")


class SpecError(RobustartError):
    """A spec that does not parse, or names an unknown parameter."""


def parse_value(text: str, error: type[Exception] = SpecError):
    t = text.strip()
    if "/" in t:
        num, _, den = t.partition("/")
        if _NUMBER.match(num.strip()) and _NUMBER.match(den.strip()):
            d = float(den)
            if d == 0:
                raise error(f"{text!r}: division by zero in a noise parameter.")
            return float(Fraction(num.strip()) / Fraction(den.strip()))
    if re.fullmatch(r"[+-]?\d+", t):
        return int(t)
    if _NUMBER.match(t):
        return float(t)
    if t.lower() in _BOOLS:
        return _BOOLS[t.lower()]
    return t


def split_spec(spec: str, error: type[Exception] = SpecError) -> tuple[str, list, dict]:
    """`'pgd:eps=4/255,steps=20'` -> `('pgd', [], {'eps': 0.01568.., 'steps': 20})`."""
    if not isinstance(spec, str) or not spec.strip():
        raise error("empty noise spec; try `clean`, `pgd` or `pgd:eps=4/255` (see `robustart noises`).")
    name, _, rest = spec.strip().partition(":")
    name = name.strip().lower().replace("_", "-") if name.strip().lower() != "clean" else "clean"
    args: list = []
    kwargs: dict = {}
    for part in filter(None, (p.strip() for p in re.split(r"[:,]", rest))):
        if "=" in part:
            k, _, v = part.partition("=")
            k = k.strip().lower().replace("-", "_")
            if not k:
                raise error(f"noise spec {spec!r}: {part!r} has no parameter name before '='.")
            if k in kwargs:
                raise error(f"noise spec {spec!r}: parameter {k!r} is given twice.")
            kwargs[k] = parse_value(v, error)
        else:
            args.append(parse_value(part, error))
    return name, args, kwargs


def take(kwargs: dict, spec: str, allowed: dict, error: type[Exception] = SpecError) -> dict:
    """Check that `kwargs` only names parameters in `allowed` (name -> help) and return it."""
    unknown = sorted(set(kwargs) - set(allowed))
    if unknown:
        hints = [f"{u!r}" + did_you_mean(u, allowed, inline=True) for u in unknown]
        raise error(f"noise spec {spec!r}: unknown parameter {', '.join(hints)}. "
                    f"It takes: {', '.join(sorted(allowed))}.")
    return kwargs
