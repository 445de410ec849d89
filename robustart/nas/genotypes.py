"""Genotypes: the cells of an ABanditNAS network.

A cell has an input node 0 (the previous cell's output after a 1x1 ReLU-conv-BN) and four
intermediate nodes; node j (1..4) is one operation applied to one earlier node, and the cell's
output concatenates nodes 1..4. Unlike DARTS' normal/reduction pair, ABanditNAS searches v
distinct cells (v = 6 in the paper), spread over the network's layers (see network.py).

The two published genotypes are those of the authors' public evaluation code
(github.com/RunwenHu/ABanditNAS, `utils/genotypes_all.py`: ABANDIT_CIFAR_1 and
ABANDIT_MINIST_NORMAL_1, mirrored as anonymous-paper/anonymous1789); the cell structures are
facts of that release, transcribed here as data.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from robustart.errors import RobustartError

NODES = 4


@dataclass(frozen=True)
class Genotype:
    """`cells[c][j - 1] = (operation, input node)` for node j = 1..4 of distinct cell c."""

    cells: tuple[tuple[tuple[str, int], ...], ...]
    name: str = ""

    def __post_init__(self) -> None:
        from robustart.nas.ops import OPS

        if not self.cells:
            raise RobustartError(f"genotype {self.name!r} has no cells")
        for c, cell in enumerate(self.cells):
            if len(cell) != NODES:
                raise RobustartError(f"genotype {self.name!r}: cell {c} has {len(cell)} nodes, expected {NODES}")
            for j, (op, src) in enumerate(cell, start=1):
                if op not in OPS:
                    raise RobustartError(f"genotype {self.name!r}: cell {c} node {j}: unknown operation {op!r}")
                if not (0 <= int(src) < j):
                    raise RobustartError(
                        f"genotype {self.name!r}: cell {c} node {j} takes node {src}; it must be an earlier node (0..{j - 1})"
                    )

    def to_dict(self) -> dict:
        return {"name": self.name, "cells": [[[op, int(src)] for op, src in cell] for cell in self.cells]}

    @classmethod
    def from_dict(cls, d: dict) -> "Genotype":
        try:
            cells = tuple(tuple((str(op), int(src)) for op, src in cell) for cell in d["cells"])
        except (KeyError, TypeError, ValueError) as e:
            raise RobustartError(
                f"not a genotype: expected {{'cells': [[[op, input], x4], ...]}} ({type(e).__name__}: {e})"
            ) from None
        return cls(cells, str(d.get("name", "")))


def _g(name, *cells) -> Genotype:
    return Genotype(tuple(tuple(c) for c in cells), name)


# ABANDIT_CIFAR_1: six cells, evaluated with 10 layers, C = 48, auxiliary head (ABanditNAS-10).
ABANDIT_CIFAR10 = _g(
    "abanditnas-cifar10",
    [("conv_3x3", 0), ("gab_filt_3x3", 1), ("sep_conv_3x3", 2), ("dtp_blok_3x3", 1)],
    [("avg_pool_3x3", 0), ("gab_filt_3x3", 0), ("sep_conv_5x5", 2), ("conv_3x3", 1)],
    [("conv_3x3", 0), ("max_pool_3x3", 0), ("conv_5x5", 0), ("sep_conv_5x5", 3)],
    [("dtp_blok_3x3", 0), ("sep_conv_5x5", 1), ("avg_pool_3x3", 2), ("conv_3x3", 3)],
    [("dtp_blok_3x3", 0), ("sep_conv_5x5", 1), ("sep_conv_3x3", 1), ("avg_pool_3x3", 3)],
    [("gab_filt_3x3", 0), ("conv_3x3", 0), ("dtp_blok_3x3", 1), ("avg_pool_3x3", 2)],
)

# ABANDIT_MINIST_NORMAL_1: six cells, evaluated with 6 layers, C = 16, on 28x28 MNIST.
ABANDIT_MNIST = _g(
    "abanditnas-mnist",
    [("dil_conv_3x3", 0), ("dil_conv_3x3", 0), ("dil_conv_5x5", 2), ("avg_pool_3x3", 0)],
    [("skip_connect", 0), ("sep_conv_m_3x3", 0), ("sep_conv_m_5x5", 1), ("max_pool_3x3", 1)],
    [("sep_conv_m_3x3", 0), ("sep_conv_m_5x5", 0), ("skip_connect", 1), ("sep_conv_m_3x3", 2)],
    [("sep_conv_m_5x5", 0), ("dil_conv_5x5", 1), ("max_pool_3x3", 0), ("max_pool_3x3", 1)],
    [("max_pool_3x3", 0), ("dil_conv_3x3", 0), ("dil_conv_3x3", 0), ("sep_conv_m_5x5", 1)],
    [("dil_conv_3x3", 0), ("sep_conv_m_3x3", 1), ("dil_conv_5x5", 0), ("dil_conv_5x5", 1)],
)

PUBLISHED = {g.name: g for g in (ABANDIT_CIFAR10, ABANDIT_MNIST)}


def load_genotype(spec: str | Path | dict | Genotype) -> Genotype:
    """A genotype from a published name, a genotype JSON file (as `robustart nas search` writes)
    or a dict."""
    if isinstance(spec, Genotype):
        return spec
    if isinstance(spec, dict):
        return Genotype.from_dict(spec.get("genotype", spec))
    if str(spec) in PUBLISHED:
        return PUBLISHED[str(spec)]
    path = Path(spec).expanduser()
    if not path.is_file():
        raise RobustartError(
            f"--genotype {spec}: neither a published genotype ({', '.join(PUBLISHED)}) nor a genotype JSON file."
        )
    try:
        d = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RobustartError(f"--genotype {spec}: cannot read it as JSON ({e}).") from None
    return Genotype.from_dict(d.get("genotype", d))
