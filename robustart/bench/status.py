"""Where a plan stands in its store: each job done, running, partial, failed or pending, counted
per model and per noise spec. Reads metas and file names only (no records)."""

from __future__ import annotations

from dataclasses import dataclass

from robustart.bench.plan import BenchPlan

STATES = ("done", "running", "partial", "failed", "pending")


@dataclass
class JobState:
    key: str | None  # None: planned offline, checkpoint not here
    model: str
    spec: str  # the noise spec of the plan it comes from
    noise: str  # its label (pgd linf 0.5/255)
    state: str
    n: int
    n_done: int
    why: str = ""


def job_states(plan: BenchPlan) -> list[JobState]:
    from robustart.bench.run import unit_failures
    from robustart.noises import noise_label

    store = plan.store
    out = []
    for job in plan.jobs:
        model, spec = plan.origin[job.key]
        st = store.check(job.key)
        n_done, why = 0, ""
        failures = []
        if st.status == "complete":
            state, n_done = "done", job.n
        elif st.status == "missing":
            state = "pending"
        else:
            meta = st.meta or {}
            size = int((meta.get("layout") or {}).get("shard_size") or job.shard_size)
            shards = store.shard_indices(job.key) if st.meta is not None else []
            n_done = sum(max(0, min(job.n, (s + 1) * size) - s * size) for s in shards)
            failures = unit_failures(store, job.key)
            if st.status == "damaged":
                state, why = "failed", st.reason
            elif failures:
                state = "failed"
                why = "; ".join(f"shard {f.get('shard')}: {f.get('error')}" for f in failures[:3])
            elif st.status == "running":
                state = "running"
            else:  # partial, interrupted
                state = "partial" if n_done else "pending"
        out.append(JobState(job.key, model, spec, noise_label(job.noise), state, job.n, n_done, why))
    for u in plan.unkeyed:
        out.append(JobState(None, u.entry.spec, u.spec, noise_label(u.noise), "pending", u.n, 0, u.reason))
    return out


def counts(states: list[JobState], by: str) -> list[dict]:
    """Rows {by: value, done, running, partial, failed, pending, total}, in plan order."""
    rows: dict[str, dict] = {}
    for s in states:
        k = getattr(s, by)
        r = rows.setdefault(k, {by: k, **{x: 0 for x in STATES}, "total": 0})
        r[s.state] += 1
        r["total"] += 1
    return list(rows.values())


def totals(states: list[JobState]) -> dict:
    out = {x: 0 for x in STATES}
    for s in states:
        out[s.state] += 1
    out["total"] = len(states)
    return out
