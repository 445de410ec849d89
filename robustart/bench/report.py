"""The leaderboard printed at the end of a plan: the report's tables (robustart.reports) over
exactly the plan's jobs."""

from __future__ import annotations

from robustart.results.store import ResultsStore


def leaderboard(store: ResultsStore, keys: list[str]) -> dict:
    """Report table name -> table (pandas), for the tables that have rows: clean top-1, WCAR per
    budget, robust top-1 per attack, corruption errors, ImageNet-S, precision."""
    from robustart.reports import load as L
    from robustart.reports import tables as T

    data = L.load(store, keys=keys)
    if not len(data.jobs):
        return {}
    t = T.build_tables(data.jobs, data.records)
    return {name: t[name] for name in ("clean", "wcar", "adversarial", "corruption", "imagenet_s", "precision")
            if name in t and len(t[name])}


def summary(board: dict):
    """One row per model and dataset: clean top-1, WCAR per budget, ImageNet-C accuracy (and mCE
    when all 15 corruptions x 5 severities are there), ImageNet-S mean and worst top-1, the
    largest precision flip rate; in %."""
    import pandas as pd

    rows: dict[tuple, dict] = {}

    def row(r) -> dict:
        return rows.setdefault((r["model"], r["dataset"]), {"model": r["model"], "dataset": r["dataset"]})

    for _, r in board.get("clean", pd.DataFrame()).iterrows():
        row(r)["clean top-1"] = r["top1"]
    for _, r in board.get("wcar", pd.DataFrame()).iterrows():
        row(r)[f"WCAR {str(r['budget']).replace('budget ', '')}"] = r["wcar"]
    for _, r in board.get("corruption", pd.DataFrame()).iterrows():
        row(r)["ImageNet-C acc."] = r["corruption_accuracy"]
        if r["mce"] == r["mce"]:
            row(r)["mCE"] = r["mce"]
    for _, r in board.get("imagenet_s", pd.DataFrame()).iterrows():
        row(r)["ImageNet-S mean"] = r["mean_top1"]
        row(r)["ImageNet-S worst"] = r["worst_top1"]
    for _, r in board.get("precision", pd.DataFrame()).iterrows():
        cur = row(r).get("max flips", float("-inf"))
        row(r)["max flips"] = max(cur, r["flip_rate"]) if r["flip_rate"] == r["flip_rate"] else cur
    df = pd.DataFrame(list(rows.values()))
    if len(df) and df["dataset"].nunique() == 1:
        df = df.drop(columns=["dataset"])
    return df
