"""The public Python surface."""

from robustart.engine.evaluate import JobResult, SuiteResult, evaluate, evaluate_suite
from robustart.noises.adversarial import attack
from robustart.results.store import ResultsStore
from robustart.zoo.build import load_model
from robustart.zoo.registry import get_entry, list_entries

__all__ = ["JobResult", "ResultsStore", "SuiteResult", "attack", "evaluate", "evaluate_suite", "get_entry",
           "list_entries", "load_model"]
