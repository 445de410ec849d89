"""Report tables: pure functions of the job table and the records (see load.py), vectorised with
pandas group-bys over frames of whole groups of jobs (`frames`), so a study's store is never in
memory at once. Every number is computed from records: per-job numbers (top-1, AR, flip rate)
from the metrics each complete job cached in its meta.json when it completed (the functions of
robustart.results.metrics over its records), the cross-job ones (WCAR, mCE's clean error,
ImageNet-S flips, precision flips) here, by joins on sample_id.

Percentages throughout. The definitions are those of robustart.results.metrics (top-1 and AR
over the samples that decoded, WCAR as a join on sample_id) and of the corruption family's
metrics (error tables, CE, mCE); tests check that both routes give the same numbers.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from robustart.noises.corruptions import metrics as CM
from robustart.noises.corruptions.constants import COMMON

# The columns that say which model and dataset a row is about, first in every leaderboard.
ID = ["label", "family_label", "form", "precision", "dataset_label"]
_RENAME = {"label": "model", "family_label": "family", "dataset_label": "dataset"}


def frames(records, keys, groups=None, columns=None):
    """The records of jobs `keys` as pandas frames, each holding whole groups (`groups`: one
    per key; default: each job its own): a frame of records is itself the one frame; a store's
    records (load.StoredRecords) come a bounded number of jobs at a time, only the samples that
    decoded and only `columns` (with `job`) of them. A view computes per group within each
    frame and concatenates, so it never holds every record."""
    if isinstance(records, pd.DataFrame):
        yield records
    else:
        yield from records.frames(keys, groups, columns=["sample_id", "status", *columns], ok_only=True)


def _per_job(r: pd.DataFrame) -> pd.DataFrame:
    ok = r[r["status"] == "ok"]
    g = ok.groupby("job", sort=False)
    return pd.DataFrame({
        "n": r.groupby("job", sort=False).size(),
        "n_ok": g.size(),
        "top1": 100.0 * g["correct"].mean(),
        "clean_top1": 100.0 * g["clean_correct"].mean(),
        "flip_rate": 100.0 * (ok["pred"] != ok["clean_pred"]).groupby(ok["job"], sort=False).mean(),
        "ar": 100.0 * ok[ok["clean_correct"]].groupby("job", sort=False)["correct"].mean(),
    })


def _in_groups(rec: pd.DataFrame, keys, groups) -> pd.DataFrame:
    """The ok records of the jobs `keys`, in their order, with each job's `group` (an inner
    join on the job key, as a lookup: a job is in one group)."""
    ok = rec[rec["status"] == "ok"]
    group = ok["job"].map(dict(zip(keys, groups)))
    keep = group.notna().to_numpy()
    return ok[keep].assign(group=group[keep].astype("int64").to_numpy())


_CACHED = ("n", "n_ok", "top1")


def _from_cache(jobs: pd.DataFrame, cached: dict) -> pd.DataFrame:
    """_per_job's numbers from the metrics a complete job caches in its meta.json (the same
    definitions, computed from its records when it completed); a clean job's clean pass is its
    own prediction. Jobs whose cache lacks a number are left out (their records are read)."""
    rows = {}
    for key, section in zip(jobs["key"], jobs["section"]):
        m = cached.get(key)
        if m is None or not all(k in m for k in _CACHED):
            continue
        clean = "clean_top1" not in m
        if not clean and not all(k in m for k in ("clean_top1", "flip_rate")):
            continue
        if section == "adversarial" and "ar" not in m:
            continue
        n_ok, top1 = int(m["n_ok"]), float(m["top1"])
        rows[key] = {"n": int(m["n"]), "n_ok": n_ok, "top1": top1,
                     "clean_top1": top1 if clean else float(m["clean_top1"]),
                     "flip_rate": (0.0 if n_ok else np.nan) if clean else float(m["flip_rate"]),
                     "ar": float(m["ar"]) if section == "adversarial" else np.nan}
    out = pd.DataFrame.from_dict(rows, orient="index", columns=["n", "n_ok", "top1", "clean_top1", "flip_rate", "ar"])
    return out.astype({"n": "int64", "n_ok": "int64", "top1": float, "clean_top1": float, "flip_rate": float,
                       "ar": float})


def per_job(jobs: pd.DataFrame, records) -> pd.DataFrame:
    """One row per job: n, n_ok, n_failed, top1, clean_top1, ar (%, of clean-correct samples
    those still correct; attack jobs), asr, flip_rate (% of samples whose prediction differs
    from clean). From a store, a complete job's cached metrics give them (the same numbers,
    without reading its records)."""
    parts = []
    todo = jobs
    if not isinstance(records, pd.DataFrame):
        parts.append(_from_cache(jobs, records.cached(jobs["key"])))
        todo = jobs[~jobs["key"].isin(parts[0].index)]
    if len(todo) or not parts:
        for r in (frames(records, todo["key"], columns=None) if isinstance(records, pd.DataFrame)
                  else records.frames(todo["key"])):
            parts.append(_per_job(r))
    out = pd.concat(parts) if len(parts) > 1 else parts[0]
    adversarial = set(jobs.loc[jobs["section"] == "adversarial", "key"])
    out.loc[~out.index.isin(adversarial), "ar"] = np.nan  # AR is an attack's measure
    out["n_ok"] = out["n_ok"].fillna(0).astype(int)
    out["n_failed"] = out["n"] - out["n_ok"]
    out["asr"] = 100.0 - out["ar"]
    out.index.name = "key"
    return jobs.merge(out.reset_index(), on="key", how="inner")


def _finish(df: pd.DataFrame, cols: list[str], sort: list[str] | None = None, ascending=False) -> pd.DataFrame:
    df = df[cols]
    if sort:
        df = df.sort_values(sort, ascending=ascending, kind="stable")
    return df.rename(columns=_RENAME).reset_index(drop=True)


# --------------------------------------------------------------------------- clean


def clean_leaderboard(pj: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Clean top-1 per model and dataset: from its clean job; where there is none, from the clean
    pass that every noise job records beside its noisy one (`clean_correct`, each sample once)."""
    c = pj[pj["section"] == "clean"].assign(source="clean job")
    have = set(zip(c["label"], c["fingerprint"]))
    missing = np.array([(a, b) not in have for a, b in zip(pj["label"], pj["fingerprint"])], dtype=bool)
    o = pj[(pj["section"] != "clean").to_numpy() & missing].copy()
    parts = [c]
    if len(o):
        o["group"] = o.groupby(["label", "fingerprint"], sort=False).ngroup()
        sizes, tops = [], []
        for rec in frames(records, o["key"], o["group"], ["clean_correct"]):
            r = _in_groups(rec, o["key"], o["group"])
            r = r.drop_duplicates(["group", "sample_id"])
            g = r.groupby("group")
            sizes.append(g.size())
            tops.append(100.0 * g["clean_correct"].mean())
        first = o.groupby("group").agg(**{k: (k, "first") for k in ID + ["fingerprint"]},
                                       key=("key", lambda s: " ".join(sorted(s))))
        first["n"] = pd.concat(sizes)
        first["n_failed"] = np.nan
        first["top1"] = pd.concat(tops)
        parts.append(first.assign(source="clean pass of noise jobs"))
    both = pd.concat(parts, ignore_index=True) if len(o) else c
    both["n_failed"] = both["n_failed"].astype("Int64")  # unknown for the clean pass of noise jobs
    return _finish(both, ID + ["n", "n_failed", "top1", "source", "key"], ["top1"])


def clean_reference(pj: pd.DataFrame) -> pd.DataFrame:
    """Clean top-1 per (model, dataset), from clean jobs (their own samples)."""
    c = pj[pj["section"] == "clean"]
    return c.groupby(["label", "fingerprint"], as_index=False)["top1"].first().rename(columns={"top1": "clean_job_top1"})


# --------------------------------------------------------------------------- adversarial


def _budget_group(adv: pd.DataFrame) -> pd.Series:
    """The attacks that make one WCAR: a named budget (small/mid/large) spans norms, as in the
    suite; attacks run without one are grouped by their exact norm and eps."""
    if not len(adv):
        return pd.Series([], index=adv.index, dtype=object)
    eps = adv["eps"].astype(float)
    plain = np.where(adv["norm"] == "linf", (eps * 255).map(lambda e: f"linf {e:.3g}/255"),
                     adv["norm"].astype(str) + " " + eps.map(lambda e: f"{e:.3g}"))
    return pd.Series(np.where(adv["budget"].notna(), "budget " + adv["budget"].astype(str), plain), index=adv.index)


def adversarial_leaderboard(pj: pd.DataFrame) -> pd.DataFrame:
    a = pj[pj["section"] == "adversarial"].copy()
    a["budget_group"] = _budget_group(a)
    return _finish(a, ID + ["noise", "norm", "eps", "budget_group", "n", "clean_top1", "top1", "ar", "asr", "key"],
                   ["budget_group", "noise", "top1"], [True, True, False]).rename(
        columns={"noise": "attack", "budget_group": "budget", "top1": "robust_top1"})


def wcar_table(pj: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """WCAR per (model, dataset, budget group): a sample counts only if it is ok and correct in
    every attack job of the group (robustart.results.metrics.wcar, as one group-by)."""
    a = pj[pj["section"] == "adversarial"].copy()
    cols = ID + ["budget", "attacks", "n_attacks", "n", "clean_top1", "wcar", "keys"]
    if not len(a):
        return pd.DataFrame(columns=[_RENAME.get(c, c) for c in cols])
    a["budget"] = _budget_group(a)
    a["group"] = a.groupby(["label", "fingerprint", "budget"], sort=False).ngroup()
    size = a.groupby("group")["key"].size()
    parts = []
    for rec in frames(records, a["key"], a["group"], ["correct"]):
        r = _in_groups(rec, a["key"], a["group"])
        parts.append(r.groupby(["group", "sample_id"], sort=False)["correct"].agg(["size", "all"]).reset_index())
    per_sample = pd.concat(parts, ignore_index=True)
    per_sample = per_sample[per_sample["size"].to_numpy() == size.loc[per_sample["group"]].to_numpy()]
    wc = per_sample.groupby("group").agg(n=("all", "size"), wcar=("all", "mean"))
    wc["wcar"] *= 100.0
    first = a.groupby("group").agg(
        **{c: (c, "first") for c in ID + ["budget", "fingerprint"]},
        attacks=("noise_label", lambda s: ", ".join(sorted(s))), n_attacks=("key", "size"),
        clean_top1=("clean_top1", "mean"), keys=("key", lambda s: " ".join(sorted(s))))
    out = first.join(wc, how="left")
    out["n"] = out["n"].fillna(0).astype(int)
    return _finish(out, cols, ["budget", "wcar"], [True, False])


def robust_by_budget(adv: pd.DataFrame) -> pd.DataFrame:
    """Wide view: robust top-1 per model (rows) and attack x budget (columns)."""
    if not len(adv):
        return adv
    # a named budget spans norms, so its columns name the norm; an eps budget already does
    named = adv["budget"].str.startswith("budget ")
    w = adv.assign(col=adv["attack"] + np.where(named, " " + adv["norm"].astype(str), "") + " @ " + adv["budget"])
    wide = w.pivot_table(index=["model", "dataset"], columns="col", values="robust_top1", aggfunc="mean")
    wide.columns.name = None
    return wide.reset_index()


# --------------------------------------------------------------------------- corruption


def _latest(df: pd.DataFrame, by: list[str]) -> pd.DataFrame:
    """One job per cell: the most recently finished (two seeds of one cell would double-count)."""
    return df.sort_values("finished", kind="stable").drop_duplicates(by, keep="last")


def corruption_cells(pj: pd.DataFrame) -> pd.DataFrame:
    c = pj[pj["section"] == "corruption"].copy()
    c["impl"] = c["impl"].fillna("torch")
    c["jpeg"] = c["jpeg"].fillna(False).astype(bool)
    c = _latest(c, ["label", "fingerprint", "impl", "jpeg", "corruption", "severity"])
    c["error"] = 100.0 - c["top1"]
    c["severity"] = c["severity"].astype(int)
    return _finish(c, ID + ["fingerprint", "impl", "jpeg", "corruption", "severity", "n", "clean_top1", "error", "key"])


def error_table(cells: pd.DataFrame) -> pd.DataFrame:
    """The corruption family's error table (corruption x severity, fractions) of one model's cells,
    in ImageNet-C order; the input of its CE / mCE functions."""
    t = cells.pivot_table(index="corruption", columns="severity", values="error", aggfunc="first") / 100.0
    t.columns = [int(s) for s in t.columns]
    order = [c for c in COMMON if c in t.index] + sorted(c for c in t.index if c not in COMMON)
    return t.reindex(index=order, columns=sorted(t.columns))


def corruption_leaderboard(cells: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, impl, jpeg): mCE and relative mCE (AlexNet = 100; need the 15 x 5
    grid), mean corruption error over the cells present, and the clean error of those samples."""
    cols = ["model", "family", "form", "precision", "dataset", "impl", "jpeg", "cells", "clean_error",
            "mce", "relative_mce", "mean_corruption_error", "corruption_accuracy", "keys"]
    rows = []
    by = ["model", "fingerprint", "impl", "jpeg"]
    gid = cells.groupby(by, sort=False).ngroup().rename("group")
    # each sample's clean prediction once per group (every cell holds the same samples), in one pass
    if isinstance(records, pd.DataFrame):
        ok = _in_groups(records, cells["key"], gid).drop_duplicates(["group", "sample_id"])
    else:  # a store: the first cell of each group, and the few samples that failed there
        ok = records.first_ok(cells["key"], gid, "clean_correct")
    clean_err = 1.0 - ok.groupby("group")["clean_correct"].mean()
    for g, grp in cells.groupby(gid.to_numpy(), sort=False):  # one small error table per model: no records here
        table = error_table(grp)
        clean = float(clean_err.get(g, float("nan")))
        mean_err = CM.mean_error(table)  # over the 15 ImageNet-C corruptions, as the family reports it
        first = grp.iloc[0]
        rows.append({
            **{k: first[k] for k in ["model", "family", "form", "precision", "dataset", "impl", "jpeg"]},
            "cells": int(table.notna().to_numpy().sum()), "clean_error": 100.0 * clean,
            "mce": 100.0 * CM.mce(table), "relative_mce": 100.0 * CM.relative_mce(table, clean),
            "mean_corruption_error": 100.0 * mean_err, "corruption_accuracy": 100.0 * (1.0 - mean_err),
            "keys": " ".join(sorted(grp["key"])),
        })
    out = pd.DataFrame(rows, columns=cols)
    return out.sort_values(["mce", "mean_corruption_error"], kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- ImageNet-S


def imagenet_s_cells(pj: pd.DataFrame) -> pd.DataFrame:
    s = pj[pj["section"] == "imagenet-s"].copy()
    s = _latest(s, ["label", "fingerprint", "geometry", "decoder", "resize"])
    s["cell"] = s["decoder"].astype(str) + "/" + s["resize"].astype(str)
    return _finish(s, ID + ["fingerprint", "geometry", "decoder", "resize", "cell", "n", "clean_top1", "top1",
                            "flip_rate", "key"])


def imagenet_s_leaderboard(cells: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Per (model, dataset, geometry), over the decoder x resize cells (as the system noise
    family's summary): top-1 of the reference pipeline (the clean pass), mean, std (sample),
    worst and range of the cells' top-1, the mean flip rate against the reference, and any_flip:
    % of samples whose prediction changes under at least one cell."""
    cols = ["model", "family", "form", "precision", "dataset", "geometry", "cells", "reference_top1", "mean_top1",
            "std_top1", "worst_top1", "worst_cell", "range_top1", "mean_flip_rate", "any_flip", "keys"]
    if not len(cells):
        return pd.DataFrame(columns=cols)
    by = ["model", "fingerprint", "geometry"]
    g = cells.groupby(by, sort=False)
    worst = cells.loc[g["top1"].idxmin()].set_index(by)
    out = g.agg(family=("family", "first"), form=("form", "first"), precision=("precision", "first"),
                dataset=("dataset", "first"), cells=("key", "size"), reference_top1=("clean_top1", "first"),
                mean_top1=("top1", "mean"), std_top1=("top1", lambda s: float(s.std(ddof=1)) if len(s) > 1 else 0.0),
                worst_top1=("top1", "min"), max_top1=("top1", "max"), mean_flip_rate=("flip_rate", "mean"),
                keys=("key", lambda s: " ".join(sorted(s))))
    out["range_top1"] = out["max_top1"] - out["worst_top1"]
    out["worst_cell"] = worst["cell"]
    # any_flip: samples ok in every cell of the group, flipped in at least one
    grp = cells[by + ["key"]].assign(group=g.ngroup().to_numpy())
    parts = []
    for rec in frames(records, grp["key"], grp["group"], ["pred", "clean_pred"]):
        r = _in_groups(rec, grp["key"], grp["group"])
        parts.append((r["pred"] != r["clean_pred"]).groupby([r["group"], r["sample_id"]]).agg(["size", "any"]).reset_index())
    per = pd.concat(parts, ignore_index=True)
    per = per[per["size"].to_numpy() == g.size().to_numpy()[per["group"].to_numpy()]]
    anyflip = 100.0 * per.groupby("group")["any"].mean()
    out["any_flip"] = anyflip.reindex(range(len(out))).to_numpy()
    return out.reset_index()[cols].sort_values("mean_top1", ascending=False, kind="stable").reset_index(drop=True)


# --------------------------------------------------------------------------- precision


def precision_leaderboard(pj: pd.DataFrame, records: pd.DataFrame) -> pd.DataFrame:
    """Precision noise: `precision` jobs (the same model run at another numeric variant; records
    compare with its fp32 predictions) and model forms (a quantized or binarized model on the
    same samples as its fp form's clean job, matched by architecture): top-1, its change from
    the reference, and the flip rate (% of samples whose prediction changes)."""
    cols = ["model", "family", "form", "precision", "dataset", "variant", "reference", "n", "reference_top1",
            "top1", "delta_top1", "flip_rate", "key"]
    rows = []
    p = pj[pj["section"] == "precision"]
    for _, j in p.iterrows():  # one row per job, not per record
        rows.append({"variant": j["variant"], "reference": "fp32 (same job)",
                     "reference_top1": j["clean_top1"], "top1": j["top1"], "flip_rate": j["flip_rate"],
                     **{k: j[k] for k in ["label", "family_label", "form", "precision", "dataset_label", "n", "key"]}})
    clean = pj[pj["section"] == "clean"]
    low = clean[(clean["form"] != "fp") | (clean["precision"] != "fp32")]
    ref = clean[(clean["form"] == "fp") & (clean["precision"] == "fp32")]
    pairs = low.merge(ref, on=["arch", "fingerprint"], suffixes=("", "_ref"))
    if len(pairs):
        # a form and its fp reference share an architecture: read them together
        arch = pd.concat([pairs[["key", "arch", "fingerprint"]],
                          pairs[["key_ref", "arch", "fingerprint"]].rename(columns={"key_ref": "key"})])
        arch = arch.drop_duplicates("key")
        parts = []
        for rec in frames(records, arch["key"], arch.groupby(["arch", "fingerprint"]).ngroup(), ["pred"]):
            ok = rec[rec["status"] == "ok"]
            a = ok[ok["job"].isin(pairs["key"])][["job", "sample_id", "pred"]]
            b = ok[ok["job"].isin(pairs["key_ref"])][["job", "sample_id", "pred"]]
            m = a.merge(pairs[["key", "key_ref"]], left_on="job", right_on="key").merge(
                b, left_on=["key_ref", "sample_id"], right_on=["job", "sample_id"], suffixes=("", "_ref"))
            parts.append((m["pred"] != m["pred_ref"]).groupby(m["key"]).mean() * 100.0)
        flips = pd.concat(parts)
        for _, j in pairs.iterrows():
            rows.append({"variant": model_variant(j), "reference": j["label_ref"], "reference_top1": j["top1_ref"],
                         "top1": j["top1"], "flip_rate": flips.get(j["key"], np.nan),
                         **{k: j[k] for k in ["label", "family_label", "form", "precision", "dataset_label", "n", "key"]}})
    out = pd.DataFrame(rows)
    if not len(out):
        return pd.DataFrame(columns=cols)
    out = out.rename(columns=_RENAME)
    out["delta_top1"] = out["top1"] - out["reference_top1"]
    return out[cols].sort_values(["model", "variant"], kind="stable").reset_index(drop=True)


def model_variant(j) -> str:
    return "/".join(v for v in (j["form"] if j["form"] != "fp" else "", j["precision"] if j["precision"] != "fp32" else "") if v)


# --------------------------------------------------------------------------- other noises


def other_leaderboard(pj: pd.DataFrame) -> pd.DataFrame:
    o = pj[pj["section"] == "other"]
    return _finish(o, ID + ["noise_label", "n", "clean_top1", "top1", "flip_rate", "key"], ["noise_label", "top1"], [True, False])


# --------------------------------------------------------------------------- figures' data


def robust_points(clean_lb, wcar, corr_lb, s_lb) -> pd.DataFrame:
    """Clean vs robust accuracy, one point per (model, dataset, kind of robustness); the clean
    accuracy is measured on the same samples as the robust one."""
    parts = []
    if len(wcar):
        parts.append(wcar.assign(kind="adversarial " + wcar["budget"] + " (WCAR)", clean=wcar["clean_top1"],
                                 robust=wcar["wcar"]))
    if len(corr_lb):
        parts.append(corr_lb.assign(kind="corruptions (100 - mean error)", clean=100.0 - corr_lb["clean_error"],
                                    robust=corr_lb["corruption_accuracy"]))
    if len(s_lb):
        parts.append(s_lb.assign(kind="ImageNet-S (worst cell)", clean=np.nan, robust=s_lb["worst_top1"]))
    cols = ["model", "family", "form", "dataset", "kind", "clean", "robust"]
    if not parts:
        return pd.DataFrame(columns=cols)
    pts = pd.concat([p[cols] for p in parts], ignore_index=True)
    if len(clean_lb):  # ImageNet-S has no clean column of its own: its model's clean job
        ref = clean_lb.groupby(["model", "dataset"])["top1"].first()
        missing = pts["clean"].isna()
        pts.loc[missing, "clean"] = [ref.get((m, d), np.nan) for m, d in zip(pts.loc[missing, "model"], pts.loc[missing, "dataset"])]
    return pts.dropna(subset=["clean", "robust"]).reset_index(drop=True)


def bit_curves(pj: pd.DataFrame, points: pd.DataFrame) -> pd.DataFrame:
    """Accuracy vs weight bit width per architecture: clean top-1 and each robust measure, for
    architectures present in at least two bit widths."""
    series = pj["arch"].astype(str) + pj.get("method", pd.Series("", index=pj.index)).fillna("").map(
        lambda m: f" [{m}]" if m else "")
    # a method's curve starts from its architecture's fp point
    meta = pj.assign(arch=series).drop_duplicates("label").set_index("label")[["arch", "bits"]]
    clean = pj.loc[pj["section"] == "clean", ["label", "top1"]].rename(columns={"label": "model", "top1": "value"})
    parts = [clean.assign(kind="clean top-1")[["model", "kind", "value"]]]
    if len(points):
        parts.append(points.rename(columns={"robust": "value"})[["model", "kind", "value"]])
    df = pd.concat(parts, ignore_index=True)
    df["arch"] = meta["arch"].reindex(df["model"]).to_numpy()
    df["bits"] = meta["bits"].reindex(df["model"]).to_numpy()
    df = df.groupby(["arch", "bits", "kind"], as_index=False, sort=False)["value"].mean()
    fp = df[df["bits"] == 32.0]
    extra = []
    for a in df["arch"].unique():  # give each method series its architecture's fp point
        base = a.split(" [")[0]
        if a != base and not ((df["arch"] == a) & (df["bits"] == 32.0)).any():
            extra.append(fp[fp["arch"] == base].assign(arch=a))
    if extra:
        df = pd.concat([df, *extra], ignore_index=True)
    keep = df.groupby(["arch", "kind"])["bits"].transform("nunique") >= 2  # a curve needs two widths
    return df[keep].sort_values(["arch", "bits"], kind="stable").reset_index(drop=True)


def provenance(pj: pd.DataFrame) -> pd.DataFrame:
    """Where every number comes from: one row per job shown in the report."""
    p = pj.assign(weights=pj["weights_sha256"].astype(str).str[:16], seed=pj["seed"].astype("Int64"),
                  git=pj["git_commit"].astype(str).str[:10] + np.where(pj["git_dirty"] == True, "+dirty", ""))  # noqa: E712
    p = p.assign(backend=p["backend"].fillna("—") if "backend" in p.columns else "—")
    cols = ["key", "label", "backend", "noise_label", "dataset_label", "n", "precision", "seed", "weights", "robustart", "torch",
            "timm", "pillow", "git", "device", "finished"]
    return _finish(p, cols, ["label", "noise_label"], True).rename(columns={"noise_label": "noise"})


def build_tables(jobs: pd.DataFrame, records: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """Every table of the report, by name (also the CSV / Parquet file names)."""
    pj = per_job(jobs, records)
    t: dict[str, pd.DataFrame] = {}
    t["clean"] = clean_leaderboard(pj, records)
    t["adversarial"] = adversarial_leaderboard(pj)
    t["adversarial_by_budget"] = robust_by_budget(t["adversarial"])
    t["wcar"] = wcar_table(pj, records)
    t["corruption_cells"] = corruption_cells(pj)
    t["corruption"] = corruption_leaderboard(t["corruption_cells"], records)
    t["imagenet_s_cells"] = imagenet_s_cells(pj)
    t["imagenet_s"] = imagenet_s_leaderboard(t["imagenet_s_cells"], records)
    t["precision"] = precision_leaderboard(pj, records)
    t["other"] = other_leaderboard(pj)
    t["robust_points"] = robust_points(t["clean"], t["wcar"], t["corruption"], t["imagenet_s"])
    t["bit_curves"] = bit_curves(pj, t["robust_points"])
    t["provenance"] = provenance(pj)
    t["jobs"] = pj
    return t
