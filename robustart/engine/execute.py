"""Executing: one job spec -> per-sample records in the store, through the store's ShardWriter.

`execute(job, shards)` runs any subset of a job's shards (all by default): the unit of work is
(job spec, shard index), so a pool of processes, Ray or Slurm can split a job, and an
interrupted job resumes from the shards it lacks. Records are computed per batch by
engine/records.py; the noise's hooks (`prepare`, `apply`, `predict`, `complete`,
`job_checks`) are the only noise-specific code that runs here.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from typing import Iterable

import torch

from robustart.engine.plan import JobSpec, open_data
from robustart.errors import DataError, RobustartError
from robustart.results.store import ResultsStore
from robustart.results.writer import ShardWriter


@dataclass
class Resources:
    """What the jobs run in one process share: opened datasets, built models, and each sample's
    clean logits per model (the clean pass of a suite runs once). `evaluate_suite` makes one per
    call; executors can keep one per worker."""

    data: dict = field(default_factory=dict)
    models: dict = field(default_factory=dict)
    clean: dict = field(default_factory=dict)
    progress: bool = True

    def dataset(self, job: JobSpec):
        """(source, samples) of a job, opened once, checked against the job's fingerprint."""
        from robustart.data.sources import DataSource

        k = (job.data, job.data_root, job.limit, job.classes)
        if k not in self.data:
            source, samples = open_data(job.data, job.data_root, job.limit, job.classes)
            if DataSource.fingerprint(samples) != job.fingerprint or len(samples) != job.n:
                raise DataError(f"dataset {source.name} changed since job {job.key} was planned (its samples' "
                                "fingerprint differs); plan the job again.")
            self.data[k] = (source, samples)
        return self.data[k]

    def model(self, job: JobSpec, device: torch.device, source, calibration=None):
        """The job's model on `device`, built once per model, form, backend and dataset classes."""
        k = (job.entry.spec, job.weights[1], str(device), job.backend, source.class_subset,
             job.config["model"].get("calibration", {}).get("fingerprint"))
        if k not in self.models:
            from robustart.engine.records import SubsetModel
            from robustart.zoo.build import build, calibration_for, verified_weights

            entry = job.entry
            path, sha = job.weights
            if not os.path.isfile(path):  # another machine: fetch (and verify) it here
                path, sha = verified_weights(entry, progress=self.progress)
            if sha != job.weights[1]:
                raise RobustartError(f"model {entry.name!r}: the checkpoint here has sha256 {sha}, the job was planned "
                                     f"with {job.weights[1]}.")
            if calibration is None:
                calibration = calibration_for(entry, source)
            model = build(entry, device=device, backend=job.backend, calibration=calibration, weights=(path, sha),
                          seed=job.seed, progress=self.progress)
            if source.class_subset is not None:
                model = SubsetModel(model, source.class_subset).to(device).eval()
            self.models[k] = (model, calibration)
        return self.models[k]

    def clean_cache(self, model) -> dict:
        return self.clean.setdefault(id(model), {})


def _progress_bar(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from robustart.console import err

    return Progress(
        TextColumn("{task.description}", markup=False),  # names and paths are text, not markup
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeRemainingColumn(),
        console=err,
        disable=not enabled,
    )


def _waiting(job: JobSpec, progress: bool):
    """What a run says while another process holds its job (stderr)."""
    def say(holder) -> None:
        import sys

        sys.stderr.write(f"job {job.key} is being computed by {holder.describe()}; waiting for it "
                         "(Ctrl-C stops waiting).\n")
        sys.stderr.flush()
    return say


def _with_layout(job: JobSpec, state, force: bool) -> JobSpec:
    """The job with its stored layout: a job that exists keeps its shard size (so it resumes,
    whatever --shard-size this run was given); a forced run starts a new layout."""
    layout = (state.meta or {}).get("layout")
    if force or not isinstance(layout, dict) or state.format < 2 or layout.get("n") != job.n:
        return job
    size = layout.get("shard_size")
    ok = isinstance(size, int) and not isinstance(size, bool) and size >= 1
    return replace(job, shard_size=size) if ok and size != job.shard_size else job


def _reusable(state, job: JobSpec) -> bool:
    """A complete job whose files prove it, computed from these inputs."""
    if state.status != "complete" or state.format < 2:
        return False
    return job.data_sha256 is None or state.meta.get("data_sha256") == job.data_sha256


def execute(job: JobSpec, shards: Iterable[int] | None = None, *, force: bool = False, progress: bool = True,
            resources: Resources | None = None, wait: bool = True):
    """Run the job's `shards` (default: all) that are not in the store yet, and return its
    JobResult. A complete job is reused when its files prove it (a damaged one is repaired:
    its bad shards are recomputed); `force` recomputes it as a new generation that replaces the
    old result only once complete. The process holds the job's claim (with `shards`, those
    shards' claims: the unit of a multi-process executor), and waits while another live
    process holds it. The job's status afterwards is complete when every shard is in the
    store and right, else partial.

    With `shards` and `wait=False`, the call takes only the shards no other live process holds
    now, computes those and returns at once (`result.held`: the shards it held, `[]` when
    another process held them all; `result.computed`: those it computed): how an executor's
    workers take units without blocking on one another."""
    from robustart.engine.job import JobResult

    resources = resources if resources is not None else Resources(progress=progress)
    store = ResultsStore(job.store)
    state = store.check(job.key, level="sha256")
    if not force and _reusable(state, job):
        return JobResult(job.key, store, state.meta, reused=True)
    job = _with_layout(job, state, force)
    if shards is not None:
        wanted = sorted(set(shards))
        bad = [s for s in wanted if not 0 <= s < job.n_shards]
        if bad:
            raise RobustartError(f"job {job.key} has shards 0..{job.n_shards - 1}; there is no shard {bad[0]}.")
        if force:
            raise RobustartError(f"job {job.key}: force recomputes a whole job; give it no shard subset.")
    elif not wait:
        raise RobustartError(f"job {job.key}: wait=False takes a shard subset (the shards it may compute).")
    writer = ShardWriter(store, job.key)
    on_wait = _waiting(job, progress)
    if shards is None:
        writer.claim_job(on_wait)
    else:
        wanted = writer.claim_shards(wanted, on_wait, wait=wait)
        if not wanted:  # every one of them is another live process's now
            return JobResult(job.key, store, state.meta, reused=False, held=[], computed=[])
    try:
        state = store.check(job.key, level="sha256")  # again, now that this process holds the job
        if not force and _reusable(state, job):
            return JobResult(job.key, store, state.meta, reused=True, held=wanted if shards is not None else None,
                             computed=[])
        stale_data = state.status == "complete" and not _reusable(state, job)
        job = _with_layout(job, state, force or stale_data)  # another run may have created it meanwhile
        if shards is None:
            wanted = list(range(job.n_shards))
        writer.open(job.config, n=job.n, shard_size=job.shard_size, seed=job.seed, force=force or stale_data,
                    extra={"data_sha256": job.data_sha256})
        if writer.note.startswith(("repaired", "started over")):
            import sys

            sys.stderr.write(f"job {job.key}: {writer.note}; recomputing what is missing.\n")
        return _run(job, wanted, shards, writer, store, resources, progress)
    finally:
        writer.release()


def _run(job, wanted, shards, writer, store, resources, progress):
    from robustart.engine.env import device_info, git_info, resolve_device, versions
    from robustart.engine.job import JobResult
    from robustart.engine.records import ImageDataset, batch_records, collate, entry_transform, record_schema
    from robustart.engine.repair import request_of
    from robustart.noises import build_noise
    from robustart.noises.base import JobData

    n, n_shards = job.n, job.n_shards
    S = writer.shard_size
    source, samples = resources.dataset(job)

    def shard_ids(s: int) -> list[str]:
        lo, hi = job.shard_bounds(s)
        return [x.id for x in samples[lo:hi]]

    done = writer.valid_shards(shard_ids)
    todo = [s for s in wanted if s not in done]
    dev = resolve_device(job.device)
    run = {"resumed_shards": len(done), "device": device_info(dev), "batch_size": job.batch_size, "workers": None}
    if shards is not None:
        run["shards"] = wanted
    run["computed"] = written = []  # the shards this run wrote, as it writes them (saved with the run)
    held = wanted if shards is not None else None
    extra = _data_meta(source, job)
    if not todo:
        writer.begin(run, dataset_root=str(source.root), versions=versions(), git=git_info(), device=run["device"],
                     request=request_of(job), **extra)
        writer.end(shard_ids, metrics=_metrics)
        return JobResult(job.key, store, writer.meta, reused=False, held=held, computed=[])

    entry = job.entry
    model, calib = resources.model(job, dev, source)
    meta = dict(dataset_root=str(source.root), versions=versions(), git=git_info(), device=run["device"],
                request=request_of(job), **extra)
    if calib is not None:  # calibration images among the evaluated ones: say how many
        meta["calibration"] = {**calib.describe(), "overlap_with_evaluated": calib.overlap(samples),
                               "source_root": calib.root}
    noise = build_noise(job.noise)
    if noise is not None:
        noise.prepare(model, dev, JobData(source, samples))
        meta.update(noise.job_meta())
    indices = [i for s in todo for i in range(*job.shard_bounds(s))]
    workers = job.workers
    if workers is None:
        workers = 0 if len(indices) <= 16 else min(4, os.cpu_count() or 1)
    if noise is not None and noise.loader is not None and noise.loader_in_main_process:
        workers = 0
    if source.read is not None:
        workers = 0  # in-memory tensors: worker processes only add start-up time
    run["workers"] = workers
    writer.begin(run, **meta)
    try:
        loader = torch.utils.data.DataLoader(
            ImageDataset(samples, indices, entry_transform(entry, source),
                         noise.loader(entry) if noise is not None and noise.loader is not None else None,
                         read=source.read),
            batch_size=job.batch_size, shuffle=False, num_workers=workers, collate_fn=collate,
            pin_memory=dev.type == "cuda",
        )
        pending: dict[int, list[dict]] = {}
        schema = record_schema(noise)
        clean_cache = resources.clean_cache(model)
        t0 = time.perf_counter()
        seen = 0
        with _progress_bar(progress) as bar:
            task = bar.add_task(f"{entry.name} · {job.noise['name']} · {source.name}", total=n,
                                completed=n - len(indices), rate="")
            for batch in loader:
                for rec in batch_records(model, batch, samples, dev, noise, job.seed, source.class_subset,
                                         clean_cache):
                    pending.setdefault(rec.pop("_index") // S, []).append(rec)
                for s in sorted(pending):
                    lo, hi = job.shard_bounds(s)
                    if len(pending[s]) == hi - lo:
                        writer.write(s, pending.pop(s), schema, expected=shard_ids(s))
                        written.append(s)
                seen += len(batch)
                rate = seen / max(time.perf_counter() - t0, 1e-9)
                bar.update(task, advance=len(batch), rate=f"{rate:.1f} img/s")
    except BaseException:
        writer.interrupt(noise.job_checks() if noise is not None else None)
        raise
    writer.end(shard_ids, checks=noise.job_checks() if noise is not None else None, metrics=_metrics)
    return JobResult(job.key, store, writer.meta, reused=False, held=held, computed=sorted(written))


def _data_meta(source, job: JobSpec) -> dict:
    """meta.json fields about the inputs: every file the dataset source skipped, with its reason,
    and `weights_verified: false` when the entry pins no sha256 (nothing checked the checkpoint)."""
    out = {"skipped": [{"path": p, "reason": r} for p, r in source.skipped_items()]}
    if not job.entry.weights.sha256 and job.entry.weights.kind != "hf_hub":
        out["weights_verified"] = False
    return out


def _metrics(rec) -> dict:
    """The job's summary metrics (scalars) from its records, cached in its meta.json for listings."""
    from robustart.results import metrics as M

    return {k: v for k, v in M.noise_summary(rec).items() if isinstance(v, (int, float))} if len(rec) else {}
