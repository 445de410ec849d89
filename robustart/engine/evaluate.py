"""The evaluation engine's public surface: `evaluate` (one job) and `evaluate_suite` (every job
of a noise spec). Each is plan (engine/plan.py: config -> job specs, keys and shard layouts, no
weights loaded) then execute (engine/execute.py: one job spec -> records in the store).

The engine writes per-sample records in shards to the results store and nothing else; metrics
are computed from the records afterwards. A finished job is reused; an interrupted one resumes
from its first missing shard.
"""

from __future__ import annotations

from pathlib import Path

from robustart.engine.execute import Resources, execute
from robustart.engine.job import JobResult, SuiteResult
from robustart.engine.plan import DEFAULT_SHARD_SIZE, PRECISIONS, JobSpec, Plan, job_config, plan
from robustart.engine.records import batch_records, entry_transform, record_schema
from robustart.results.store import ResultsStore
from robustart.zoo.registry import ModelEntry

__all__ = ["DEFAULT_SHARD_SIZE", "PRECISIONS", "JobResult", "JobSpec", "Plan", "Resources", "SuiteResult",
           "batch_records", "entry_transform", "evaluate", "evaluate_suite", "execute", "job_config", "plan",
           "record_schema", "run_plan"]

_DEFAULTS = dict(limit=None, batch_size=32, device=None, workers=None, store=None, shard_size=None, seed=0,
                 precision="fp32", data_root=None, progress=True, backend="fake", verify_data=False, classes=None)


def run_plan(p: Plan, *, force: bool = False, progress: bool = True) -> list[JobResult]:
    """Every job of a plan, in this process: the model is built once and each sample's clean
    forward pass is shared by the jobs."""
    res = Resources(progress=progress)
    for job in p.jobs:  # what planning opened, reused
        res.data[(job.data, job.data_root, job.limit, job.classes)] = (p.source, p.samples)
    return [execute(job, force=force, progress=progress, resources=res) for job in p.jobs]


def evaluate(
    model: str | ModelEntry = "efficientnet_lite0",
    data: str | Path | None = None,
    *,
    noise: str | dict = "clean",
    limit: int | None = None,
    batch_size: int = 32,
    device: str | None = None,
    workers: int | None = None,
    store: str | Path | ResultsStore | None = None,
    force: bool = False,
    shard_size: int | None = None,
    seed: int = 0,
    precision: str = "fp32",
    data_root: str | Path | None = None,
    progress: bool = True,
    backend: str = "fake",
    verify_data: bool = False,
    classes: str | Path | None = None,
) -> JobResult:
    """Run (or reuse, or resume) one job and return its result handle. A suite spec (e.g.
    `adversarial`, `imagenet-c`) is an error here: use `evaluate_suite`."""
    from robustart.noises import parse_noise

    parse_noise(noise)  # one job, or an error that says to use evaluate_suite
    p = plan(model, data, noise=noise, limit=limit, batch_size=batch_size, device=device, workers=workers,
             store=store, force=force, shard_size=shard_size, seed=seed, precision=precision, data_root=data_root,
             progress=progress, backend=backend, verify_data=verify_data, classes=classes)
    return run_plan(p, force=force, progress=progress)[0]


def evaluate_suite(
    model: str | ModelEntry = "efficientnet_lite0",
    data: str | Path | None = None,
    *,
    noise: str | dict | list = "clean",
    force: bool = False,
    **kwargs,
) -> SuiteResult:
    """Every job of a noise spec (a suite such as `adversarial` or `imagenet-c` has several), on
    one model and dataset: the model is built once and each sample's clean forward pass is shared
    by all jobs. Suite metrics (WCAR, mCE, ...) are computed from the jobs' records. Takes the
    keyword arguments of `evaluate`."""
    from robustart.noises import dataset_metrics, left_out, summarize

    unknown = sorted(set(kwargs) - set(_DEFAULTS))
    if unknown:
        raise TypeError(f"evaluate_suite() got unexpected keyword argument(s) {unknown}")
    kw = {**_DEFAULTS, **kwargs}
    p = plan(model, data, noise=noise, force=force, **kw)
    jobs = run_plan(p, force=force, progress=kw["progress"])
    metrics = summarize(jobs) if len(jobs) > 1 else {}
    metrics.update(dataset_metrics(p.source.kind, jobs))  # e.g. pre-rendered ImageNet-C: mCE of a clean run
    return SuiteResult(jobs, metrics, spec=noise if isinstance(noise, str) else "",
                       skipped=p.source.skipped_items(), unavailable=left_out(noise))
