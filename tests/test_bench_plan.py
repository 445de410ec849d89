"""Benchmark plans: selectors, presets, plan files, offline keys, reuse of `eval` jobs, cost and
the dry run over the whole zoo."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from robustart.bench.plan import PlanError, load_plan
from robustart.bench.presets import BENCH_PRESETS, preset_noises
from robustart.bench.select import SelectorError, select_models, split_list
from robustart.errors import RobustartError
from robustart.noises import expand_noise
from robustart.zoo import registry as R
from robustart.zoo import weights as W
from robustart.zoo.registry import get_entry, list_entries

LITES = ["efficientnet_lite0", "efficientnet_lite1"]


def _names(selected):
    return [s.entry.spec for s in selected]


# --------------------------------------------------------------------------- selectors


def test_selectors_names_forms_families_tags_globs():
    assert _names(select_models(["efficientnet_lite0"])) == ["efficientnet_lite0"]
    assert _names(select_models("efficientnet_lite0@w8a8")) == ["efficientnet_lite0@w8a8"]
    assert _names(select_models(["efficientnet_lite*"])) == ["efficientnet_lite0", "efficientnet_lite1",
                                                           "efficientnet_lite2"]
    assert _names(select_models(["family:transformer"])) == [e.name for e in list_entries(family="transformer")]
    adv = _names(select_models(["tag:adversarial-training"]))
    assert adv == [e.name for e in list_entries() if "adversarial-training" in e.tags] and len(adv) >= 2
    assert "inception_v3.tf_adv_in1k" in adv and "resnet50" not in adv
    # a group in a form, each entry once, in the order given
    assert _names(select_models(["efficientnet_lite1", "efficientnet_lite*@w8a8", "efficientnet_lite1"])) == [
        "efficientnet_lite1", "efficientnet_lite0@w8a8", "efficientnet_lite1@w8a8", "efficientnet_lite2@w8a8"]
    assert len(select_models(["*"])) == len(list_entries())
    # a named entry is `named`; entries of a group are not (those may be left out of a plan)
    sel = select_models(["efficientnet_lite0", "family:mixer"])
    assert sel[0].named and not any(s.named for s in sel[1:])
    # commas separate selectors, but stay inside a form's settings
    assert split_list(["a,b", "resnet18@w4a4:observer=mse,recon=on", "c"]) == [
        "a", "b", "resnet18@w4a4:observer=mse,recon=on", "c"]
    assert split_list("clean,pgd:eps=1/255,steps=20,corruption:fog:3") == [
        "clean", "pgd:eps=1/255,steps=20", "corruption:fog:3"]


@pytest.mark.parametrize("sel, says", [
    ("efficientnet_lite9", "Did you mean 'efficientnet_lite2'"),
    ("family:transfomer", "Did you mean 'transformer'"),
    ("tag:adversarial", "Did you mean 'adversarial-training'"),
    ("nothing_like_it*", "matches no zoo entry"),
])
def test_unknown_selectors_name_themselves(sel, says):
    with pytest.raises(RobustartError) as e:
        select_models([sel])
    assert sel.split("*")[0].split(":")[-1] in str(e.value) and says in str(e.value)
    with pytest.raises(SelectorError, match="no models"):
        select_models([])


# --------------------------------------------------------------------------- presets


def test_presets_are_registered_and_expand_to_the_protocol():
    assert {"quick", "robustart"} <= set(BENCH_PRESETS.names())
    quick = preset_noises("quick")
    assert [c["name"] for s in quick for c in expand_noise(s)] == ["clean", "pgd", "corruption"]

    cpu = [c for s in preset_noises("robustart", gpu=False) for c in expand_noise(s)]
    attacks = [c for c in cpu if c.get("budget")]
    assert len(attacks) == 18  # fgsm, pgd, mim linf; pgd, cw l2; pgd l1 at three budgets
    assert {(c["name"], c["norm"]) for c in attacks} == {("fgsm", "linf"), ("pgd", "linf"), ("mim", "linf"),
                                                         ("pgd", "l2"), ("cw", "l2"), ("pgd", "l1")}
    assert {c["budget"] for c in attacks} == {"small", "mid", "large"}
    cells = {(c["corruption"], c["severity"]) for c in cpu if c["name"] == "corruption"}
    assert len(cells) == 19 * 5
    assert sum(c["name"] == "imagenet-s" for c in cpu) >= 20  # the sweeps of what runs here
    prec = {c["variant"] for c in cpu if c["name"] == "precision"}
    assert prec == {"fp32", "fp16", "bf16", "channels_last"}  # CUDA-only variants only with a GPU
    gpu = {c["variant"] for s in preset_noises("robustart", gpu=True) for c in expand_noise(s)
           if c["name"] == "precision"}
    assert gpu == prec | {"tf32", "cudnn-benchmark", "cpu"}
    with pytest.raises(RobustartError, match="Did you mean 'quick'"):
        preset_noises("quik")


# --------------------------------------------------------------------------- plan files


def test_plan_file_and_inline_options(tmp_path, imagenet_sample):
    (tmp_path / "p").mkdir()
    plan_file = tmp_path / "p" / "study.toml"
    plan_file.write_text(f"""
models = ["efficientnet_lite*"]
preset = "quick"
noises = ["fgsm:eps=1/255"]
store = "results"          # relative to this file
seed = 3
shard_size = 2

[data]
path = "{imagenet_sample}"
limit = 5

[executor]
name = "local"
retries = 4
partition = "gpu"
""")
    p = load_plan(plan_file, offline=True)
    assert [e.name for e in p.models] == ["efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2"]
    assert p.noises == ["clean", "pgd:budget=small", "corruption:gaussian_noise:3", "fgsm:eps=1/255"]
    assert p.store.root == tmp_path / "p" / "results"
    assert p.data["n"] == 5 and p.n_jobs == 12 == len(p.jobs)
    assert {j.seed for j in p.jobs} == {3} and {j.shard_size for j in p.jobs} == {2}
    assert p.executor.retries == 4 and p.executor.options == {"partition": "gpu"}
    # inline options replace the file's
    q = load_plan(plan_file, models=["efficientnet_lite0"], noises=["clean"], limit=2, offline=True)
    assert [e.name for e in q.models] == ["efficientnet_lite0"] and q.data["n"] == 2
    assert q.noises == ["clean", "pgd:budget=small", "corruption:gaussian_noise:3"]  # the preset's, and clean once
    assert len(q.jobs) == 3


@pytest.mark.parametrize("text, says", [
    ('models = ["efficientnet_lite0"]\nnoises = clean\n', "line 2"),          # TOML syntax: its line
    ('modles = ["efficientnet_lite0"]\n', "Did you mean 'models'"),
    ('models = 3\n', "models must be a string or a list"),
    ('models = ["efficientnet_lite0"]\nnoises = ["clean"]\n[data]\nlimmit = 2\n', "Did you mean 'limit'"),
    ('models = ["efficientnet_lite0"]\nnoises = ["clean"]\nlimit = 0\n', "limit must be a whole number >= 1"),
    ('models = ["efficientnet_lite0"]\n', "no noises"),
    ('noises = ["clean"]\n', "no models"),
    ('models = ["efficientnet_lite0"]\nnoises = ["clean"]\n[executor]\nname = "rya"\n', "unknown executor 'rya'"),
])
def test_bad_plan_files_are_one_clear_error(tmp_path, text, says):
    f = tmp_path / "plan.toml"
    f.write_text(text)
    with pytest.raises(RobustartError) as e:
        load_plan(f, offline=True)
    assert says in str(e.value)
    with pytest.raises(PlanError, match="no such file"):
        load_plan(tmp_path / "missing.toml")


# --------------------------------------------------------------------------- keys


def test_offline_keys_are_the_online_keys(tmp_path, imagenet_sample, monkeypatch):
    """Pinned sha256 (lite0's package), a hub checkpoint in the cache (named by its sha256, as the
    hub's LFS blobs are) and a local file without a pin (hashed): the keys a plan makes without
    fetching are the ones it makes fetching (the engine hashes the file)."""
    lite0 = get_entry("efficientnet_lite0")
    ckpt = lite0.weights.package_path()
    sha = W.file_sha256(ckpt)
    # a hub entry with the checkpoint in the cache, laid out as huggingface_hub lays it out
    cache = tmp_path / "weights"
    monkeypatch.setenv("ROBUSTART_CACHE", str(cache))
    repo = W.hf_cache_dir(cache) / "models--timm--tf_efficientnet_lite0.lite-test"
    (repo / "blobs").mkdir(parents=True)
    shutil.copy(ckpt, repo / "blobs" / sha)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    (repo / "snapshots" / ("0" * 40)).mkdir(parents=True)
    os.symlink(f"../../blobs/{sha}", repo / "snapshots" / ("0" * 40) / "lite0.pth")
    hub = R.ModelEntry(name="lite0-hub-test", arch=lite0.arch, family="cnn", mean=lite0.mean, std=lite0.std,
                       weights=R.WeightSource(hf_hub_id="timm/tf_efficientnet_lite0.lite-test",
                                              hf_filename="lite0.pth", key_map="by_order"))
    # a local entry (as `robustart nas train` writes) that pins no sha256
    local = tmp_path / "home-zoo"
    local.mkdir()
    (local / "lite0-local-test.json").write_text(json.dumps({
        "name": "lite0-local-test", "arch": lite0.arch, "family": "cnn", "mean": list(lite0.mean),
        "std": list(lite0.std), "weights": {"file": str(ckpt), "key_map": "by_order"}}))
    R.register(hub)
    try:
        kw = dict(models=["efficientnet_lite0", "lite0-hub-test", str(local / "lite0-local-test.json")],
                  noises=["clean", "pgd:budget=small"], data=str(imagenet_sample), limit=3,
                  store=str(tmp_path / "s"))
        off = load_plan(**kw, offline=True)
        assert not off.unkeyed and len(off.jobs) == 6
        on = load_plan(**kw)
        assert on.keys == off.keys
        assert [j.config for j in on.jobs] == [j.config for j in off.jobs]
        assert {j.weights[1] for j in on.jobs} == {sha}
        # two models with one checkpoint, but other entries: other keys
        assert len(set(on.keys)) == 6
    finally:
        R.unregister("lite0-hub-test")


def test_a_model_without_its_checkpoint_is_listed_not_fetched(tmp_path, imagenet_sample):
    p = load_plan(models=["efficientnet_lite0", "resnet50"], noises=["clean", "fgsm"], data=str(imagenet_sample),
                  limit=2, store=str(tmp_path), offline=True)
    assert len(p.jobs) == 2 and {j.entry.name for j in p.jobs} == {"efficientnet_lite0"}
    assert [(u.entry.name, u.noise["name"]) for u in p.unkeyed] == [("resnet50", "clean"), ("resnet50", "fgsm")]
    assert "weights not fetched" in p.unkeyed[0].reason and p.n_jobs == 4
    with pytest.raises(RobustartError, match="robustart zoo download resnet50"):  # a run fetches: offline here
        load_plan(models=["resnet50"], noises=["clean"], data=str(imagenet_sample), limit=2, store=str(tmp_path))


def test_eval_jobs_count_toward_a_plan(tmp_path, imagenet_sample):
    """`robustart eval` and a plan make the same keys: what eval stored is done in the plan."""
    from robustart.bench.status import job_states, totals
    from robustart.engine.evaluate import evaluate

    store = tmp_path / "store"
    res = evaluate("efficientnet_lite1", str(imagenet_sample), noise="clean", limit=3, store=store, progress=False)
    p = load_plan(models=LITES, noises=["clean", "fgsm:eps=1/255"], data=str(imagenet_sample), limit=3,
                  store=str(store), offline=True)
    states = {(s.model, s.noise): s.state for s in job_states(p)}
    assert states == {("efficientnet_lite0", "clean"): "pending", ("efficientnet_lite0", "fgsm linf 1/255"): "pending",
                      ("efficientnet_lite1", "clean"): "done", ("efficientnet_lite1", "fgsm linf 1/255"): "pending"}
    assert res.key in p.keys and totals(job_states(p))["done"] == 1


# --------------------------------------------------------------------------- cost


def test_cost_counts_passes_and_times_the_architecture(tmp_path, imagenet_sample):
    from robustart.bench.cost import estimate

    p = load_plan(models=["efficientnet_lite0"], noises=["clean", "pgd:eps=1/255,steps=4,restarts=2", "fgsm"],
                  data=str(imagenet_sample), limit=5, store=str(tmp_path), offline=True)
    est = estimate(p, images_per_second=10.0)
    assert [(j.forward, j.backward) for j in est.jobs] == [(1, 0), (2 + 8, 8), (3, 1)]
    assert est.images == 15 and est.forward_passes == 5 * (1 + 10 + 3) and est.backward_passes == 5 * 9
    # given rate: a forward 0.1 s per image, a backward two forwards
    assert est.seconds == pytest.approx(5 * (14 * 0.1 + 9 * 0.2))
    timed = estimate(p, batch_size=2, batches=1)  # a randomly initialised lite0 on this CPU
    rate = next(iter(timed.rates.values()))
    assert 0 < rate.forward_s < 10 and rate.backward_s >= 0 and "random weights" in rate.how
    assert timed.seconds > 0


def test_dry_run_over_the_whole_zoo_with_the_robustart_preset(tmp_path):
    """`bench --dry-run --preset robustart --models '*'`: every model's jobs counted, no network
    (offline here, and planning asks for none), no weights loaded."""
    env = dict(os.environ, ROBUSTART_OFFLINE="1")
    out = subprocess.run([sys.executable, "-m", "robustart.cli", "bench", "--dry-run", "--preset", "robustart",
                          "--models", "*", "--store", str(tmp_path), "--images-per-second", "500", "--json"],
                         capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr
    d = json.loads(out.stdout)
    per_model = sum(len(expand_noise(s)) for s in preset_noises("robustart", gpu=False))
    planned = d["models"]
    skipped = {s["model"] for s in d["skipped"]}
    # every zoo entry is planned or left out with its reason (the 10-class nas models on ImageNet labels)
    assert set(planned) | skipped == {e.name for e in list_entries()}
    assert all(get_entry(m).num_classes != 1000 for m in skipped)
    assert d["jobs"] == len(planned) * per_model == len(d["job_list"]) > 5000
    assert "resnet50" in d["unkeyed_models"] and "efficientnet_lite0" not in d["unkeyed_models"]
    assert d["states"]["pending"] == d["jobs"]
    assert d["estimate"]["seconds"] > 0 and d["estimate"]["images"] == d["jobs"] * 4


def test_every_noise_says_its_cost():
    """Each registered family's example specs give passes per image: at least the clean pass,
    and attacks a backward pass per step."""
    from robustart.noises import NOISE_FAMILIES, family_for

    seen = 0
    for fam in NOISE_FAMILIES.values():
        for name in list(fam.names()) + list(fam.extends):
            for spec in fam.examples(name):
                try:
                    configs = expand_noise(spec)
                except RobustartError:  # an optional extra that is not installed here
                    continue
                for cfg in configs:
                    c = family_for(cfg).cost(cfg)
                    assert c["forward"] >= 1 and c["backward"] >= 0 and c.get("decode", 0) >= 0, (spec, c)
                    if cfg["name"] in ("pgd", "mim"):
                        assert c["backward"] == cfg["steps"] * cfg.get("restarts", 1), (spec, c)
                    seen += 1
    assert seen >= 10
