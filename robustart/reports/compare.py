"""`robustart report --compare A B`: two models, or two forms of one model (`resnet18` vs
`resnet18@w8a8`), on every noise both were run with on the same samples.

Per matched pair of jobs (same dataset fingerprint, same noise config and seed): each model's
top-1, the difference, and the per-sample split (both right / only A / only B / both wrong,
joined on sample_id), which says whether a gap is a few samples or a different model. Suite
metrics (WCAR, mCE, ImageNet-S) are set side by side where both have them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from robustart.errors import StoreError, need
from robustart.reports import load as L
from robustart.reports import tables as T
from robustart.results.store import ResultsStore


def resolve_model(jobs: pd.DataFrame, name: str) -> str:
    """The report label of `name`: an exact label (name@form), else a zoo name with one label."""
    labels = sorted(set(jobs["label"]))
    if name in labels:
        return name
    cands = sorted(set(jobs.loc[jobs["model"] == name, "label"]))
    if len(cands) == 1:
        return cands[0]
    if cands:
        raise StoreError(f"model {name!r} has several forms in the store: {', '.join(cands)}; name one.")
    from robustart.registry import did_you_mean

    raise StoreError(f"no complete job of model {name!r} in the store.{did_you_mean(name, labels)} "
                     f"Models in the store: {', '.join(labels)}.")


def paired(pj: pd.DataFrame, records: pd.DataFrame, a: str, b: str) -> pd.DataFrame:
    """One row per noise both models ran on the same samples."""
    cols = ["dataset", "noise", "section", "n", "top1_a", "top1_b", "delta", "both_correct", "only_a", "only_b",
            "both_wrong", "agreement", "key_a", "key_b"]
    ja, jb = pj[pj["label"] == a], pj[pj["label"] == b]
    on = ["fingerprint", "noise_config"]
    m = ja.merge(jb, on=on, suffixes=("_a", "_b"))
    if not len(m):
        return pd.DataFrame(columns=cols)
    ok = records[records["status"] == "ok"][["job", "sample_id", "pred", "correct"]]
    ra = ok.merge(m[["key_a", "key_b"]], left_on="job", right_on="key_a")
    rb = ok.rename(columns={"job": "key_b", "pred": "pred_b", "correct": "correct_b"})
    j = ra.merge(rb, on=["key_b", "sample_id"])  # samples ok in both jobs
    ca, cb = j["correct"], j["correct_b"]
    split = pd.DataFrame({"key_a": j["key_a"], "both_correct": ca & cb, "only_a": ca & ~cb, "only_b": ~ca & cb,
                          "both_wrong": ~ca & ~cb, "agreement": j["pred"] == j["pred_b"]})
    g = split.groupby("key_a")
    counts = g[["both_correct", "only_a", "only_b", "both_wrong"]].sum()
    counts["agreement"] = 100.0 * g["agreement"].mean()
    counts["n"] = g.size()
    out = m.merge(counts, left_on="key_a", right_index=True, how="left")
    out = out.rename(columns={"dataset_label_a": "dataset", "noise_label_a": "noise", "section_a": "section"})
    out["delta"] = out["top1_b"] - out["top1_a"]
    order = {"clean": 0, "adversarial": 1, "corruption": 2, "imagenet-s": 3, "precision": 4}
    out["_o"] = out["section"].map(order).fillna(9)
    return out.sort_values(["dataset", "_o", "noise"], kind="stable")[cols].reset_index(drop=True)


def side_by_side(t: dict, a: str, b: str) -> dict[str, pd.DataFrame]:
    """Suite metrics of both models next to each other, on the datasets both have."""
    out = {}
    specs = {
        "wcar": (["dataset", "budget"], "wcar"),
        "corruption": (["dataset", "impl", "jpeg"], ["mce", "relative_mce", "mean_corruption_error"]),
        "imagenet_s": (["dataset"], ["mean_top1", "std_top1", "worst_top1"]),
    }
    for name, (on, values) in specs.items():
        df = t[name]
        values = [values] if isinstance(values, str) else values
        if not len(df):
            continue
        da = df[df["model"] == a][on + values]
        db = df[df["model"] == b][on + values]
        m = da.merge(db, on=on, suffixes=(f" {a}", f" {b}"))
        if len(m):
            out[name] = m
    return out


@dataclass
class Comparison:
    a: str
    b: str
    pairs: pd.DataFrame
    suites: dict
    files: dict


def compare(store: str | Path | ResultsStore | None, a: str, b: str, out: str | Path = "robustart-report",
            noises=None, log=lambda m: None) -> Comparison:
    from robustart.reports import figures as F
    from robustart.console import escape_html, escape_md
    from robustart.reports.render import Section, page
    from robustart.reports.report import _to_parquet, out_dir

    need("seaborn", "`robustart report --compare` (its figures)")
    out_dir(out)  # a bad --out fails before any work
    st = store if isinstance(store, ResultsStore) else ResultsStore(store)
    jobs = L.read_jobs(st)
    if not len(jobs):
        raise StoreError(f"the results store {st.root} holds no jobs. Make results first, e.g. "
                         "`robustart eval --model MODEL --noise pgd`, for both models.")
    done = L.select_jobs(jobs, noises=L._split(noises))
    la, lb = resolve_model(done, a), resolve_model(done, b)
    if la == lb:
        raise StoreError(f"{a!r} and {b!r} are the same model ({la}); compare two models or two forms of one.")
    sel = done[done["label"].isin([la, lb])].reset_index(drop=True)
    records = L.read_records(st, sel["key"])
    pj = T.per_job(sel, records)
    pairs = paired(pj, records, la, lb)
    if not len(pairs):
        ds = lambda lab: ", ".join(sorted(set(sel.loc[sel["label"] == lab, "dataset_label"])))  # noqa: E731
        raise StoreError(f"{la} and {lb} share no noise on the same samples (datasets: {la}: {ds(la)}; {lb}: {ds(lb)}). "
                         "Run both with the same --data, --limit and --noise.")
    suites = side_by_side(T.build_tables(sel, records), la, lb)
    log(f"compared {la} and {lb} on {len(pairs)} noises")

    out = out_dir(out, "tables")
    files = {}
    tables = {"compare": pairs, **{f"compare_{k}": v for k, v in suites.items()}}
    for name, df in tables.items():
        files[f"{name}.csv"] = out / "tables" / f"{name}.csv"
        df.to_csv(files[f"{name}.csv"], index=False)
        files[f"{name}.parquet"] = out / "tables" / f"{name}.parquet"
        _to_parquet(df, files[f"{name}.parquet"])
    long = pd.concat([pairs.assign(model=la, top1=pairs["top1_a"]), pairs.assign(model=lb, top1=pairs["top1_b"])])
    png = F.leaderboard_bars(long.assign(noise=long["noise"] + "  " + long["dataset"]), "top1", "top-1 (%)", by="noise",
                             hue="model")
    s = Section("compare", f"{la} vs {lb}",
                "Top-1 (%) of each model on every noise both ran on the same samples; delta = B − A. The per-sample "
                "columns count samples (ok in both jobs) that both, only A, only B or neither classify correctly; "
                "agreement is the % of samples with the same prediction.")
    s.figure(png, f"Top-1 of {la} and {lb} per noise")
    s.table(pairs.rename(columns={"top1_a": f"top1 {la}", "top1_b": f"top1 {lb}", "only_a": f"only {la}",
                                  "only_b": f"only {lb}"}), "Per noise")
    for name, df in suites.items():
        s.table(df, {"wcar": "WCAR per budget", "corruption": "Corruptions (mCE needs the 15 x 5 grid)",
                     "imagenet_s": "ImageNet-S"}[name])
    files["compare.html"] = out / "compare.html"
    files["compare.html"].write_text(page(f"robustart: {la} vs {lb}", f'<p class="meta">Store <code>{escape_html(st.root)}</code>.</p>',
                                          [s]), encoding="utf-8")
    files["compare.md"] = out / "compare.md"
    files["compare.md"].write_text(f"# {escape_md(la)} vs {escape_md(lb)}\n\n" + s.to_markdown({}), encoding="utf-8")
    return Comparison(la, lb, pairs, suites, files)
