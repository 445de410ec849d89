"""Model zoo: registry of entries, checkpoint download/verify/load, model building."""

from robustart.zoo.registry import (
    FAMILIES,
    ModelEntry,
    UnknownModelError,
    WeightSource,
    all_tags,
    get_entry,
    list_entries,
    register,
    unregister,
)

__all__ = [
    "FAMILIES",
    "ModelEntry",
    "UnknownModelError",
    "WeightSource",
    "all_tags",
    "get_entry",
    "list_entries",
    "register",
    "unregister",
]
