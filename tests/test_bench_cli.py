"""`robustart bench` as users run it: a plan of 2 models x 3 noises on real sample images with
real lite0/lite1 weights; its dry run, status, a rerun that reuses everything, `report --plan`
over exactly its jobs, and its error lines."""

import json

import pandas as pd
import pytest
from typer.testing import CliRunner

from robustart.cli import app

runner = CliRunner()
LIMIT = 4


def _invoke(*args):
    r = runner.invoke(app, [str(a) for a in args])
    return r


def _json(*args) -> dict:
    r = _invoke(*args, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.stdout)


def _metas(store, keys) -> dict:
    return {k: (store / "jobs" / k / "meta.json").read_text() for k in keys}


def test_a_plan_runs_reuses_eval_jobs_and_reports_exactly_its_jobs(tmp_path, imagenet_sample):
    store = tmp_path / "store"
    plan = tmp_path / "plan.toml"
    plan.write_text(f"""
models = ["efficientnet_lite0", "efficientnet_lite1"]
preset = "quick"                       # clean, a small PGD, one corruption
store = "store"

[data]
path = "{imagenet_sample}"
limit = {LIMIT}
""")
    # a job `eval` made before the plan existed
    ev = _json("eval", "--model", "efficientnet_lite1", "--noise", "clean", "--data", imagenet_sample,
               "--limit", LIMIT, "--store", store)

    dry = _json("bench", plan, "--dry-run", "--images-per-second", 100)
    assert dry["jobs"] == 6 and dry["states"] == {"done": 1, "running": 0, "partial": 0, "failed": 0, "pending": 5,
                                                  "total": 6}
    listed = {(j["model"], j["spec"]): j for j in dry["job_list"]}
    assert listed[("efficientnet_lite1", "clean")]["key"] == ev["key"]
    assert listed[("efficientnet_lite1", "clean")]["state"] == "done" and listed[("efficientnet_lite1", "clean")]["todo"] == 0
    assert dry["estimate"]["images"] == 5 * LIMIT
    keys = [j["key"] for j in dry["job_list"]]
    before = _metas(store, [ev["key"]])

    run = _json("bench", plan)
    assert sorted(run["complete"]) == sorted(keys) and run["failed"] == []
    assert _metas(store, [ev["key"]]) == before  # eval's job was reused, not rewritten
    clean = {r["model"]: r for r in run["leaderboard"]["clean"]}
    assert set(clean) == {"efficientnet_lite0", "efficientnet_lite1"}
    assert clean["efficientnet_lite1"]["key"] == ev["key"] and clean["efficientnet_lite1"]["top1"] == ev["metrics"]["top1"]
    assert {r["model"] for r in run["leaderboard"]["wcar"]} == set(clean)
    assert {r["model"] for r in run["leaderboard"]["corruption"]} == set(clean)
    for k in keys:
        meta = json.loads((store / "jobs" / k / "meta.json").read_text())
        assert meta["status"] == "complete" and meta["config"]["dataset"]["n"] == LIMIT

    st = _json("bench", "status", plan)
    assert st["states"]["done"] == 6 and st["states"]["total"] == 6
    assert {r["model"]: r["done"] for r in st["models"]} == {"efficientnet_lite0": 3, "efficientnet_lite1": 3}
    assert {r["spec"]: r["done"] for r in st["noises"]} == {"clean": 2, "pgd:budget=small": 2,
                                                           "corruption:gaussian_noise:3": 2}
    r = _invoke("bench", "status", plan)  # the tables
    assert r.exit_code == 0 and "per model" in r.output and "6 done" in r.output

    metas = _metas(store, keys)
    again = _invoke("bench", plan)  # everything reused: nothing rewritten, the leaderboard again
    assert again.exit_code == 0, again.output
    assert "leaderboard" in again.output and "efficientnet_lite0" in again.output
    assert _metas(store, keys) == metas

    # a job outside the plan in the same store is left out of the plan's report
    other = _json("eval", "--model", "efficientnet_lite0", "--noise", "fgsm:eps=1/255", "--data", imagenet_sample,
                  "--limit", LIMIT, "--store", store)
    rep = _json("report", "--plan", plan, "--out", tmp_path / "report")
    assert rep["jobs"] == 6
    shown = set(pd.read_csv(tmp_path / "report" / "tables" / "provenance.csv")["key"])
    assert shown == set(keys) and other["key"] not in shown


@pytest.mark.parametrize("args, says", [
    (["--models", "efficientnet_lite9", "--noises", "clean"], "Did you mean 'efficientnet_lite2'"),
    (["--models", "efficientnet_lite0", "--preset", "quik"], "Did you mean 'quick'"),
    (["--models", "efficientnet_lite0", "--noises", "clean", "--executor", "rya"], "unknown executor 'rya'"),
    (["--models", "tag:adversarial", "--noises", "clean", "--dry-run"], "Did you mean 'adversarial-training'"),
    (["status", "--models", "efficientnet_lite0"], "no noises"),
    (["--models", "efficientnet_lite0", "--noises", "pgd:foo=1"], "unknown parameter 'foo'"),
])
def test_bench_errors_are_one_error_line(tmp_path, args, says):
    r = _invoke("bench", *args, "--store", tmp_path)
    assert r.exit_code == 2, r.output
    lines = [x for x in r.output.splitlines() if x.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:") and says in lines[0], r.output


def test_bad_plan_file_names_its_line(tmp_path):
    plan = tmp_path / "plan.toml"
    plan.write_text('models = ["efficientnet_lite0"]\npreset = quick\n')
    r = _invoke("bench", plan, "--dry-run")
    assert r.exit_code == 2 and r.output.startswith("error:") and "line 2" in r.output and str(plan) in r.output
    r = _invoke("bench", "status", tmp_path / "nope.toml")
    assert r.exit_code == 2 and "no such file" in r.output


def test_help_shows_the_run_and_status_commands():
    r = _invoke("bench", "--help")
    assert r.exit_code == 0 and "status" in r.output and "--dry-run" in r.output and "PLAN" in r.output
    r = _invoke("bench", "status", "--help")
    assert r.exit_code == 0 and "per model" in r.output and "--models" in r.output
    r = _invoke("bench", "run", "--help")
    assert r.exit_code == 0 and "--executor" in r.output and "--images-per-second" in r.output
