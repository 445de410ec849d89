"""The `robustart` command as users run it."""

import json
import subprocess
import sys

import pytest
from typer.testing import CliRunner

from robustart.cli import app

runner = CliRunner()


def _run(*args):
    return subprocess.run([sys.executable, "-m", "robustart.cli", *args], capture_output=True, text=True, timeout=600)


def test_eval_json_is_one_object_on_stdout(tmp_path):
    out = _run("eval", "--model", "efficientnet_lite0", "--json", "--store", str(tmp_path))
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)  # nothing else on stdout
    assert d["model"] == "efficientnet_lite0" and d["noise"] == "clean" and d["dataset"] == "builtin"
    assert d["n"] == 4 and d["n_failed"] == 0
    assert 0 <= d["metrics"]["top1"] <= d["metrics"]["top5"] <= 100
    assert d["metrics"]["top5"] == 100.0  # every built-in photo's label is in lite0's top-5
    assert (tmp_path / "jobs" / d["key"] / "meta.json").is_file()


def test_eval_table_then_results_list_and_show(tmp_path):
    r = runner.invoke(app, ["eval", "--store", str(tmp_path), "--limit", "2"])
    assert r.exit_code == 0, r.output
    assert "top-1" in r.output and "efficientnet_lite0" in r.output
    r = runner.invoke(app, ["results", "list", "--store", str(tmp_path), "--json"])
    jobs = json.loads(r.stdout)
    assert len(jobs) == 1 and jobs[0]["status"] == "complete" and jobs[0]["n"] == 2
    key = jobs[0]["key"]
    r = runner.invoke(app, ["results", "show", key[:6], "--store", str(tmp_path), "--json", "--records", "2"])
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["meta"]["key"] == key and d["metrics"]["n"] == 2 and len(d["records"]) == 2
    r = runner.invoke(app, ["results", "show", "ffffffff", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "no job" in r.output


def test_bad_input_gives_clear_errors(tmp_path):
    r = runner.invoke(app, ["eval", "--model", "resnet5", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "Did you mean" in r.output and "resnet50" in r.output
    r = runner.invoke(app, ["eval", "--noise", "fgsm-nope", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "Unknown noise" in r.output
    r = runner.invoke(app, ["eval", "--data", str(tmp_path / "missing"), "--store", str(tmp_path)])
    assert r.exit_code == 2 and "no such file" in r.output
    r = runner.invoke(app, ["eval", "--model", "resnet50", "--store", str(tmp_path)])
    assert r.exit_code == 2 and "robustart zoo download resnet50" in r.output  # offline, not cached
    r = runner.invoke(app, ["eval", "--device", "cuda:0", "--store", str(tmp_path)])
    if r.exit_code == 2:
        assert "no CUDA device" in r.output


def test_zoo_list_info_download():
    r = runner.invoke(app, ["zoo", "list", "--json"])
    entries = json.loads(r.stdout)
    assert len(entries) >= 40
    e = entries[0]
    for k in ("name", "family", "arch", "weights", "input_size", "crop_pct", "interpolation", "mean",
              "std", "params", "tags", "form"):
        assert k in e
    r = runner.invoke(app, ["zoo", "list", "--family", "transformer", "--json"])
    assert {x["family"] for x in json.loads(r.stdout)} == {"transformer"}
    r = runner.invoke(app, ["zoo", "list", "--tag", "adversarial-training", "--json"])
    assert "inception_v3.tf_adv_in1k" in {x["name"] for x in json.loads(r.stdout)}
    r = runner.invoke(app, ["zoo", "list", "--tag", "no-such-tag"])
    assert r.exit_code == 2 and "unknown tag" in r.output
    r = runner.invoke(app, ["zoo", "list", "--offline", "--json"])
    assert {x["name"] for x in json.loads(r.stdout)} == {f"efficientnet_lite{i}" for i in range(3)}
    r = runner.invoke(app, ["zoo", "list"])
    assert r.exit_code == 0 and "resnet50" in r.output
    r = runner.invoke(app, ["zoo", "info", "resnet50", "--json"])
    d = json.loads(r.stdout)
    assert d["weights"]["url"].endswith("resnet50-0676ba61.pth") and d["weights"]["sha256"] == "0676ba61"
    assert d["available_offline"] is False
    r = runner.invoke(app, ["zoo", "info", "efficientnet_lite0"])
    assert r.exit_code == 0 and "available offline" in r.output
    r = runner.invoke(app, ["zoo", "download", "efficientnet_lite0"])
    assert r.exit_code == 0 and "ok" in r.output
    r = runner.invoke(app, ["zoo", "download", "vit_small_patch16_224"])  # offline in tests
    assert r.exit_code == 1 and "robustart zoo download vit_small_patch16_224" in r.output
    r = runner.invoke(app, ["zoo", "download"])
    assert r.exit_code == 2


@pytest.mark.parametrize("cmd", [["--help"], ["eval", "--help"], ["zoo", "list", "--help"], ["results", "show", "--help"]])
def test_help(cmd):
    r = runner.invoke(app, cmd)
    assert r.exit_code == 0 and "Usage" in r.output
