"""The store at study size, on a small generated study (benchmarks/make_study_store.py: two zoo
models x a slice of the RobustART protocol, records as the engine writes them): the report's
tables read a bounded number of jobs at a time and give exactly the numbers of one read of every
record and of the metric functions over each job's records; `results list` takes its numbers
from the metrics cached in the metas and reads no record."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import pandas as pd
import pytest

from robustart.noises.corruptions import metrics as CM
from robustart.results import metrics as M
from robustart.results.store import ResultsStore

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

N = 300  # records per job: three shards of 100, one sample that fails to decode


@pytest.fixture(scope="module")
def study(tmp_path_factory) -> ResultsStore:
    import make_study_store as G

    noises = G.protocol()
    names = [c["name"] for c in noises]
    pick = ([names.index("clean")]
            + [i for i, c in enumerate(noises) if c.get("budget") in ("small", "mid")]  # 12 attacks, two WCARs
            + [i for i, c in enumerate(noises) if c.get("corruption") in ("gaussian_noise", "fog")]  # 10 cells
            + [i for i, c in enumerate(noises) if c["name"] == "imagenet-s"][:4]
            + [i for i, c in enumerate(noises) if c["name"] == "precision"][:2])
    models = [i for i, e in enumerate(G.zoo()) if e.name in ("resnet18", "vit_small_patch16_224")]
    root = tmp_path_factory.mktemp("study")
    G.make(root, n=N, shard_size=100, procs=1, progress=False, pairs=[(m, j) for m in models for j in pick])
    return ResultsStore(root)


def _close(a, b) -> bool:
    return (math.isnan(a) and math.isnan(b)) or math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9)


def test_generated_jobs_are_complete_format_2_jobs(study):
    keys = study.keys()
    assert len(keys) == 2 * 29
    for k in keys[:: 7]:
        state = study.check(k, level="read")  # every shard read: rows, unique ids, the ids listed
        assert state.status == "complete" and not state.problems, state.reason
        rec = study.read_records(k)
        assert len(rec) == N and (rec["status"] == "failed").sum() == 1
        cached = state.meta["metrics"]
        assert _close(cached["top1"], M.top1(rec)) and cached["n"] == N


def test_tables_read_in_groups_equal_one_read_of_every_record(study):
    """Every table, with frames of at most one group of jobs, equals the tables from one frame
    of every record (string sample ids; the chunked path uses integer codes)."""
    from robustart.reports import load as L
    from robustart.reports import tables as T

    data = L.load(study)
    assert len(data.records) == len(data.jobs) * N
    data.records.max_rows = 1  # every group (a WCAR budget, a model's corruption cells...) alone
    chunked = T.build_tables(data.jobs, data.records)
    whole = T.build_tables(data.jobs, L.read_records(study, data.jobs["key"]))
    assert set(chunked) == set(whole)
    for name in whole:
        pd.testing.assert_frame_equal(chunked[name], whole[name], check_exact=True, obj=name)
    assert len(whole["wcar"]) == 4 and len(whole["imagenet_s"]) == 2 and len(whole["corruption"]) == 2


def test_jobs_without_cached_metrics_are_read_from_their_records(study, tmp_path):
    """A complete job whose meta caches no metrics (written by an older robustart) gets its
    per-job numbers from its records, and the tables do not change."""
    import json
    import shutil

    from robustart.reports import load as L
    from robustart.reports import tables as T

    root = tmp_path / "store"
    shutil.copytree(study.root, root)
    st = ResultsStore(root)
    stripped = st.keys()[::3]
    for k in stripped:
        meta = st.read_meta(k)
        del meta["metrics"]
        (st.meta_path(k)).write_text(json.dumps(meta))
    data = L.load(st)
    assert not set(stripped) & set(data.records.cached(data.jobs["key"]))
    data.records.max_rows = 1000
    got = T.build_tables(data.jobs, data.records)
    want = T.build_tables(data.jobs, L.read_records(st, data.jobs["key"]))
    for name in want:
        pd.testing.assert_frame_equal(got[name], want[name], check_exact=True, obj=name)


def test_tables_equal_the_metric_functions_over_each_jobs_records(study):
    from robustart.reports import load as L
    from robustart.reports import tables as T

    data = L.load(study)
    data.records.max_rows = 1000
    t = T.build_tables(data.jobs, data.records)
    rec = {k: study.read_records(k) for k in data.jobs["key"]}
    for _, row in t["adversarial"].iterrows():
        r = rec[row["key"]]
        assert _close(row["robust_top1"], M.top1(r)) and _close(row["ar"], M.adversarial_robustness(r))
    for _, row in t["wcar"].iterrows():
        keys = row["keys"].split()
        assert len(keys) == 6
        want = M.wcar([rec[k] for k in keys])
        assert _close(row["wcar"], want)
        assert row["wcar"] <= min(M.top1(rec[k]) for k in keys) + 1e-9  # a join, not a mean
    for _, row in t["corruption"].iterrows():
        keys = row["keys"].split()
        table = CM.error_table([(c["corruption"], c["severity"], rec[c["key"]])
                                for _, c in t["corruption_cells"].iterrows() if c["key"] in keys])
        assert _close(row["mean_corruption_error"], 100.0 * CM.mean_error(table))
        assert _close(row["clean_error"], 100.0 - M.clean_top1(rec[keys[0]]))
    for _, row in t["imagenet_s"].iterrows():
        keys = row["keys"].split()
        s = M.survivors_frame([r.assign(correct=r["pred"] == r["clean_pred"]) for r in (rec[k] for k in keys)])
        assert _close(row["any_flip"], 100.0 * (1 - s["correct"].mean()))


def test_frames_hold_whole_groups_and_stay_bounded(study):
    """Memory is bounded by max_rows (or the largest group): each frame holds whole groups,
    each job's records exactly once, and no frame more rows than the bound allows."""
    from robustart.reports import load as L

    data = L.load(study)
    src = data.records
    jobs = data.jobs
    groups = jobs.groupby(["label", "section"]).ngroup()  # e.g. a model's attacks
    biggest = int(groups.value_counts().max()) * N
    for bound in (1, 2000, 5000, 10**9):
        src.max_rows = bound
        seen = []
        for f in src.frames(jobs["key"], groups):
            assert len(f) <= max(bound, biggest)
            ks = set(f["job"])
            in_frame = set(groups[jobs["key"].isin(ks)])
            assert set(jobs.loc[groups.isin(in_frame), "key"]) == ks  # whole groups only
            assert (f.groupby("job").size() == N).all()
            seen += sorted(ks)
        assert sorted(seen) == sorted(jobs["key"])  # every job once
        if bound == 10**9:
            assert len(seen) == len(jobs)


def test_results_list_reads_no_record(study, monkeypatch):
    """`results list` (ResultsStore.summary): top-1 and counts of complete jobs come from their
    cached metrics; reading a record file fails the test."""
    import pyarrow.parquet as pq

    want = {k: M.top1(study.read_records(k)) for k in study.keys()}

    def no_read(*a, **k):
        raise AssertionError("results list read a record file")

    for name in ("read_table", "read_metadata", "ParquetFile"):
        monkeypatch.setattr(pq, name, no_read)
    df = study.summary()
    assert len(df) == len(want) and (df["status"] == "complete").all() and (df["n_done"] == N).all()
    for k, top1 in zip(df["key"], df["top1"]):
        assert _close(top1, want[k])


def test_clean_pass_of_a_sample_failed_in_the_first_cell_comes_from_a_later_one(study, tmp_path):
    """mCE's clean error reads each model's first corruption cell whole and looks the samples
    that failed there up in the next cells: a sample ok only in a later cell counts, as in one
    read of every record."""
    import shutil

    import pyarrow as pa
    import pyarrow.parquet as pq

    from robustart.engine.execute import _metrics
    from robustart.reports import load as L
    from robustart.reports import tables as T

    root = tmp_path / "store"
    shutil.copytree(study.root, root)
    st = ResultsStore(root)
    before = T.build_tables(*(lambda d: (d.jobs, d.records))(L.load(st)))["corruption"]
    data = L.load(st)
    cells = data.jobs[data.jobs["section"] == "corruption"]
    later = cells[cells["label"] == cells["label"].iloc[0]]["key"].iloc[-1]  # not its model's first cell
    rec = st.read_records(later)
    i = int((rec["status"] == "failed").to_numpy().nonzero()[0][0])
    rec.loc[i, ["status", "error", "pred", "clean_pred", "correct", "clean_correct"]] = \
        ["ok", "", rec.loc[i, "label"], rec.loc[i, "label"], True, True]
    shard = st.shard_path(later, i // 100)
    part = rec.iloc[(i // 100) * 100:(i // 100 + 1) * 100].reset_index(drop=True)
    st.write_shard(later, i // 100, pa.Table.from_pandas(part, schema=pq.read_schema(shard), preserve_index=False))
    meta = st.seal(later)
    meta["metrics"] = _metrics(st.read_records(later))
    st.write_meta(later, meta)
    data = L.load(st)
    data.records.max_rows = 1000
    got = T.build_tables(data.jobs, data.records)
    want = T.build_tables(data.jobs, L.read_records(st, data.jobs["key"]))
    pd.testing.assert_frame_equal(got["corruption"], want["corruption"], check_exact=True)
    row = got["corruption"].set_index("model").loc[cells["label"].iloc[0]]
    old = before.set_index("model").loc[cells["label"].iloc[0]]
    assert row["clean_error"] < old["clean_error"]  # one more sample, clean-correct
