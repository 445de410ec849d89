"""What running a job gives back: a handle on its records and metrics in the store."""

from __future__ import annotations

from dataclasses import dataclass, field

from robustart.results import metrics as M
from robustart.results.store import ResultsStore


@dataclass
class JobResult:
    key: str
    store: ResultsStore
    meta: dict
    reused: bool = False
    held: list | None = None  # execute(job, shards): the shards this call held (wait=False: those it got)
    computed: list | None = None  # the shards this call computed
    _records: object = field(default=None, repr=False)

    @property
    def records(self):
        if self._records is None:
            self._records = self.store.read_records(self.key)
        return self._records

    @property
    def metrics(self) -> dict:
        return M.noise_summary(self.records)

    def warnings(self) -> list[str]:
        """What a user should hear about this job: the trust checks' warnings (e.g. a randomised
        forward pass) and its noise family's (e.g. gradient-masking signs in its metrics)."""
        from robustart.noises import warnings_of

        out = list(self.meta.get("checks", {}).get("warnings", []))
        return out + warnings_of(self.meta["config"]["noise"], self.metrics)

    @property
    def label(self) -> str:
        """A short name of the job's noise (`pgd linf 4/255`)."""
        from robustart.noises import noise_label

        return noise_label(self.meta["config"]["noise"])

    def to_json(self) -> dict:
        cfg = self.meta["config"]
        m = self.metrics
        core = ("top1", "top5", "clean_top1", "ar", "asr", "flip_rate", "mean_pert_norm", "max_pert_linf",
                "zero_grad_share", "no_loss_gain_share")
        from robustart.quant.qconfig import form_spec

        form = cfg["model"].get("form", "fp")
        return {
            "key": self.key,
            "model": cfg["model"]["name"],
            "model_spec": cfg["model"]["name"] + ("" if form == "fp" else "@" + form_spec(form, cfg["model"].get("quant"))),
            "noise": cfg["noise"]["name"],
            "noise_config": cfg["noise"],
            "dataset": cfg["dataset"]["name"],
            "n": m["n"],
            "n_failed": m["n_failed"],
            "precision": cfg["precision"],
            "form": cfg["model"].get("form", "fp"),
            "backend": cfg.get("backend"),
            "metrics": {k: m[k] for k in core if k in m},
            "checks": self.meta.get("checks", {}),
            "weights_verified": self.meta.get("weights_verified", True),
            "reused": self.reused,
            "store": str(self.store.root),
        }


@dataclass
class SuiteResult:
    """The jobs of one noise spec (one job for a single noise), and suite metrics over them."""

    jobs: list[JobResult]
    metrics: dict
    spec: str = ""
    skipped: list = field(default_factory=list)  # (path, reason) of each file the dataset source skipped
    unavailable: list = field(default_factory=list)  # parts of the spec that cannot run here, and how to get them

    def skipped_summary(self, first: int = 5) -> dict:
        """The skipped files: how many, how many per reason, the first few (`path: reason`)."""
        from collections import Counter

        return {"count": len(self.skipped), "reasons": dict(Counter(r for _, r in self.skipped)),
                "first": [f"{p}: {r}" for p, r in self.skipped[:first]]}

    def to_json(self) -> dict:
        """One object: `metrics.top1` is the suite's headline accuracy (WCAR for an attack suite,
        else the mean top-1 over its jobs), `clean_top1` the shared clean accuracy; every job's
        own JSON is under `jobs`."""
        import numpy as np

        first = self.jobs[0].to_json()
        out = {k: first[k] for k in ("model", "dataset", "n", "precision", "store")}
        metrics = {"top1": self.metrics.get("wcar", float(np.mean([j.metrics["top1"] for j in self.jobs])))}
        clean = [j.metrics["clean_top1"] for j in self.jobs if "clean_top1" in j.metrics]
        if clean:
            metrics["clean_top1"] = clean[0]
        metrics.update(self.metrics)
        out.update(model_spec=first["model_spec"], noise=self.spec, metrics=metrics,
                   jobs=[j.to_json() for j in self.jobs])
        return out
