"""`robustart bench`: run a plan (`robustart bench PLAN.toml`, or inline), `--dry-run` it, and
`robustart bench status PLAN`. Parses and prints; plans, costs and states come from
robustart.bench."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.text import Text
from typer.core import TyperGroup

from robustart import console as C
from robustart.errors import RobustartError


class DefaultGroup(TyperGroup):
    """A group whose first argument, when it is not one of its commands, goes to its default
    command: `robustart bench PLAN.toml` is `robustart bench run PLAN.toml`, while `robustart
    bench status PLAN.toml` is the status command. `robustart bench --help` shows both."""

    default = "run"

    def parse_args(self, ctx, args):
        if not args or (args[0] not in self.commands and args[0] not in ("--help", "-h")):
            args = [self.default, *args]
        return super().parse_args(ctx, args)

    def collect_usage_pieces(self, ctx):
        return [f"[PLAN] [OPTIONS]  |  {ctx.command_path} status [PLAN] [OPTIONS]"]


app = typer.Typer(cls=DefaultGroup, help=(
    "Benchmarks at scale: run a plan of models x noises (a TOML file or inline options) as the exact jobs "
    "`robustart eval` makes, reusing every job already in the store.\n\n"
    "robustart bench PLAN.toml [OPTIONS]   (the `run` command: `robustart bench run --help` lists its options)\n\n"
    "robustart bench --models 'efficientnet_lite*' --preset quick --data DIR --limit 100\n\n"
    "robustart bench PLAN.toml --dry-run   (jobs and cost estimate: no network, no weights)\n\n"
    "robustart bench status PLAN.toml      (done / running / partial / failed / pending per model and noise)"))

PlanArg = Annotated[Optional[Path], typer.Argument(metavar="PLAN", help="Plan file (TOML). Inline options replace its values.", show_default=False)]
ModelsOpt = Annotated[Optional[list[str]], typer.Option("--models", metavar="SELECTORS", help="Models: names, NAME@FORM, family:NAME, tag:NAME or patterns ('efficientnet_lite*'; '*' is the whole zoo); repeat or comma-separate.")]
NoisesOpt = Annotated[Optional[list[str]], typer.Option("--noises", metavar="SPECS", help="Noise specs as `eval --noise` takes them (added to the preset's); repeat or comma-separate.")]
PresetOpt = Annotated[Optional[str], typer.Option("--preset", help="Named noise list: quick (clean, a small PGD, one corruption) or robustart (RobustART's protocol).")]
DataOpt = Annotated[Optional[str], typer.Option("--data", "-d", help="Dataset as `eval --data` takes it (default: the built-in sample).")]
DataRootOpt = Annotated[Optional[str], typer.Option("--data-root", help="Folder a labels file's paths are relative to.")]
ClassesOpt = Annotated[Optional[str], typer.Option("--classes", help="Class map of an ImageFolder whose folders are not wnids.")]
LimitOpt = Annotated[Optional[int], typer.Option("--limit", help="Use the first N samples.")]
StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Results store folder \\[env ROBUSTART_STORE, default ~/.robustart/results].")]
SeedOpt = Annotated[Optional[int], typer.Option("--seed", help="Random seed of noise jobs (part of their keys; default 0).")]
ShardOpt = Annotated[Optional[int], typer.Option("--shard-size", help="Records per shard, the unit of work (default 256; a stored job keeps its own).")]
BatchOpt = Annotated[Optional[int], typer.Option("--batch-size", "-b", help="Images per forward pass (default 32).")]
DeviceOpt = Annotated[Optional[str], typer.Option("--device", help="cpu, cuda, cuda:N or auto (where the jobs run).")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]


def _plan_kwargs(plan_file, models, noises, preset, data, data_root, classes, limit, store, seed, shard_size,
                 batch_size, device) -> dict:
    return dict(path=plan_file, models=models, noises=noises, preset=preset, data=data, data_root=data_root,
                classes=classes, limit=limit, store=None if store is None else str(store), seed=seed,
                shard_size=shard_size, batch_size=batch_size, device=device)


def _options(values: list[str] | None) -> dict:
    out = {}
    for v in values or []:
        k, eq, raw = v.partition("=")
        if not eq or not k.strip():
            raise RobustartError(f"--option {v!r}: give KEY=VALUE (e.g. --option partition=gpu).")
        low = raw.strip().lower()
        if low in ("true", "false"):
            val = low == "true"
        else:
            try:
                val = int(raw)
            except ValueError:
                try:
                    val = float(raw)
                except ValueError:
                    val = raw
        out[k.strip()] = val
    return out


def _say_plan(plan, as_json: bool) -> None:
    if as_json:
        return
    where = f"{plan.path}: " if plan.path else ""
    C.out.print(Text(f"robustart bench — {where}{plan.describe()}"), highlight=False, soft_wrap=True)
    _say_skipped(plan)


def _say_skipped(plan) -> None:
    for model, why in plan.skipped:
        C.warning(f"model {model} is left out of the plan: {why}")
    for note in plan.notes:
        C.warning(note)


def _plan_json(plan) -> dict:
    return {"plan": str(plan.path) if plan.path else None, "models": [e.spec for e in plan.models],
            "noises": plan.noises, "preset": plan.preset, "data": plan.data, "store": str(plan.store.root),
            "jobs": plan.n_jobs, "skipped": [{"model": m, "why": w} for m, w in plan.skipped], "notes": plan.notes,
            "executor": {"name": plan.executor.name, "workers": plan.executor.workers,
                         "address": plan.executor.address, "retries": plan.executor.retries,
                         "options": plan.executor.options}}


def _fmt_s(s: float) -> str:
    if s < 120:
        return f"{s:.1f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


# --------------------------------------------------------------------------- run / dry run


@app.command("run")
def run_cmd(
    plan_file: PlanArg = None,
    models: ModelsOpt = None,
    noises: NoisesOpt = None,
    preset: PresetOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    classes: ClassesOpt = None,
    limit: LimitOpt = None,
    store: StoreOpt = None,
    seed: SeedOpt = None,
    shard_size: ShardOpt = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    executor: Annotated[Optional[str], typer.Option("--executor", help="Where units run: local (default), ray, slurm (registered executors).")] = None,
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", help="Executor workers (local: processes on this machine).")] = None,
    address: Annotated[Optional[str], typer.Option("--address", help="Ray cluster address \\[env RAY_ADDRESS; default: start a local one].")] = None,
    retries: Annotated[Optional[int], typer.Option("--retries", help="Attempts after a unit fails, before it is reported (default 2).")] = None,
    option: Annotated[Optional[list[str]], typer.Option("--option", metavar="KEY=VALUE", help="An executor option (slurm: partition=gpu, gpus_per_worker=1, time_min=240; ray: num_gpus=1); repeat.")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="List the jobs (done / pending in the store) and estimate their cost; no network, no weights, no images decoded.")] = False,
    images_per_second: Annotated[Optional[float], typer.Option("--images-per-second", help="Dry run: forward passes per second to estimate with, instead of timing each architecture here.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Run a plan, or --dry-run it (the default command: `robustart bench PLAN`).

    Every job of every model runs on the executor, reusing what the store has; then a leaderboard
    of the plan's jobs, and the failed units if any (exit code 1)."""
    from robustart.bench.plan import load_plan

    kw = _plan_kwargs(plan_file, models, noises, preset, data, data_root, classes, limit, store, seed, shard_size,
                      batch_size, device)
    plan = load_plan(**kw, offline=dry_run, executor=executor, workers=workers, address=address, retries=retries,
                     options=_options(option), progress=not as_json and sys.stderr.isatty())
    _say_plan(plan, as_json)
    if dry_run:
        _dry_run(plan, images_per_second, as_json)
        return
    from robustart.bench.run import run_plan

    ex = plan.executor
    opts = dict(ex.options)
    if ex.address is not None:
        opts.setdefault("address", ex.address)
    outcome = run_plan(plan.jobs, executor=ex.name, workers=ex.workers, retries=ex.retries,
                       progress=not as_json and sys.stderr.isatty(), options=opts)
    failed_keys = {f.get("key") for f in outcome.failed}
    board = _leaderboard(plan, [k for k in plan.keys if k in set(outcome.complete) and k not in failed_keys])
    if as_json:
        C.print_json({**_plan_json(plan), "complete": list(outcome.complete), "failed": outcome.failed,
                      "seconds": outcome.seconds, "images": outcome.images,
                      "leaderboard": {k: v.to_dict(orient="records") for k, v in board.items()}})
    else:
        from robustart.bench.report import summary

        df = summary(board)
        if len(df):
            C.emit_table([str(c) for c in df.columns], [[_cell(v) for v in r] for r in df.itertuples(index=False)],
                         fmt="table", title="leaderboard (%)", keep=("model",),
                         right=tuple(c for c in df.columns if c not in ("model", "dataset")))
        done = len(set(outcome.complete))
        C.out.print(Text(f"{done} of {len(plan.jobs)} jobs complete, {len(outcome.failed)} failed unit(s); "
                         f"{outcome.images} images evaluated in {_fmt_s(outcome.seconds)}; store {plan.store.root}. "
                         "`robustart report --plan ...` makes the full report."), highlight=False, soft_wrap=True)
        _say_skipped(plan) if plan.skipped else None
        for f in outcome.failed:
            model, spec = plan.origin.get(f.get("key"), ("?", "?"))
            C.line("failed:", "red", f"{f.get('key')} ({model} · {spec}) shard {f.get('shard')}, "
                   f"{f.get('attempts')} attempt(s): {f.get('error')}")
    if outcome.failed:
        raise typer.Exit(1)


def _cell(v) -> str:
    if isinstance(v, float):
        return "" if v != v else f"{v:.2f}"
    return "" if v is None else str(v)


def _leaderboard(plan, keys: list[str]) -> dict:
    from robustart.bench.report import leaderboard

    return leaderboard(plan.store, keys) if keys else {}


def _dry_run(plan, images_per_second, as_json: bool) -> None:
    from robustart.bench.cost import estimate
    from robustart.bench.status import totals

    log = None if as_json else (lambda m: C.line("timing:", "dim", m))
    est = estimate(plan, images_per_second=images_per_second, log=log)
    tot = totals([j.state for j in est.jobs])
    unkeyed_models = sorted({u.entry.spec for u in plan.unkeyed})
    if as_json:
        C.print_json({**_plan_json(plan), "states": tot, "estimate": est.to_json(),
                      "unkeyed_models": unkeyed_models,
                      "job_list": [{"key": j.state.key, "model": j.state.model, "noise": j.state.noise,
                                    "spec": j.state.spec, "state": j.state.state, "n": j.state.n,
                                    "todo": j.todo, "forward": j.forward, "backward": j.backward,
                                    "decode": j.decode, "seconds": j.seconds, "why": j.state.why}
                                   for j in est.jobs]})
        return
    if len(est.jobs) <= 60:
        rows = [[j.state.model, j.state.noise, j.state.key or "(weights not fetched)", j.state.state, str(j.todo),
                 f"{j.forward:g}", f"{j.backward:g}", _fmt_s(j.seconds)] for j in est.jobs]
        C.emit_table(["model", "noise", "key", "state", "images", "fwd/img", "bwd/img", "time"], rows, fmt="table",
                     title="jobs", keep=("noise",), drop_order=("bwd/img", "fwd/img", "key"),
                     right=("images", "fwd/img", "bwd/img", "time"))
    else:  # a study: one row per model
        per: dict[str, list] = {}
        for j in est.jobs:
            r = per.setdefault(j.state.model, [0, 0, 0, 0.0, 0.0])
            r[0] += 1
            r[1] += j.state.state == "done"
            r[2] += j.todo
            r[3] += j.todo * (j.forward + j.backward)
            r[4] += j.seconds
        rows = [[m, str(r[0]), str(r[1]), str(r[2]), f"{r[3]:.3g}", _fmt_s(r[4])] for m, r in per.items()]
        C.emit_table(["model", "jobs", "done", "images", "passes", "time"], rows, fmt="table",
                     title=f"jobs per model ({len(est.jobs)} jobs; --json lists each)", keep=("model",),
                     right=("jobs", "done", "images", "passes", "time"))
    C.out.print(Text(f"jobs: {tot['total']} (done {tot['done']}, running {tot['running']}, partial {tot['partial']}, "
                     f"failed {tot['failed']}, pending {tot['pending']})"), highlight=False, soft_wrap=True)
    if unkeyed_models:
        C.out.print(Text(f"{len(plan.unkeyed)} jobs of {len(unkeyed_models)} models have no key yet (weights not "
                         f"fetched: {', '.join(unkeyed_models[:6])}{' ...' if len(unkeyed_models) > 6 else ''}); "
                         "they are counted as pending."), highlight=False, soft_wrap=True)
    rate = "; ".join(f"{r.how}" for r in list(est.rates.values())[:1]) if images_per_second else \
        f"each architecture timed on {est.device} (random weights)"
    C.out.print(Text(f"estimate: {est.images} images to evaluate, {est.forward_passes:.4g} forward + "
                     f"{est.backward_passes:.4g} backward passes, {est.decodes:.4g} image decodes; "
                     f"{est.seconds:.0f} seconds ({est.seconds / 3600:.2f} hours) on one device ({rate}). "
                     "An upper bound: attacks stop on fooled samples and a suite's clean pass is shared."),
                highlight=False, soft_wrap=True)
    for n in est.notes:
        C.warning(n)


# --------------------------------------------------------------------------- status


@app.command("status")
def status_cmd(
    plan_file: PlanArg = None,
    models: ModelsOpt = None,
    noises: NoisesOpt = None,
    preset: PresetOpt = None,
    data: DataOpt = None,
    data_root: DataRootOpt = None,
    classes: ClassesOpt = None,
    limit: LimitOpt = None,
    store: StoreOpt = None,
    seed: SeedOpt = None,
    shard_size: ShardOpt = None,
    batch_size: BatchOpt = None,
    device: DeviceOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Where a plan stands: jobs done, running, partial, failed, pending.

    Counted per model and per noise spec of the plan, from the store (no network, no weights)."""
    from robustart.bench.plan import load_plan
    from robustart.bench.status import counts, job_states, totals

    plan = load_plan(**_plan_kwargs(plan_file, models, noises, preset, data, data_root, classes, limit, store, seed,
                                    shard_size, batch_size, device), offline=True)
    states = job_states(plan)
    tot = totals(states)
    if as_json:
        C.print_json({**_plan_json(plan), "states": tot, "models": counts(states, "model"),
                      "noises": counts(states, "spec"),
                      "jobs": [{"key": s.key, "model": s.model, "spec": s.spec, "noise": s.noise, "state": s.state,
                                "n": s.n, "n_done": s.n_done, "why": s.why} for s in states]})
        return
    _say_plan(plan, False)
    cols = ["done", "running", "partial", "failed", "pending", "total"]
    for by, title in (("model", "per model"), ("spec", "per noise")):
        rows = [[r[by]] + [str(r[c]) for c in cols] for r in counts(states, by)]
        C.emit_table([by if by == "model" else "noise", *cols], rows, fmt="table", title=title,
                     keep=(by if by == "model" else "noise",), right=tuple(cols))
    C.out.print(Text("jobs: " + ", ".join(f"{tot[c]} {c}" for c in cols[:-1]) + f" of {tot['total']}"),
                highlight=False, soft_wrap=True)
    for s in states:
        if s.state == "failed":
            C.line("failed:", "red", f"{s.key} ({s.model} · {s.noise}): {s.why}")
