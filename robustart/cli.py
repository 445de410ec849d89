"""The `robustart` command. Thin: parses, calls the API, prints. Heavy imports live inside the
commands so `--help` is instant. `--json` output goes to stdout alone; progress goes to stderr."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table
from rich.text import Text
from typer.core import TyperGroup

from robustart import console as C
from robustart.errors import RobustartError


class _Group(TyperGroup):
    """Every command runs inside this: an error the user caused (a RobustartError, from any
    command or sub-command) ends in one `error:` line and exit code 2; `--debug` (or
    ROBUSTART_DEBUG=1) shows its traceback instead."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except C.user_errors() as e:
            if C.debug():
                raise
            C.fail(e)

    def main(self, args=None, prog_name=None, standalone_mode=True, **extra):
        """Usage errors (an unknown option, `--limit abc`, a missing argument) also end in one
        `error:` line naming the option and the command's --help, exit code 2; a bare group
        still prints its help."""
        if not standalone_mode:
            return super().main(args, prog_name, standalone_mode=False, **extra)
        E = _click_exceptions()
        try:
            rv = super().main(args, prog_name, standalone_mode=False, **extra)
        except E.NoArgsIsHelpError as e:
            from typer import rich_utils

            rich_utils.rich_format_error(e)
            sys.exit(e.exit_code)
        except E.UsageError as e:
            where = e.ctx.command_path if e.ctx is not None else (prog_name or "robustart")
            C.error(f"{where}: {e.format_message().rstrip('.')} (see '{where} --help').")
            sys.exit(2)
        except E.ClickException as e:
            C.error(e.format_message())
            sys.exit(2 if e.exit_code in (None, 1, 2) else e.exit_code)
        except typer.Abort:
            C.error("aborted.")
            sys.exit(1)
        sys.exit(rv if isinstance(rv, int) and not isinstance(rv, bool) else 0)


def _click_exceptions():
    """The click that Typer runs on (recent Typer vendors its own copy as typer._click)."""
    import typer.core

    ck = getattr(typer.core, "_click", None)
    if ck is None:
        import click as ck
    return ck.exceptions


app = typer.Typer(help="Robustness evaluation platform and model zoo for image classifiers.",
                  no_args_is_help=True, add_completion=False, cls=_Group)
zoo_app = typer.Typer(help="The model zoo: list, inspect and download models.", no_args_is_help=True)
results_app = typer.Typer(help="The results store: list, show and verify jobs.", no_args_is_help=True)
app.add_typer(zoo_app, name="zoo")
app.add_typer(results_app, name="results")
from robustart.imagenet_s.cli import app as imagenet_s_app
app.add_typer(imagenet_s_app, name="imagenet-s")
from robustart.nas.cli import app as nas_app  # noqa: E402
app.add_typer(nas_app, name="nas")
from robustart.quant.cli import app as quant_app  # noqa: E402
app.add_typer(quant_app, name="quant")
from robustart.bench.cli import app as bench_app  # noqa: E402
app.add_typer(bench_app, name="bench", rich_help_panel="Evaluate")

out = C.out
err = C.err

StoreOpt = Annotated[Optional[Path], typer.Option("--store", help="Results store folder \\[env ROBUSTART_STORE, default ~/.robustart/results].")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout instead of tables.")]
FormatOpt = Annotated[Optional[str], typer.Option("--format", help="table, tsv or json (default: table on a terminal, tsv when piped).")]


@app.callback()
def _main(debug: Annotated[bool, typer.Option("--debug", help="Show the traceback of an error [env ROBUSTART_DEBUG=1].")] = False) -> None:
    C.set_debug(debug)


def _fail(e: Exception) -> None:
    C.fail(e)


def _fmt(v) -> str:
    if isinstance(v, float):
        return "n/a" if math.isnan(v) else f"{v:.2f}"
    return str(v)


def _print_json(obj) -> None:
    C.print_json(obj)


# --------------------------------------------------------------------------- eval


_METRIC_COLUMNS = [  # (metric key, column title) shown when a job's records have it
    ("clean_top1", "clean %"), ("top1", "top-1 %"), ("top5", "top-5 %"), ("ar", "AR %"),
    ("asr", "ASR %"), ("flip_rate", "flips %"), ("mean_pert_norm", "‖δ‖"),
]


@app.command("eval", rich_help_panel="Evaluate")
def eval_cmd(
    model: Annotated[str, typer.Option("--model", "-m", help="Zoo model name (see `robustart zoo list`).")] = "efficientnet_lite0",
    noise: Annotated[str, typer.Option("--noise", "-n", help="Noise spec, e.g. clean, pgd, pgd:eps=4/255,steps=20, autoattack, adversarial (see `robustart noises`).")] = "clean",
    data: Annotated[Optional[str], typer.Option("--data", "-d", help="ImageFolder root, flat `<wnid>_*.JPEG` folder, labels file, or `builtin` (default: the built-in sample).")] = None,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Folder that a labels file's paths are relative to (default: the file's folder).")] = None,
    classes: Annotated[Optional[Path], typer.Option("--classes", help="Class map of an ImageFolder whose folders are not ImageNet wnids: `folder label` lines (label: wnid or index), or folder names alone, one per line, for labels 0, 1, ... in that order (default: classes.txt in the folder).")] = None,
    limit: Annotated[Optional[int], typer.Option("--limit", help="Use the first N samples (ordered by relative path).")] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", "-b", help="Images per forward pass.")] = 32,
    device: Annotated[str, typer.Option("--device", help="cpu, cuda, cuda:N or auto.")] = "auto",
    workers: Annotated[Optional[int], typer.Option("--workers", "-w", help="Decoding worker processes (default: up to 4).")] = None,
    store: StoreOpt = None,
    force: Annotated[bool, typer.Option("--force", help="Recompute even if this job has finished before.")] = False,
    shard_size: Annotated[Optional[int], typer.Option("--shard-size", help="Records per Parquet shard (the unit of resume).")] = None,
    seed: Annotated[int, typer.Option("--seed", help="Random seed (random starts, stochastic noises); part of a noise job's key.")] = 0,
    corruption_impl: Annotated[Optional[str], typer.Option("--corruption-impl", help="Corruption noises: torch (ours, batched) or reference (imagecorruptions).")] = None,
    backend: Annotated[str, typer.Option("--backend", help="Quantized forms (--model NAME@w8a8): fake (simulation), cpu-int8 (PyTorch x86 int8 kernels) or triton (robustart.kernels).")] = "fake",
    verify_data: Annotated[bool, typer.Option("--verify-data", help="Also hash every image file's contents: a stored job computed from other bytes is recomputed.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Evaluate one model under one noise (or a suite of noises); print metrics and store
    per-sample records, one job per noise."""
    from robustart.engine.evaluate import evaluate_suite
    from robustart.noises import NoiseSpecError, with_params

    if corruption_impl:
        try:
            noise = with_params(noise, impl=corruption_impl)
        except NoiseSpecError as e:
            raise RobustartError(f"--corruption-impl applies to corruption noises (corruption:..., imagenet-c): {e}")
    res = evaluate_suite(model, data, noise=noise, limit=limit, batch_size=batch_size, device=device,
                         workers=workers, store=store, force=force, shard_size=shard_size, seed=seed,
                         data_root=data_root, progress=not as_json and sys.stderr.isatty(), backend=backend,
                         classes=classes, verify_data=verify_data)
    if as_json:
        obj = res.jobs[0].to_json() if len(res.jobs) == 1 else res.to_json()
        obj["skipped"] = res.skipped_summary()
        obj["unavailable"] = res.unavailable
        _print_json(obj)
        return
    first = res.jobs[0].to_json()
    shown_model = first["model_spec"] + (f" ({first['backend']})" if first.get("form", "fp") != "fp" else "")
    t = Table(title=Text(f"robustart eval — {shown_model} · {noise} · {first['dataset']}"), title_justify="left")
    if len(res.jobs) > 24:  # a big suite (imagenet-c: 75 cells) reads better as its suite tables
        t.caption = f"{len(res.jobs)} jobs: the first and last 3 shown; all in `--json` and `robustart results list`"
    metrics = [j.metrics for j in res.jobs]
    adversarial = any("ar" in m for m in metrics)
    keys = ("clean_top1", "top1", "ar", "asr", "mean_pert_norm") if adversarial else \
        ("clean_top1", "top1", "top5", "flip_rate")
    cols = [(k, title) for k, title in _METRIC_COLUMNS if k in keys and any(k in m for m in metrics)]
    any_failed = any(m["n_failed"] for m in metrics)
    t.add_column("noise", no_wrap=True)
    for c in ["n"] + (["failed"] if any_failed else []) + [title for _, title in cols]:
        t.add_column(c, justify="right", no_wrap=True)
    shown = list(zip(res.jobs, metrics))
    if len(shown) > 24:
        shown = shown[:3] + shown[-3:]
    for j, m in shown:
        t.add_row(Text(j.label), str(m["n"]),
                  *([str(m["n_failed"])] if any_failed else []),
                  *[(f"{m[k]:.3g}" if k == "mean_pert_norm" and not math.isnan(m[k]) else _fmt(m.get(k, float("nan"))))
                    for k, _ in cols])
    out.print(t)
    _print_suite_metrics(res.metrics)
    if len(res.jobs) == 1:
        j = res.jobs[0]
        how = "reused the finished job (--force recomputes)" if j.reused else "stored"
        out.print(Text.assemble("job ", (j.key, "bold"), f" {how} in {j.store.root}"), soft_wrap=True)
    else:
        reused = sum(j.reused for j in res.jobs)
        out.print(f"{len(res.jobs)} jobs ({len(res.jobs) - reused} run, {reused} reused; --force recomputes) in "
                  f"{res.jobs[0].store.root}; keys: `robustart results list`", highlight=False, soft_wrap=True)
    _print_skipped(res.skipped_summary())
    if not first["weights_verified"]:
        C.warning(f"model {first['model']}: its entry pins no sha256, so its checkpoint was loaded unverified "
                  "(meta.json: weights_verified false).")
    for why in res.unavailable:
        C.warning(why)
    for j in res.jobs:
        for w in j.warnings():
            C.warning(f"{j.key}: {w}")
    failed = res.jobs[0].records
    failed = failed[failed["status"] != "ok"]
    for _, r in failed.head(5).iterrows():
        C.line("failed:", "yellow", f"{r['sample_id']}: {r['error']}")


def _print_skipped(s: dict) -> None:
    """Files the dataset source skipped: the count per reason and the first few (all of them are
    in `--json` and the job's meta.json)."""
    if not s["count"]:
        return
    reasons = "; ".join(f"{n} {why}" for why, n in s["reasons"].items())
    C.warning(f"{s['count']} file(s) in the dataset were skipped ({reasons}); first: "
              + ", ".join(s["first"]) + (" ..." if s["count"] > len(s["first"]) else "")
              + ". All are listed in each job's meta.json (`skipped`).")


def _print_suite_metrics(metrics: dict) -> None:
    """Scalars in one table; a metric that is a table (e.g. corruption x severity errors) as its
    own table, a mapping (e.g. CE per corruption) as a column of its own."""
    scalars = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
    if scalars:
        s = Table(title="suite", title_justify="left", show_header=False)
        s.add_column("metric", style="bold")
        s.add_column("value", justify="right")
        for k, v in scalars.items():
            s.add_row(k, _fmt(v))
        out.print(s)
    tables = {k: v for k, v in metrics.items() if isinstance(v, dict) and v}
    flat = {k: v for k, v in tables.items() if not any(isinstance(x, dict) for x in v.values())}
    for k, v in tables.items():
        if k in flat:
            continue
        cols = list(dict.fromkeys(c for row in v.values() for c in row))
        t = Table(title=k, title_justify="left")
        t.add_column("", style="bold", no_wrap=True)
        for c in cols:
            t.add_column(str(c), justify="right")
        for r, row in v.items():
            t.add_row(str(r), *[_fmt(row.get(c, float("nan"))) for c in cols])
        out.print(t)
    if flat:
        rows = list(dict.fromkeys(r for v in flat.values() for r in v))
        t = Table(title=", ".join(flat), title_justify="left")
        t.add_column("", style="bold", no_wrap=True)
        for k in flat:
            t.add_column(k, justify="right")
        for r in rows:
            t.add_row(str(r), *[_fmt(flat[k].get(r, float("nan"))) for k in flat])
        out.print(t)


@app.command("noises", rich_help_panel="Evaluate")
def noises_cmd(as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """The noise specs `--noise` takes, with their parameters."""
    from robustart.noises import listing

    fmt = C.output_format(fmt, as_json)
    rows = listing()
    if fmt == "json":
        _print_json({name: {"help": h, "params": params} for name, h, params in rows})
        return
    C.emit_table(["name", "what", "parameters"], [[n, h, ", ".join(p)] for n, h, p in rows], fmt=fmt,
                 title=f"robustart noises — {len(rows)}", keep=("name",))
    if fmt == "table":
        out.print("Grammar: NAME[:k=v,k=v] (e.g. pgd:eps=4/255,steps=20, corruption:glass_blur:3). "
                  "Fractions like 4/255 are read as numbers.")


# --------------------------------------------------------------------------- zoo


@zoo_app.command("list")
def zoo_list(
    family: Annotated[Optional[str], typer.Option("--family", help="A model family: cnn, transformer, mixer, nas, ... (registered families).")] = None,
    tag: Annotated[Optional[list[str]], typer.Option("--tag", help="Training-technique tag; repeat to require several.")] = None,
    offline: Annotated[bool, typer.Option("--offline", help="Only models whose weights are here without a network.")] = False,
    pattern: Annotated[Optional[str], typer.Option("--pattern", help="Shell-style name pattern, e.g. 'resnet50*'.")] = None,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """List zoo models (a table that fits the terminal; --format tsv or json for every column)."""
    from robustart.zoo.registry import all_tags, list_entries

    fmt = C.output_format(fmt, as_json)
    try:
        entries = list_entries(family=family, tags=tag or (), offline=True if offline else None, pattern=pattern)
    except ValueError as e:
        _fail(e)
    unknown = [t for t in (tag or []) if t not in all_tags()]
    if unknown:
        _fail(RobustartError(f"unknown tag(s) {unknown}; known tags: {', '.join(all_tags())}"))
    cols = ["name", "family", "params (M)", "input", "weights", "tags", "arch"]
    rows = [[e.name, e.family, f"{e.params / 1e6:.1f}", f"{e.input_size[-1]}",
             e.weights.kind + ("" if _verified(e) else " (unverified)"), ", ".join(e.tags), e.arch] for e in entries]
    C.emit_table(cols, rows, fmt=fmt, title=f"robustart zoo — {len(entries)} models",
                 caption="Forms of each model: NAME@w8a8, NAME@w4a4, ... (`robustart zoo info NAME`).",
                 keep=("name",), drop_order=("arch", "tags", "input", "family"), right=("params (M)", "input"),
                 records=[e.to_dict() for e in entries])


def _verified(e) -> bool:
    """Whether loading checks the entry's checkpoint: a pinned sha256, or the hub's LFS hash."""
    return bool(e.weights.sha256) or e.weights.kind in ("hf_hub", "none")


@zoo_app.command("info")
def zoo_info(
    name: Annotated[str, typer.Argument(help="Zoo model name.")],
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """Everything the registry knows about one model."""
    from robustart.zoo.registry import get_entry

    fmt = C.output_format(fmt, as_json)
    e = get_entry(name)
    d = e.to_dict()
    d["available_offline"] = e.available_offline()
    d["weights"]["verified"] = _verified(e)
    if fmt == "json":
        _print_json(d)
        return
    rows = []
    for k in ("name", "family", "arch", "timm_name", "form", "params", "tags", "input_size", "crop_pct",
              "interpolation", "mean", "std", "num_classes", "license", "paper"):
        v = d[k]
        rows.append([k, ", ".join(map(str, v)) if isinstance(v, (list, tuple)) else f"{v:,}" if k == "params" else str(v)])
    rows.append(["weights", d["weights"]["source"]])
    sha = d["weights"]["sha256"]
    rows.append(["sha256", sha if sha else "(verified against the hub's LFS hash)" if e.weights.kind == "hf_hub"
                 else "unverified: the entry pins no sha256, so its checkpoint is loaded unchecked"])
    rows.append(["available offline", str(d["available_offline"])])
    if e.form == "fp":
        from robustart.zoo.registry import form_provider

        forms = form_provider().examples(e)
        rows.append(["forms", ", ".join(forms) + " ... (any wNaM; settings after ':', e.g. "
                     f"{e.name}@w4a4:observer=mse,recon=on; binarized forms of float weights are untrained: "
                     "python -m robustart.quant.train ... --register NAME makes a trained one; see README)"])
    else:
        rows.append(["form settings", json.dumps(d["quant"])])
    C.emit_table(["field", "value"], rows, fmt=fmt, title=f"robustart zoo info — {e.name}", keep=("field",))


@zoo_app.command("download")
def zoo_download(
    names: Annotated[Optional[list[str]], typer.Argument(help="Zoo model names.")] = None,
    all_: Annotated[bool, typer.Option("--all", help="Download every model's weights.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Download again even if cached.")] = False,
) -> None:
    """Download (and verify) checkpoints into the cache [env ROBUSTART_CACHE]."""
    from robustart.zoo import weights as W
    from robustart.zoo.registry import get_entry, list_entries

    if not names and not all_:
        _fail(RobustartError("name at least one model, or pass --all."))
    try:
        entries = list_entries() if all_ else [get_entry(n) for n in names]
    except KeyError as e:
        _fail(e)
    failures = 0
    for e in entries:
        try:
            path = W.fetch(e, force=force and e.weights.kind != "package", progress=sys.stderr.isatty())
            C.line("ok", "green", f"{e.name}: {path}", console=out)
        except RobustartError as ex:
            failures += 1
            C.line("failed", "red", f"{e.name}: {ex}")
    if failures:
        raise typer.Exit(1)


# --------------------------------------------------------------------------- results


@results_app.command("list")
def results_list(store: StoreOpt = None, as_json: JsonOpt = False, fmt: FormatOpt = None) -> None:
    """Jobs in the store, with top-1 computed from their records; damaged jobs say why."""
    from robustart.noises import noise_label
    from robustart.results.store import ResultsStore

    fmt = C.output_format(fmt, as_json)
    st = ResultsStore(store)
    df = st.summary(label=noise_label)  # the noise as a short label (pgd linf 4/255, corruption fog 3)
    if fmt == "json":
        _print_json(df.to_dict(orient="records"))
        return
    rows = []
    for _, r in df.iterrows():
        n = f"{r['n_done']}/{r['n']}" if r["status"] != "complete" else str(r["n"])
        rows.append([r["key"], str(r["status"]), str(r["model"]), str(r["noise"]), str(r["dataset"]), n,
                     _fmt(r["top1"]), str(r["finished"] or "")])
    C.emit_table(["key", "status", "model", "noise", "dataset", "n", "top-1 %", "finished"], rows, fmt=fmt,
                 title=f"robustart results — {st.root}", keep=("key",),
                 drop_order=("finished", "status", "n", "dataset"), right=("n", "top-1 %"))
    for _, r in df[df["status"] == "damaged"].iterrows():
        err.print(Text(f"damaged: {r['key']}: {r['problem']} (`robustart results verify --repair` recomputes "
                       "or removes it; `robustart eval` recomputes it)"), highlight=False, soft_wrap=True)


@results_app.command("verify")
def results_verify(
    keys: Annotated[Optional[list[str]], typer.Argument(help="Job keys or unique prefixes (default: every job).")] = None,
    repair: Annotated[bool, typer.Option("--repair", help="Recompute damaged jobs that can be planned again here; remove the others.")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check every job (or KEYS): meta.json, layout, each shard's presence, size, sha256, row
    count and sample ids. Exit 1 if a job is damaged (and, with --repair, was not repaired)."""
    from robustart.engine.repair import repair_jobs
    from robustart.results.store import ResultsStore

    st = ResultsStore(store)
    try:
        full = [st.resolve(k) for k in keys] if keys else None
    except RobustartError as e:
        _fail(e)
    states = st.verify(full)
    fixed = repair_jobs(st, [s for s in states if s.damaged], progress=not as_json and sys.stderr.isatty()) \
        if repair else {}
    rows = [{"key": s.key, "status": s.status, "problems": s.problems,
             **({"repair": fixed[s.key]} if s.key in fixed else {})} for s in states]
    bad = [r for r in rows if r["problems"] and not str(r.get("repair", "")).startswith(("recomputed", "removed"))]
    if as_json:
        _print_json({"store": str(st.root), "jobs": rows, "damaged": sum(bool(r["problems"]) for r in rows)})
    else:
        for r in rows:
            line = f"{r['key']}  {r['status']}"
            if r["problems"]:
                line += ": " + "; ".join(r["problems"])
            if "repair" in r:
                line += f" -> {r['repair']}"
            out.print(Text(line), highlight=False, soft_wrap=True)
        n_bad = sum(bool(r["problems"]) for r in rows)
        out.print(Text(f"{len(rows)} job{'' if len(rows) == 1 else 's'} checked, {n_bad} damaged" + (f", {n_bad - len(bad)} repaired" if repair else
                       ("; `robustart results verify --repair` fixes them" if n_bad else ""))))
    if bad:
        raise typer.Exit(1)


@results_app.command("show")
def results_show(
    key: Annotated[str, typer.Argument(help="Job key or a unique prefix of it.")],
    store: StoreOpt = None,
    records: Annotated[int, typer.Option("--records", help="Also print the first N records.")] = 0,
    as_json: JsonOpt = False,
    fmt: FormatOpt = None,
) -> None:
    """One job: its config, environment and metrics (computed from its records)."""
    from robustart.results import metrics as M
    from robustart.results.store import ResultsStore

    fmt = C.output_format(fmt, as_json)
    st = ResultsStore(store)
    full = st.resolve(key)
    state = st.check(full)
    if state.damaged:
        raise RobustartError(f"job {full} is damaged: {state.reason}. `robustart results verify --repair {full}` "
                             "recomputes or removes it.")
    meta = state.meta
    rec = st.read_records(full, meta)
    summary = M.noise_summary(rec) if len(rec) else {}
    if fmt == "json":
        _print_json({"meta": meta, "metrics": summary,
                     "records": rec.head(records).to_dict(orient="records") if records else []})
        return
    cfg = meta["config"]
    rows = [
        ("status", meta.get("status")), ("model", cfg["model"]["name"]), ("noise", json.dumps(cfg["noise"])),
        ("dataset", f"{cfg['dataset']['name']} (n={cfg['dataset']['n']}, fingerprint {cfg['dataset']['fingerprint']})"),
        ("precision", cfg["precision"]), ("weights", cfg["model"]["weights"]),
        ("weights sha256", cfg["weights_sha256"] if meta.get("weights_verified", True)
         else f"{cfg['weights_sha256']} (unverified: the entry pins no sha256)"),
        ("records", f"{len(rec)} of {cfg['dataset']['n']}"),
    ]
    if meta.get("skipped"):
        rows.append(("skipped files", f"{len(meta['skipped'])} (listed in meta.json)"))
    rows += [(k, _fmt(v)) for k, v in summary.items()]
    rows += [("started", meta.get("started")), ("finished", meta.get("finished")),
             ("device", (meta.get("device") or {}).get("name")),
             ("versions", ", ".join(f"{k} {v}" for k, v in (meta.get("versions") or {}).items())),
             ("git", json.dumps(meta.get("git")))]
    C.emit_table(["field", "value"], [[k, str(v)] for k, v in rows], fmt=fmt, title=f"robustart job {full}",
                 keep=("field",))
    if records:
        head = rec.head(records)
        cols = [str(c) for c in head.columns]
        first = [c for c in ("sample_id", "label", "pred", "correct", "status") if c in cols]
        C.emit_table(cols, [[_fmt(v) if isinstance(v, float) else v for v in row] for row in head.itertuples(index=False)],
                     fmt=fmt, title=f"first {len(head)} records", keep=("sample_id",),
                     drop_order=tuple(reversed([c for c in cols if c not in first])))


@app.command("report", rich_help_panel="Report")
def report(
    store: StoreOpt = None,
    out_dir: Annotated[Path, typer.Option("--out", "-o", help="Folder for report.html, summary.md, figures/ and tables/ (CSV + Parquet).")] = Path("robustart-report"),
    models: Annotated[Optional[list[str]], typer.Option("--models", metavar="NAMES", help="Only these models (zoo name or name@form; repeat or comma-separate).")] = None,
    noises: Annotated[Optional[list[str]], typer.Option("--noises", metavar="NAMES", help="Only these noises or sections: clean, adversarial, pgd, corruption, imagenet-s, precision (repeat or comma-separate).")] = None,
    compare: Annotated[Optional[tuple[str, str]], typer.Option("--compare", metavar="A B", help="Contrast two models, or two forms of one (resnet18 resnet18@w8a8), on every noise both ran.")] = None,
    plan: Annotated[Optional[Path], typer.Option("--plan", help="Only the jobs of this benchmark plan (TOML, as `robustart bench` takes it; its store unless --store).")] = None,
    as_json: JsonOpt = False,
) -> None:
    """HTML report of leaderboards and figures from the results store (offline, self-contained).

    Also writes a Markdown summary and every table as CSV and Parquet; --compare A B contrasts two models."""
    from robustart.reports import build_report
    from robustart.reports import compare as compare_models

    log = (lambda m: None) if as_json else (lambda m: C.line("report:", "dim", m))
    try:
        if compare:
            c = compare_models(store, compare[0], compare[1], out_dir, noises=noises, log=log)
        else:
            keys = None
            if plan is not None:
                from robustart.bench.plan import load_plan

                p = load_plan(plan, store=None if store is None else str(store), offline=True)
                keys, store = p.keys, p.store
                if p.unkeyed:
                    C.warning(f"{len(p.unkeyed)} jobs of the plan have no key here (their weights are not fetched: "
                              f"{', '.join(sorted({u.entry.spec for u in p.unkeyed}))}) and are left out.")
            r = build_report(store, out_dir, models=models, noises=noises, log=log, keys=keys)
    except RobustartError as e:
        _fail(e)
    if compare:
        if as_json:
            _print_json({"a": c.a, "b": c.b, "pairs": c.pairs.to_dict(orient="records"),
                         "files": {k: str(v) for k, v in c.files.items()}})
            return
        t = Table(title=f"{c.a} (A) vs {c.b} (B)", title_justify="left")
        for col in ("dataset", "noise", "n", "top-1 A", "top-1 B", "B - A", "only A", "only B", "agree %"):
            t.add_column(col)
        for _, p in c.pairs.iterrows():
            t.add_row(str(p["dataset"]), str(p["noise"]), str(p["n"]), _fmt(p["top1_a"]), _fmt(p["top1_b"]),
                      _fmt(p["delta"]), str(p["only_a"]), str(p["only_b"]), _fmt(p["agreement"]))
        out.print(t)
        out.print(f"wrote {c.files['compare.html']}")
        return
    if as_json:
        _print_json({"jobs": r.n_jobs, "files": {k: str(v) for k, v in r.files.items()}, "seconds": r.seconds})
        return
    out.print(f"report of {r.n_jobs} jobs: {r.files['report.html']} (summary: {r.files['summary.md']})")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
