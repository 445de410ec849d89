"""Model zoo: registry of entries and families, checkpoint download/verify/load, model building."""

from robustart.zoo.registry import (
    ENTRIES,
    FAMILIES,
    FORM_PROVIDERS,
    ModelEntry,
    UnknownModelError,
    WeightSource,
    ZooFamily,
    all_tags,
    family_label,
    get_entry,
    list_entries,
    register,
    unregister,
)

__all__ = [
    "ENTRIES",
    "FAMILIES",
    "FORM_PROVIDERS",
    "ModelEntry",
    "UnknownModelError",
    "WeightSource",
    "ZooFamily",
    "all_tags",
    "family_label",
    "get_entry",
    "list_entries",
    "register",
    "unregister",
]
