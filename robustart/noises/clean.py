"""No noise: the images as decoded and preprocessed by the model's eval transform."""

from __future__ import annotations

from robustart.noises.spec import NoiseSpecError

NAMES = {"clean": "no noise: the images as the model's eval transform gives them"}


def parse(name: str, args: list, kwargs: dict, spec: str) -> dict:
    if args or kwargs:
        raise NoiseSpecError(f"noise 'clean' takes no parameters, got {spec!r}.")
    return {"name": "clean"}


def build(config: dict):
    return None  # the engine records the clean predictions directly
