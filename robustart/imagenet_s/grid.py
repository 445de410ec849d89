"""The variant grid. The reference pipeline is the model's own eval transform: decoder `pil`,
resizer `model` (Pillow with the model's interpolation), geometry `eval`.

  sweep   one factor at a time: every decoder with the reference resizer, then every resizer
          with the reference decoder (the default; about 25 jobs)
  full    every decoder x every resizer
"""

from __future__ import annotations

from robustart.errors import need_extra
from robustart.imagenet_s import decoders as D
from robustart.imagenet_s import resize as R

REFERENCE = ("pil", "model")
GRIDS = ("sweep", "full", "decoders", "resizers")

def sweep_resizers() -> list[str]:
    """The resizers of a default sweep: every registered one that asks to be in it (Pillow-SIMD's
    after the others)."""
    rs = [r for r in R.RESIZERS.values() if r.sweep]
    return [r.name for r in rs if r.library != "pil-simd"] + [r.name for r in rs if r.library == "pil-simd"]


def runnable_decoders() -> list[str]:
    """Decoders that can run here (Pillow-SIMD once set up, nvJPEG with a GPU). The libraries of
    the 'imagenet-s' extra are required, not skipped: a sweep without them is not ImageNet-S."""
    need_extra("imagenet-s", "the ImageNet-S sweep")
    return [d for d in D.DECODERS if D.unavailable(d) is None]


def runnable_resizers(names=None) -> list[str]:
    need_extra("imagenet-s", "the ImageNet-S sweep")
    return [r for r in (names or sweep_resizers()) if R.RESIZERS.get(r).unavailable() is None]


def left_out(decoders: bool = True, resizers: bool = True) -> list[str]:
    """What the default sweep leaves out here, one line per reason: `decoder pil-simd and resizers
    pil-simd-bilinear, ... left out: Pillow-SIMD is not set up in ...: run ...`."""
    need_extra("imagenet-s", "the ImageNet-S sweep")
    why: dict[str, list[str]] = {}
    if decoders:
        for d in D.DECODERS:
            w = D.unavailable(d)
            if w:
                why.setdefault(w.replace(f"decoder {d!r}: ", "").replace(f"decoder {d!r} ", ""), []).append(f"decoder {d}")
    if resizers:
        for r in sweep_resizers():
            res = R.RESIZERS.get(r)
            w = res.unavailable()
            if w:
                lib = res.library
                reason = D.unavailable(lib) if lib and D.unavailable(lib) else w
                reason = reason.replace(f"decoder {lib!r}: ", "").replace(f"decoder {lib!r} ", "")
                why.setdefault(reason, []).append(f"resizer {r}")
    return [f"imagenet-s: {', '.join(names)} left out of the sweep: {reason}" for reason, names in why.items()]


def variants(grid: str = "sweep", decoders: list[str] | None = None, resizers: list[str] | None = None) -> list[tuple[str, str]]:
    """(decoder, resizer) pairs of a grid, reference first, without repeats. Given lists are
    taken as they are; the defaults are the backends that can run here."""
    decs = decoders or runnable_decoders()
    ress = resizers or runnable_resizers()
    if grid == "full":
        pairs = [REFERENCE] + [(d, r) for d in decs for r in ress]
    else:
        pairs = [REFERENCE]
        if grid in ("sweep", "decoders"):
            pairs += [(d, "model") for d in decs]
        if grid in ("sweep", "resizers"):
            pairs += [("pil", r) for r in ress]
    seen, out = set(), []
    for p in pairs:
        if p not in seen:
            seen.add(p)
            out.append(p)
    return out
