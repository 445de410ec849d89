"""Metrics: pure functions of per-sample records (pandas DataFrames). Nothing here runs a model.

Failed samples (undecodable files) are excluded from accuracies and counted in `n_failed`."""

from __future__ import annotations

import numpy as np
import pandas as pd


def ok(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["status"] == "ok"]


def top1(records: pd.DataFrame) -> float:
    r = ok(records)
    return float(100.0 * r["correct"].mean()) if len(r) else float("nan")


def top5(records: pd.DataFrame) -> float:
    r = ok(records)
    if not len(r):
        return float("nan")
    hits = [int(lab) in set(np.asarray(t).tolist()) for lab, t in zip(r["label"], r["top5"])]
    return float(100.0 * np.mean(hits))


def summary(records: pd.DataFrame) -> dict:
    r = ok(records)
    return {
        "n": int(len(records)),
        "n_ok": int(len(r)),
        "n_failed": int(len(records) - len(r)),
        "top1": top1(records),
        "top5": top5(records),
        "mean_true_prob": float(r["prob"].mean()) if len(r) else float("nan"),
        "mean_margin": float(r["margin"].mean()) if len(r) else float("nan"),
    }
