"""Adversarial attacks as plain functions: float images in [0, 1] in, adversarial images out.

The model takes [0, 1] images (normalisation inside) and returns logits. Every budget `eps` is
in [0, 1] pixel units. Every returned image is clipped to [0, 1] and lies in its eps-ball.

Why our own code rather than torchattacks for the gradient attacks: one loop serves FGSM, PGD
(Linf/L2/L1) and MIM with what an evaluation needs and torchattacks lacks — only attacking
samples the model gets right, stopping a sample once it is fooled (keeping the fooling image, so
robust accuracy can only go down), per-sample seeded random starts, restarts, bf16/fp16 autocast
and per-sample diagnostics. With `keep_best=False, early_stop=False` and the global RNG, `pgd`
reproduces torchattacks' PGD / PGDL2 / MIFGSM / FGSM exactly (tests/test_attacks.py checks it).
torchattacks has no PGD-L1, and its CW has no binary search over c and masks the true class with
0 instead of -inf (wrong when logits are negative), so those are written here too. Square and
AutoAttack come from `pyautoattack` (the authors' code with the published settings).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from robustart.errors import need

NORMS = ("linf", "l2", "l1")
AMP_DTYPES = {"none": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class AttackOutput:
    x: torch.Tensor  # adversarial images, in [0, 1] and inside the eps-ball
    grad_zero: torch.Tensor | None = None  # bool per sample: input gradient all zero at the start
    loss_gain: torch.Tensor | None = None  # per sample: CE loss at the last iterate minus at the first
    min_norm: torch.Tensor | None = None  # minimum-norm attacks: the smallest adversarial found


def logits_of(model, x: torch.Tensor, amp: str = "none") -> torch.Tensor:
    dtype = AMP_DTYPES[amp]
    if dtype is None:
        return model(x).float()
    with torch.autocast(x.device.type, dtype=dtype):
        return model(x).float()


def norm_of(delta: torch.Tensor, norm: str) -> torch.Tensor:
    d = delta.flatten(1)
    if norm == "linf":
        return d.abs().amax(1)
    if norm == "l2":
        return d.norm(p=2, dim=1)
    if norm == "l1":
        return d.abs().sum(1)
    raise ValueError(f"unknown norm {norm!r}; choose from {NORMS}")


def _grad(model, x, y, amp):
    """Mean CE loss gradient w.r.t. the input (the mean, as torchattacks: only its direction is
    used), plus the logits and per-sample losses at x."""
    x = x.detach().requires_grad_(True)
    logits = logits_of(model, x, amp)
    losses = F.cross_entropy(logits, y, reduction="none")
    (g,) = torch.autograd.grad(losses.mean(), x)
    return g, logits.detach(), losses.detach()


# --------------------------------------------------------------------------- random starts


def _rand(shape, like: torch.Tensor, kind: str, gens) -> torch.Tensor:
    """Uniform [0, 1) or standard normal noise; per-sample generators when given (CPU draws,
    so a sample's start does not depend on the device), else the global RNG (as torchattacks)."""
    if gens is None:
        t = torch.empty(shape, dtype=like.dtype, device=like.device)
        return t.uniform_() if kind == "uniform" else t.normal_()
    rows = []
    for g in gens:
        t = torch.empty(shape[1:], dtype=like.dtype)
        rows.append(t.uniform_(generator=g) if kind == "uniform" else t.normal_(generator=g))
    return torch.stack(rows).to(like.device)


def random_start(x: torch.Tensor, eps: float, norm: str, gens=None) -> torch.Tensor:
    n = x.shape[0]
    if norm == "linf":
        if gens is None:  # the exact call torchattacks makes, so seeded runs agree
            return (x + torch.empty_like(x).uniform_(-eps, eps)).clamp(0, 1)
        return (x + (2 * _rand(x.shape, x, "uniform", gens) - 1) * eps).clamp(0, 1)
    if norm == "l2":  # as torchattacks PGDL2: a random direction, a uniform radius in [0, eps]
        d = _rand(x.shape, x, "normal", gens)
        nrm = d.flatten(1).norm(p=2, dim=1).view(n, 1, 1, 1)
        r = _rand((n, 1, 1, 1), x, "uniform", gens)
        return (x + d * (r / nrm * eps)).clamp(0, 1)  # torchattacks' order of operations
    # l1: a Laplace direction scaled to a uniform radius, then projected onto ball and box
    u = _rand(x.shape, x, "uniform", gens).clamp_min(1e-12)
    s = _rand(x.shape, x, "uniform", gens)
    d = -torch.log(u) * torch.where(s < 0.5, -1.0, 1.0)
    r = _rand((n, 1, 1, 1), x, "uniform", gens)
    d = d / d.flatten(1).abs().sum(1).view(n, 1, 1, 1) * r * eps
    return x + project_l1(x, d, eps)


# --------------------------------------------------------------------------- projections


def project_l1(x: torch.Tensor, delta: torch.Tensor, eps: float) -> torch.Tensor:
    """The exact projection of x + delta onto {||delta||_1 <= eps} ∩ [0, 1] (Croce & Hein's
    algorithm, as shipped in pyautoattack); returns the projected delta."""
    need("pyautoattack", "the L1 projection (PGD-L1)")
    from pyautoattack.autopgd_base import L1_projection

    fix = L1_projection(x.flatten(1), delta.flatten(1), eps)
    out = (delta.flatten(1) + fix).view_as(delta)
    # L1_projection works to float tolerance: finish inside the box and ball exactly.
    out = (x + out).clamp(0, 1) - x
    nrm = out.flatten(1).abs().sum(1)
    over = nrm > eps
    if over.any():
        out[over] *= (eps / nrm[over]).view(-1, 1, 1, 1) * (1 - 1e-7)
    return out


def fit_ball(x0: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str) -> torch.Tensor:
    """x_adv pulled inside the eps-ball as float32 actually stores it: x0 + delta rounds per
    pixel, and over 150k pixels an L1/L2 norm can end a hair over eps after an exact projection."""
    x_adv = x_adv.clamp(0, 1)
    for _ in range(5):
        d = x_adv - x0
        n = norm_of(d, norm)
        over = n > eps + 5e-7 * max(1.0, eps)  # half the tolerance verify_adversarial allows
        if not over.any():
            break
        scale = (eps / n[over]) * (1 - 1e-5)
        x_adv[over] = (x0[over] + d[over] * scale.view(-1, *[1] * (x0.dim() - 1))).clamp(0, 1)
    return x_adv


def _step(x_cur, x0, g, *, norm, eps, alpha, l1_sparsity):
    n = x_cur.shape[0]
    if norm == "linf":
        x_new = x_cur + alpha * g.sign()
        delta = (x_new - x0).clamp(-eps, eps)
        return (x0 + delta).clamp(0, 1)
    if norm == "l2":  # as torchattacks PGDL2 (it divides by ||g|| + 1e-10)
        gn = g.flatten(1).norm(p=2, dim=1).view(n, 1, 1, 1) + 1e-10
        delta = (x_cur + alpha * (g / gn)) - x0
        dn = delta.flatten(1).norm(p=2, dim=1)
        factor = torch.minimum(eps / dn, torch.ones_like(dn))
        return (x0 + delta * factor.view(n, 1, 1, 1)).clamp(0, 1)
    # l1: sparse L1 descent (Tramer & Boneh 2019): move only the coordinates with the largest
    # |gradient| (the top 1 - l1_sparsity share) that are not already at the box edge they push
    # towards, with equal weight, then project onto the L1 ball and the box.
    blocked = ((x_cur <= 0) & (g < 0)) | ((x_cur >= 1) & (g > 0))
    a = g.abs().masked_fill(blocked, 0).flatten(1)
    k = max(1, int(round((1 - l1_sparsity) * a.shape[1])))
    thr = a.topk(k, dim=1).values[:, -1:]
    mask = (a >= thr) & (a > 0)
    e = (g.sign().flatten(1) * mask) / mask.sum(1, keepdim=True).clamp_min(1)
    delta = x_cur + alpha * e.view_as(g) - x0
    return x0 + project_l1(x0, delta, eps)


# --------------------------------------------------------------------------- the PGD family


def pgd(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    alpha: float,
    steps: int,
    norm: str = "linf",
    random_init: bool = True,
    decay: float | None = None,
    restarts: int = 1,
    keep_best: bool = True,
    early_stop: bool = True,
    amp: str = "none",
    gens=None,
    l1_sparsity: float = 0.99,
) -> AttackOutput:
    """PGD (Madry et al.) in Linf / L2 / L1, with `decay` set: MIM (Dong et al., Linf); with
    steps=1, alpha=eps and no random start: FGSM.

    keep_best: a sample's result is the first iterate that fools the model (any iterate is a
    valid adversarial), else the last iterate. early_stop: a fooled sample takes no more steps.
    restarts: run again from a fresh random start for the samples still not fooled."""
    if norm not in NORMS:
        raise ValueError(f"unknown norm {norm!r}; choose from {NORMS}")
    x0 = x.detach()
    n = x0.shape[0]
    best = x0.clone()
    fooled = torch.zeros(n, dtype=torch.bool, device=x0.device)
    grad_zero = torch.zeros(n, dtype=torch.bool, device=x0.device)
    loss_first = torch.full((n,), float("nan"), device=x0.device)
    loss_last = torch.full((n,), float("nan"), device=x0.device)
    if eps == 0 or steps == 0:
        return AttackOutput(best, grad_zero, torch.zeros(n, device=x0.device))
    for r in range(max(1, restarts)):
        idx = (~fooled).nonzero().flatten() if keep_best else torch.arange(n, device=x0.device)
        if idx.numel() == 0:
            break
        xs = x0[idx]
        ys = y[idx]
        g_sub = [gens[i] for i in idx.tolist()] if gens is not None else None
        cur = random_start(xs, eps, norm, g_sub) if random_init else xs.clone()
        momentum = torch.zeros_like(xs) if decay is not None else None
        active = torch.arange(len(idx), device=x0.device)  # positions in idx still stepping
        for t in range(steps):
            g, logits, losses = _grad(model, cur[active], ys[active], amp)
            pos = idx[active]
            if r == 0 and t == 0:
                grad_zero[pos] = g.flatten(1).abs().amax(1) == 0
                loss_first[pos] = losses
            loss_last[pos] = losses
            if keep_best:
                hit = logits.argmax(1) != ys[active]
                if hit.any():
                    best[pos[hit]] = cur[active[hit]]
                    fooled[pos[hit]] = True
                    if early_stop:
                        keep = ~hit
                        active, g = active[keep], g[keep]
                        if active.numel() == 0:
                            break
            if decay is not None:  # MIM: L1-normalised gradient, accumulated with decay
                g = g / g.abs().mean(dim=(1, 2, 3), keepdim=True)
                g = g + momentum[active] * decay
                momentum[active] = g
            cur[active] = _step(cur[active], xs[active], g, norm=norm, eps=eps, alpha=alpha,
                                l1_sparsity=l1_sparsity).detach()
        if not keep_best:
            best[idx] = cur
            break
        if active.numel():
            with torch.no_grad():  # the last step's result has not been looked at yet
                logits = logits_of(model, cur[active], amp)
            pos = idx[active]
            loss_last[pos] = F.cross_entropy(logits, ys[active], reduction="none")
            hit = logits.argmax(1) != ys[active]
            best[pos[hit]] = cur[active[hit]]
            fooled[pos[hit]] = True
            still = ~fooled[pos]
            best[pos[still]] = cur[active[still]]  # unfooled: the last iterate, as plain PGD
    return AttackOutput(fit_ball(x0, best, eps, norm), grad_zero, loss_last - loss_first)


def fgsm(model, x, y, *, eps: float, amp: str = "none") -> AttackOutput:
    """FGSM (Goodfellow et al.): one signed-gradient step of size eps."""
    return pgd(model, x, y, eps=eps, alpha=eps, steps=1, norm="linf", random_init=False, amp=amp)


# --------------------------------------------------------------------------- C&W


def cw_l2(
    model,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    c: float = 1.0,
    kappa: float = 0.0,
    steps: int = 100,
    lr: float = 0.01,
    binary_steps: int = 5,
    abort_early: bool = True,
    amp: str = "none",
) -> AttackOutput:
    """Carlini & Wagner L2: Adam in tanh space on ||delta||_2^2 + c * f(x'), with f the margin
    of the true class over the best other class (floored at -kappa), and a per-sample binary
    search over c (x10 until a success, then bisection). Returns the smallest adversarial found
    per sample (the clean image where none was found) and its L2 norm in `min_norm` (inf if none)."""
    x0 = x.detach()
    n = x0.shape[0]
    onehot = F.one_hot(y, num_classes=logits_of(model, x0[:1], amp).shape[1]).bool()
    lo = torch.zeros(n, device=x0.device)
    hi = torch.full((n,), float("inf"), device=x0.device)
    cc = torch.full((n,), float(c), device=x0.device)
    best_l2 = torch.full((n,), float("inf"), device=x0.device)
    best = x0.clone()
    w0 = torch.atanh((2 * x0 - 1).clamp(-1 + 1e-6, 1 - 1e-6))
    for _ in range(max(1, binary_steps)):
        w = w0.clone().requires_grad_(True)
        opt = torch.optim.Adam([w], lr=lr)
        success = torch.zeros(n, dtype=torch.bool, device=x0.device)
        prev = float("inf")
        for t in range(steps):
            adv = (torch.tanh(w) + 1) / 2
            l2sq = (adv - x0).flatten(1).pow(2).sum(1)
            logits = logits_of(model, adv, amp)
            real = logits[onehot]
            other = logits.masked_fill(onehot, float("-inf")).amax(1)
            f = (real - other).clamp_min(-kappa)
            loss = (l2sq + cc * f).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                is_adv = (real - other) < -kappa if kappa > 0 else logits.argmax(1) != y
                better = is_adv & (l2sq < best_l2)
                best_l2 = torch.where(better, l2sq.detach(), best_l2)
                best[better] = adv.detach()[better].clamp(0, 1)
                success |= is_adv
            # No progress over the last 10% of the steps (at least 10 steps: Adam's first steps
            # can raise the loss before it falls): stop, as the published attack does.
            if abort_early and t % max(steps // 10, 10) == 0:
                if loss.item() > prev * 0.9999:
                    break
                prev = loss.item()
        hi = torch.where(success, torch.minimum(hi, cc), hi)
        lo = torch.where(~success, torch.maximum(lo, cc), lo)
        cc = torch.where(torch.isfinite(hi), (lo + hi) / 2, cc * 10)
    min_norm = norm_of(best - x0, "l2")
    min_norm = torch.where(torch.isfinite(best_l2), min_norm, torch.full_like(min_norm, float("inf")))
    return AttackOutput(best, None, None, min_norm)


# --------------------------------------------------------------------------- pyautoattack


def square(model, x, y, *, eps: float, norm: str = "linf", queries: int = 5000, p_init: float = 0.8,
           seed: int = 0) -> AttackOutput:
    """Square Attack (Andriushchenko et al.), score-based black box: the authors' code via
    pyautoattack, margin loss, one restart, as in AutoAttack."""
    need("pyautoattack", "Square Attack")
    from pyautoattack.square import SquareAttack

    norm_name = {"linf": "Linf", "l2": "L2"}[norm]
    atk = SquareAttack(model, p_init=p_init, n_queries=queries, eps=eps, norm=norm_name, n_restarts=1,
                       seed=seed, verbose=False, device=x.device, resc_schedule=False)
    with torch.no_grad():
        adv = atk.perturb(x.detach(), y)
    return AttackOutput(adv.detach())


def standard_autoattack(model, *, eps: float, norm: str = "linf", seed: int = 0, device="cpu"):
    """pyautoattack's AutoAttack in its 'standard' version, checked against the published
    settings, so that a change in the package can never run something weaker under that name."""
    AutoAttack = need("pyautoattack", "AutoAttack").AutoAttack

    norm_name = {"linf": "Linf", "l2": "L2", "l1": "L1"}[norm]
    aa = AutoAttack(model, norm=norm_name, eps=eps, version="standard", seed=seed, device=device)
    targets = 5 if norm == "l1" else 9  # the L1 version uses 5 target classes (Croce & Hein 2021)
    expected = {
        "attacks": ["apgd-ce", "apgd-t", "fab-t", "square"], "apgd iterations": 100,
        "apgd-t iterations": 100, "apgd-t targets": targets, "fab iterations": 100, "fab-t targets": 9,
        "square queries": 5000,
    }
    actual = {
        "attacks": list(aa.attacks_to_run), "apgd iterations": aa.apgd.n_iter,
        "apgd-t iterations": aa.apgd_targeted.n_iter, "apgd-t targets": aa.apgd_targeted.n_target_classes,
        "fab iterations": aa.fab.n_iter, "fab-t targets": aa.fab.n_target_classes,
        "square queries": aa.square.n_queries,
    }
    if actual != expected:
        from robustart.errors import RobustartError

        raise RobustartError(f"pyautoattack's 'standard' AutoAttack is not the published one here: {actual} "
                             f"(expected {expected}); install pyautoattack==0.2.0.")
    return aa


def autoattack(model, x, y, *, eps: float, norm: str = "linf", seed: int = 0, log=None) -> AttackOutput:
    """AutoAttack 'standard' (Croce & Hein 2020) through pyautoattack: APGD-CE (100 iterations),
    APGD-T (9 targets x 100), FAB-T (9 targets x 100), Square (5000 queries), each run on the
    samples still robust. `log` collects the package's own sanity-check warnings."""
    import logging

    aa = standard_autoattack(model, eps=eps, norm=norm, seed=seed, device=x.device)
    handler = None
    if log is not None:
        class _Collect(logging.Handler):
            def emit(self, record):
                log.append(record.getMessage())

        handler = _Collect(level=logging.WARNING)
        aa.logger.addHandler(handler)
    try:
        adv, _ = aa.run_standard_evaluation(x.detach(), y, batch_size=x.shape[0])
    finally:
        if handler is not None:
            aa.logger.removeHandler(handler)
    return AttackOutput(adv.detach())
