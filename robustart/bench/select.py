"""Model selectors of a plan: which zoo entries a study runs.

  efficientnet_lite0          a name (a zoo entry or a local entry)
  efficientnet_lite0@w8a8     a form of one (any `NAME@FORM[:settings]` that `eval --model` takes)
  family:transformer          every entry of a registered family
  tag:adversarial-training    every entry carrying a training-technique tag (`robustart zoo list`)
  efficientnet_lite*          a shell-style pattern over entry names ('*' is the whole zoo)
  family:cnn@w8a8             a group, each in that form

A selector that names nothing, or matches nothing, is an error that names it (with "did you
mean" where one is close). Entries come back in zoo order, each once.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass

from robustart.errors import RobustartError
from robustart.registry import did_you_mean
from robustart.zoo.registry import ModelEntry, all_tags, get_entry, list_entries

GLOB_CHARS = "*?["


@dataclass(frozen=True)
class Selected:
    """A selected entry and the selector that chose it; `named` when the selector named this
    entry itself (a group or pattern selector chose it among others)."""

    entry: ModelEntry
    selector: str
    named: bool


class SelectorError(RobustartError):
    """A model selector that names or matches nothing."""


def split_list(values) -> list[str]:
    """`["a,b", "c"]` or `"a,b"` -> ["a", "b", "c"]: options may repeat or comma-separate. Commas
    inside a spec's settings (`pgd:eps=1/255,steps=20`, `resnet18@w4a4:observer=mse,recon=on`)
    stay with it: a piece `key=value` with no ':' or '@' continues a spec that has settings."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    out: list[str] = []
    for v in values:
        for piece in (p.strip() for p in str(v).split(",")):
            if not piece:
                continue
            if out and "=" in piece and ":" not in piece and "@" not in piece and (":" in out[-1] or "@" in out[-1]):
                out[-1] += "," + piece
            else:
                out.append(piece)
    return out


def _group(selector: str) -> list[ModelEntry]:
    kind, _, value = selector.partition(":")
    if kind == "family":
        from robustart.zoo.registry import FAMILIES

        if value not in FAMILIES:
            raise SelectorError(f"model selector {selector!r}: unknown family {value!r}."
                                f"{did_you_mean(value, FAMILIES.names())} Families: {', '.join(FAMILIES.names())}.")
        return list_entries(family=value)
    tags = all_tags()
    if value not in tags:
        raise SelectorError(f"model selector {selector!r}: no zoo entry has the tag {value!r}."
                            f"{did_you_mean(value, tags)} Tags: {', '.join(tags)} (`robustart zoo list`).")
    return list_entries(tags=[value])


def select_models(selectors) -> list[Selected]:
    """The entries the selectors choose, in the order given (a group in zoo order), each once."""
    selectors = split_list(selectors)
    if not selectors:
        raise SelectorError("the plan names no models: give models (names, NAME@FORM, family:NAME, tag:NAME or a "
                            "pattern such as 'efficientnet_lite*'; '*' is the whole zoo).")
    out: list[Selected] = []
    seen: set[str] = set()
    for sel in selectors:
        base, at, form = sel.partition("@")
        if base.startswith(("family:", "tag:")):
            entries, named = _group(base), False
        elif any(c in base for c in GLOB_CHARS):
            entries = [e for e in list_entries() if fnmatch.fnmatchcase(e.name, base)]
            if not entries:
                names = [e.name for e in list_entries()]
                raise SelectorError(f"model selector {sel!r} matches no zoo entry."
                                    f"{did_you_mean(base.replace('*', ''), names)} `robustart zoo list` shows them.")
            named = False
        else:
            entries, named = [get_entry(sel)], True  # unknown names answer "did you mean"
            at = ""
        if at:
            fp = [e for e in entries if e.form == "fp"]
            entries = [get_entry(f"{e.name}@{form}") for e in fp]
        for e in entries:
            if e.spec not in seen:
                seen.add(e.spec)
                out.append(Selected(e, sel, named))
    return out
