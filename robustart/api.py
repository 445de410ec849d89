"""The public Python surface."""

from robustart.engine.evaluate import JobResult, evaluate
from robustart.results.store import ResultsStore
from robustart.zoo.build import load_model
from robustart.zoo.registry import get_entry, list_entries

__all__ = ["JobResult", "ResultsStore", "evaluate", "get_entry", "list_entries", "load_model"]
