"""What a plan costs before it runs: model passes per image of each job (the noise family's `cost`
hook: attacks count their steps, restarts and queries), times the images left to do, turned into
seconds with per-model throughputs: given (`--images-per-second`, forward passes; a backward
pass counted as two forwards, the usual ratio), or timed here on a few batches of a randomly
initialised network of each architecture (no weights are loaded, no image decoded).

An upper bound where work stops early: an attack runs only on samples the model gets right and
stops on each once fooled; a suite's clean pass is shared by its jobs on one worker. Image
decoding is counted (ImageNet-S decodes each image twice) but not timed."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from robustart.bench.status import JobState, job_states
from robustart.bench.plan import BenchPlan
from robustart.zoo.registry import ModelEntry

BACKWARD_PER_FORWARD = 2.0  # a backward pass costs about two forward passes (given rates only)


@dataclass
class JobCost:
    state: JobState
    forward: float  # passes per image
    backward: float
    decode: float  # extra decodes per image
    todo: int  # images left to evaluate
    seconds: float  # for `todo` images


@dataclass
class Rate:
    forward_s: float  # seconds per image, one forward pass
    backward_s: float  # seconds per image, one backward pass (input gradient)
    how: str


@dataclass
class Estimate:
    jobs: list[JobCost]
    rates: dict[str, Rate]  # arch key -> rate
    device: str
    notes: list[str] = field(default_factory=list)

    @property
    def seconds(self) -> float:
        return sum(j.seconds for j in self.jobs)

    @property
    def images(self) -> int:
        return sum(j.todo for j in self.jobs)

    @property
    def forward_passes(self) -> float:
        return sum(j.todo * j.forward for j in self.jobs)

    @property
    def backward_passes(self) -> float:
        return sum(j.todo * j.backward for j in self.jobs)

    @property
    def decodes(self) -> float:
        return sum(j.todo * (1 + j.decode) for j in self.jobs)

    def to_json(self) -> dict:
        return {"device": self.device, "seconds": self.seconds, "hours": self.seconds / 3600, "images": self.images,
                "forward_passes": self.forward_passes, "backward_passes": self.backward_passes,
                "decodes": self.decodes, "notes": self.notes,
                "rates": {k: {"forward_s": r.forward_s, "backward_s": r.backward_s, "how": r.how}
                          for k, r in self.rates.items()}}


def arch_key(entry: ModelEntry) -> str:
    return f"{entry.arch}@{entry.input_size[-1]}"


def time_model(entry: ModelEntry, device, *, batch_size: int = 8, batches: int = 2) -> Rate:
    """Seconds per image of one forward and one backward (input gradient) pass of the entry's
    network, randomly initialised (no weights), on `device`: one warm-up batch, then `batches`."""
    import torch

    from robustart.zoo.build import build_network

    device = torch.device(device)
    net = build_network(entry).to(device).eval()
    for p in net.parameters():
        p.requires_grad_(False)  # attacks take gradients of the input only
    x = torch.rand(batch_size, *entry.input_size, device=device)

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    with torch.inference_mode():
        net(x)
        sync()
        t0 = time.perf_counter()
        for _ in range(batches):
            net(x)
        sync()
        fwd = (time.perf_counter() - t0) / (batches * batch_size)
    xg = x.clone().requires_grad_(True)
    torch.autograd.grad(net(xg).logsumexp(1).sum(), xg)
    sync()
    t0 = time.perf_counter()
    for _ in range(batches):
        torch.autograd.grad(net(xg).logsumexp(1).sum(), xg)
    sync()
    both = (time.perf_counter() - t0) / (batches * batch_size)
    return Rate(fwd, max(both - fwd, 0.0), f"timed on {device}: {batches} batches of {batch_size}, random weights")


def estimate(plan: BenchPlan, *, images_per_second: float | None = None, device=None, batch_size: int = 8,
             batches: int = 2, log: Callable[[str], None] | None = None) -> Estimate:
    """The plan's cost for what is left to do (done jobs cost nothing, partial ones their missing
    images)."""
    from robustart.noises import family_for

    states = job_states(plan)
    configs = [j.noise for j in plan.jobs] + [u.noise for u in plan.unkeyed]
    entries = [j.entry for j in plan.jobs] + [u.entry for u in plan.unkeyed]
    notes = []
    rates: dict[str, Rate] = {}
    if images_per_second is not None:
        if not images_per_second > 0:
            from robustart.errors import RobustartError

            raise RobustartError(f"--images-per-second must be above 0, got {images_per_second}.")
        given = Rate(1 / images_per_second, BACKWARD_PER_FORWARD / images_per_second,
                     f"given: {images_per_second:g} images/s forward, backward = {BACKWARD_PER_FORWARD:g} forwards")
        dev_name = "given rate"
    else:
        from robustart.engine.env import resolve_device

        want = plan.settings.get("device")
        try:
            dev = resolve_device(want)
        except Exception:  # a plan for GPUs made on a machine without one: time on this CPU and say so
            dev = resolve_device("cpu")
            notes.append(f"the plan's device {want} is not here: timed on cpu")
        dev_name = str(dev)
    jobs = []
    for st, cfg, entry in zip(states, configs, entries):
        c = family_for(cfg).cost(cfg)
        f, b, d = float(c.get("forward", 0)), float(c.get("backward", 0)), float(c.get("decode", 0))
        todo = max(st.n - st.n_done, 0) if st.state != "done" else 0
        if images_per_second is not None:
            rate = given
        else:
            k = arch_key(entry)
            if k not in rates and todo:
                if log:
                    log(f"timing {entry.arch} at {entry.input_size[-1]} px on {dev_name} (random weights)")
                rates[k] = time_model(entry, dev, batch_size=batch_size, batches=batches)
            rate = rates.get(k)
        secs = todo * (f * rate.forward_s + b * rate.backward_s) if todo else 0.0
        jobs.append(JobCost(st, f, b, d, todo, secs))
    if images_per_second is not None:
        rates = {"*": given}
    return Estimate(jobs, rates, dev_name, notes)
