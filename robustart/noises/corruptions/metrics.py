"""ImageNet-C metrics: pure functions of per-sample records and of error tables.

An error table is a DataFrame indexed by corruption with one column per severity (1..5),
holding top-1 error as a fraction. From it:

  CE_c            sum_s E_{s,c} / sum_s E^AlexNet_{s,c}          (Hendrycks & Dietterich 2019)
  mCE             mean of CE_c over the 15 ImageNet-C corruptions: "mCE" in papers, AlexNet = 100%
  relative CE_c   sum_s (E_{s,c} - E_clean) / sum_s (E^AlexNet_{s,c} - E^AlexNet_clean)
  relative mCE    mean of relative CE_c over the 15 corruptions
  mean error      plain mean of E_{s,c} over corruptions and severities, not normalised; its
                  complement (1 - mean error) is the "ImageNet-C accuracy" that RobustBench and
                  many later papers report. It is NOT the mCE.

AlexNet's errors are only published as means over severities, so sum_s E^AlexNet_{s,c} is taken
as 5 x that mean; CE therefore needs all five severities of a corruption.
"""

from __future__ import annotations

import math

import pandas as pd

from robustart.noises.corruptions.constants import (
    ALEXNET_CLEAN_ERROR,
    ALEXNET_ERROR,
    COMMON,
    SEVERITIES,
)


def _ok(records: pd.DataFrame) -> pd.DataFrame:
    return records[records["status"] == "ok"] if "status" in records else records


def error_rate(records: pd.DataFrame, column: str = "correct") -> float:
    """Top-1 error (fraction) over the samples that decoded; NaN when there are none."""
    r = _ok(records)
    return float(1.0 - r[column].astype(float).mean()) if len(r) else float("nan")


def clean_error(records: pd.DataFrame) -> float:
    """The clean error of the same samples, from the engine's `clean_correct` column."""
    return error_rate(records, "clean_correct")


def error_table(cells) -> pd.DataFrame:
    """Error table from (corruption, severity, records) triples; a repeated cell is an error."""
    data: dict = {}
    for corruption, severity, records in cells:
        key = (corruption, int(severity))
        if key in data:
            raise ValueError(f"two result sets for {corruption} severity {severity}")
        data[key] = error_rate(records)
    if not data:
        return pd.DataFrame(columns=list(SEVERITIES), dtype=float)
    s = pd.Series(data)
    table = s.unstack()
    table.columns = [int(c) for c in table.columns]
    order = [c for c in COMMON if c in table.index] + sorted(c for c in table.index if c not in COMMON)
    return table.reindex(index=order, columns=sorted(table.columns))


def complete_rows(table: pd.DataFrame) -> pd.DataFrame:
    """Rows that have all five severities."""
    if not set(SEVERITIES) <= set(table.columns):
        return table.iloc[0:0]
    return table[list(SEVERITIES)].dropna()


def ce(table: pd.DataFrame, baseline: dict = ALEXNET_ERROR) -> pd.Series:
    """Corruption Error per corruption (fraction; AlexNet = 1), for the corruptions that have all
    five severities and a published baseline."""
    full = complete_rows(table)
    full = full[full.index.isin(list(baseline))]
    return pd.Series({c: full.loc[c].sum() / (5 * baseline[c]) for c in full.index}, dtype=float)


def mce(table: pd.DataFrame, baseline: dict = ALEXNET_ERROR) -> float:
    """Mean CE over the 15 ImageNet-C corruptions; NaN unless all 15 x 5 cells are present."""
    values = ce(table, baseline)
    return float(values[list(COMMON)].mean()) if set(COMMON) <= set(values.index) else float("nan")


def relative_ce(table: pd.DataFrame, clean: float, baseline: dict = ALEXNET_ERROR,
                baseline_clean: float = ALEXNET_CLEAN_ERROR) -> pd.Series:
    """Relative CE per corruption: degradation from clean, normalised by AlexNet's."""
    full = complete_rows(table)
    full = full[full.index.isin(list(baseline))]
    return pd.Series(
        {c: (full.loc[c] - clean).sum() / (5 * (baseline[c] - baseline_clean)) for c in full.index},
        dtype=float,
    )


def relative_mce(table: pd.DataFrame, clean: float, baseline: dict = ALEXNET_ERROR,
                 baseline_clean: float = ALEXNET_CLEAN_ERROR) -> float:
    values = relative_ce(table, clean, baseline, baseline_clean)
    return float(values[list(COMMON)].mean()) if set(COMMON) <= set(values.index) else float("nan")


def mean_error(table: pd.DataFrame, corruptions=COMMON) -> float:
    """Unnormalised mean error over the given corruptions' cells (all that are present)."""
    rows = table[table.index.isin(list(corruptions))]
    vals = rows.to_numpy().ravel()
    vals = vals[~pd.isna(vals)]
    return float(vals.mean()) if len(vals) else float("nan")


def prerendered_cells(records: pd.DataFrame):
    """(corruption, severity, records) cells of a run over the pre-rendered ImageNet-C folders,
    whose sample ids are `<corruption>/<severity>/<wnid>/<file>`."""
    parts = records["sample_id"].str.split("/", n=2, expand=True)
    for (c, s), grp in records.groupby([parts[0], parts[1]], sort=False):
        yield c, int(s), grp


def summary(table: pd.DataFrame, clean: float | None) -> dict:
    """Suite numbers in percent (JSON-able): the error table, CE, mCE, relative mCE, mean error."""

    def pct(v):
        return None if v is None or (isinstance(v, float) and math.isnan(v)) else round(100.0 * float(v), 4)

    out: dict = {
        "corruption_error": {c: {str(s): pct(table.loc[c, s]) for s in table.columns if not pd.isna(table.loc[c, s])}
                             for c in table.index},
        "ce": {c: pct(v) for c, v in ce(table).items()},
        "mce": pct(mce(table)),
        "mean_corruption_error": pct(mean_error(table)),
        "clean_error": pct(clean),
    }
    out["relative_ce"] = {c: pct(v) for c, v in relative_ce(table, clean).items()} if clean is not None else {}
    out["relative_mce"] = pct(relative_mce(table, clean)) if clean is not None else None
    missing = [c for c in COMMON if c not in ce(table).index]
    if missing:
        out["note"] = (
            f"mCE needs the 15 ImageNet-C corruptions at severities 1-5 ({15 - len(missing)} of 15 "
            "complete); mean_corruption_error covers the cells present."
        )
    return out
