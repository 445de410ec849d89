"""`robustart report`: read the store, compute the tables, draw the figures, write the files.

  <out>/report.html        self-contained page (figures embedded, no network)
  <out>/summary.md         the leaderboards as Markdown, figures linked from figures/
  <out>/figures/*.png      every figure, for a paper
  <out>/tables/*.csv|.parquet   every table, including the provenance of every job shown
"""

from __future__ import annotations

import html
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import pandas as pd

from robustart.errors import RobustartError, StoreError, need
from robustart.reports import figures as F
from robustart.reports import load as L
from robustart.reports import tables as T
from robustart.reports.render import Section, page
from robustart.results.store import ResultsStore

HOW_TO_FILL = {
    "clean": "Run <code>robustart eval --model MODEL --data DATA</code>.",
    "adversarial": "Run <code>robustart eval --model MODEL --noise adversarial:budget=small</code> "
                   "(or a single attack, e.g. <code>--noise pgd</code>).",
    "corruption": "Run <code>robustart eval --model MODEL --noise imagenet-c</code> "
                  "(or e.g. <code>--noise corruption:all:severity=3</code>).",
    "imagenet-s": "ImageNet-S jobs (noise <code>imagenet-s</code>, one per decoder x resize cell) appear here "
                  "once they are in the store.",
    "precision": "Precision jobs (noise <code>precision</code> with a <code>variant</code>) and quantized or "
                 "binarized model forms with a clean job next to their fp form appear here once they are in the store.",
    "bits": "Needs one architecture evaluated in at least two bit widths (e.g. its fp and w8a8 forms).",
}


@dataclass
class Report:
    out: Path
    files: dict[str, Path]
    tables: dict[str, pd.DataFrame]
    figures: dict[str, bytes] = field(default_factory=dict)
    n_jobs: int = 0
    seconds: dict[str, float] = field(default_factory=dict)


def _noop(msg: str) -> None:
    pass


def _require_results(data: L.StoreData, models, noises) -> None:
    if not len(data.all_jobs):
        raise StoreError(
            f"the results store {data.root} holds no jobs. Make results first, e.g. `robustart eval --noise pgd` "
            f"(or `make demo`), or point --store (or ROBUSTART_STORE) at another store."
        )
    if not len(data.jobs):
        done = data.all_jobs[data.all_jobs["status"] == "complete"]
        if not len(done):
            raise StoreError(f"the results store {data.root} has no complete job yet "
                             f"({len(data.all_jobs)} running or interrupted; rerun them to finish).")
        raise StoreError(
            "no complete job matches the filters "
            f"(--models {', '.join(models or []) or 'any'}, --noises {', '.join(noises or []) or 'any'}). "
            f"Models in the store: {', '.join(sorted(set(done['label'])))}. "
            f"Noises: {', '.join(sorted(set(done['noise'])))}."
        )


def build_sections(t: dict[str, pd.DataFrame], figs: dict[str, bytes]) -> list[Section]:
    secs = []

    s = Section("clean", "Clean accuracy", "Top-1 (%) on clean images per model and dataset: from its clean job, or, "
                "without one, from the clean pass its noise jobs recorded (column <em>source</em>). Samples that "
                "failed to decode are excluded.", HOW_TO_FILL["clean"])
    s.figure(figs.get("clean_top1"), "Clean top-1 accuracy")
    s.table(t["clean"], "Clean leaderboard")
    secs.append(s)

    s = Section("robust-vs-clean", "Clean vs robust accuracy",
                "One point per model, dataset and kind of robustness; colour is the model family, the marker its "
                "form (FP / quantized / binarized). Clean accuracy is measured on the same samples as the robust one.",
                "Needs adversarial, corruption or ImageNet-S results. " + HOW_TO_FILL["adversarial"])
    s.figure(figs.get("scatter"), "Clean vs robust accuracy")
    s.table(t["robust_points"], "Points of the figure", md=False, folded=True)
    secs.append(s)

    s = Section("adversarial", "Adversarial robustness",
                "Robust top-1 under each attack, AR (% of clean-correct samples that stay correct), ASR = 100 − AR, "
                "and WCAR: the share of samples correct under <em>every</em> attack of a budget (a join of the jobs' "
                "records on sample id). Budgets eps are in [0, 1] pixel units.", HOW_TO_FILL["adversarial"])
    s.table(t["wcar"], "Worst-case adversarial robustness (WCAR) per budget")
    s.table(t["adversarial_by_budget"], "Robust top-1 by attack and budget")
    s.table(t["adversarial"], "Every attack job")
    secs.append(s)

    s = Section("corruption", "Natural corruptions (ImageNet-C)",
                "mCE and relative mCE are normalised by AlexNet's errors (AlexNet = 100) and need all 15 corruptions at "
                "severities 1–5; the mean corruption error is the plain mean over the ImageNet-C cells present "
                "(100 minus it is the “ImageNet-C accuracy” of RobustBench). Errors in %.", HOW_TO_FILL["corruption"])
    s.table(t["corruption"], "Corruption leaderboard")
    s.figure(figs.get("corruption_heatmap"), "Top-1 error (%) per corruption and severity")
    s.table(t["corruption_cells"].drop(columns=["fingerprint"], errors="ignore"), "Every corruption x severity cell",
            md=False, folded=True)
    secs.append(s)

    s = Section("imagenet-s", "System noise (ImageNet-S)",
                "Top-1 over the decoder x resize variants of the same images: mean, standard deviation and worst cell, "
                "and the flip rate against the model's own reference pipeline.", HOW_TO_FILL["imagenet-s"])
    s.table(t["imagenet_s"], "ImageNet-S leaderboard")
    s.figure(figs.get("imagenet_s_heatmap"), "Top-1 (%) per decoder and resize backend")
    s.table(t["imagenet_s_cells"].drop(columns=["fingerprint"], errors="ignore"), "Every decoder x resize cell",
            md=False, folded=True)
    secs.append(s)

    s = Section("precision", "Precision and quantization",
                "Top-1 at another numeric precision or model form, its change from the fp32 reference on the same "
                "samples, and the flip rate: % of samples whose prediction changes.", HOW_TO_FILL["precision"])
    s.table(t["precision"], "Precision flip-rate leaderboard")
    secs.append(s)

    s = Section("bits", "Bit width vs robustness",
                "Accuracy against weight bit width, per architecture (fp = 32 bits).", HOW_TO_FILL["bits"])
    s.figure(figs.get("bit_curves"), "Accuracy vs weight bit width")
    s.table(t["bit_curves"], "Points of the curves", md=False, folded=True)
    secs.append(s)

    if len(t["other"]):
        s = Section("other", "Other noises", "Jobs of noises this report has no dedicated section for.")
        s.table(t["other"], "Other noise jobs")
        secs.append(s)

    s = Section("provenance", "Provenance",
                "Every job behind a number in this report: its key (<code>robustart results show KEY</code>), the "
                "weights' sha256, the versions and commit it ran with, and when it finished. Each leaderboard row "
                "names its job key(s).")
    s.table(t["provenance"], "Jobs", md=False)
    s.note("The same table is in tables/provenance.csv and tables/provenance.parquet.")
    secs.append(s)
    return secs


def draw_figures(t: dict[str, pd.DataFrame]) -> dict[str, bytes]:
    figs = {
        "clean_top1": F.leaderboard_bars(t["clean"].assign(model=t["clean"]["model"] + "  " + t["clean"]["dataset"]),
                                         "top1", "clean top-1 (%)"),
        "scatter": F.scatter_clean_vs_robust(t["robust_points"]),
        "corruption_heatmap": F.corruption_heatmaps(t["corruption_cells"]),
        "imagenet_s_heatmap": F.imagenet_s_heatmaps(t["imagenet_s_cells"]),
        "bit_curves": F.bit_width_curves(t["bit_curves"]),
    }
    return {k: v for k, v in figs.items() if v}


def _header(data: L.StoreData, t, models, noises) -> str:
    import robustart

    shown = t["jobs"]
    not_done = int((data.all_jobs["status"] != "complete").sum())
    now = datetime.now(timezone.utc).isoformat(timespec="seconds")
    filt = []
    if models:
        filt.append(f"models: {', '.join(models)}")
    if noises:
        filt.append(f"noises: {', '.join(noises)}")
    return (
        f'<p class="meta">Generated {now} by robustart {robustart.__version__} from the store '
        f"<code>{html.escape(str(data.root))}</code>: {_n(len(shown), 'complete job')} shown"
        f"{' (' + html.escape('; '.join(filt)) + ')' if filt else ''}, {len(data.all_jobs)} in the store"
        f"{f', {not_done} not complete and left out' if not_done else ''}; "
        f"{_n(shown['label'].nunique(), 'model')}, {_n(shown['dataset_label'].nunique(), 'dataset')}, "
        f"{_n(int(shown['n'].sum()), 'record')}. Every number is computed from per-sample records.</p>"
    )


def _n(k: int, noun: str) -> str:
    return f"{k} {noun}{'' if k == 1 else 's'}"


def out_dir(out: str | Path, *subdirs: str) -> Path:
    """The report's folder, with its sub-folders made; a path that is a file (or cannot be made)
    is the user's to fix, before anything is written."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise RobustartError(f"--out {out}: is a file, not a folder; give a folder for the report (it is made "
                             "if missing).")
    try:
        for sub in subdirs:
            (out / sub).mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise RobustartError(f"--out {out}: cannot make the folder ({e.strerror or e}); give another --out.") from None
    return out


def build_report(store: str | Path | ResultsStore | None = None, out: str | Path = "robustart-report",
                 models=None, noises=None, log: Callable[[str], None] = _noop, keys: list[str] | None = None) -> Report:
    """The report of the store's complete jobs (only `models` / `noises` / `keys` when given)."""
    need("seaborn", "`robustart report` (its figures)")
    out_dir(out)  # a bad --out fails before any work
    st = store if isinstance(store, ResultsStore) else ResultsStore(store)
    models, noises = L._split(models), L._split(noises)
    secs: dict[str, float] = {}
    t0 = time.perf_counter()
    data = L.load(st, models, noises, keys)
    if keys is not None and not len(data.jobs):
        raise StoreError(f"none of the {len(keys)} jobs asked for is complete in the store {st.root}; run them first "
                         "(`robustart bench PLAN`; `robustart bench status PLAN` shows where they stand).")
    for _, j in data.all_jobs[data.all_jobs["status"] == "damaged"].iterrows():
        log(f"job {j['key']} is damaged and left out: {j['problem']} (`robustart results verify --repair`)")
    _require_results(data, models, noises)
    secs["read"] = time.perf_counter() - t0
    log(f"read {len(data.jobs)} jobs, {len(data.records)} records from {st.root} ({secs['read']:.2f} s)")

    t0 = time.perf_counter()
    t = T.build_tables(data.jobs, data.records)
    secs["tables"] = time.perf_counter() - t0
    log(f"computed {len(t)} tables ({secs['tables']:.2f} s)")

    t0 = time.perf_counter()
    figs = draw_figures(t)
    secs["figures"] = time.perf_counter() - t0
    log(f"drew {len(figs)} figures ({secs['figures']:.2f} s)")

    out = out_dir(out, "tables", "figures")
    files: dict[str, Path] = {}
    for name, df in t.items():
        if name == "jobs":
            continue
        files[f"{name}.csv"] = out / "tables" / f"{name}.csv"
        df.to_csv(files[f"{name}.csv"], index=False)
        files[f"{name}.parquet"] = out / "tables" / f"{name}.parquet"
        _to_parquet(df, files[f"{name}.parquet"])
    for name in _FIG_CAPTIONS.keys() - figs.keys():  # a figure of an earlier report here, now without data
        (out / "figures" / f"{name}.png").unlink(missing_ok=True)
    fig_files = {}
    for name, png in figs.items():
        p = out / "figures" / f"{name}.png"
        p.write_bytes(png)
        files[f"figures/{name}.png"] = p
        fig_files[name] = f"figures/{name}.png"

    sections = build_sections(t, figs)
    header = _header(data, t, models, noises)
    files["report.html"] = out / "report.html"
    files["report.html"].write_text(page("robustart report", header, sections), encoding="utf-8")
    captions = {cap: fig_files[k] for k, cap in _FIG_CAPTIONS.items() if k in fig_files}
    md = ["# robustart report", "", _strip(header), ""] + [s.to_markdown(captions) for s in sections]
    files["summary.md"] = out / "summary.md"
    files["summary.md"].write_text("\n".join(md), encoding="utf-8")
    log(f"wrote {files['report.html']}, {files['summary.md']}, {out / 'tables'}/ and {out / 'figures'}/")
    return Report(out, files, t, figs, len(data.jobs), secs)


_FIG_CAPTIONS = {
    "clean_top1": "Clean top-1 accuracy", "scatter": "Clean vs robust accuracy",
    "corruption_heatmap": "Top-1 error (%) per corruption and severity",
    "imagenet_s_heatmap": "Top-1 (%) per decoder and resize backend", "bit_curves": "Accuracy vs weight bit width",
}


def _strip(text: str) -> str:
    from robustart.reports.render import _strip_tags

    return _strip_tags(text)


def _to_parquet(df: pd.DataFrame, path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    # object columns can mix None, bools and strings (config fields absent from some jobs)
    fixed = df.copy()
    for c in fixed.columns:
        if fixed[c].dtype == object:
            fixed[c] = fixed[c].map(lambda v: None if v is None or (isinstance(v, float) and v != v) else str(v))
    pq.write_table(pa.Table.from_pandas(fixed, preserve_index=False), path)
