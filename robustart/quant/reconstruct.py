"""Block reconstruction PTQ in the style of BRECQ (Li et al., ICLR 2021) with AdaRound's learned
rounding (Nagel et al., ICML 2020).

Block by block (timm's `blocks` children: residual blocks, transformer / mixer blocks; every
quantized layer outside them is its own unit), the rounding of each weight (down or up) is
learned so that the block's output, fed with the *quantized* model's input to the block, matches
the float model's output on the calibration images:

  w~ = s * clamp(floor(w / s) + h(V), qmin, qmax),   h(V) = clamp(sigmoid(V) * 1.2 - 0.1, 0, 1)
  loss = ||block_q(x_q) - block_fp(x_fp)||^2 + lambda * sum(1 - |2 h(V) - 1|^beta)

with beta annealed from 20 to 2 after a 20% warm-up without the regulariser (AdaRound's
schedule), Adam at lr 3e-2 (AdaRound: 1e-3 over 20k iterations; a budget of a few hundred
iterations needs larger steps), mini-batches of 8 calibration images. Activation quantizers stay on
with their calibrated scales (BRECQ also learns them; we keep them fixed). `iters` (default 200
per block) is the budget: on 2 CPU cores, efficientnet_lite0 with 64 images takes a few minutes.
"""

from __future__ import annotations

import torch
from torch import nn

from robustart.quant import fake as Q

ZETA, GAMMA = 1.1, -0.1
LAMBDA = 0.01
BATCH = 8
LR = 3e-2  # AdaRound uses 1e-3 over 20k iterations; a few hundred need larger steps


def soft_round(v: torch.Tensor) -> torch.Tensor:
    return torch.clamp(torch.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0, 1)


def _init_v(layer: Q.QuantLayer) -> nn.Parameter:
    """V such that h(V) is the fractional part of w / s: the soft rounding starts at w itself."""
    w = layer.weight.detach() / layer._ws()
    frac = (w - torch.floor(w)).clamp(0.01, 0.99)
    return nn.Parameter(-torch.log((ZETA - GAMMA) / (frac - GAMMA) - 1))


def units(model: nn.Module) -> list[nn.Module]:
    """The reconstruction units in forward order: blocks, then lone quantized layers."""
    net = getattr(model, "net", model)
    out: list[nn.Module] = []
    blocks = getattr(net, "blocks", None) or getattr(net, "layers", None)
    if isinstance(blocks, nn.Module):
        for b in blocks.children():
            if isinstance(b, nn.Sequential):
                out.extend(b.children())
            else:
                out.append(b)
    out = [u for u in out if Q.quant_layers(u)]
    covered = {id(m) for u in out for m in Q.quant_layers(u)}
    lone = [m for m in Q.quant_layers(net) if id(m) not in covered]
    order = {id(m): i for i, m in enumerate(net.modules())}
    return sorted(out + lone, key=lambda u: order[id(u)])


class _Capture(Exception):
    pass


def _io(model: nn.Module, unit: nn.Module, images: torch.Tensor, mode: str, want: str):
    """Inputs (want='in') or outputs (want='out') of `unit` over the images, with the model in
    `mode` ('fp' or 'quant'); stops each forward pass at the unit."""
    got = []

    def hook(m, args, output):
        got.append((args[0] if want == "in" else output).detach())
        raise _Capture

    h = unit.register_forward_hook(hook)
    Q.set_mode(model, mode)
    try:
        with torch.no_grad():
            for i in range(0, images.shape[0], 16):
                try:
                    model(images[i:i + 16])
                except _Capture:
                    pass
    finally:
        h.remove()
        Q.set_mode(model, "quant")
    return torch.cat(got)


def block_error(model: nn.Module, unit: nn.Module, images: torch.Tensor) -> float:
    """Mean squared error of the unit's quantized output (quantized input) vs its float output."""
    x_q = _io(model, unit, images, "quant", "in")
    y_fp = _io(model, unit, images, "fp", "out")
    with torch.no_grad():
        return float((unit(x_q) - y_fp).pow(2).mean())


def reconstruct_unit(model: nn.Module, unit: nn.Module, images: torch.Tensor, iters: int, seed: int = 0) -> None:
    layers = Q.quant_layers(unit)
    x_q = _io(model, unit, images, "quant", "in")
    y_fp = _io(model, unit, images, "fp", "out")
    for layer in layers:
        layer.round_v = _init_v(layer)
    params = [layer.round_v for layer in layers]
    opt = torch.optim.Adam(params, lr=LR)
    g = torch.Generator().manual_seed(seed)
    warm = int(0.2 * iters)
    try:
        for it in range(iters):
            idx = torch.randint(0, x_q.shape[0], (min(BATCH, x_q.shape[0]),), generator=g)
            out = unit(x_q[idx])
            loss = (out - y_fp[idx]).pow(2).flatten(1).sum(1).mean()
            if it >= warm:
                beta = 20 + (2 - 20) * (it - warm) / max(1, iters - warm)
                reg = sum((1 - (2 * soft_round(v) - 1).abs().pow(beta)).sum() for v in params)
                loss = loss + LAMBDA * reg
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    finally:
        with torch.no_grad():
            for layer in layers:
                base = torch.floor(layer.weight.detach() / layer._ws())
                hard = torch.clamp(base + (layer.round_v >= 0).float(), *layer.wq)
                layer.w_int.copy_(hard.to(torch.int8))
                layer.round_v = None
                layer._int_cache.clear()


def reconstruct(model: nn.Module, images: torch.Tensor, cfg, progress=None) -> None:
    """Reconstruct every unit in order (each sees the already reconstructed units before it)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    us = units(model)
    task = progress.add_task("reconstructing blocks", total=len(us)) if progress is not None else None
    for i, u in enumerate(us):
        reconstruct_unit(model, u, images, cfg.iters, seed=cfg.seed + i)
        if progress is not None:
            progress.update(task, advance=1)
