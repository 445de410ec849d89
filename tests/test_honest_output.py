"""Odd input and hostile names, as a new user meets them: nothing dropped or mislabelled silently,
user text never breaks the CLI or the report, untrained forms refused, one `error:` line (exit 2)
for every user error. Real images, the real lite0 weights, the real CLI."""

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robustart.cli import app

runner = CliRunner()
SNAPSHOTS = Path(__file__).parent / "snapshots"


def _eval(*args, store):
    return runner.invoke(app, ["eval", "--store", str(store), "--batch-size", "4", "--workers", "0", *args])


def _one_error(r, *needles):
    """Exit 2, one `error:` line that names the input, no traceback."""
    assert r.exit_code == 2, r.output
    lines = [ln for ln in r.output.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1, r.output
    assert "Traceback" not in r.output and not isinstance(r.exception, (KeyError, RuntimeError)), r.output
    for n in needles:
        assert n in errors[0], (n, errors[0])
    return errors[0]


def _photo(sample: Path, wnid: str) -> Path:
    return next(sample.glob(f"{wnid}_*.JPEG"))


GOLDFISH, TENCH = "n01443537", "n01440764"


# --------------------------------------------------------------------------- 1. labels


def test_class_name_folders_need_a_class_map(imagenet_sample, tmp_path):
    root = tmp_path / "fish"
    for name, wnid in (("goldfish", GOLDFISH), ("tench", TENCH)):
        (root / name).mkdir(parents=True)
        shutil.copy(_photo(imagenet_sample, wnid), root / name / "a.JPEG")
    r = _eval("--data", str(root), store=tmp_path / "st")
    _one_error(r, "not ImageNet wnids", "--classes", "classes.txt")
    assert not (tmp_path / "st" / "jobs").exists()  # nothing scored
    cmap = tmp_path / "map.txt"
    cmap.write_text(f"goldfish {GOLDFISH}\ntench {TENCH}\n")
    r = _eval("--data", str(root), "--classes", str(cmap), "--json", store=tmp_path / "st")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n"] == 2 and d["metrics"]["top1"] == 100.0  # lite0 knows both fish: the labels are ImageNet's
    rec = pd_records(tmp_path / "st", d["key"])
    assert dict(zip(rec["sample_id"], rec["label"])) == {"goldfish/a.JPEG": 1, "tench/a.JPEG": 0}


def test_wnid_folders_with_an_extra_folder_skip_and_report_it(imagenet_sample, tmp_path):
    root = tmp_path / "val"
    (root / GOLDFISH).mkdir(parents=True)
    (root / "extras").mkdir()
    shutil.copy(_photo(imagenet_sample, GOLDFISH), root / GOLDFISH / "a.JPEG")
    shutil.copy(_photo(imagenet_sample, TENCH), root / "extras" / "b.JPEG")
    r = _eval("--data", str(root), "--json", store=tmp_path)
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["n"] == 1 and d["metrics"]["top1"] == 100.0  # ImageNet labels, not positions (goldfish = 1)
    assert d["skipped"]["count"] == 1 and d["skipped"]["first"][0].startswith("extras/: not an ImageNet wnid folder")


def pd_records(store, key):
    from robustart.results.store import ResultsStore

    return ResultsStore(store).read_records(key)


# --------------------------------------------------------------------------- 2. skipped files


def test_skipped_files_are_counted_in_the_cli_json_and_meta(imagenet_sample, tmp_path):
    root = tmp_path / "flat"
    root.mkdir()
    good = _photo(imagenet_sample, GOLDFISH)
    shutil.copy(good, root / good.name)
    shutil.copy(good, root / "n99999999_x.JPEG")
    shutil.copy(good, root / "hammerhead.JPEG")
    (root / "notes.txt").write_text("x")
    os.symlink(root / "loop", root / "loop")
    r = _eval("--data", str(root), store=tmp_path / "st")
    assert r.exit_code == 0, r.output
    assert "4 file(s) in the dataset were skipped" in " ".join(r.output.split())
    r = _eval("--data", str(root), "--json", store=tmp_path / "st")
    d = json.loads(r.stdout)
    assert d["n"] == 1 and d["skipped"]["count"] == 4
    assert d["skipped"]["reasons"] == {"name does not start with an ImageNet wnid": 1, "symbolic link loop": 1,
                                       "not an ImageNet-1k wnid": 1, "not an image file name": 1}
    meta = json.loads((tmp_path / "st" / "jobs" / d["key"] / "meta.json").read_text())
    assert {s["path"]: s["reason"] for s in meta["skipped"]} == {
        "hammerhead.JPEG": "name does not start with an ImageNet wnid", "loop": "symbolic link loop",
        "n99999999_x.JPEG": "not an ImageNet-1k wnid", "notes.txt": "not an image file name"}


# --------------------------------------------------------------------------- 3. untrained forms, labels


def test_untrained_binary_form_is_refused_and_named_when_asked_for(tmp_path):
    r = _eval("--model", "efficientnet_lite0@binary-reactnet", "--limit", "1", store=tmp_path)
    _one_error(r, "python -m robustart.quant.train", "--register", "untrained=yes")
    assert not (tmp_path / "jobs").exists()
    r = _eval("--model", "efficientnet_lite0@binary-bnn:untrained=yes", "--limit", "1", "--json", store=tmp_path)
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model_spec"] == "efficientnet_lite0@binary-bnn:untrained"


def test_form_labels_keep_settings_and_backend_apart():
    from robustart.quant.qconfig import QuantConfig, form_spec
    from robustart.reports.load import _job_row

    def row(q, backend="fake"):
        return _job_row("k", {"config": {"model": {"name": "m", "form": "w8a8", "quant": q.to_dict()},
                                         "backend": backend, "noise": {"name": "clean"}, "dataset": {}}})

    a, b = row(QuantConfig()), row(QuantConfig(calib=32))
    assert a["label"] == "m@w8a8" and b["label"] == "m@w8a8:calib=32"
    assert row(QuantConfig(), "cpu-int8")["label"] == "m@w8a8 (cpu-int8)"
    assert form_spec("binary", {"method": "reactnet"}) == "binary-reactnet"


def test_trained_binary_network_registers_as_a_local_entry(imagenet_sample, tmp_path, _isolated_home):
    out = subprocess.run([sys.executable, "-m", "robustart.quant.train", "--model", "efficientnet_lite0", "--method",
                          "bnn", "--data", str(imagenet_sample), "--limit", "2", "--batch-size", "2", "--steps", "1",
                          "--out", str(tmp_path / "run.pt"), "--register", "lite0-bnn", "--device", "cpu"],
                         capture_output=True, text=True, timeout=600, env={**os.environ})
    assert out.returncode == 0, out.stderr
    assert (_isolated_home / "zoo" / "lite0-bnn.json").is_file()
    r = _eval("--model", "lite0-bnn", "--data", str(imagenet_sample), "--limit", "1", "--json", store=tmp_path / "st")
    assert r.exit_code == 0, r.output
    assert json.loads(r.stdout)["model_spec"] == "lite0-bnn@binary-bnn"


# --------------------------------------------------------------------------- 4. decoders


def test_unavailable_decoders_are_named_with_the_command(monkeypatch, tmp_path):
    from robustart.imagenet_s.decoders import pil_simd
    from robustart.noises import left_out

    monkeypatch.setenv("ROBUSTART_PILLOW_SIMD", str(tmp_path / "nothing-here"))
    lines = left_out("imagenet-s")
    simd = [ln for ln in lines if "pil-simd" in ln]
    assert len(simd) == 1 and "decoder pil-simd" in simd[0] and "resizer pil-simd-" in simd[0]
    assert "robustart imagenet-s setup" in simd[0]
    assert left_out("imagenet-s:decoders=pil,resizers=opencv-area") == []  # chosen by hand: nothing left out
    # without the variable, the active environment's folder is looked in first (where `make` builds it)
    monkeypatch.delenv("ROBUSTART_PILLOW_SIMD")
    dirs = pil_simd.candidate_dirs()
    if sys.prefix != sys.base_prefix:
        assert dirs[0] == Path(sys.prefix) / "pillow-simd"
    assert dirs[-1] == _home() / "pillow-simd"


def _home():
    return Path(os.environ["ROBUSTART_HOME"])


def test_imagenet_s_sweep_output_names_what_is_left_out(imagenet_sample, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUSTART_PILLOW_SIMD", str(tmp_path / "nothing-here"))
    r = _eval("--noise", "imagenet-s:grid=resizers", "--data", str(imagenet_sample), "--limit", "1", "--json",
              store=tmp_path / "st")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert any("pil-simd" in u and "robustart imagenet-s setup" in u for u in d["unavailable"])


# --------------------------------------------------------------------------- 5. markup, emoji


@pytest.mark.parametrize("args,shown", [
    (["--data", "nope[/x]"], "nope[/x]"),
    (["--data", "photos [final]"], "photos [final]"),
    (["--model", "foo[/bar]"], "foo[/bar]"),
    (["--noise", "corruption:fog:9"], "corruption:fog:9"),
])
def test_user_text_is_printed_as_text(tmp_path, args, shown):
    r = _eval(*args, store=tmp_path)
    line = _one_error(r, shown)
    assert "🌫" not in line


# --------------------------------------------------------------------------- 6. errors


def test_user_errors_are_one_line(imagenet_sample, tmp_path):
    photo = _photo(imagenet_sample, GOLDFISH)
    labels = tmp_path / "labels.txt"
    labels.write_text(f"{photo.name} 99999999999\n")
    _one_error(_eval("--data", str(labels), "--data-root", str(imagenet_sample), store=tmp_path), "99999999999")
    labels.write_text(f"{photo.name} 5000\n")
    _one_error(_eval("--data", str(labels), "--data-root", str(imagenet_sample), store=tmp_path), "label 5000",
               "1000 classes")
    _one_error(_eval("--device", "bogus", store=tmp_path), "--device 'bogus'")
    (tmp_path / "afile").write_text("x")
    _one_error(runner.invoke(app, ["report", "--store", str(tmp_path), "--out", str(tmp_path / "afile")]),
               "is a file")


def test_debug_shows_the_traceback(tmp_path):
    r = runner.invoke(app, ["--debug", "eval", "--device", "bogus", "--store", str(tmp_path)])
    assert r.exit_code != 0 and r.exception is not None and "--device" in str(r.exception)


def _local_entry(home: Path, name: str, weights: Path, sha256: str | None, stem: str | None = None) -> Path:
    from robustart.zoo.registry import get_entry

    e = get_entry("efficientnet_lite0")
    (home / "zoo").mkdir(exist_ok=True)
    d = {"name": name, "arch": e.arch, "family": "cnn", "weights": {"file": str(weights), "key_map": "by_order"}}
    if sha256:
        d["weights"]["sha256"] = sha256
    path = home / "zoo" / f"{stem or name}.json"
    path.write_text(json.dumps(d))
    return path


def test_corrupt_and_unpinned_local_checkpoints(tmp_path, _isolated_home):
    from robustart.zoo.registry import get_entry

    real = get_entry("efficientnet_lite0").weights.package_path()
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{\"broken\": tru")
    _local_entry(_isolated_home, "broken", bad, None)
    _one_error(_eval("--model", "broken", "--limit", "1", store=tmp_path / "st"), "not a readable safetensors file")
    # a wrong hash of a local file: nothing to download again
    _local_entry(_isolated_home, "wrong", real, "0" * 64)
    line = _one_error(_eval("--model", "wrong", "--limit", "1", store=tmp_path / "st"), "expected 0000")
    assert "zoo download" not in line and "local file" in line
    # no sha256: loads, marked unverified in zoo info and in the job's meta
    _local_entry(_isolated_home, "unpinned", real, None)
    r = runner.invoke(app, ["zoo", "info", "unpinned", "--format", "tsv"])
    assert r.exit_code == 0 and "sha256\tunverified" in r.stdout
    r = _eval("--model", "unpinned", "--limit", "1", "--json", store=tmp_path / "st")
    assert r.exit_code == 0, r.output
    d = json.loads(r.stdout)
    assert d["weights_verified"] is False
    assert json.loads((tmp_path / "st" / "jobs" / d["key"] / "meta.json").read_text())["weights_verified"] is False


class _Crafted:
    def __reduce__(self):
        return (os.system, ("echo crafted > /dev/null",))


def test_crafted_and_truncated_resume_files_are_refused(tmp_path, fashion_mnist):
    import torch

    crafted = tmp_path / "crafted.pt"
    torch.save({"config": _Crafted()}, crafted)
    out = subprocess.run([sys.executable, "-m", "robustart.quant.train", "--model", "efficientnet_lite0", "--method",
                          "bnn", "--limit", "2", "--steps", "1", "--out", str(crafted), "--device", "cpu"],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 2 and out.stderr.startswith("error:") and "never unpickles" in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    for cmd, state in (("train", "train_state.pt"), ("search", "search_state.pt")):
        d = tmp_path / cmd
        d.mkdir()
        torch.save({"model": _Crafted()}, d / state)
        extra = ["--genotype", "abanditnas-mnist", "-C", "4", "--layers", "2", "--epochs", "1",
                 "--train-limit", "8"] if cmd == "train" else ["--budget", "2", "--train-size", "8",
                                                                                 "--val-size", "8"]
        r = runner.invoke(app, ["nas", cmd, "--out", str(d), *extra])
        _one_error(r, state, "never unpickles")
        (d / state).write_bytes(b"PK\x03\x04 truncated")
        r = runner.invoke(app, ["nas", cmd, "--out", str(d), *extra])
        _one_error(r, state, "damaged or truncated")


def test_resume_files_are_written_atomically(tmp_path):
    from robustart.zoo.weights import load_state, save_state

    path = tmp_path / "state.pt"
    save_state({"a": 1}, path)
    assert load_state(path, "state", ("a",)) == {"a": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]  # no temporary left behind


# --------------------------------------------------------------------------- 5, 7. hostile names, reports

HOSTILE = '[/b] :fog: $\\q$ <script>x</script> "><img onerror=alert(1)>'


def test_hostile_names_in_cli_and_reports(imagenet_sample, tmp_path, _isolated_home):
    from robustart.zoo.registry import get_entry

    real = get_entry("efficientnet_lite0").weights.package_path()
    sha = get_entry("efficientnet_lite0").weights.sha256
    name = "lite" + HOSTILE
    _local_entry(_isolated_home, name, real, sha, stem="hostile")
    data = tmp_path / ("imgs$\\q$ [b] :fog: <script> \"><img onerror=x>")
    sub = data / "[ sub"
    sub.mkdir(parents=True)
    lines = []
    for wnid in (GOLDFISH, TENCH):
        f = f"b] $\\q$ <script> {wnid}.JPEG"
        shutil.copy(_photo(imagenet_sample, wnid), sub / f)
        lines.append(f"[ sub/{f} {wnid}")
    labels = data / "labels <script>.txt"
    labels.write_text("\n".join(lines) + "\n")
    store = tmp_path / "store <script>"
    for model in (str(_isolated_home / "zoo" / "hostile.json"), "efficientnet_lite0"):
        r = _eval("--model", model, "--data", str(labels), store=store)
        assert r.exit_code == 0, r.output
    rows = runner.invoke(app, ["results", "list", "--store", str(store), "--format", "tsv"]).stdout.splitlines()
    assert any(row.split("\t")[2] == name and row.split("\t")[4] == "labels:labels <script>.txt" for row in rows), rows
    key = next(row.split("\t")[0] for row in rows if name in row)
    r = runner.invoke(app, ["results", "show", key, "--store", str(store), "--records", "2", "--format", "tsv"])
    assert r.exit_code == 0 and f"[ sub/b] $\\q$ <script> {GOLDFISH}.JPEG" in r.stdout, r.output
    for args in (["results", "list", "--store", str(store), "--format", "table"], ["zoo", "list", "--format", "table"],
                 ["results", "list", "--store", str(store)], ["zoo", "list"]):
        r = runner.invoke(app, args)
        assert r.exit_code == 0 and r.exception is None, r.output
    assert name in runner.invoke(app, ["zoo", "list", "--format", "tsv"]).stdout
    r = runner.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "rep")])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["report", "--store", str(store), "--out", str(tmp_path / "rep"), "--compare", name,
                            "efficientnet_lite0"])
    assert r.exit_code == 0, r.output
    for page in ("report.html", "compare.html", "summary.md", "compare.md"):
        text = (tmp_path / "rep" / page).read_text()
        assert "<script" not in text and "<img onerror" not in text, page
        assert "&lt;script&gt;" in text, page
    assert "onerror=alert(1)" in (tmp_path / "rep" / "report.html").read_text()  # shown, as text
    assert "store &lt;script&gt;" in (tmp_path / "rep" / "compare.html").read_text()


# --------------------------------------------------------------------------- 8. tables


def test_zoo_list_at_80_columns_matches_the_snapshot(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    out = subprocess.run([sys.executable, "-m", "robustart.cli", "zoo", "list", "--format", "table"],
                         capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "80"})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert max(len(ln) for ln in lines) <= 80
    from robustart.zoo.registry import list_entries

    for e in list_entries():
        assert any(re.search(rf"│ {re.escape(e.name)}\s+│", ln) for ln in lines), e.name  # whole, on one line
    snap = SNAPSHOTS / "zoo_list_80.txt"
    assert out.stdout == snap.read_text()


def test_list_and_show_formats(tmp_path):
    r = _eval("--limit", "2", store=tmp_path)
    assert r.exit_code == 0
    r = runner.invoke(app, ["zoo", "list"])  # piped: TSV, a header then one line per model
    assert r.stdout.splitlines()[0].split("\t")[:2] == ["name", "family"]
    r = runner.invoke(app, ["results", "list", "--store", str(tmp_path), "--format", "json"])
    key = json.loads(r.stdout)[0]["key"]
    r = runner.invoke(app, ["results", "show", key, "--store", str(tmp_path), "--records", "2", "--format", "tsv"])
    header = [ln for ln in r.stdout.splitlines() if ln.startswith("sample_id\t")]
    assert len(header) == 1 and "prob" in header[0].split("\t")
    r = subprocess.run([sys.executable, "-m", "robustart.cli", "results", "show", key, "--store", str(tmp_path),
                        "--records", "2", "--format", "table"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COLUMNS": "80"})
    assert r.returncode == 0 and max(len(ln) for ln in r.stdout.splitlines()) <= 80, r.stdout
    _one_error(runner.invoke(app, ["zoo", "list", "--format", "xml"]), "--format 'xml'")


@pytest.mark.parametrize("args, needles", [
    (["eval", "--limit", "abc"], ["robustart eval", "--limit", "robustart eval --help"]),
    (["eval", "--no-such-option"], ["--no-such-option", "robustart eval --help"]),
    (["zoo", "info"], ["robustart zoo info", "name"]),
    (["no-such-command"], ["no-such-command", "robustart --help"]),
])
def test_usage_errors_are_one_error_line(args, needles):
    """Typer/click's own errors (a bad value, an unknown option or command, a missing argument)
    end like every other user error, not in a boxed usage message."""
    r = runner.invoke(app, args, prog_name="robustart")
    line = _one_error(r, *needles)
    assert "Usage:" not in r.output and "╭" not in r.output, r.output
    assert line.endswith("--help').")


def test_bare_group_still_prints_its_help():
    r = runner.invoke(app, ["zoo"])
    assert "error:" not in r.output and "list" in r.output and "download" in r.output, r.output
    assert runner.invoke(app, ["zoo", "list", "--help"]).exit_code == 0
