"""No noise: the images as decoded and preprocessed by the model's eval transform."""

from __future__ import annotations

from robustart.noises.base import NoiseFamily
from robustart.noises.spec import NoiseSpecError

NAMES = {"clean": "no noise: the images as the model's eval transform gives them"}


class CleanFamily(NoiseFamily):
    section = "clean"

    def names(self):
        return NAMES

    def examples(self, name):
        return ["clean"]

    def parse(self, name, args, kwargs, spec):
        if args or kwargs:
            raise NoiseSpecError(f"noise 'clean' takes no parameters, got {spec!r}.")
        return {"name": "clean"}

    def build(self, config):
        return None  # the engine records the clean predictions directly

    def label(self, config):
        return "clean"

    def cost(self, config):
        return {"forward": 1.0, "backward": 0.0}  # the clean pass is the job


FAMILY = CleanFamily()
