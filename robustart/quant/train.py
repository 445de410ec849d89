"""Training recipes for binarized networks (`train_binary`) and BWTA transformers (`train_bwta`,
Smooth Multi-Stage Quantization, see robustart.quant.bwta): distillation from the full-precision
teacher.

The recipe follows ReActNet (Liu et al., ECCV 2020): Adam, learning rate decayed linearly to 0,
weight decay only on conv/linear weights, and the distributional loss — the KL divergence from
the teacher's softmax to the student's — as the training signal (`kd_weight=1`). With
`kd_weight < 1` the loss mixes in cross-entropy on the labels (Hinton et al.'s distillation:
KL on temperature-softened logits, times T^2). IR-Net / DIR-Net estimators follow the EDE
schedule over the run (`robustart.quant.binary.set_progress`).

Models take images in [0, 1] (zoo models normalise inside). A run saves a checkpoint (student,
optimiser, schedule, RNG, loss history) every `checkpoint_every` steps and at the end of each
epoch, written whole or not at all; calling again with the same checkpoint path resumes and
gives the same result as an uninterrupted run.

    python -m robustart.quant.train --model efficientnet_lite0 --method irnet \\
        --data $ROBUSTART_IMAGENET_SAMPLE --limit 64 --epochs 2 --out runs/lite0-irnet.pt
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Iterable

import torch
import torch.nn.functional as F
from torch import nn

from robustart.quant.binary import binary_layers, set_progress
from robustart.zoo.weights import load_state, save_state


def distillation_loss(
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor | None,
    labels: torch.Tensor | None = None,
    *,
    kd_weight: float = 1.0,
    temperature: float = 1.0,
) -> torch.Tensor:
    """kd_weight * T^2 * KL(softmax(teacher / T) || softmax(student / T))
    + (1 - kd_weight) * CE(student, labels). kd_weight=1, T=1: ReActNet's distributional loss."""
    if not 0.0 <= kd_weight <= 1.0:
        raise ValueError(f"kd_weight must be in [0, 1], got {kd_weight}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    loss = student_logits.new_zeros(())
    if kd_weight > 0:
        if teacher_logits is None:
            raise ValueError("kd_weight > 0 needs a teacher; pass one or set kd_weight=0")
        t = temperature
        kd = F.kl_div(
            F.log_softmax(student_logits / t, dim=1),
            F.log_softmax(teacher_logits / t, dim=1),
            reduction="batchmean",
            log_target=True,
        )
        loss = loss + kd_weight * kd * t * t
    if kd_weight < 1:
        if labels is None:
            raise ValueError("kd_weight < 1 mixes in cross-entropy, which needs labels")
        loss = loss + (1 - kd_weight) * F.cross_entropy(student_logits, labels)
    return loss


@dataclass
class TrainConfig:
    steps: int  # total optimiser steps
    lr: float = 5e-4
    weight_decay: float = 0.0
    kd_weight: float = 1.0
    temperature: float = 1.0
    t_min: float = 0.1  # EDE / DTE schedule (IR-Net's values)
    t_max: float = 10.0
    seed: int = 0


@dataclass
class TrainResult:
    step: int  # steps done
    losses: list[float] = field(default_factory=list)  # training loss per step
    config: dict = field(default_factory=dict)


def _optimizer(student: nn.Module, lr: float, weight_decay: float) -> torch.optim.Adam:
    # weight decay on conv/linear weights only (not on BN, biases, shifts, RPReLU), as ReActNet
    decay, rest = [], []
    weights = {id(m.weight) for m in student.modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    for p in student.parameters():
        if p.requires_grad:
            (decay if id(p) in weights else rest).append(p)
    return torch.optim.Adam(
        [{"params": decay, "weight_decay": weight_decay}, {"params": rest, "weight_decay": 0.0}], lr=lr
    )


_STATE_KEYS = ("config", "student", "optimizer", "scheduler", "step", "losses")


def _save(path: Path, state: dict) -> None:
    save_state(state, path)


def _split(batch) -> tuple[torch.Tensor, torch.Tensor | None]:
    if isinstance(batch, (tuple, list)):
        return batch[0], (batch[1] if len(batch) > 1 else None)
    return batch, None


def train_binary(
    student: nn.Module,
    teacher: nn.Module | None,
    data: Iterable,
    *,
    epochs: int = 1,
    steps: int | None = None,
    lr: float = 5e-4,
    weight_decay: float = 0.0,
    kd_weight: float = 1.0,
    temperature: float = 1.0,
    t_min: float = 0.1,
    t_max: float = 10.0,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Train `student` (a binarized network, see `binarize_model`) by distillation from `teacher`
    (the full-precision network, frozen, eval mode) on `data`: an iterable of (images, labels)
    batches that can be iterated again each epoch (a list or a DataLoader; a shuffling
    DataLoader draws from the global RNG, which is seeded per epoch, so resuming is exact).

    steps: total steps (default: epochs * len(data)). checkpoint: a file to save to and resume
    from. Returns the losses of this run's steps (all steps, when resumed)."""
    if steps is None:
        try:
            steps = epochs * len(data)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError("data has no len(); pass steps=") from None
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps} (is the data empty?)")
    if not binary_layers(student):
        raise ValueError("the student has no binarized layers; call binarize_model(student, method) first")
    cfg = TrainConfig(steps, lr, weight_decay, kd_weight, temperature, t_min, t_max, seed)
    device = torch.device(device)
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    opt = _optimizer(student, lr, weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    result = TrainResult(0, [], asdict(cfg))
    ckpt = Path(checkpoint) if checkpoint is not None else None
    rng_state = None
    if ckpt is not None and ckpt.exists():
        state = load_state(ckpt, "the training checkpoint", _STATE_KEYS)
        if state["config"] != asdict(cfg):
            raise ValueError(
                f"checkpoint {ckpt} was made with {state['config']}, not {asdict(cfg)}; "
                "use the same settings to resume, or another checkpoint path to start afresh"
            )
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        result = TrainResult(state["step"], list(state["losses"]), asdict(cfg))
        rng_state = state["rng"]

    def save() -> None:
        if ckpt is not None:
            _save(ckpt, {
                "config": asdict(cfg), "step": result.step, "losses": result.losses,
                "student": student.state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.state_dict(), "rng": torch.get_rng_state(),
            })

    spe = None
    try:
        spe = len(data)  # type: ignore[arg-type]
    except TypeError:
        pass
    bar = _progress_bar(progress)
    with bar:
        task = bar.add_task("binary distillation", total=steps, completed=result.step, loss="")
        epoch = result.step // spe if spe else 0
        while result.step < steps:
            torch.manual_seed(seed + epoch)  # the epoch's shuffle order, the same on resume
            skip = result.step - epoch * spe if spe else 0
            seen, before = 0, result.step
            for batch in data:
                if seen < skip:
                    seen += 1
                    continue
                if rng_state is not None:  # resumed: continue the interrupted run's RNG
                    torch.set_rng_state(rng_state)
                    rng_state = None
                if result.step >= steps:
                    break
                x, y = _split(batch)
                x = x.to(device, non_blocking=True)
                y = y.to(device) if y is not None else None
                set_progress(student, result.step / max(steps - 1, 1), t_min, t_max)
                with torch.no_grad():
                    t_logits = teacher(x).float() if teacher is not None else None
                loss = distillation_loss(student(x).float(), t_logits, y, kd_weight=kd_weight,
                                         temperature=temperature)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {result.step}; lower lr={lr}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                for m in binary_layers(student):
                    m.after_step()
                result.step += 1
                result.losses.append(float(loss.detach()))
                bar.update(task, advance=1, loss=f"loss {result.losses[-1]:.4f}")
                if result.step % checkpoint_every == 0:
                    save()
            if result.step == before:
                raise ValueError(f"data yielded no batch in epoch {epoch} (steps done: {result.step} of {steps})")
            epoch += 1
            save()  # end of epoch (and end of run)
    student.eval()
    return result


def train_bwta(
    student: nn.Module,
    teacher: nn.Module | None,
    data: Iterable,
    *,
    epochs: int = 1,
    steps: int | None = None,
    lr: float = 5e-4,
    weight_decay: float = 0.0,
    kd_weight: float = 1.0,
    temperature: float = 1.0,
    k_start: int | None = None,
    last_share: float | None = None,
    checkpoint: str | Path | None = None,
    checkpoint_every: int = 100,
    device: str | torch.device = "cpu",
    seed: int = 0,
    progress: bool = True,
) -> TrainResult:
    """Smooth Multi-Stage Quantization (BWTA): train `student` (a network in BWTA form, see
    robustart.quant.bwta.bwta_model, with calibrated scales) by distillation from `teacher`, its
    activation grid degraded level by level (k = k_start, ..., 1) with the magnitude-alignment
    projection factor at each stage switch. Same optimiser, loss, data and checkpoint / resume
    conventions as `train_binary`; the stage (quantizer levels and scales) is part of the student's
    state, so a resumed run continues at its stage."""
    from robustart.quant import bwta as BW

    k_start = BW.K_START if k_start is None else k_start
    last_share = BW.STAGE_LAST_SHARE if last_share is None else last_share
    if steps is None:
        try:
            steps = epochs * len(data)  # type: ignore[arg-type]
        except TypeError:
            raise ValueError("data has no len(); pass steps=") from None
    if steps <= 0:
        raise ValueError(f"steps must be > 0, got {steps} (is the data empty?)")
    if not BW.bwta_layers(student):
        raise ValueError("the student has no BWTA layers; call robustart.quant.bwta.bwta_model and calibrate first")
    schedule = dict(BW.stage_schedule(steps, k_start, last_share))
    cfg = TrainConfig(steps, lr, weight_decay, kd_weight, temperature, 0.0, 0.0, seed)
    cfgd = {**asdict(cfg), "recipe": "bwta", "k_start": k_start, "last_share": last_share}
    device = torch.device(device)
    student.to(device).train()
    if teacher is not None:
        teacher.to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
    opt = _optimizer(student, lr, weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: max(0.0, 1.0 - s / steps))
    result = TrainResult(0, [], cfgd)
    ckpt = Path(checkpoint) if checkpoint is not None else None
    if ckpt is not None and ckpt.exists():
        state = load_state(ckpt, "the training checkpoint", _STATE_KEYS)
        if state["config"] != cfgd:
            raise ValueError(f"checkpoint {ckpt} was made with {state['config']}, not {cfgd}; "
                             "use the same settings to resume, or another checkpoint path to start afresh")
        student.load_state_dict(state["student"])
        opt.load_state_dict(state["optimizer"])
        sched.load_state_dict(state["scheduler"])
        result = TrainResult(state["step"], list(state["losses"]), cfgd)

    def save() -> None:
        if ckpt is not None:
            _save(ckpt, {"config": cfgd, "step": result.step, "losses": result.losses,
                         "student": student.state_dict(), "optimizer": opt.state_dict(),
                         "scheduler": sched.state_dict()})

    spe = len(data) if hasattr(data, "__len__") else None  # type: ignore[arg-type]
    bar = _progress_bar(progress)
    with bar:
        task = bar.add_task("BWTA multi-stage distillation", total=steps, completed=result.step, loss="")
        epoch = result.step // spe if spe else 0
        while result.step < steps:
            torch.manual_seed(seed + epoch)
            skip = result.step - epoch * spe if spe else 0
            seen, before = 0, result.step
            for batch in data:
                if seen < skip:
                    seen += 1
                    continue
                if result.step >= steps:
                    break
                x, y = _split(batch)
                x = x.to(device, non_blocking=True)
                y = y.to(device) if y is not None else None
                if result.step in schedule:  # a stage switch (the first one sets the starting grid)
                    BW.set_levels(student, schedule[result.step], x)
                with torch.no_grad():
                    t_logits = teacher(x).float() if teacher is not None else None
                loss = distillation_loss(student(x).float(), t_logits, y, kd_weight=kd_weight,
                                         temperature=temperature)
                if not torch.isfinite(loss):
                    raise FloatingPointError(f"loss is {loss.item()} at step {result.step}; lower lr={lr}")
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                sched.step()
                with torch.no_grad():  # a scale must stay positive
                    for q in BW.quantizers(student):
                        q.scale.clamp_(min=1e-6)
                result.step += 1
                result.losses.append(float(loss.detach()))
                bar.update(task, advance=1, loss=f"k={int(BW.quantizers(student)[0].k)} loss {result.losses[-1]:.4f}")
                if result.step % checkpoint_every == 0:
                    save()
            if result.step == before:
                raise ValueError(f"data yielded no batch in epoch {epoch} (steps done: {result.step} of {steps})")
            epoch += 1
            save()
    student.eval()
    return result


def _progress_bar(enabled: bool):
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
        TextColumn("{task.fields[loss]}"), TimeRemainingColumn(),
        console=Console(stderr=True), disable=not enabled,
    )


# --------------------------------------------------------------------------- data and CLI


def image_batches(model, root: str | Path | None, *, limit: int | None = None, batch_size: int = 16):
    """Batches (images in [0, 1], labels) of a dataset (`robustart.data.sources.open_source` specs:
    the ImageNet sample folder, an ImageFolder, ...) at `model`'s eval transform, kept in memory
    (small sets: the sample, a few hundred images)."""
    from robustart.data.decode import load_rgb
    from robustart.data.sources import open_source

    samples = open_source(root).take(limit)
    if not samples:
        raise ValueError(f"no images in {root!r} (limit={limit})")
    tf = model.transform
    xs = torch.stack([tf(load_rgb(s.path)[0]) for s in samples]).float() / 255
    ys = torch.tensor([s.label for s in samples])
    return [(xs[i:i + batch_size], ys[i:i + batch_size]) for i in range(0, len(xs), batch_size)]


def main(argv: list[str] | None = None) -> None:
    import argparse
    import copy

    from robustart.errors import RobustartError
    from robustart.quant.binary import METHODS, binarize_model
    from robustart.zoo.build import load_model

    ap = argparse.ArgumentParser(prog="python -m robustart.quant.train", description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True, help="zoo model name of the full-precision teacher")
    ap.add_argument("--method", required=True, choices=[*METHODS, "bwta"],
                    help="a binarization method, or bwta (transformer and mixer models: Smooth Multi-Stage Quantization)")
    ap.add_argument("--data", default=None, help="dataset (default: the built-in sample)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--lr", type=float, default=5e-4)
    ap.add_argument("--kd-weight", type=float, default=1.0)
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--out", required=True, help="checkpoint file (resumes when it exists)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--register", metavar="NAME", default=None,
                    help="also write the trained network as the local zoo entry NAME ($ROBUSTART_HOME/zoo/NAME.json "
                         "and NAME.safetensors), so `robustart eval --model NAME` evaluates it")
    a = ap.parse_args(argv)
    try:
        teacher = load_model(a.model)
        if a.register:
            check_name(a.register)  # before hours of training
        student = copy.deepcopy(teacher)
        data = image_batches(teacher, a.data, limit=a.limit, batch_size=a.batch_size)
        kw = dict(epochs=a.epochs, steps=a.steps, lr=a.lr, kd_weight=a.kd_weight, temperature=a.temperature,
                  checkpoint=a.out, device=a.device)
        if a.method == "bwta":
            from robustart.quant import bwta

            if teacher.entry.family not in bwta.FAMILIES:
                raise RobustartError(f"--model {a.model}: bwta is for transformer and mixer models; "
                                     f"{a.model!r} is a {teacher.entry.family}. Use a binarization method for CNNs.")
            bwta.bwta_model(student.net)
            bwta.calibrate(student, torch.cat([x for x, _ in data]), k=bwta.K_START)
            r = train_bwta(student, teacher, data, **kw)
        else:
            binarize_model(student.net, a.method)
            r = train_binary(student, teacher, data, **kw)
        entry = register(a.register, teacher.entry, student, a.method) if a.register else None
    except (ValueError, RobustartError) as e:
        ap.exit(2, f"error: {' '.join(str(e).splitlines())}\n")
    print(f"{r.step} steps; loss {r.losses[0]:.4f} -> {r.losses[-1]:.4f}; checkpoint {a.out}"
          + (f"; local entry {entry} (robustart eval --model {a.register})" if entry else ""))


def check_name(name: str) -> None:
    import re

    from robustart.errors import RobustartError

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name) or "@" in name:
        raise RobustartError(f"--register {name!r}: use letters, digits, '.', '_' and '-' (it becomes a file name).")


def register(name: str, fp_entry, student, method: str) -> Path:
    """Write a trained network as a local zoo entry: `$ROBUSTART_HOME/zoo/NAME.json` (its form:
    binary with the method, or bwta; the fp entry's architecture and preprocessing) beside
    `NAME.safetensors` (the network's state, a BWTA network's quantizer levels and scales included;
    its sha256 is pinned in the entry)."""
    from safetensors.torch import save_file

    from robustart import settings
    from robustart.results.store import atomic_write_json
    from robustart.zoo.weights import file_sha256

    check_name(name)
    form, quant, how = ("bwta", {"recipe": "bwta"}, "in BWTA form (Smooth Multi-Stage Quantization)") \
        if method == "bwta" else ("binary", {"method": method}, f"binarized ({method})")
    folder = settings.home() / "zoo"
    folder.mkdir(parents=True, exist_ok=True)
    wpath = folder / f"{name}.safetensors"
    tmp = wpath.with_name(f".{wpath.name}.tmp")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in student.net.state_dict().items()}
    save_file(state, str(tmp))
    tmp.replace(wpath)
    e = fp_entry
    d = {"name": name, "arch": e.arch, "family": e.family, "input_size": list(e.input_size),
         "crop_pct": e.crop_pct, "interpolation": e.interpolation, "mean": list(e.mean), "std": list(e.std),
         "num_classes": e.num_classes, "params": e.params, "arch_kwargs": dict(e.arch_kwargs),
         "form": form, "quant": quant,
         "description": f"{e.name} {how} and distilled by robustart.quant.train",
         "weights": {"file": wpath.name, "sha256": file_sha256(wpath)}}
    path = folder / f"{name}.json"
    atomic_write_json(path, d)
    return path


if __name__ == "__main__":
    main()
