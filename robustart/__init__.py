"""robustart: robustness evaluation platform and model zoo for image classifiers."""

__version__ = "0.1.0"

__all__ = ["__version__", "attack", "evaluate", "evaluate_suite", "get_entry", "list_models", "load_model",
           "ResultsStore"]


def __getattr__(name):
    # Lazy: `import robustart` (and `robustart --help`) stays fast; torch loads on first use.
    if name in ("attack", "evaluate", "evaluate_suite", "load_model", "get_entry", "ResultsStore"):
        from robustart import api

        return getattr(api, name)
    if name == "list_models":
        from robustart.zoo.registry import list_entries

        return list_entries
    raise AttributeError(f"module 'robustart' has no attribute {name!r}")
