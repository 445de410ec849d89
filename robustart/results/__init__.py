"""Results store (per-sample Parquet records + job metadata) and metrics over records."""

from robustart.results.store import ResultsStore, stable_hash

__all__ = ["ResultsStore", "stable_hash"]
