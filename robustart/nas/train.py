"""Adversarial training for any zoo architecture on an in-memory dataset.

Recipes: PGD-k adversarial training (Madry et al., ICLR 2018: random start in the eps-ball, k
signed-gradient steps of size alpha, projection), FGSM with a random start ("fast" adversarial
training, Wong et al., ICLR 2020: alpha = 1.25 eps), or standard training (`attack="none"`).
The model is trained with its normalisation inside, on [0, 1] images, so eps is in pixel units,
as in evaluation. Each epoch ends with a checkpoint; an interrupted run resumes from it. The
result is `model.safetensors` plus `entry.json`, a local zoo entry (with the checkpoint's sha256)
that `robustart eval --model` loads.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F

from robustart.errors import RobustartError

ATTACKS = ("pgd", "fgsm-rs", "none")


# --------------------------------------------------------------------------- attacks for training


def fgsm_rs(model, x, y, eps: float, alpha: float | None = None, gen=None):
    """FGSM from a uniform random start in the eps-ball (Wong et al. 2020)."""
    alpha = 1.25 * eps if alpha is None else alpha
    delta = (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * eps
    delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
    loss = F.cross_entropy(model(x + delta), y)
    (g,) = torch.autograd.grad(loss, delta)
    delta = (delta.detach() + alpha * g.sign()).clamp(-eps, eps)
    return (x + delta).clamp(0, 1).detach()


def pgd_linf(model, x, y, eps: float, alpha: float, steps: int, gen=None):
    """PGD-k in Linf from a uniform random start (Madry et al. 2018)."""
    delta = (torch.rand(x.shape, generator=gen, device=x.device) * 2 - 1) * eps
    xa = (x + delta).clamp(0, 1)
    for _ in range(steps):
        xa.requires_grad_(True)
        loss = F.cross_entropy(model(xa), y)
        (g,) = torch.autograd.grad(loss, xa)
        xa = (xa.detach() + alpha * g.sign())
        xa = torch.min(torch.max(xa, x - eps), x + eps).clamp(0, 1)
    return xa.detach()


def adversarial_batch(model, x, y, attack: str, eps: float, steps: int, alpha: float | None, gen=None):
    if attack == "none" or eps == 0:
        return x
    if attack == "fgsm-rs":
        return fgsm_rs(model, x, y, eps, alpha, gen)
    if attack == "pgd":
        return pgd_linf(model, x, y, eps, alpha if alpha is not None else 2.5 * eps / steps, steps, gen)
    raise RobustartError(f"unknown training attack {attack!r}; choose from {', '.join(ATTACKS)}")


def loss_of(model, x, y, aux_weight: float = 0.4):
    """Cross-entropy, plus the auxiliary head's (DARTS' weight 0.4) when the network has one."""
    logits = model(x)
    loss = F.cross_entropy(logits, y)
    aux = getattr(getattr(model, "net", model), "aux_logits", None)
    if aux is not None:
        loss = loss + aux_weight * F.cross_entropy(aux, y)
    return loss, logits


# --------------------------------------------------------------------------- data


DATA_MEAN_STD = {
    "fashion-mnist": ((0.2860,), (0.3530,)),
    "cifar10": ((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)),
}


def load_split(data: str, split: str, limit: int | None = None):
    """(images uint8 (N, C, H, W), labels (N,), kind) of `fashion-mnist[:PATH]` / `cifar10:PATH`."""
    from robustart.data import arrays

    kind, _, rest = str(data).partition(":")
    kind = kind.lower()
    if kind not in ("fashion-mnist", "cifar10"):
        raise RobustartError(f"--data {data}: training reads fashion-mnist[:PATH] or cifar10:PATH.")
    rest = ":".join(p for p in rest.split(":") if p and p not in arrays.SPLITS)
    src = arrays.open_arrays(kind, f"{split}:{rest}" if rest else split)  # checks the files, names errors
    images, labels, _ = (arrays.fashion_mnist if kind == "fashion-mnist" else arrays.cifar10)(
        src.root if kind == "cifar10" else _fmnist_root(src), split)
    x, y = torch.from_numpy(images), torch.from_numpy(labels)
    return (x[:limit], y[:limit], kind) if limit else (x, y, kind)


def _fmnist_root(src):
    # the folder open_arrays resolved; its files may sit in FashionMNIST/raw below the given one
    root = src.root
    return root.parent.parent if root.name == "raw" and root.parent.name == "FashionMNIST" else root


# --------------------------------------------------------------------------- model entry


def model_entry(name: str, arch: str, data_kind: str, in_shape, *, genotype=None, C=16, layers=6,
                auxiliary=False, width=16, description="", tags=()):
    """The ModelEntry of a model to train: a genotype (arch `abanditnas`), the plain baseline
    (`small_resnet`), or the architecture of a zoo entry, at the data's geometry."""
    from robustart.zoo.registry import ModelEntry, WeightSource, get_entry

    mean, std = DATA_MEAN_STD[data_kind]
    c = in_shape[0]
    if genotype is not None:
        arch_name, family = "abanditnas", "nas"
        kwargs = {"genotype": genotype.to_dict(), "C": C, "layers": layers, "auxiliary": auxiliary, "in_chans": c}
    elif arch == "small_resnet":
        arch_name, family, kwargs = "small_resnet", "cnn", {"width": width, "in_chans": c}
    else:
        base = get_entry(arch)
        arch_name, family = base.arch, base.family
        kwargs = dict(base.arch_kwargs)
        kwargs["in_chans"] = c
    paper = ("Chen et al., Anti-Bandit Neural Architecture Search for Model Defense, ECCV 2020"
             if family == "nas" else "")
    return ModelEntry(name=name, arch=arch_name, family=family, weights=WeightSource(), input_size=tuple(in_shape),
                      crop_pct=1.0, interpolation="bilinear", mean=mean, std=std, num_classes=10,
                      tags=tuple(tags), paper=paper, description=description, arch_kwargs=kwargs)


def entry_json(entry, weights_file: str, sha256: str, params: int) -> dict:
    return {
        "name": entry.name, "arch": entry.arch, "family": entry.family,
        "weights": {"file": weights_file, "sha256": sha256},
        "input_size": list(entry.input_size), "crop_pct": entry.crop_pct, "interpolation": entry.interpolation,
        "mean": list(entry.mean), "std": list(entry.std), "num_classes": entry.num_classes, "params": params,
        "tags": list(entry.tags), "paper": entry.paper, "description": entry.description,
        "arch_kwargs": entry.arch_kwargs,
    }


# --------------------------------------------------------------------------- training


@dataclass
class TrainConfig:
    data: str = "fashion-mnist"
    out: str = "nas-train"
    name: str | None = None
    arch: str = "abanditnas"  # with a genotype; or small_resnet; or a zoo entry name
    genotype: dict | None = None
    C: int = 16
    layers: int = 6
    width: int = 16
    auxiliary: bool = False
    epochs: int = 10
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 3e-4
    attack: str = "pgd"
    eps: float = 0.1
    steps: int = 7
    alpha: float | None = None
    train_limit: int | None = None
    seed: int = 0
    threads: int | None = None
    extra: dict = field(default_factory=dict)


def _log(path: Path, row: dict) -> None:
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")


def train(cfg: TrainConfig, *, register: bool = True, progress: bool = True) -> dict:
    """Train (or resume) and write `<out>/model.safetensors` + `<out>/entry.json`; with
    `register`, also `$ROBUSTART_HOME/zoo/<name>.json` so the zoo knows the model by name."""
    from safetensors.torch import save_file

    from robustart import settings
    from robustart.nas.genotypes import load_genotype
    from robustart.zoo import weights as W
    from robustart.zoo.build import ZooModel, build_network

    if cfg.attack not in ATTACKS:
        raise RobustartError(f"--attack {cfg.attack!r}: choose from {', '.join(ATTACKS)}")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out).expanduser()
    from robustart.paths import checked_name

    name = checked_name(cfg.name or out.resolve().name, "--name")  # a file name in the zoo folder
    out.mkdir(parents=True, exist_ok=True)
    from robustart.console import err as console
    x_all, y_all, kind = load_split(cfg.data, "train", cfg.train_limit)
    geno = load_genotype(cfg.genotype) if cfg.genotype is not None else None
    if geno is None and cfg.arch == "abanditnas":
        raise RobustartError("training arch abanditnas needs --genotype (a published name or a genotype file)")
    recipe = ("standard training" if cfg.attack == "none" else
              f"{'PGD-%d' % cfg.steps if cfg.attack == 'pgd' else 'FGSM-RS'} adversarial training, eps {cfg.eps:g}")
    tags = ("standard",) if cfg.attack == "none" else ("adversarial-training",)
    if geno is not None:
        tags = ("architecture-search",) + tags
    entry = model_entry(name, cfg.arch, kind, tuple(x_all.shape[1:]), genotype=geno, C=cfg.C, layers=cfg.layers,
                        auxiliary=cfg.auxiliary, width=cfg.width, tags=tags,
                        description=f"{recipe}, {cfg.epochs} epochs on {len(x_all)} {kind} training images")
    torch.manual_seed(cfg.seed)
    import robustart.nas.models  # noqa: F401  registers small_resnet (a cnn-family arch) with timm
    model = ZooModel(build_network(entry), entry)
    params = sum(p.numel() for p in model.net.parameters())
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=True)
    state_path, log_path = out / "train_state.pt", out / "train_log.jsonl"
    start = 0
    if state_path.is_file():
        st = W.load_state(state_path, "the training state", ("model", "opt", "epoch", "config"))
        if st.get("config") != json.dumps(asdict(cfg), sort_keys=True):
            raise RobustartError(f"{out} holds a run with another configuration; use a new --out or delete it.")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        start = int(st["epoch"])
        console.print(f"resuming {name} after epoch {start}")
    elif log_path.exists():
        log_path.unlink()
    n = len(x_all)
    per_epoch = math.ceil(n / cfg.batch_size)
    total = per_epoch * cfg.epochs
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), console=console, disable=not progress) as bar:
        task = bar.add_task(f"train {name}", total=total, completed=start * per_epoch, info="")
        for epoch in range(start, cfg.epochs):
            model.train()
            g = torch.Generator().manual_seed(cfg.seed * 1009 + epoch)
            order = torch.randperm(n, generator=g)
            t0, seen, loss_sum, correct = time.perf_counter(), 0, 0.0, 0
            for b in range(per_epoch):
                step = epoch * per_epoch + b
                for grp in opt.param_groups:  # cosine schedule, a function of the step: resumable
                    grp["lr"] = 0.5 * cfg.lr * (1 + math.cos(math.pi * step / total))
                idx = order[b * cfg.batch_size:(b + 1) * cfg.batch_size]
                x = x_all[idx].float() / 255.0
                y = y_all[idx]
                xa = adversarial_batch(model, x, y, cfg.attack, cfg.eps, cfg.steps, cfg.alpha, g)
                loss, logits = loss_of(model, xa, y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                seen += len(y)
                loss_sum += float(loss.detach()) * len(y)
                correct += int((logits.argmax(1) == y).sum())
                bar.update(task, advance=1, info=f"epoch {epoch + 1}/{cfg.epochs} loss {loss_sum / seen:.3f} "
                                                 f"{'adv ' if cfg.attack != 'none' else ''}acc {100 * correct / seen:.1f}%")
            row = {"epoch": epoch + 1, "loss": loss_sum / seen, "train_acc": correct / seen,
                   "seconds": time.perf_counter() - t0, "images_per_s": seen / (time.perf_counter() - t0)}
            _log(log_path, row)
            if progress:  # a line per epoch also reaches logs that are not terminals
                bar.console.print(f"{name}: epoch {epoch + 1}/{cfg.epochs} loss {row['loss']:.3f} "
                                  f"train acc {100 * row['train_acc']:.1f}% {row['images_per_s']:.0f} img/s")
            W.save_state({"model": model.state_dict(), "opt": opt.state_dict(), "epoch": epoch + 1,
                          "config": json.dumps(asdict(cfg), sort_keys=True)}, state_path)
    model.eval()
    state = {k: v.detach().contiguous().clone() for k, v in model.net.state_dict().items()}
    wpath = out / "model.safetensors"
    save_file(state, str(wpath))
    sha = W.file_sha256(wpath)
    d = entry_json(entry, wpath.name, sha, params)
    d["recipe"] = asdict(cfg)
    (out / "entry.json").write_text(json.dumps(d, indent=2) + "\n")
    if register:
        zoo = settings.home() / "zoo"
        zoo.mkdir(parents=True, exist_ok=True)
        reg = dict(d, weights={"file": str(wpath.resolve()), "sha256": sha})
        from robustart.paths import inside

        inside(zoo, f"{name}.json", "--name").write_text(json.dumps(reg, indent=2) + "\n")
    return {"name": name, "out": str(out), "weights": str(wpath), "sha256": sha, "params": params,
            "registered": register}
