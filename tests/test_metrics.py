"""Metrics are pure functions of records."""

import math

import pandas as pd

from robustart.results import metrics as M


def _records():
    return pd.DataFrame(
        {
            "sample_id": ["a", "b", "c", "d", "e"],
            "label": [1, 2, 3, 4, 5],
            "pred": [1, 0, 3, 9, -1],
            "top5": [[1, 0], [0, 2], [3, 1], [9, 8, 7, 6, 0], []],
            "correct": [True, False, True, False, False],
            "prob": [0.9, 0.3, 0.6, 0.01, float("nan")],
            "margin": [2.0, -1.0, 0.5, -3.0, float("nan")],
            "status": ["ok", "ok", "ok", "ok", "failed"],
            "error": ["", "", "", "", "truncated image file"],
        }
    )


def test_accuracies_exclude_failed_samples():
    r = _records()
    assert M.top1(r) == 50.0  # 2 of 4 decodable samples
    assert M.top5(r) == 75.0  # a, b, c
    s = M.summary(r)
    assert (s["n"], s["n_ok"], s["n_failed"]) == (5, 4, 1)
    assert math.isclose(s["mean_margin"], -1.5 / 4)


def test_empty_and_all_failed():
    r = _records().iloc[4:]
    assert math.isnan(M.top1(r)) and math.isnan(M.top5(r))
    assert M.summary(r)["n_failed"] == 1
