"""The anti-bandit architecture search (ABanditNAS, Chen et al., ECCV 2020, Sec. 3.3-3.4 and
Algorithm 1; the authors published no search code, so this follows the paper's description).

Every edge (i, j) of every searched cell is a bandit whose arms are the operations still left on
it. A trial samples one operation per edge, trains the one-shot network with that choice for a
while (adversarially: FGSM from a random start), and measures the accuracy `a` on adversarial
validation images; every sampled arm gets the reward a:

  performance   m_k <- (1 - lambda) m_k + lambda a                  (Eq. 5; the first reward sets m_k)
  sampling      s_L(o_k) = m_k - sqrt(2 ln N / n_k),   p(o_k) = softmax(-s_L)   (Eqs. 3, 4)
  abandoning    every K*T trials, with K the arms left on each edge:
                s_U(o_k) = m_k + sqrt(2 ln N / n_k), drop argmin s_U on every edge (Eqs. 6, 7)

N counts all trials, n_k the trials of arm k. Sampling by the *lower* bound gives arms that are
uncertain or poor so far more trials (a fair chance) before the *upper* bound discards the arm
that is bad even optimistically. It stops when one arm is left on every edge: T * (2 + ... + K)
trials for K operations. The initial performance m_k,0 is the accuracy of the first trial that
samples arm k (the paper: sample an operation per edge, train one epoch adversarially, assign
the validation accuracy to all sampled operations); arms never tried are sampled first, since
their bounds are undefined at n = 0 (our reading). We could not find the value of lambda in the
text we could consult; 0.7 is our default (an option). A "trial" here trains for
budget / trials minibatches rather than a full epoch, so a search fits a small budget. Each node then keeps the incoming edge whose surviving operation has
the best performance m, giving one input per node as in the published genotypes (the public
evaluation code's `parse(alpha, k=1)` does the same with its scores).
"""

from __future__ import annotations

import json
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from robustart.errors import RobustartError
from robustart.nas.genotypes import NODES, Genotype
from robustart.nas.ops import SEARCH_SPACE
from robustart.zoo import weights as W


def total_trials(k: int, t: int) -> int:
    return t * sum(range(2, k + 1))


@dataclass
class AntiBandit:
    """Arms and statistics of every edge. Plain data (JSON round-trip) so a search resumes."""

    n_edges: int
    space: list[str]
    lam: float = 0.7
    T: int = 1
    remaining: list[list[str]] = field(default_factory=list)
    m: list[dict] = field(default_factory=list)
    n: list[dict] = field(default_factory=list)
    N: int = 0
    since: int = 0  # trials since the last abandonment
    abandoned: list[dict] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.remaining:
            self.remaining = [list(self.space) for _ in range(self.n_edges)]
            self.m = [{op: 0.0 for op in self.space} for _ in range(self.n_edges)]
            self.n = [{op: 0 for op in self.space} for _ in range(self.n_edges)]

    @property
    def arms(self) -> int:
        return len(self.remaining[0])

    def done(self) -> bool:
        return self.arms <= 1

    def bound(self, e: int, op: str, sign: int) -> float:
        return self.m[e][op] + sign * math.sqrt(2 * math.log(max(self.N, 1)) / self.n[e][op])

    def lcb(self, e: int, op: str) -> float:
        return self.bound(e, op, -1)

    def ucb(self, e: int, op: str) -> float:
        return self.bound(e, op, +1)

    def probabilities(self, e: int) -> dict[str, float]:
        ops = self.remaining[e]
        untried = [o for o in ops if self.n[e][o] == 0]
        if untried:
            return {o: (1 / len(untried) if o in untried else 0.0) for o in ops}
        z = [-self.lcb(e, o) for o in ops]
        mx = max(z)
        w = [math.exp(v - mx) for v in z]
        s = sum(w)
        return {o: wi / s for o, wi in zip(ops, w)}

    def sample(self, rng: random.Random) -> list[str]:
        out = []
        for e in range(self.n_edges):
            p = self.probabilities(e)
            out.append(rng.choices(list(p), weights=list(p.values()))[0])
        return out

    def update(self, choice: list[str], reward: float) -> None:
        self.N += 1
        self.since += 1
        for e, op in enumerate(choice):
            self.m[e][op] = reward if self.n[e][op] == 0 else (1 - self.lam) * self.m[e][op] + self.lam * reward
            self.n[e][op] += 1

    def abandon_due(self) -> bool:
        return not self.done() and self.since >= self.arms * self.T

    def abandon(self) -> list[dict]:
        """Drop the arm with the lowest UCB on every edge; return what was dropped and why."""
        events = []
        for e in range(self.n_edges):
            ucb = {o: self.ucb(e, o) for o in self.remaining[e]}
            worst = min(self.remaining[e], key=lambda o: (ucb[o], self.remaining[e].index(o)))
            self.remaining[e].remove(worst)
            events.append({"trial": self.N, "edge": e, "removed": worst, "ucb": ucb,
                           "m": {o: self.m[e][o] for o in ucb}, "n": {o: self.n[e][o] for o in ucb}})
        self.since = 0
        self.abandoned.extend(events)
        return events

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "AntiBandit":
        return cls(**d)


def derive_genotype(bandit: AntiBandit, cells: int, name: str = "searched") -> Genotype:
    """One input per node: the incoming edge whose surviving operation performs best."""
    out = []
    per = NODES * (NODES + 1) // 2
    for c in range(cells):
        cell, k = [], c * per
        for j in range(1, NODES + 1):
            best = None
            for i in range(j):
                e = k + i
                op = bandit.remaining[e][0] if bandit.done() else max(bandit.remaining[e], key=lambda o: bandit.m[e][o])
                score = bandit.m[e][op]
                if best is None or score > best[0]:
                    best = (score, op, i)
            cell.append((best[1], best[2]))
            k += j
        out.append(tuple(cell))
    return Genotype(tuple(out), name)


@dataclass
class SearchConfig:
    data: str = "fashion-mnist"
    out: str = "nas-search"
    budget: int = 2000  # training minibatches over the whole search
    C: int = 8
    cells: int = 3
    T: int = 1
    lam: float = 0.7
    eps: float = 0.1
    batch_size: int = 64
    lr: float = 0.05
    train_size: int = 10000
    val_size: int = 1000
    space: list[str] = field(default_factory=lambda: list(SEARCH_SPACE))
    seed: int = 0
    threads: int | None = None


def _fgsm_rs_acc(model, x, y, eps, batch, gen) -> float:
    from robustart.nas.train import fgsm_rs

    model.eval()
    correct = 0
    for i in range(0, len(x), batch):
        xb, yb = x[i:i + batch].float() / 255.0, y[i:i + batch]
        xa = fgsm_rs(model, xb, yb, eps, None, gen)
        with torch.no_grad():
            correct += int((model(xa).argmax(1) == yb).sum())
    return correct / len(x)


def search(cfg: SearchConfig, *, progress: bool = True) -> dict:
    """Run (or resume) the search; writes `<out>/genotype.json` (the genotype and its search
    record) and `<out>/search_log.jsonl` (one line per trial); state in `<out>/search_state.pt`."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from robustart.nas.network import EDGES_PER_CELL, SearchNetwork
    from robustart.nas.ops import OPS
    from robustart.nas.train import DATA_MEAN_STD, fgsm_rs, load_split
    from robustart.zoo.build import Normalize

    bad = [o for o in cfg.space if o not in OPS]
    if bad or len(cfg.space) < 2:
        raise RobustartError(f"search space {cfg.space}: needs at least two known operations (unknown: {bad})")
    if cfg.budget < 1 or cfg.T < 1 or cfg.cells < 1:
        raise RobustartError("--budget, -T and --cells must be >= 1")
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    from robustart.console import err as console
    out = Path(cfg.out).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    x_all, y_all, kind = load_split(cfg.data, "train", None)
    perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(cfg.seed))
    if cfg.train_size + cfg.val_size > len(x_all):
        raise RobustartError(f"--train-size + --val-size exceed the {len(x_all)} training images")
    tr, va = perm[:cfg.train_size], perm[cfg.train_size:cfg.train_size + cfg.val_size]
    xt, yt, xv, yv = x_all[tr], y_all[tr], x_all[va], y_all[va]
    mean, std = DATA_MEAN_STD[kind]
    torch.manual_seed(cfg.seed)
    net = SearchNetwork(cfg.space, cfg.C, cfg.cells, 10, xt.shape[1])
    model = torch.nn.Sequential(Normalize(mean, std), net)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=3e-4)
    bandit = AntiBandit(cfg.cells * EDGES_PER_CELL, list(cfg.space), cfg.lam, cfg.T)
    trials = total_trials(len(cfg.space), cfg.T)
    steps = max(1, cfg.budget // trials)
    state_path, log_path = out / "search_state.pt", out / "search_log.jsonl"
    cfg_json = json.dumps(asdict(cfg), sort_keys=True)
    if state_path.is_file():
        st = W.load_state(state_path, "the search state", ("model", "opt", "bandit", "config"))
        if st["config"] != cfg_json:
            raise RobustartError(f"{out} holds a search with another configuration; use a new --out or delete it.")
        model.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        bandit = AntiBandit.from_dict(json.loads(st["bandit"]))
        console.print(f"resuming the search after trial {bandit.N}")
    elif log_path.exists():
        log_path.unlink()
    t_start = time.perf_counter()
    with Progress(TextColumn("{task.description}", markup=False), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
                  TimeRemainingColumn(), console=console, disable=not progress) as bar:
        task = bar.add_task("anti-bandit search", total=trials, completed=bandit.N, info="")
        while not bandit.done():
            t = bandit.N
            choice = bandit.sample(random.Random(cfg.seed * 1_000_003 + t))
            net.choice = [choice[c * EDGES_PER_CELL:(c + 1) * EDGES_PER_CELL] for c in range(cfg.cells)]
            g = torch.Generator().manual_seed(cfg.seed * 7919 + t)
            model.train()
            idx = torch.randint(len(xt), (steps, cfg.batch_size), generator=g)
            loss_sum = 0.0
            for s in range(steps):
                x, y = xt[idx[s]].float() / 255.0, yt[idx[s]]
                xa = fgsm_rs(model, x, y, cfg.eps, None, g)
                loss = torch.nn.functional.cross_entropy(model(xa), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                loss_sum += float(loss.detach())
            acc = _fgsm_rs_acc(model, xv, yv, cfg.eps, 256, g)
            arms = bandit.arms
            bandit.update(choice, acc)
            events = bandit.abandon() if bandit.abandon_due() else []
            row = {"trial": t + 1, "arms": arms, "reward": acc, "train_loss": loss_sum / steps, "choice": choice,
                   "abandoned": [ev["removed"] for ev in events], "seconds": time.perf_counter() - t_start}
            with open(log_path, "a") as f:
                f.write(json.dumps(row) + "\n")
            W.save_state({"model": model.state_dict(), "opt": opt.state_dict(),
                        "bandit": json.dumps(bandit.to_dict()), "config": cfg_json}, state_path)
            bar.update(task, advance=1, info=f"arms/edge {bandit.arms} reward {acc:.3f}")
            if events and progress:
                bar.console.print(f"trial {t + 1}: abandoned one arm per edge, {bandit.arms} left")
    geno = derive_genotype(bandit, cfg.cells, name=f"searched-{out.name}")
    record = {"genotype": geno.to_dict(), "search": {
        "config": asdict(cfg), "trials": bandit.N, "steps_per_trial": steps, "data": kind,
        "final_m": bandit.m, "final_n": bandit.n, "abandoned": bandit.abandoned,
        "reference": "Chen et al., Anti-Bandit Neural Architecture Search for Model Defense, ECCV 2020",
    }}
    (out / "genotype.json").write_text(json.dumps(record, indent=1) + "\n")
    return {"genotype": geno.to_dict(), "trials": bandit.N, "out": str(out)}
