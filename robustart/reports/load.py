"""Reading the results store for a report: one row per job from the metas, and the records of
the selected jobs as columnar scans (pyarrow datasets over their shard files: the columns a view
needs, only samples that decoded), a group of jobs at a time (StoredRecords), so a study's store
(thousands of jobs, hundreds of millions of records) is read in bounded memory, with no Python
loop per record."""

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


def read_jobs(store: ResultsStore, metas: dict | None = None) -> pd.DataFrame:
    """One row per job in the store (any status), from its meta.json; a damaged job (its files
    do not prove its records) has status `damaged` and says why in `problem`. `metas`, a dict,
    receives each job's meta (so nothing reads them twice)."""
    rows = []
    for key in store.keys():
        state = store.check(key)
        if metas is not None:
            metas[key] = state.meta
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


def _scan(store: ResultsStore, keys, metas: dict | None = None, columns=RECORD_COLUMNS, ok_only: bool = False):
    """The records of the given jobs as one pyarrow Table with a `job` column, in one scan (in
    the order of `keys`): `columns` of them, and with `ok_only` only samples that decoded (the
    filter is applied while reading). A clean job's `clean_pred`/`clean_correct` are its own
    predictions, so every job has them and clean vs noisy comparisons need no special case."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    schema = pa.schema([("sample_id", pa.string()), ("label", pa.int32()), ("pred", pa.int32()),
                        ("correct", pa.bool_()), ("status", pa.string()), ("clean_pred", pa.int32()),
                        ("clean_correct", pa.bool_()), ("job", pa.string()), ("_dir", pa.string())])
    metas = metas or {}
    files = [str(p) for k in keys for p in store.shard_files(k, metas.get(k))]
    if not files:
        return None
    # The job key is the folder two levels above each shard (its records folder below it): read
    # it as a partition field.
    part = ds.DirectoryPartitioning(pa.schema([("job", pa.string()), ("_dir", pa.string())]))
    dataset = ds.dataset(files, schema=schema, format="parquet", partitioning=part,
                         partition_base_dir=str(store.jobs_dir))
    # a clean job's own predictions stand for its clean pass
    cols = {"job": ds.field("job"), **{c: ds.field(c) for c in columns}}
    for c, own in (("clean_pred", "pred"), ("clean_correct", "correct")):
        if c in cols:
            cols[c] = pc.coalesce(ds.field(c), ds.field(own))
    return dataset.to_table(columns=cols, filter=(ds.field("status") == "ok") if ok_only else None)


def read_records(store: ResultsStore, keys) -> pd.DataFrame:
    """The records of the given jobs, one frame with a `job` column, in one scan."""
    table = _scan(store, list(keys))
    if table is None:
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in [
            ("job", "object"), ("sample_id", "object"), ("label", "int32"), ("pred", "int32"),
            ("correct", "bool"), ("status", "object"), ("clean_pred", "int32"), ("clean_correct", "bool")]})
    return table.to_pandas()


def _n_records(meta: dict | None, default: int) -> int:
    layout = (meta or {}).get("layout")
    try:
        return int(layout["n"])
    except (TypeError, KeyError, ValueError):
        return int(default)


class StoredRecords:
    """The records of a report's jobs, read when a table needs them and never all at once: a
    study's store holds hundreds of millions. `frames(keys, groups)` yields pandas frames of the
    records of jobs `keys`, each holding whole groups (the jobs a cross-job view joins: a model's
    attacks of one budget, its corruption cells, ...) and about `max_rows` records, so memory is
    bounded by the largest group, not the store. Within a frame, jobs come in the order of the
    job table (the order one scan of everything would give) and sample ids are integer codes
    (equal ids, equal codes): joins and group-bys compare them, and no table shows them."""

    def __init__(self, store: ResultsStore, jobs: pd.DataFrame, max_rows: int = 4_000_000,
                 metas: dict | None = None):
        self.store = store
        self.metas = metas or {}
        self.keys = list(jobs["key"])
        self._pos = {k: i for i, k in enumerate(self.keys)}
        # records per job: its layout's n (what its shards hold), else its dataset's
        self._rows = {k: _n_records(self.metas.get(k), n) for k, n in
                      zip(self.keys, pd.to_numeric(jobs["dataset_n"], errors="coerce").fillna(0).astype(int))}
        self.max_rows = max_rows

    def __len__(self) -> int:
        return int(sum(self._rows.values()))

    def cached(self, keys) -> dict[str, dict]:
        """The metrics each complete job's meta.json caches (computed from its records when it
        completed, robustart.results.metrics.noise_summary), for the jobs that have them."""
        out = {}
        for k in keys:
            m = self.metas.get(k) or {}
            if m.get("status") == "complete" and int(m.get("format", 1)) >= 2 and isinstance(m.get("metrics"), dict):
                out[k] = m["metrics"]
        return out

    def frames(self, keys, groups=None, columns=RECORD_COLUMNS, ok_only: bool = False):
        keys = list(keys)
        groups = list(groups) if groups is not None else keys
        members: dict = {}
        for k, g in sorted(zip(keys, groups), key=lambda kg: self._pos[kg[0]]):
            members.setdefault(g, [])
            if k not in members[g]:
                members[g].append(k)
        chunk: list[str] = []
        rows = 0
        for g, ks in members.items():
            if chunk and rows + sum(self._rows[k] for k in ks) > self.max_rows:
                yield self._frame(chunk, columns, ok_only)
                chunk, rows = [], 0
            chunk += [k for k in ks if k not in chunk]
            rows += sum(self._rows[k] for k in ks)
        if chunk or not members:
            yield self._frame(chunk, columns, ok_only)

    def _layout(self, key: str) -> dict | None:
        m = self.metas.get(key) or {}
        if m.get("status") == "complete" and int(m.get("format", 1)) >= 2 and isinstance(m.get("layout"), dict):
            return m["layout"]
        return None

    def first_ok(self, keys, groups, column: str) -> pd.DataFrame:
        """(group, sample_id, column): per group, each sample once, from the first job (in job
        order) where it is ok: what `drop_duplicates` over every ok record of the group keeps,
        without reading every job. The first job is read whole; a sample that failed there is
        looked up in the next jobs, in the one shard its position puts it in (checked by id; a
        job where it is not found is scanned whole). Groups whose jobs are not all complete
        format-2 jobs of one size are read whole."""
        keys, groups = list(keys), list(groups)
        members: dict = {}
        for k, g in sorted(zip(keys, groups), key=lambda kg: self._pos[kg[0]]):
            members.setdefault(g, []).append(k)
        cols = ["sample_id", "status", column]
        out, whole = [], []
        quick = {g: ks for g, ks in members.items()
                 if all(self._layout(k) is not None for k in ks) and len({self._layout(k)["n"] for k in ks}) == 1}
        for g, ks in members.items():
            if g not in quick:
                whole += [(k, g) for k in ks]
        if whole:
            for rec in self.frames([k for k, _ in whole], [g for _, g in whole], columns=cols, ok_only=True):
                ok = rec.assign(group=rec["job"].map(dict(whole)).astype("int64").to_numpy())
                out.append(ok.drop_duplicates(["group", "sample_id"])[["group", "sample_id", column]])
        first = {ks[0]: g for g, ks in quick.items()}
        wanted = []  # (job, sample id, position): samples failed in their group's first job
        for chunk in self._chunks(list(first)):
            t = _scan(self.store, chunk, self.metas, cols)
            if t is None:
                continue
            df = t.to_pandas()
            df["pos"] = df.groupby("job", sort=False).cumcount()
            for k, rec in df.groupby("job", sort=False):
                g = first[k]
                ok = rec["status"] == "ok"
                out.append(rec.loc[ok, ["sample_id", column]].assign(group=g))
                wanted += [(later, sid, p) for later in quick[g][1:]
                           for sid, p in zip(rec.loc[~ok, "sample_id"], rec.loc[~ok, "pos"])]
        if wanted:
            out.append(self._later(wanted, {k: g for g, ks in quick.items() for k in ks}, column))
        if not out:
            return pd.DataFrame({"group": pd.Series(dtype="int64"), "sample_id": pd.Series(dtype=object),
                                 column: pd.Series(dtype=bool)})
        return pd.concat(out, ignore_index=True)[["group", "sample_id", column]]

    def _chunks(self, keys: list[str]):
        chunk, rows = [], 0
        for k in keys:
            if chunk and rows + self._rows[k] > self.max_rows:
                yield chunk
                chunk, rows = [], 0
            chunk.append(k)
            rows += self._rows[k]
        if chunk:
            yield chunk

    def _later(self, wanted: list[tuple[str, str, int]], group_of: dict, column: str) -> pd.DataFrame:
        """(group, sample_id, column) of samples failed in their group's first job, from the
        first later job (in job order) where they are ok. One scan of the shards their
        positions name in each job; a sample not found there is looked for in the whole job."""
        import pyarrow as pa
        import pyarrow.dataset as ds

        files = {}
        for k, _, p in wanted:
            files.setdefault(k, set()).add(p // int(self._layout(k)["shard_size"]))
        paths = [str(self.store.records_dir(k, self.metas.get(k)) / f"shard-{s:05d}.parquet")
                 for k in sorted(files, key=self._pos.get) for s in sorted(files[k])]
        ids = sorted({sid for _, sid, _ in wanted})
        schema = pa.schema([("sample_id", pa.string()), ("status", pa.string()), (column, pa.bool_()),
                            ("job", pa.string()), ("_dir", pa.string())])
        part = ds.DirectoryPartitioning(pa.schema([("job", pa.string()), ("_dir", pa.string())]))

        def scan(paths):
            d = ds.dataset(paths, schema=schema, format="parquet", partitioning=part,
                           partition_base_dir=str(self.store.jobs_dir))
            return d.to_table(columns=["job", "sample_id", "status", column],
                              filter=ds.field("sample_id").isin(ids)).to_pandas()

        got = scan(paths)
        seen = set(zip(got["job"], got["sample_id"]))
        lost = sorted({k for k, sid, _ in wanted if (k, sid) not in seen}, key=self._pos.get)
        if lost:  # not where its position says (a job whose shards hold other samples): every shard
            got = pd.concat([got, scan([str(p) for k in lost for p in self.store.shard_files(k, self.metas.get(k))])],
                            ignore_index=True).drop_duplicates(["job", "sample_id"])
        want = {(k, sid) for k, sid, _ in wanted}
        got = got[[(k, sid) in want for k, sid in zip(got["job"], got["sample_id"])]]
        ok = got[got["status"] == "ok"].assign(group=lambda d: d["job"].map(group_of).astype("int64"),
                                              _pos=lambda d: d["job"].map(self._pos))
        ok = ok.sort_values("_pos", kind="stable").drop_duplicates(["group", "sample_id"])
        return ok[["group", "sample_id", column]]

    def _frame(self, keys: list[str], columns, ok_only: bool) -> pd.DataFrame:
        import pyarrow.compute as pc

        table = _scan(self.store, sorted(keys, key=self._pos.get), self.metas, columns, ok_only)
        if table is None:
            return read_records(self.store, [])
        # job keys and sample ids as pandas categoricals: group-bys and joins on small integers
        for c in ("job", "sample_id", "status"):
            if c in table.column_names:
                table = table.set_column(table.schema.get_field_index(c), c, pc.dictionary_encode(table[c]))
        df = table.to_pandas()
        if "sample_id" in df.columns:
            df["sample_id"] = df["sample_id"].cat.codes
        return df


@dataclass
class StoreData:
    """What a report is made from: the selected jobs and their records."""

    root: Path
    all_jobs: pd.DataFrame  # every job in the store, any status (for the "not shown" note)
    jobs: pd.DataFrame  # the complete jobs selected
    records: StoredRecords  # their records, read a group of jobs at a time (tables.frames)


def load(store: ResultsStore, models=None, noises=None, keys=None) -> StoreData:
    metas: dict = {}
    all_jobs = read_jobs(store, metas)
    jobs = select_jobs(all_jobs, models, noises, keys) if len(all_jobs) else all_jobs
    return StoreData(store.root, all_jobs, jobs, StoredRecords(store, jobs, metas=metas))
