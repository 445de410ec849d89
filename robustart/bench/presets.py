"""Presets: named lists of noise specs a plan can run on every model (`--preset NAME`).

A preset is an object with `name`, `help` and `noises(gpu) -> list[str]` (noise specs, as
`--noise` takes them; `gpu`: whether the plan's jobs run on a CUDA device, for variants that
only run there), registered in BENCH_PRESETS: one line in robustart/plugins.py for a built-in
one, or an entry point of group `robustart.bench_presets`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from robustart.errors import RobustartError
from robustart.registry import Registry


@dataclass(frozen=True)
class Preset:
    name: str
    help: str
    make: Callable[[bool], list[str]]

    def noises(self, gpu: bool = False) -> list[str]:
        return list(self.make(gpu))


class UnknownPresetError(RobustartError, KeyError):
    def __str__(self) -> str:
        return str(self.args[0])


def _check(name, obj) -> None:
    if not isinstance(obj, Preset):
        raise TypeError(f"bench preset {name!r} must be a robustart.bench.presets.Preset, got {obj!r}")


BENCH_PRESETS = Registry("bench preset", "bench_presets", error=UnknownPresetError, check=_check,
                         message="unknown preset {name!r}.{hint} Presets: {names}.")


def _quick(gpu: bool) -> list[str]:
    # one job of each kind, cheap enough for a smoke test of a study's setup
    return ["clean", "pgd:budget=small", "corruption:gaussian_noise:3"]


def _robustart(gpu: bool) -> list[str]:
    """RobustART's protocol (Tang et al., 2021): clean; FGSM, PGD, MIM (Linf), PGD, C&W (L2) and
    PGD (L1) at the small, mid and large budgets (WCAR per budget); the 19 ImageNet-C
    corruptions at severities 1-5 (the 15 of mCE and the 4 extra); the ImageNet-S sweeps of
    the decoders and resizers that run here; the precision variants (the CUDA-only ones only
    when the jobs run on a GPU)."""
    from robustart.noises.precision import CUDA_ONLY, PRECISIONS

    variants = [v for v in PRECISIONS if gpu or v not in CUDA_ONLY]
    return ["clean",
            "adversarial:budget=small", "adversarial:budget=mid", "adversarial:budget=large",
            "corruption:all",
            "imagenet-s",
            "precision:variants=" + "+".join(variants)]


QUICK = Preset("quick", "clean, PGD-Linf at the small budget, gaussian noise at severity 3: a smoke test", _quick)
ROBUSTART = Preset("robustart", "RobustART's protocol: clean; FGSM/PGD/MIM Linf, PGD/C&W L2, PGD L1 at small, mid "
                   "and large budgets; ImageNet-C 19 corruptions x 5 severities; the ImageNet-S sweeps; precision "
                   "variants", _robustart)


def preset_noises(name: str, gpu: bool = False) -> list[str]:
    return BENCH_PRESETS.get(name).noises(gpu)
