"""`robustart report` from a real small run: efficientnet_lite0 (and lite1, for comparisons) on
8 images of the ImageNet sample, clean, two attacks and two corruption cells. Every number the
report shows is checked against the metric functions over the same job's records, the page is
opened in headless Chromium (no console errors, every figure a decoded non-blank image, a
non-blank screenshot), and filters, --compare and bad input are exercised through the CLI."""

from __future__ import annotations

import base64
import io
import json
import math
import re
import shutil
import time

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from robustart.cli import app
from robustart.noises.corruptions import metrics as CM
from robustart.reports.browser import find_chromium
from robustart.results import metrics as M
from robustart.results.store import ResultsStore

N = 8
# skip before the module's runs are made, for developers without Chromium (CI installs it in .ci/run)
needs_chromium = pytest.mark.skipif(find_chromium() is None,
                                    reason="no chromium binary (Debian: apt-get install chromium; or set ROBUSTART_CHROMIUM)")
LITE0 = ["clean", "pgd:eps=1/255,steps=2", "fgsm:eps=1/255", "corruption:brightness:3", "corruption:contrast:2"]
LITE1 = ["clean", "corruption:brightness:3"]


@pytest.fixture(scope="module")
def store(imagenet_sample, tmp_path_factory) -> ResultsStore:
    """One real store for the module: the runs take most of this file's time."""
    import robustart

    root = tmp_path_factory.mktemp("report-store")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("ROBUSTART_HOME", str(tmp_path_factory.mktemp("report-home")))
        mp.setenv("ROBUSTART_OFFLINE", "1")
        for model, noises in (("efficientnet_lite0", LITE0), ("efficientnet_lite1", LITE1)):
            # one suite per model: the model is built once and the clean pass shared
            robustart.evaluate_suite(model, imagenet_sample, noise=noises, limit=N, store=root, progress=False,
                                     workers=0, batch_size=N)
    return ResultsStore(root)


@pytest.fixture(scope="module")
def report(store, tmp_path_factory):
    from robustart.reports import build_report

    return build_report(store, tmp_path_factory.mktemp("report") / "out")


def _jobs(store: ResultsStore) -> dict:
    """(model, noise label) -> key."""
    from robustart.reports.load import noise_label

    out = {}
    for k in store.keys():
        cfg = store.read_meta(k)["config"]
        out[(cfg["model"]["name"], noise_label(cfg["noise"]))] = k
    return out


def _close(a, b):
    return math.isclose(float(a), float(b), rel_tol=0, abs_tol=1e-9)


# --------------------------------------------------------------------------- numbers


def test_every_leaderboard_number_is_recomputed_from_its_records(store, report):
    t = report.tables
    assert len(t["clean"]) == 2 and len(t["adversarial"]) == 2 and len(t["corruption_cells"]) == 3
    for _, row in t["clean"].iterrows():
        assert _close(row["top1"], M.top1(store.read_records(row["key"])))
    for _, row in t["adversarial"].iterrows():
        rec = store.read_records(row["key"])
        assert _close(row["robust_top1"], M.top1(rec))
        assert _close(row["clean_top1"], M.clean_top1(rec))
        assert _close(row["ar"], M.adversarial_robustness(rec))
        assert row["n"] == N
    for _, row in t["corruption_cells"].iterrows():
        assert _close(row["error"], 100.0 * CM.error_rate(store.read_records(row["key"])))
    # the corruption heatmap's table is the one the corruption family's metrics take
    lite0 = t["corruption_cells"][t["corruption_cells"]["model"] == "efficientnet_lite0"]
    from robustart.reports.tables import error_table

    expected = CM.error_table([(r["corruption"], r["severity"], store.read_records(r["key"]))
                               for _, r in lite0.iterrows()])
    pd.testing.assert_frame_equal(error_table(lite0), expected, check_names=False)


def test_suite_metrics_equal_the_families_own_summaries(store, report):
    """WCAR (a join on sample_id) and the corruption numbers equal what the noise families'
    `summarize` computes from the same jobs."""
    from robustart.engine.evaluate import JobResult
    from robustart.noises import summarize

    jobs = _jobs(store)
    res = lambda k: JobResult(k, store, store.read_meta(k))  # noqa: E731
    adv = [jobs[("efficientnet_lite0", "pgd linf 1/255")], jobs[("efficientnet_lite0", "fgsm linf 1/255")]]
    wc = report.tables["wcar"]
    row = wc[(wc["model"] == "efficientnet_lite0")].iloc[0]
    assert row["n_attacks"] == 2 and row["keys"] == " ".join(sorted(adv))
    assert _close(row["wcar"], summarize([res(k) for k in adv])["wcar"])
    assert _close(row["wcar"], M.wcar([store.read_records(k) for k in adv]))
    assert list(wc["model"]) == ["efficientnet_lite0"]  # lite1 ran no attack

    corr = [jobs[("efficientnet_lite0", "corruption brightness 3")], jobs[("efficientnet_lite0", "corruption contrast 2")]]
    fam = summarize([res(k) for k in corr])
    c = report.tables["corruption"].set_index("model").loc["efficientnet_lite0"]
    assert c["cells"] == 2 and math.isnan(c["mce"]) and fam["mce"] is None  # mCE needs 15 x 5 cells
    assert round(c["mean_corruption_error"], 4) == fam["mean_corruption_error"]
    assert round(c["clean_error"], 4) == fam["clean_error"]


def test_tables_written_as_csv_and_parquet(report):
    for name in ("clean", "adversarial", "wcar", "corruption", "corruption_cells", "imagenet_s", "precision",
                 "provenance"):
        csv = pd.read_csv(report.files[f"{name}.csv"])
        pq = pd.read_parquet(report.files[f"{name}.parquet"])
        assert list(csv.columns) == list(pq.columns) and len(csv) == len(pq) == len(report.tables[name])
    prov = pd.read_parquet(report.files["provenance.parquet"])
    shown = set(report.tables["clean"]["key"]) | set(report.tables["adversarial"]["key"]) | set(
        report.tables["corruption_cells"]["key"])
    assert shown == set(prov["key"])  # every number shown has its job in the provenance table
    assert prov["weights"].str.len().eq(16).all() and prov["torch"].notna().all() and prov["finished"].notna().all()
    md = report.files["summary.md"].read_text()
    assert "## Adversarial robustness" in md and "efficientnet_lite0" in md and "No results." in md


# --------------------------------------------------------------------------- the page


def _png_images(html: str) -> list[bytes]:
    srcs = re.findall(r'<img [^>]*src="([^"]+)"', html)
    assert all(s.startswith("data:image/png;base64,") for s in srcs), [s[:40] for s in srcs]
    return [base64.b64decode(s.split(",", 1)[1]) for s in srcs]


def _nonblank(png: bytes, min_colors: int = 8) -> bool:
    from PIL import Image

    im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    return im.shape[0] > 50 and im.shape[1] > 50 and len(np.unique(im.reshape(-1, 3), axis=0)) >= min_colors \
        and float(im.std()) > 5


def test_html_is_self_contained_and_every_figure_is_a_real_image(report):
    html = report.files["report.html"].read_text()
    assert not re.search(r'(src|href)\s*=\s*"(https?:)?//', html)  # nothing to fetch
    assert "<script" not in html
    pngs = _png_images(html)
    assert len(pngs) == len(report.figures) >= 3  # clean bars, scatter, corruption heatmap
    assert all(_nonblank(p) for p in pngs)
    for sid in ("imagenet-s", "precision", "bits"):  # no results yet: the section says so
        sec = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S).group(1)
        assert 'class="empty">No results.' in sec and "<img" not in sec
    adv = re.search(r'<section id="adversarial">(.*?)</section>', html, re.S).group(1)
    assert "No results" not in adv and "efficientnet_lite0" in adv


@needs_chromium
def test_report_in_headless_chromium(report, tmp_path):
    from PIL import Image

    from robustart.reports.browser import check_page

    check = check_page(report.files["report.html"], tmp_path / "report.png")
    assert check.errors == [], check.errors
    assert check.page["title"] == "robustart report"
    assert check.page["resources"] == []  # the page loaded nothing besides itself
    assert {"clean", "adversarial", "corruption", "imagenet-s", "provenance"} <= set(check.page["sections"])
    assert set(check.page["empty"]) == {"imagenet-s", "precision", "bits"}
    assert len(check.images) == len(report.figures)
    for img in check.images:  # decoded by the browser, laid out, and not a blank canvas
        assert img["complete"] and img["width"] > 100 and img["height"] > 100, img
        assert img["shown_width"] > 100 and img["colors"] >= 8, img
    shot = Image.open(check.screenshot)
    assert shot.size[0] == 1280 and shot.size[1] > 2000
    assert _nonblank(check.screenshot.read_bytes(), min_colors=50)


@needs_chromium
def test_browser_check_reports_what_goes_wrong(tmp_path):
    """The check above would see a broken page: a console error, an exception, a missing image."""
    from robustart.reports.browser import check_page

    page = tmp_path / "bad.html"
    page.write_text('<html><body><img src="missing.png"><script>console.error("boom"); nope();</script></body></html>')
    check = check_page(page)
    text = " | ".join(check.errors)
    assert "console.error: boom" in text and "nope is not defined" in text and "missing.png" in text
    assert check.images[0]["width"] == 0


# --------------------------------------------------------------------------- CLI


def test_cli_filters_by_model_and_noise(store, tmp_path):
    r = CliRunner().invoke(app, ["report", "--store", str(store.root), "--out", str(tmp_path / "a"),
                                 "--models", "efficientnet_lite1", "--json"])
    assert r.exit_code == 0, r.output
    files = json.loads(r.stdout)["files"]
    clean = pd.read_csv(files["clean.csv"])
    assert list(clean["model"]) == ["efficientnet_lite1"]
    assert set(pd.read_csv(files["provenance.csv"])["model"]) == {"efficientnet_lite1"}

    r = CliRunner().invoke(app, ["report", "--store", str(store.root), "--out", str(tmp_path / "b"),
                                 "--noises", "clean,corruption"])
    assert r.exit_code == 0, r.output
    html = (tmp_path / "b" / "report.html").read_text()
    adv = re.search(r'<section id="adversarial">(.*?)</section>', html, re.S).group(1)
    assert "No results." in adv
    assert len(pd.read_csv(tmp_path / "b" / "tables" / "corruption_cells.csv")) == 3

    # no clean job selected: clean top-1 comes from the clean pass the attack jobs recorded
    r = CliRunner().invoke(app, ["report", "--store", str(store.root), "--out", str(tmp_path / "c"),
                                 "--noises", "pgd", "--json"])
    assert r.exit_code == 0, r.output
    clean = pd.read_csv(json.loads(r.stdout)["files"]["clean.csv"])
    pgd = _jobs(store)[("efficientnet_lite0", "pgd linf 1/255")]
    assert list(clean["source"]) == ["clean pass of noise jobs"] and clean["key"][0] == pgd
    assert _close(clean["top1"][0], M.clean_top1(store.read_records(pgd)))


def test_cli_compare_two_models(store, tmp_path):
    r = CliRunner().invoke(app, ["report", "--store", str(store.root), "--out", str(tmp_path),
                                 "--compare", "efficientnet_lite0", "efficientnet_lite1", "--json"])
    assert r.exit_code == 0, r.output
    pairs = pd.DataFrame(json.loads(r.stdout)["pairs"])
    assert sorted(pairs["noise"]) == ["clean", "corruption brightness 3"]  # what both ran on the same samples
    for _, p in pairs.iterrows():
        a, b = store.read_records(p["key_a"]), store.read_records(p["key_b"])
        assert _close(p["top1_a"], M.top1(a)) and _close(p["top1_b"], M.top1(b))
        assert p["both_correct"] + p["only_a"] == a["correct"].sum()
        assert p["both_correct"] + p["only_b"] == b["correct"].sum()
        assert _close(p["agreement"], 100.0 * (a["pred"].to_numpy() == b["pred"].to_numpy()).mean())
    assert _nonblank(_png_images((tmp_path / "compare.html").read_text())[0])

    r = CliRunner().invoke(app, ["report", "--store", str(store.root), "--out", str(tmp_path),
                                 "--compare", "efficientnet_lite0", "resnet50"])
    assert r.exit_code == 2
    assert "resnet50" in r.output and "efficientnet_lite0, efficientnet_lite1" in r.output


def test_cli_empty_store_says_how_to_make_results(tmp_path):
    r = CliRunner().invoke(app, ["report", "--store", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "holds no jobs" in r.output and "robustart eval" in r.output
    assert not (tmp_path / "o" / "report.html").exists()


# --------------------------------------------------------------------------- system noise, forms


def _fake_job(store: ResultsStore, src_key: str, key: str, model: dict | None = None, noise: dict | None = None):
    """A job of a kind the zoo cannot make yet (a quantized form), made of a real job's records
    under a new config, so the report's code for forms runs on real records."""
    meta = json.loads(store.meta_path(src_key).read_text())
    if model:
        meta["config"]["model"].update(model)
    if noise:
        meta["config"]["noise"] = noise
    meta["key"] = key
    store.write_meta(key, meta)
    store.records_dir(key).mkdir(parents=True)
    for p in store.records_dir(src_key).glob("shard-*.parquet"):
        shutil.copy(p, store.records_dir(key) / p.name)


def test_imagenet_s_precision_and_bit_width_sections(store, imagenet_sample, tmp_path, monkeypatch):
    """Real ImageNet-S cells and a precision variant on the same 8 images, plus a stand-in w8a8
    form: the sections fill, their numbers equal the system-noise family's summary."""
    import robustart
    from robustart.engine.evaluate import JobResult
    from robustart.noises import summarize
    from robustart.reports import build_report

    st = ResultsStore(tmp_path / "store")
    shutil.copytree(store.root, st.root)
    suite = robustart.evaluate_suite(
        "efficientnet_lite0", imagenet_sample, limit=4, store=st, progress=False, workers=0, batch_size=4,
        noise=["imagenet-s:decoder=opencv,resize=opencv-linear", "imagenet-s:decoder=pil,resize=pil-bilinear",
               "precision:bf16"])
    jobs = _jobs(st)
    lite0_arch = st.read_meta(jobs[("efficientnet_lite0", "clean")])["config"]["model"]["arch"]
    # lite1's clean records as a "w8a8 form" of lite0: same arch, same samples
    _fake_job(st, jobs[("efficientnet_lite1", "clean")], "q" + "0" * 15,
              model={"name": "efficientnet_lite0", "arch": lite0_arch, "form": "w8a8"})

    rep = build_report(st, tmp_path / "out")
    fam = summarize([JobResult(j.key, st, st.read_meta(j.key)) for j in suite.jobs])
    s = rep.tables["imagenet_s"].iloc[0]
    assert s["cells"] == 2 and s["geometry"] == "eval"
    for ours, theirs in [("reference_top1", "imagenet_s_reference_top1"), ("mean_top1", "imagenet_s_mean_top1"),
                         ("std_top1", "imagenet_s_std_top1"), ("worst_top1", "imagenet_s_worst_top1"),
                         ("range_top1", "imagenet_s_range_top1"), ("any_flip", "imagenet_s_any_flip")]:
        assert _close(s[ours], fam[theirs]), ours
    cells = rep.tables["imagenet_s_cells"].set_index("cell")
    for cell, v in fam["imagenet_s_flip_rate"].items():
        assert _close(cells.loc[cell, "flip_rate"], v)
    prec = rep.tables["precision"].set_index("variant")
    assert _close(prec.loc["bf16", "top1"], fam["precision_top1"]["bf16"])
    assert _close(prec.loc["bf16", "flip_rate"], fam["precision_flip_rate"]["bf16"])
    a = st.read_records(jobs[("efficientnet_lite1", "clean")])
    b = st.read_records(jobs[("efficientnet_lite0", "clean")])
    assert prec.loc["w8a8", "model"] == "efficientnet_lite0@w8a8"
    assert _close(prec.loc["w8a8", "flip_rate"], 100.0 * (a["pred"].to_numpy() != b["pred"].to_numpy()).mean())
    assert set(rep.tables["bit_curves"]["bits"]) == {8.0, 32.0}
    assert {"imagenet_s_heatmap", "bit_curves"} <= set(rep.figures)
    html = rep.files["report.html"].read_text()
    for sid in ("imagenet-s", "precision", "bits"):
        sec = re.search(rf'<section id="{sid}">(.*?)</section>', html, re.S).group(1)
        assert "No results" not in sec
    assert all(_nonblank(p) for p in _png_images(html))

    # two forms of one model: the bare name is its fp form
    from robustart.reports import compare

    c = compare(st, "efficientnet_lite0", "efficientnet_lite0@w8a8", tmp_path / "cmp")
    assert (c.a, c.b) == ("efficientnet_lite0", "efficientnet_lite0@w8a8")
    row = c.pairs.set_index("noise").loc["clean"]
    assert _close(row["agreement"], 100.0 - prec.loc["w8a8", "flip_rate"])


# --------------------------------------------------------------------------- scale


def test_large_store_reads_in_one_scan_and_stays_fast(store, tmp_path):
    """400 jobs x 1000 records (copies of real shards under distinct keys): reading and every
    table take seconds, with no per-record Python loop."""
    from robustart.reports import load as L
    from robustart.reports import tables as T

    st = ResultsStore(tmp_path / "big")
    src = _jobs(store)[("efficientnet_lite0", "pgd linf 1/255")]
    rec = store.read_records(src)
    big = pd.concat([rec.assign(sample_id=rec["sample_id"] + f"#{i}") for i in range(1000 // N)], ignore_index=True)
    meta = store.read_meta(src)
    for j in range(400):
        key = f"{j:016x}"
        m = json.loads(json.dumps(meta))
        m["config"]["noise"]["eps"] = (j + 1) / 255 / 100  # 400 distinct attack jobs
        m["config"]["model"]["name"] = f"model{j % 20}"
        st.write_meta(key, m)
        st.write_shard(key, 0, big)
        st.seal(key)  # records written by hand: their shard list makes the job complete
    t0 = time.perf_counter()
    data = L.load(st)
    tables = T.build_tables(data.jobs, data.records)
    took = time.perf_counter() - t0
    assert len(data.records) == 400 * len(big) and len(tables["adversarial"]) == 400
    assert _close(tables["adversarial"]["robust_top1"].iloc[0], M.top1(big))
    assert took < 30, f"load + tables took {took:.1f} s for 400 jobs"


def test_low_bit_methods_are_labelled_and_get_their_own_curves():
    import pandas as pd

    from robustart.reports.load import bit_width, model_label, quant_method
    from robustart.reports.tables import bit_curves

    assert quant_method("w4a4", {"calib_data": "dsg"}) == "dsg"
    assert quant_method("w4a4", {"method": "apq", "calib_data": "zeroq"}) == "apq+zeroq"
    assert quant_method("w4a4", {"calib_data": "/data/imagenet"}) == ""
    assert quant_method("binary", {"method": "irnet"}) == "binary-irnet"
    assert quant_method("bwta", {"form": "bwta"}) == "bwta" and bit_width("bwta", "fp32") == 1.0
    assert model_label("m", "w4a4", "fp32", "dsg") == "m@w4a4+dsg"
    assert model_label("m", "w4a4", "fp32", "") == "m@w4a4" and model_label("m", "bwta", "fp32", "bwta") == "m@bwta"
    pj = pd.DataFrame({
        "label": ["m", "m@w4a4", "m@w4a4+dsg", "m@bwta"], "arch": ["a"] * 4, "bits": [32.0, 4.0, 4.0, 1.0],
        "method": ["", "", "dsg", "bwta"], "section": ["clean"] * 4, "top1": [90.0, 50.0, 40.0, 20.0]})
    curves = bit_curves(pj, pd.DataFrame(columns=["model", "kind", "robust"]))
    got = {a: dict(zip(g["bits"], g["value"])) for a, g in curves.groupby("arch")}
    assert got == {"a": {32.0: 90.0, 4.0: 50.0}, "a [dsg]": {32.0: 90.0, 4.0: 40.0}, "a [bwta]": {32.0: 90.0, 1.0: 20.0}}
