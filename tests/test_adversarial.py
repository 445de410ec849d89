"""The adversarial family through the engine and CLI: spec grammar, budgets, records, metrics,
WCAR as a join, resume, and the store."""

import json
import math

import pandas as pd
import pytest

from robustart.engine.evaluate import evaluate, evaluate_suite
from robustart.noises import expand_noise, parse_noise
from robustart.noises.spec import NoiseSpecError, parse_value, split_spec
from robustart.results import metrics as M
from robustart.results.store import ResultsStore

# --------------------------------------------------------------------------- grammar


def test_values_and_parts():
    assert parse_value("4/255") == 4 / 255
    assert parse_value("10") == 10 and isinstance(parse_value("10"), int)
    assert parse_value("0.5") == 0.5 and parse_value("1e-3") == 0.001
    assert parse_value("true") is True and parse_value("off") is False
    assert parse_value("linf") == "linf"
    assert split_spec("pgd:eps=4/255,steps=20,norm=linf") == ("pgd", [], {"eps": 4 / 255, "steps": 20, "norm": "linf"})
    assert split_spec("corruption:glass_blur:3") == ("corruption", ["glass_blur", 3], {})
    assert split_spec("corruption:all:severity=3") == ("corruption", ["all"], {"severity": 3})
    with pytest.raises(NoiseSpecError, match="division by zero"):
        parse_value("4/0")
    with pytest.raises(NoiseSpecError, match="twice"):
        split_spec("pgd:eps=1,eps=2")


def test_defaults_budgets_and_stable_configs():
    d = parse_noise("pgd")
    assert d == {"name": "pgd", "norm": "linf", "eps": 4 / 255, "steps": 10, "alpha": 2.5 * (4 / 255) / 10,
                 "restarts": 1, "random_start": True, "amp": "none", "channels_last": False}
    # order and spelling do not change the config, so they do not change the job key
    assert parse_noise("pgd:steps=10,eps=4/255") == parse_noise("pgd:eps=4/255") == d
    assert parse_noise("pgd:budget=mid")["eps"] == 2 / 255
    assert parse_noise("pgd:budget=large,norm=l2")["eps"] == 8.0
    assert parse_noise("pgd:budget=small,norm=l1")["eps"] == 100.0
    assert parse_noise("fgsm:budget=mid")["eps"] == 2 / 255
    assert parse_noise("autoattack:eps=4/255") == {"name": "autoattack", "norm": "linf", "eps": 4 / 255,
                                                   "version": "standard"}
    assert parse_noise("transfer:src=efficientnet_lite1")["src"] == "efficientnet_lite1"
    suite = expand_noise("adversarial")
    assert [(c["name"], c["norm"]) for c in suite] == [("fgsm", "linf"), ("pgd", "linf"), ("mim", "linf"),
                                                       ("pgd", "l2"), ("cw", "l2"), ("pgd", "l1")]
    assert [c["eps"] for c in suite] == [2 / 255] * 3 + [2.0, 2.0, 400.0]
    assert [(c["name"], c["norm"]) for c in expand_noise("adversarial:attacks=pgd-l2+autoattack")] == \
        [("pgd", "l2"), ("autoattack", "linf")]
    assert [c["norm"] for c in expand_noise("adversarial:attacks=pgd")] == ["linf", "l2", "l1"]


@pytest.mark.parametrize("spec,message", [
    ("pgd:epz=3", "did you mean 'eps'"),
    ("pgd:eps=4/255,budget=mid", "not both"),
    ("pgd:budget=huge", "small, mid, large"),
    ("pgd:norm=l3", "norm"),
    ("fgsm:norm=l2", "norm"),
    ("pgd:eps=4", "pixel units"),
    ("pgd:steps=0", "positive integer"),
    ("pgd:amp=fp8", "amp"),
    ("transfer", "src="),
    ("transfer:src=resnet5", "resnet50"),
    ("adversarial:attacks=pgd+foo", "foo"),
    ("autoattack:steps=10", "unknown parameter"),
    ("pgdd", "Did you mean 'pgd'"),
    ("pgd:4", "key=value"),
])
def test_bad_specs_say_what_to_do(spec, message):
    with pytest.raises((NoiseSpecError, KeyError), match=message):
        expand_noise(spec)


# --------------------------------------------------------------------------- metrics


def _records(rows):
    return pd.DataFrame(rows, columns=["sample_id", "status", "correct", "clean_correct"])


def test_wcar_is_the_join_of_jobs_records():
    # Four samples, three attacks; s3 failed to decode in one job; order differs per job.
    a = _records([("s1", "ok", True, True), ("s2", "ok", True, True), ("s3", "ok", False, True), ("s4", "ok", True, True)])
    b = _records([("s4", "ok", True, True), ("s2", "ok", False, True), ("s1", "ok", True, True), ("s3", "failed", False, False)])
    c = _records([("s1", "ok", True, True), ("s2", "ok", True, True), ("s3", "ok", True, True), ("s4", "ok", False, True)])
    # By hand: s3 is not ok in b -> out; s2 falls to b; s4 falls to c; only s1 survives all: 1/3.
    assert M.wcar([a, b, c]) == pytest.approx(100 / 3)
    assert M.wcar([a]) == 75.0
    assert M.wcar([a, c]) == pytest.approx(100 * 2 / 4)  # s1, s2 survive; s3 falls to a, s4 to c
    black = _records([("s1", "ok", False, True), ("s2", "ok", True, True)])
    assert M.blackbox_only_share([a, c], black) == 50.0  # s1 survives a, c, falls to black


def test_ar_and_success_rate():
    r = _records([("a", "ok", True, True), ("b", "ok", False, True), ("c", "ok", False, False), ("d", "ok", False, True)])
    assert M.clean_top1(r) == 75.0 and M.top1(r) == 25.0
    assert M.adversarial_robustness(r) == pytest.approx(100 / 3)
    assert M.attack_success_rate(r) == pytest.approx(200 / 3)


# --------------------------------------------------------------------------- engine


def test_pgd_job_records_and_json(tmp_path):
    res = evaluate("efficientnet_lite0", noise="pgd", store=tmp_path, progress=False)
    rec = res.records
    for col in ("clean_pred", "clean_correct", "attacked", "success", "pert_norm", "pert_linf", "grad_zero", "loss_gain"):
        assert col in rec.columns
    assert (rec["attacked"] == rec["clean_correct"]).all()  # only clean-correct samples are attacked
    assert (rec["success"] == (rec["clean_correct"] & ~rec["correct"])).all()
    assert (rec["pert_norm"] <= 4 / 255 + 1e-6).all()
    assert (rec.loc[~rec["attacked"], "pert_norm"] == 0).all()
    assert (rec.loc[~rec["clean_correct"], "pred"] == rec.loc[~rec["clean_correct"], "clean_pred"]).all()
    j = res.to_json()
    assert j["noise"] == "pgd" and j["noise_config"]["eps"] == 4 / 255
    m = j["metrics"]
    assert m["top1"] <= m["clean_top1"]
    assert m["clean_top1"] == M.top1(evaluate("efficientnet_lite0", store=tmp_path, progress=False).records)
    assert j["checks"]["outputs_are_logits"] and j["checks"]["deterministic_forward"] and j["checks"]["eval_mode"]
    meta = ResultsStore(tmp_path).read_meta(res.key)
    assert meta["config"]["seed"] == 0 and meta["config"]["noise"]["name"] == "pgd"


def test_eps_zero_job_equals_clean_job(tmp_path):
    clean = evaluate("efficientnet_lite0", store=tmp_path, progress=False).records
    zero = evaluate("efficientnet_lite0", noise="pgd:eps=0", store=tmp_path, progress=False).records
    assert (zero["pred"] == clean["pred"]).all() and (zero["pred"] == zero["clean_pred"]).all()
    assert not zero["success"].any()


def test_seed_is_part_of_a_noise_job_key(tmp_path):
    a = evaluate("efficientnet_lite0", noise="pgd:eps=1/255,steps=1", store=tmp_path, progress=False, seed=0)
    b = evaluate("efficientnet_lite0", noise="pgd:eps=1/255,steps=1", store=tmp_path, progress=False, seed=1)
    c = evaluate("efficientnet_lite0", noise="pgd:eps=1/255,steps=1", store=tmp_path, progress=False, seed=0)
    assert a.key != b.key and c.key == a.key and c.reused


def test_interrupted_pgd_job_resumes_to_the_same_records(imagenet_sample, tmp_path):
    """Per-sample seeds: a resumed job's records are those of an uninterrupted run."""
    kw = dict(noise="pgd:eps=0.25/255,steps=3", data=str(imagenet_sample), limit=8, shard_size=4,
              batch_size=4, progress=False, workers=0)
    full = evaluate("efficientnet_lite0", store=tmp_path / "a", **kw)
    store = ResultsStore(tmp_path / "b")
    first = evaluate("efficientnet_lite0", store=store, **kw)
    store.shard_path(first.key, 1).unlink()  # as if killed after the first shard
    meta = store.read_meta(first.key)
    meta["status"] = "interrupted"
    store.write_meta(first.key, meta)
    again = evaluate("efficientnet_lite0", store=store, **kw)
    assert again.key == full.key and not again.reused and again.meta["runs"][-1]["resumed_shards"] == 1
    cols = ["sample_id", "pred", "clean_pred", "correct", "success", "attacked"]
    assert again.records[cols].equals(full.records[cols])
    assert len(again.records) == 8 and again.records["sample_id"].is_unique


@pytest.mark.slow
def test_suite_wcar_matches_a_join_of_its_jobs(imagenet_sample, tmp_path):
    res = evaluate_suite("efficientnet_lite0", str(imagenet_sample), noise="adversarial:budget=small,attacks=fgsm+pgd-linf+mim",
                         limit=6, store=tmp_path, progress=False)
    assert [j.meta["config"]["noise"]["name"] for j in res.jobs] == ["fgsm", "pgd", "mim"]
    recs = [j.records for j in res.jobs]
    by_hand = pd.concat([r.set_index("sample_id")["correct"] for r in recs], axis=1).all(axis=1).mean() * 100
    assert res.metrics["wcar"] == pytest.approx(by_hand)
    assert res.metrics["wcar"] <= min(j.metrics["top1"] for j in res.jobs)
    # every job saw the same clean predictions (one clean pass shared by the suite)
    assert all((r["clean_pred"] == recs[0]["clean_pred"]).all() for r in recs)
    j = res.to_json()
    assert j["metrics"]["top1"] == res.metrics["wcar"] and "clean_top1" in j["metrics"] and len(j["jobs"]) == 3
    again = evaluate_suite("efficientnet_lite0", str(imagenet_sample), noise="adversarial:budget=small,attacks=fgsm+pgd-linf+mim",
                           limit=6, store=tmp_path, progress=False)
    assert all(x.reused for x in again.jobs) and again.metrics == res.metrics


def test_cli_pgd_json(tmp_path):
    from typer.testing import CliRunner

    from robustart.cli import app

    r = CliRunner().invoke(app, ["eval", "--noise", "pgd:eps=1/255,steps=2", "--json", "--store", str(tmp_path)])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["noise"] == "pgd" and not math.isnan(d["metrics"]["clean_top1"]) and d["metrics"]["top1"] <= d["metrics"]["clean_top1"]
    r = CliRunner().invoke(app, ["eval", "--noise", "pgd:eps=1/255,steps=2", "--store", str(tmp_path)])
    assert r.exit_code == 0 and "AR %" in r.stdout and "reused" in r.stdout
    r = CliRunner().invoke(app, ["eval", "--noise", "pgd:epz=1", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "did you mean 'eps'" in r.output
    r = CliRunner().invoke(app, ["noises", "--json"])
    assert r.exit_code == 0 and "autoattack" in json.loads(r.stdout)
