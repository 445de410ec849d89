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


# --------------------------------------------------------------------------- noise runs
# Records of a noise job also carry `clean_pred` / `clean_correct` (the same model on the clean
# image), so clean accuracy and flips come from the same job.


def clean_top1(records: pd.DataFrame) -> float:
    r = ok(records)
    return float(100.0 * r["clean_correct"].mean()) if len(r) else float("nan")


def adversarial_robustness(records: pd.DataFrame) -> float:
    """AR: share (%) of clean-correct samples that stay correct under the noise."""
    r = ok(records)
    r = r[r["clean_correct"]]
    return float(100.0 * r["correct"].mean()) if len(r) else float("nan")


def attack_success_rate(records: pd.DataFrame) -> float:
    """Share (%) of clean-correct samples the attack fools (100 - AR)."""
    ar = adversarial_robustness(records)
    return 100.0 - ar if not np.isnan(ar) else float("nan")


def survivors(records_list: list[pd.DataFrame]) -> pd.Series:
    """Per sample id (ok in every job): correct under every job's noise. A join on sample_id."""
    if not records_list:
        raise ValueError("survivors() needs at least one job's records")
    joined = None
    for k, rec in enumerate(records_list):
        r = rec[rec["status"] == "ok"].set_index("sample_id")[["correct"]].rename(columns={"correct": k})
        joined = r if joined is None else joined.join(r, how="inner")
    return joined.all(axis=1)


def wcar(records_list: list[pd.DataFrame]) -> float:
    """Worst-case adversarial accuracy (%): a sample counts only if it is correct under every
    attack of the suite (samples present and ok in every job)."""
    s = survivors(records_list)
    return float(100.0 * s.mean()) if len(s) else float("nan")


def survivors_frame(records_list: list[pd.DataFrame]) -> pd.DataFrame:
    """`survivors` as records (sample_id, status, correct): a sample is correct only if it is
    correct in every job, e.g. under every black-box attack of a suite."""
    s = survivors(records_list)
    return pd.DataFrame({"sample_id": s.index, "status": "ok", "correct": s.to_numpy()})


def blackbox_only_share(white_list: list[pd.DataFrame], black: pd.DataFrame) -> float:
    """Share (%) of samples that survive every white-box attack but not the black-box one: above
    zero, the white-box attacks are likely hampered by gradient masking."""
    s = survivors(white_list)
    b = black[black["status"] == "ok"].set_index("sample_id")["correct"]
    common = s.index.intersection(b.index)
    if not len(common):
        return float("nan")
    return float(100.0 * (s[common] & ~b[common]).mean())


def masking_diagnostics(records: pd.DataFrame) -> dict:
    """Gradient-masking signs from an attack job's records: samples whose input gradient was zero
    at the start, and attacked samples the attack neither fooled nor raised the loss of."""
    r = ok(records)
    r = r[r["attacked"]]
    if not len(r):
        return {"zero_grad_share": float("nan"), "no_loss_gain_share": float("nan")}
    zero = float(100.0 * r["grad_zero"].mean())
    gain = r["loss_gain"].astype(float)
    measured = r[gain.notna()]
    stuck = measured[~measured["success"] & (measured["loss_gain"] <= 0)]
    return {
        "zero_grad_share": zero,
        "no_loss_gain_share": float(100.0 * len(stuck) / len(measured)) if len(measured) else float("nan"),
    }


def noise_summary(records: pd.DataFrame) -> dict:
    """summary() plus what a noise job's records allow: clean accuracy, AR, success rate, flips,
    perturbation sizes, masking signs."""
    out = summary(records)
    if "clean_correct" not in records.columns:
        return out
    r = ok(records)
    out["clean_top1"] = clean_top1(records)
    out["flip_rate"] = float(100.0 * (r["pred"] != r["clean_pred"]).mean()) if len(r) else float("nan")
    if "success" in records.columns:
        out["ar"] = adversarial_robustness(records)
        out["asr"] = attack_success_rate(records)
        att = r[r["attacked"]]
        out["mean_pert_norm"] = float(att["pert_norm"].mean()) if len(att) else float("nan")
        out["max_pert_linf"] = float(att["pert_linf"].max()) if len(att) else float("nan")
        out.update(masking_diagnostics(records))
    return out


def spread(values: dict, prefix: str) -> dict:
    """Mean / std (sample) / worst / range of top-1 over a grid of variants (label -> top-1,
    NaN for variants without samples), and the worst variant's label."""
    v = np.array([x for x in values.values() if not np.isnan(x)], dtype=float)
    if not len(v):
        return {}
    worst = min(values, key=lambda k: values[k] if not np.isnan(values[k]) else float("inf"))
    return {f"{prefix}_mean_top1": float(v.mean()),
            f"{prefix}_std_top1": float(v.std(ddof=1)) if len(v) > 1 else 0.0,
            f"{prefix}_worst_top1": float(v.min()),
            f"{prefix}_range_top1": float(v.max() - v.min()),
            f"{prefix}_worst_variant": worst}
