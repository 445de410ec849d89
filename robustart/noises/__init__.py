"""Noise families. A noise spec (`--noise NAME[:k=v,...]`, grammar in `spec.py`) parses into one
job config, or a list of them for a suite; each config goes into its job's key.

A new noise family is one module (see `base.py` for what it provides) plus one line in FAMILIES.
"""

from __future__ import annotations

import importlib
from functools import lru_cache

from robustart.noises.spec import NoiseSpecError, split_spec

__all__ = ["FAMILIES", "NoiseSpecError", "available", "build_noise", "expand_noise", "parse_noise", "summarize"]

FAMILIES = [
    "robustart.noises.clean",
    "robustart.noises.adversarial",
    "robustart.noises.corruption",
    "robustart.noises.system",
]


@lru_cache(maxsize=1)
def _families():
    return [importlib.import_module(m) for m in FAMILIES]


def available() -> dict[str, str]:
    """Every noise name a spec can start with -> one-line help."""
    out = {}
    for fam in _families():
        out.update(fam.NAMES)
    return out


def family_of(name: str):
    for fam in _families():
        if name in fam.NAMES:
            return fam
    import difflib

    names = sorted(available())
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    raise NoiseSpecError(f"Unknown noise {name!r}.{hint} Available: {', '.join(names)} (see `robustart noises`).")


def expand_noise(spec: str | dict | list | None) -> list[dict]:
    """The job configs of a spec: one for a single noise, several for a suite."""
    if isinstance(spec, dict):
        return [dict(spec)]
    if isinstance(spec, list):
        return [c for s in spec for c in expand_noise(s)]
    spec = spec or "clean"
    name, args, kwargs = split_spec(spec)
    out = family_of(name).parse(name, args, kwargs, spec)
    return out if isinstance(out, list) else [out]


def parse_noise(spec: str | dict | None) -> dict:
    """The one job config of a spec; a suite spec is an error here (use `expand_noise`)."""
    configs = expand_noise(spec)
    if len(configs) != 1:
        raise NoiseSpecError(f"noise spec {spec!r} is a suite of {len(configs)} jobs: run it with "
                             "robustart.evaluate_suite() (the CLI's `eval` does).")
    return configs[0]


def build_noise(config: dict):
    """The runtime Noise of a job config (None for clean)."""
    return family_of(config["name"]).build(config)


def summarize(results) -> dict:
    """Suite metrics over finished jobs (JobResults): each family summarises its own jobs."""
    out = {}
    by_family: dict = {}
    for res in results:
        fam = family_of(res.meta["config"]["noise"]["name"])
        by_family.setdefault(fam, []).append(res)
    for fam, results in by_family.items():
        if hasattr(fam, "summarize"):
            out.update(fam.summarize(results))
    return out
