"""Noise families. A noise spec (`--noise NAME[:k=v,...]`) parses into a config dict that goes
into the job key. Only `clean` exists so far; adversarial, corruption and system noises plug in
here as one module each plus one line in NOISES."""

from __future__ import annotations

from robustart.errors import RobustartError

NOISES = {
    "clean": "no noise: the images as decoded and preprocessed by the model's eval transform",
}


def parse_noise(spec: str | dict | None) -> dict:
    if isinstance(spec, dict):
        return dict(spec)
    spec = (spec or "clean").strip()
    name, _, params = spec.partition(":")
    if name not in NOISES:
        raise RobustartError(
            f"Unknown noise {spec!r}. Available: {', '.join(sorted(NOISES))}."
        )
    if name == "clean" and params:
        raise RobustartError(f"noise 'clean' takes no parameters, got {spec!r}.")
    return {"name": name}
