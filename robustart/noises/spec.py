"""The noise spec grammar (`robustart/spec.py`, shared with model forms), raising
`NoiseSpecError`."""

from __future__ import annotations

from robustart import spec as _spec
from robustart.spec import SpecError


class NoiseSpecError(SpecError):
    """A noise spec that does not parse, or names an unknown noise or parameter."""


def parse_value(text: str):
    return _spec.parse_value(text, NoiseSpecError)


def split_spec(spec: str) -> tuple[str, list, dict]:
    """`'pgd:eps=4/255,steps=20'` -> `('pgd', [], {'eps': 0.01568.., 'steps': 20})`."""
    return _spec.split_spec(spec, NoiseSpecError)


def take(kwargs: dict, spec: str, allowed: dict) -> dict:
    """Check that `kwargs` only names parameters in `allowed` (name -> help) and return it."""
    return _spec.take(kwargs, spec, allowed, NoiseSpecError)
