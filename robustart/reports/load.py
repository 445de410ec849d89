"""Reading the results store for a report: one row per job from the metas, and the records of
every selected job in one columnar scan (pyarrow dataset over all shard files), so a store of
thousands of jobs costs one multithreaded read, not a Python loop per record."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from robustart.noises import section_of
from robustart.results.store import ResultsStore
from robustart.zoo.registry import family_label

# The sections with a table of their own; a noise family's jobs go to the one it names (its
# `section`), and to "Other noises" when it names none of these.
SECTIONS = ("clean", "adversarial", "corruption", "imagenet-s", "precision")

# Record columns a report reads; every job's shards are read with this schema, and a column a
# job lacks (clean jobs have no clean_pred) reads as null.
RECORD_COLUMNS = ("sample_id", "label", "pred", "correct", "status", "clean_pred", "clean_correct")

JOB_COLUMNS = [
    "key", "status", "model", "label", "backend", "arch", "family", "family_label", "form", "method", "precision", "bits",
    "dataset", "dataset_label", "dataset_n", "fingerprint", "noise", "section", "noise_label",
    "norm", "eps", "budget", "corruption", "severity", "impl", "jpeg", "decoder", "resize", "geometry",
    "variant", "seed", "weights_sha256", "robustart", "torch", "timm", "pillow", "versions", "git_commit",
    "git_dirty", "device", "started", "finished", "noise_config",
]


def model_label(name: str, form: str | None, precision: str | None, method: str = "") -> str:
    """How a report names a model: its zoo name, plus its form and precision when not fp/fp32
    (so `resnet18` and `resnet18@w8a8` are two rows of one leaderboard); a form calibrated another
    way than plainly on real images says how (`resnet18@w4a4+dsg`, `vit_small@w4a4+apq`)."""
    parts = [str(name)]
    if form and form != "fp":
        parts.append(str(form) + (f"+{method}" if method and form not in ("binary", "bwta") else ""))
    if precision and precision != "fp32":
        parts.append(str(precision))
    return "@".join(parts)


def bit_width(form: str | None, precision: str | None) -> float:
    """Weight bit width of a model form / precision: fp -> 32, w8a8 or int8 -> 8, binary -> 1."""
    for s in (form, precision):
        s = (s or "").lower()
        if s in ("", "fp", "fp32", "tf32"):
            continue
        if s in ("binary", "bnn", "binarized", "w1a1", "bwta"):
            return 1.0
        m = re.match(r"^(?:w|int|fp|bf|uint)(\d+)", s)
        if m:
            return float(m.group(1))
    return 32.0


def quant_method(form: str | None, quant: dict | None) -> str:
    """How a low-bit form was made, beyond its bit widths: "" (plain calibration on real images),
    "apq", "dsg" / "zeroq" / "noise" (generated calibration images), "bwta", "binary-<method>";
    joined with '+' when several apply. The bit-width curves draw one line per (arch, method)."""
    q = quant or {}
    if form == "binary":
        return f"binary-{q.get('method', '?')}"
    if form == "bwta":
        return "bwta"
    parts = []
    if q.get("method") not in (None, "plain"):
        parts.append(str(q["method"]))
    if q.get("calib_data") in ("dsg", "zeroq", "noise"):
        parts.append(str(q["calib_data"]))
    return "+".join(parts)


def _form_spec(form: str | None, quant: dict | None) -> str:
    from robustart.quant.qconfig import form_spec

    return form_spec(form, quant) if form and form != "fp" else "fp"


def noise_label(cfg: dict) -> str:
    """A short, unique-enough name for a job's noise config (its family's label)."""
    from robustart.noises import noise_label as label

    return label(cfg)


def _section(noise: dict) -> str:
    s = section_of(noise)
    return s if s in SECTIONS else "other"


def _job_row(key: str, meta: dict) -> dict:
    cfg = meta.get("config", {})
    model = cfg.get("model", {})
    noise = cfg.get("noise", {}) or {"name": "?"}
    data = cfg.get("dataset", {})
    versions = meta.get("versions") or {}
    git = meta.get("git") or {}
    form, precision = model.get("form", "fp"), cfg.get("precision", "fp32")
    backend = cfg.get("backend") if form != "fp" else None
    return {
        "key": key, "status": meta.get("status"), "model": model.get("name"),
        # the form with every setting in its key, and a backend other than the simulation: two
        # calibrations of one form, or one form on two backends, are two rows
        "label": model_label(model.get("name"), _form_spec(form, model.get("quant")), precision)
        + (f" ({backend})" if backend and backend != "fake" else ""),
        "backend": backend,
        "arch": model.get("arch"),
        "family": model.get("family"), "family_label": family_label(model.get("family")),
        "form": form, "method": quant_method(form, model.get("quant")), "precision": precision,
        "bits": bit_width(form, precision),
        "dataset": data.get("name"), "dataset_n": data.get("n"), "fingerprint": data.get("fingerprint"),
        "noise": noise.get("name"), "section": _section(noise),
        "noise_label": noise_label(noise), "norm": noise.get("norm"), "eps": noise.get("eps"),
        "budget": noise.get("budget"), "corruption": noise.get("corruption"), "severity": noise.get("severity"),
        "impl": noise.get("impl"), "jpeg": noise.get("jpeg"), "decoder": noise.get("decoder"),
        "resize": noise.get("resize"),
        # ImageNet-S: the image geometry, and "+shards" when the variants were read from a build
        "geometry": (noise.get("geometry") or "eval") + ("+shards" if noise.get("shards") else "")
        if noise.get("name") == "imagenet-s" else None,
        "variant": noise.get("variant"), "seed": cfg.get("seed"),
        "weights_sha256": cfg.get("weights_sha256"), "robustart": cfg.get("robustart") or versions.get("robustart"),
        "torch": versions.get("torch"), "timm": versions.get("timm"), "pillow": versions.get("pillow"),
        "versions": ", ".join(f"{k} {v}" for k, v in sorted(versions.items())),
        "git_commit": git.get("commit"), "git_dirty": git.get("dirty"),
        "device": (meta.get("device") or {}).get("name"), "started": meta.get("started"),
        "finished": meta.get("finished"),
        # what makes two models' jobs comparable: the same noise config and seed
        "noise_config": json.dumps({**noise, "seed": cfg.get("seed")}, sort_keys=True, default=str),
    }


def _dataset_labels(jobs: pd.DataFrame) -> pd.Series:
    """`name (n=N)`; datasets that share a name and size but differ in content get their
    fingerprint appended, so two different sample sets never share a leaderboard row."""
    base = jobs["dataset"].astype(str) + " (n=" + jobs["dataset_n"].astype(str) + ")"
    clash = jobs.groupby(base)["fingerprint"].transform("nunique") > 1
    return base.where(~clash, base + " [" + jobs["fingerprint"].astype(str).str[:8] + "]")


def read_jobs(store: ResultsStore) -> pd.DataFrame:
    """One row per job in the store (any status), from its meta.json; a damaged job (its files
    do not prove its records) has status `damaged` and says why in `problem`."""
    rows = []
    for key in store.keys():
        state = store.check(key)
        try:
            row = _job_row(key, state.meta or {})
        except Exception as e:  # a meta.json of the right shape with wrong contents
            row = {"key": key}
            state.problems.append(f"meta.json: {type(e).__name__}: {e}")
        row.update(status="damaged" if state.damaged else state.status, problem=state.reason)
        rows.append(row)
    jobs = pd.DataFrame(rows, columns=JOB_COLUMNS + ["problem"])
    if len(jobs):
        jobs["dataset_label"] = _dataset_labels(jobs)
    return jobs


def _split(values) -> list[str]:
    out = []
    for v in values or []:
        out += [s.strip() for s in str(v).split(",") if s.strip()]
    return out


def select_jobs(jobs: pd.DataFrame, models=None, noises=None, keys=None) -> pd.DataFrame:
    """Complete jobs, filtered: `models` matches a zoo name or a report label (name@form),
    `noises` a noise name (pgd, corruption, ...) or a section (clean, adversarial, corruption,
    imagenet-s, precision). Both accept comma-separated lists. `keys`: only these jobs (a
    benchmark plan's)."""
    sel = jobs[jobs["status"] == "complete"]
    if keys is not None:
        sel = sel[sel["key"].isin(list(keys))]
    m = _split(models)
    if m:
        sel = sel[sel["model"].isin(m) | sel["label"].isin(m)]
    n = _split(noises)
    if n:
        sel = sel[sel["noise"].isin(n) | sel["section"].isin(n)]
    return sel.reset_index(drop=True)


def read_records(store: ResultsStore, keys) -> pd.DataFrame:
    """The records of the given jobs, one frame with a `job` column, in one scan.

    A clean job's `clean_pred`/`clean_correct` are its own predictions, so every job has them
    and clean vs noisy comparisons need no special case."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    schema = pa.schema([("sample_id", pa.string()), ("label", pa.int32()), ("pred", pa.int32()),
                        ("correct", pa.bool_()), ("status", pa.string()), ("clean_pred", pa.int32()),
                        ("clean_correct", pa.bool_()), ("job", pa.string()), ("_dir", pa.string())])
    keys = list(keys)
    files = [str(p) for k in keys for p in store.shard_files(k)]
    if not files:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in [
            ("job", "object"), ("sample_id", "object"), ("label", "int32"), ("pred", "int32"),
            ("correct", "bool"), ("status", "object"), ("clean_pred", "int32"), ("clean_correct", "bool")]})
    # The job key is the folder two levels above each shard (its records folder below it): read
    # it as a partition field.
    part = ds.DirectoryPartitioning(pa.schema([("job", pa.string()), ("_dir", pa.string())]))
    dataset = ds.dataset(files, schema=schema, format="parquet", partitioning=part,
                         partition_base_dir=str(store.jobs_dir))
    table = dataset.to_table(columns=["job", *RECORD_COLUMNS])
    table = table.set_column(table.schema.get_field_index("clean_pred"), "clean_pred",
                             pc.coalesce(table["clean_pred"], table["pred"]))
    table = table.set_column(table.schema.get_field_index("clean_correct"), "clean_correct",
                             pc.coalesce(table["clean_correct"], table["correct"]))
    return table.to_pandas()


@dataclass
class StoreData:
    """What a report is made from: the selected jobs and their records."""

    root: Path
    all_jobs: pd.DataFrame  # every job in the store, any status (for the "not shown" note)
    jobs: pd.DataFrame  # the complete jobs selected
    records: pd.DataFrame  # their records, with a `job` column


def load(store: ResultsStore, models=None, noises=None, keys=None) -> StoreData:
    all_jobs = read_jobs(store)
    jobs = select_jobs(all_jobs, models, noises, keys) if len(all_jobs) else all_jobs
    return StoreData(store.root, all_jobs, jobs, read_records(store, jobs["key"]))
