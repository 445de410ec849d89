"""Networks built from ABanditNAS cells, the one-shot search network, and a plain baseline.

Layout (the authors' public evaluation code, `NetworkCIFAR`): a 3x3 stem to 3C channels, then
`layers` cells; the cells at layers // 3 and 2 * layers // 3 are reduction cells (channels x2,
stride 2 on the edges that leave node 0); each cell outputs the concatenation of its four nodes
(4C); global average pooling and a linear classifier. The genotype's v distinct cells are spread
over the layers as the public code does it. With `denoise=True`, a dot-product denoising block
follows the cells at layers // 4, 2 * layers // 4 and 3 * layers // 4 (the public CIFAR-10
evaluation does this). The auxiliary head (DARTS) sits after the cell at 2 * layers // 3; ours
pools adaptively to 2x2 so that it also fits 28x28 inputs (DARTS' head assumes 8x8).

The networks take normalised images; zoo models put the normalisation in front (zoo/build.py).
"""

from __future__ import annotations

import torch
from torch import nn

from robustart.nas.genotypes import NODES, Genotype
from robustart.nas.ops import DenoisingBlock, DotProductDenoise, ReLUConvBN, make_op


def reduction_layers(layers: int) -> tuple[int, ...]:
    return tuple(sorted({layers // 3, 2 * layers // 3})) if layers >= 3 else ()


def cell_of_layer(i: int, layers: int, v: int) -> int:
    """Which of the v distinct cells layer i uses. The public code repeats cells with
    n = (layers - 2) // (v - 2) around the reductions; where that does not give a valid index
    (other layer counts), the cells are spread evenly."""
    if v == layers:
        return i
    if v > 2 and layers > v:
        n = (layers - 2) // (v - 2)
        k = i // n if i <= layers // 3 + 1 else (i + 1) // n if i <= 2 * layers // 3 + 1 else (i + 2) // n
        ks = [(j // n if j <= layers // 3 + 1 else (j + 1) // n if j <= 2 * layers // 3 + 1 else (j + 2) // n)
              for j in range(layers)]
        if max(ks) == v - 1 and ks == sorted(ks):
            return k
    return min(v - 1, i * v // layers)


class Cell(nn.Module):
    def __init__(self, cell, c_prev: int, c: int, reduction: bool, denoise: bool = False):
        super().__init__()
        self.pre = ReLUConvBN(c_prev, c, 1)
        self.inputs = [int(src) for _, src in cell]
        # Edges that leave node 0 carry the stride of a reduction cell.
        self.ops = nn.ModuleList(
            make_op(op, c, 2 if reduction and src == 0 else 1) for op, src in cell
        )
        self.denoise = DenoisingBlock(c * NODES, 1, DotProductDenoise()) if denoise else None

    def forward(self, x):
        states = [self.pre(x)]
        for op, src in zip(self.ops, self.inputs):
            states.append(op(states[src]))
        out = torch.cat(states[1:], dim=1)
        return self.denoise(out) if self.denoise is not None else out


class AuxiliaryHead(nn.Module):
    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            nn.ReLU(inplace=False),
            nn.AdaptiveAvgPool2d(2),
            nn.Conv2d(c, 128, 1, bias=False),
            nn.BatchNorm2d(128),
            nn.ReLU(inplace=False),
            nn.Conv2d(128, 768, 2, bias=False),
            nn.BatchNorm2d(768),
            nn.ReLU(inplace=False),
        )
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


class ABanditNetwork(nn.Module):
    """Logits from normalised images. In training mode with an auxiliary head, the head's
    logits of the last forward pass are in `self.aux_logits` (the loss adds them, weighted)."""

    def __init__(self, genotype: Genotype, C: int = 16, layers: int = 6, num_classes: int = 10,
                 in_chans: int = 3, auxiliary: bool = False, denoise: bool = False):
        super().__init__()
        self.genotype = genotype
        self.num_classes = num_classes
        v = len(genotype.cells)
        c_curr = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(in_chans, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_prev, c_curr = c_curr, C
        reds = reduction_layers(layers)
        dn = {layers // 4, 2 * layers // 4, 3 * layers // 4} if denoise else set()
        self.cells = nn.ModuleList()
        self.aux_at = 2 * layers // 3
        c_aux = None
        for i in range(layers):
            if i in reds:
                c_curr *= 2
            cell = Cell(genotype.cells[cell_of_layer(i, layers, v)], c_prev, c_curr, i in reds, i in dn)
            self.cells.append(cell)
            c_prev = NODES * c_curr
            if i == self.aux_at:
                c_aux = c_prev
        self.auxiliary_head = AuxiliaryHead(c_aux, num_classes) if auxiliary else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        self.aux_logits = None

    def forward(self, x):
        s = self.stem(x)
        self.aux_logits = None
        for i, cell in enumerate(self.cells):
            s = cell(s)
            if i == self.aux_at and self.auxiliary_head is not None and self.training:
                self.aux_logits = self.auxiliary_head(s)
        return self.classifier(self.pool(s).flatten(1))


# --------------------------------------------------------------------------- search


class MixedEdge(nn.Module):
    """All candidate operations of one edge (shared one-shot weights); one runs at a time."""

    def __init__(self, space, c: int, stride: int):
        super().__init__()
        self.names = list(space)
        # BN without affine parameters during the search, as in DARTS' search network.
        self.ops = nn.ModuleList(make_op(n, c, stride, affine=False) for n in space)

    def forward(self, x, name: str):
        return self.ops[self.names.index(name)](x)


class SearchCell(nn.Module):
    """The fully connected DAG: node j = sum over i < j of edge (i, j) applied to node i."""

    def __init__(self, space, c_prev: int, c: int, reduction: bool):
        super().__init__()
        self.pre = ReLUConvBN(c_prev, c, 1, affine=False)
        self.edges = nn.ModuleList()
        self.pairs = []
        for j in range(1, NODES + 1):
            for i in range(j):
                self.edges.append(MixedEdge(space, c, 2 if reduction and i == 0 else 1))
                self.pairs.append((i, j))

    def forward(self, x, choice):
        states = [self.pre(x)]
        k = 0
        for j in range(1, NODES + 1):
            s = 0
            for i in range(j):
                s = s + self.edges[k](states[i], choice[k])
                k += 1
            states.append(s)
        return torch.cat(states[1:], dim=1)


EDGES_PER_CELL = NODES * (NODES + 1) // 2  # 10


class SearchNetwork(nn.Module):
    """The one-shot network of the search: v distinct cells (one per layer), every edge holds
    every operation of the space; `choice[c][e]` names the operation edge e of cell c runs."""

    def __init__(self, space, C: int = 8, cells: int = 3, num_classes: int = 10, in_chans: int = 1):
        super().__init__()
        c_curr = 3 * C
        self.stem = nn.Sequential(nn.Conv2d(in_chans, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
        c_prev, c_curr = c_curr, C
        reds = reduction_layers(cells)
        self.cells = nn.ModuleList()
        for i in range(cells):
            if i in reds:
                c_curr *= 2
            self.cells.append(SearchCell(space, c_prev, c_curr, i in reds))
            c_prev = NODES * c_curr
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c_prev, num_classes)
        self.choice = None

    def forward(self, x):
        if self.choice is None:
            raise RuntimeError("SearchNetwork: set `choice` (an operation per edge) before the forward pass")
        s = self.stem(x)
        for cell, ch in zip(self.cells, self.choice):
            s = cell(s, ch)
        return self.classifier(self.pool(s).flatten(1))


# --------------------------------------------------------------------------- baseline


class BasicBlock(nn.Module):
    def __init__(self, c_in, c_out, stride):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.relu = nn.ReLU(inplace=False)
        self.short = (nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
                      if stride != 1 or c_in != c_out else nn.Identity())

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + self.short(x))


class SmallResNet(nn.Module):
    """The plain baseline: a ResNet with three stages of `blocks` basic blocks at widths
    w, 2w, 4w (strides 1, 2, 2), global pooling and a linear classifier."""

    def __init__(self, width: int = 16, blocks: int = 1, num_classes: int = 10, in_chans: int = 3):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_chans, width, 3, 1, 1, bias=False), nn.BatchNorm2d(width), nn.ReLU())
        layers, c = [], width
        for s, (w, stride) in enumerate([(width, 1), (2 * width, 2), (4 * width, 2)]):
            for b in range(blocks):
                layers.append(BasicBlock(c, w, stride if b == 0 else 1))
                c = w
        self.layers = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(c, num_classes)

    def forward(self, x):
        return self.classifier(self.pool(self.layers(self.stem(x))).flatten(1))
