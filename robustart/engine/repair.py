"""Repairing damaged jobs (`robustart results verify --repair`): a job whose meta.json says how
it was asked for (`request`: model, dataset, limit, seed, backend) and whose inputs still give
the same key here is recomputed (its good shards stay); any other damaged job is removed, since
nothing here can prove or remake its records."""

from __future__ import annotations

from robustart.errors import RobustartError
from robustart.results.store import JobState, ResultsStore


def request_of(job) -> dict:
    """What `repair` needs to plan a job again (kept in its meta.json)."""
    return {"model": job.entry.spec, "data": job.data, "data_root": job.data_root, "limit": job.limit,
            "seed": job.seed, "backend": job.backend, "precision": job.precision}


def repair_jobs(store: ResultsStore, damaged: list[JobState], progress: bool = False) -> dict[str, str]:
    """Each damaged job recomputed or removed; key -> what was done."""
    from robustart.engine.execute import execute
    from robustart.engine.plan import plan

    done = {}
    for st in damaged:
        req = (st.meta or {}).get("request")
        why = "its meta.json is unreadable" if st.meta is None else "its meta.json does not say how it was made"
        if isinstance(req, dict):
            try:
                p = plan(req["model"], req.get("data"), noise=st.meta["config"]["noise"], limit=req.get("limit"),
                         seed=int(req.get("seed") or 0), data_root=req.get("data_root"),
                         backend=req.get("backend") or "fake", precision=req.get("precision") or "fp32",
                         store=store, progress=progress)
                job = next((j for j in p.jobs if j.key == st.key), None)
                if job is not None:
                    res = execute(job, progress=progress)
                    if res.meta.get("status") == "complete" and not store.check(st.key, level="read").damaged:
                        done[st.key] = "recomputed"
                        continue
                    why = "recomputing it did not complete it"
                else:
                    why = "its inputs changed (planning it again here gives another key)"
            except (RobustartError, KeyError, TypeError, ValueError) as e:
                why = f"it cannot be planned again here ({e})"
        from robustart.results.claims import Claim, try_acquire

        claim = try_acquire(store.claims_dir(st.key), "job")
        if not isinstance(claim, Claim):
            done[st.key] = f"left as it is: {claim.describe()} is computing it"
            continue
        try:
            store.remove(st.key, keep_claims=True)
        finally:
            claim.release()
        store.remove(st.key) if not any(store.claims_dir(st.key).glob("*.claim")) else None
        done[st.key] = f"removed: {why}"
    return done
