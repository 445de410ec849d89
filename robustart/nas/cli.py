"""`robustart nas`: anti-bandit architecture search and adversarial training."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from robustart import console as C

app = typer.Typer(help="ABanditNAS: anti-bandit architecture search and adversarial training.", no_args_is_help=True)
err = C.err


def _fail(e: Exception) -> None:
    C.fail(e)


@app.command("search")
def search_cmd(
    data: Annotated[str, typer.Option("--data", "-d", help="fashion-mnist[:PATH] or cifar10:PATH (its training split is split into search-train and validation images).")] = "fashion-mnist",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: genotype.json, search_log.jsonl, search_state.pt (resume).")] = Path("nas-search"),
    budget: Annotated[int, typer.Option("--budget", help="Training minibatches over the whole search (spread over its T*(2+...+K) trials).")] = 2000,
    channels: Annotated[int, typer.Option("--channels", "-C", help="Channels C of the one-shot network.")] = 8,
    cells: Annotated[int, typer.Option("--cells", help="Distinct cells searched (one per layer; the paper: 6).")] = 3,
    t: Annotated[int, typer.Option("-T", help="Trials per arm between abandonments (every K*T trials).")] = 1,
    lam: Annotated[float, typer.Option("--lambda", help="Momentum of the performance update m <- (1-lambda) m + lambda a.")] = 0.7,
    eps: Annotated[float, typer.Option("--eps", help="Linf budget of FGSM-RS training and validation, [0, 1] pixels.")] = 0.1,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 64,
    train_size: Annotated[int, typer.Option("--train-size", help="Training images used for search training.")] = 10000,
    val_size: Annotated[int, typer.Option("--val-size", help="Held-out training images for the rewards.")] = 1000,
    ops: Annotated[Optional[str], typer.Option("--ops", help="Comma-separated operations (default: the paper's nine).")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads.")] = None,
) -> None:
    """Search cells with the anti-bandit (LCB sampling, UCB abandoning); writes a genotype file."""
    from robustart.errors import RobustartError
    from robustart.nas.search import SearchConfig, search

    cfg = SearchConfig(data=data, out=str(out), budget=budget, C=channels, cells=cells, T=t, lam=lam, eps=eps,
                       batch_size=batch_size, train_size=train_size, val_size=val_size, seed=seed, threads=threads)
    if ops:
        cfg.space = [o.strip() for o in ops.split(",") if o.strip()]
    try:
        res = search(cfg)
    except (RobustartError, ValueError) as e:
        _fail(e)
    sys.stdout.write(json.dumps(res, indent=1) + "\n")


@app.command("train")
def train_cmd(
    data: Annotated[str, typer.Option("--data", "-d", help="fashion-mnist[:PATH] or cifar10:PATH (training split).")] = "fashion-mnist",
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder: model.safetensors, entry.json, train_log.jsonl, train_state.pt (resume).")] = Path("nas-train"),
    genotype: Annotated[Optional[str], typer.Option("--genotype", "-g", help="A genotype file (from `nas search`) or a published one: abanditnas-cifar10, abanditnas-mnist.")] = None,
    arch: Annotated[str, typer.Option("--arch", help="Without --genotype: small_resnet (the plain baseline) or a zoo model name.")] = "small_resnet",
    name: Annotated[Optional[str], typer.Option("--name", help="Zoo name of the result (default: the output folder's name).")] = None,
    channels: Annotated[int, typer.Option("--channels", "-C", help="Cell network channels C.")] = 16,
    layers: Annotated[int, typer.Option("--layers", help="Cell network layers.")] = 6,
    width: Annotated[int, typer.Option("--width", help="small_resnet width.")] = 16,
    auxiliary: Annotated[bool, typer.Option("--auxiliary/--no-auxiliary", help="Auxiliary head (loss weight 0.4).")] = False,
    epochs: Annotated[int, typer.Option("--epochs")] = 10,
    batch_size: Annotated[int, typer.Option("--batch-size")] = 128,
    lr: Annotated[float, typer.Option("--lr")] = 0.05,
    attack: Annotated[str, typer.Option("--attack", help="pgd (Madry), fgsm-rs (fast), none (standard training).")] = "pgd",
    eps: Annotated[float, typer.Option("--eps", help="Linf budget, [0, 1] pixels.")] = 0.1,
    steps: Annotated[int, typer.Option("--steps", help="PGD steps (step size 2.5 eps / steps unless --alpha).")] = 7,
    alpha: Annotated[Optional[float], typer.Option("--alpha")] = None,
    train_limit: Annotated[Optional[int], typer.Option("--train-limit", help="Use only the first N training images.")] = None,
    seed: Annotated[int, typer.Option("--seed")] = 0,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads.")] = None,
    register: Annotated[bool, typer.Option("--register/--no-register", help="Also write $ROBUSTART_HOME/zoo/NAME.json so `robustart eval --model NAME` finds it.")] = True,
) -> None:
    """Adversarially (or standard) train a genotype or a zoo architecture; writes a checkpoint the zoo loads."""
    from robustart.errors import RobustartError
    from robustart.nas.genotypes import load_genotype
    from robustart.nas.train import TrainConfig, train

    try:
        geno = load_genotype(genotype).to_dict() if genotype else None
        cfg = TrainConfig(data=data, out=str(out), name=name, arch="abanditnas" if geno else arch, genotype=geno,
                          C=channels, layers=layers, width=width, auxiliary=auxiliary, epochs=epochs,
                          batch_size=batch_size, lr=lr, attack=attack, eps=eps, steps=steps, alpha=alpha,
                          train_limit=train_limit, seed=seed, threads=threads)
        res = train(cfg, register=register)
    except (RobustartError, ValueError, KeyError) as e:
        _fail(e)
    sys.stdout.write(json.dumps(res, indent=1) + "\n")
