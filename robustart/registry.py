"""One small registry for every extension point: a name -> object table.

Used for noise families, attacks, corruptions, decoders, resizers, zoo families, model-form
providers, quantization backends and binarization methods. An entry is either

  - an object, registered in code: `reg.register(name, obj)`, or as a decorator
    (`@reg.register("name")`, or bare `@reg.register` for objects with a `name` attribute);
  - a lazy `"module:attr"` string, imported on first use: the built-in ones are listed in
    `robustart/plugins.py` (one line each), and an installed package adds its own with entry
    points of group `robustart.<group>` (e.g. `robustart.zoo_families`).

A name is registered once: a second registration is an error (`RegistryError`) unless
`replace=True`. Looking up an unknown name raises the registry's own error class with a "did
you mean" hint; `did_you_mean` is the one place those hints are made, for registries and for the
few other lookups (parameter names, variants) that are plain lists.
"""

from __future__ import annotations

import difflib
import importlib
from typing import Any, Callable, Iterable, Iterator

from robustart.errors import RobustartError

__all__ = ["Registry", "RegistryError", "UnknownNameError", "closest", "did_you_mean", "load_target"]


class RegistryError(RobustartError, ValueError):
    """A name registered twice, or a lazy entry that cannot be loaded."""


class UnknownNameError(RobustartError, KeyError):
    """A name no registry entry has; the message suggests close names."""

    def __str__(self) -> str:  # KeyError quotes its argument; the message is meant to be read
        return str(self.args[0])


def closest(word: str, options: Iterable[str], n: int = 1, cutoff: float = 0.6) -> list[str]:
    return difflib.get_close_matches(str(word), [str(o) for o in options], n=n, cutoff=cutoff)


def did_you_mean(word: str, options: Iterable[str], *, n: int = 1, cutoff: float = 0.6, inline: bool = False) -> str:
    """`" Did you mean 'x'?"` (or `" (did you mean 'x'?)"` with inline=True), or "" when nothing
    is close. Several suggestions are joined with commas."""
    close = closest(word, options, n=n, cutoff=cutoff)
    if not close:
        return ""
    names = ", ".join(repr(c) for c in close)
    return f" (did you mean {names}?)" if inline else f" Did you mean {names}?"


def load_target(target: str) -> Any:
    """The object a `"package.module:attr"` string names."""
    module, _, attr = target.partition(":")
    obj = importlib.import_module(module)
    for part in filter(None, attr.split(".")):
        obj = getattr(obj, part)
    return obj


class Registry:
    """Names -> objects, in registration order (built-in lazy entries first).

    kind:    what an entry is, for messages ("noise family", "decoder").
    group:   the catalogue group in `robustart/plugins.py` and the entry-point group suffix;
             None for a registry filled in code only.
    load:    modules imported on first use that register entries themselves (by decorator).
    error:   the exception class an unknown name raises.
    message: the unknown-name message, formatted with {name}, {hint} and {names}.
    check:   called with (name, obj) before an object is registered (validate its type).
    """

    def __init__(self, kind: str, group: str | None = None, *, load: Iterable[str] = (),
                 error: type[Exception] = UnknownNameError, message: str | None = None,
                 check: Callable[[str, Any], None] | None = None, cutoff: float = 0.6, n_hints: int = 1):
        self.kind = kind
        self.group = group
        self.error = error
        self.message = message or ("unknown " + kind + " {name!r}.{hint} " + kind[0].upper() + kind[1:] + "s: {names}.")
        self._check = check
        self._load = tuple(load)
        self._cutoff = cutoff
        self._n_hints = n_hints
        self._objects: dict[str, Any] = {}
        self._lazy: dict[str, str] = {}
        self._order: list[str] = []
        self._discovered = False

    # ----------------------------------------------------------------- filling

    def register(self, name=None, obj=None, *, replace: bool = False):
        """`register(name, obj)` registers and returns obj; `register(name)` and bare `register`
        (name taken from `obj.name`) are decorators."""
        if obj is None and (name is None or isinstance(name, str)):
            def deco(o):
                self._add(name if name is not None else _name_of(o), o, replace)
                return o
            return deco
        if obj is None:  # bare decorator: @reg.register
            self._add(_name_of(name), name, replace)
            return name
        self._add(name, obj, replace)
        return obj

    def register_lazy(self, name: str, target: str, *, replace: bool = False) -> None:
        """A `"module:attr"` entry, imported when first looked up."""
        if ":" not in target:
            raise RegistryError(f"{self.kind} {name!r}: lazy target {target!r} is not 'module:attr'.")
        self._discover()
        self._collide(name, replace)
        self._objects.pop(name, None)
        self._lazy[name] = target
        if name not in self._order:
            self._order.append(name)

    def unregister(self, name: str) -> None:
        self._objects.pop(name, None)
        self._lazy.pop(name, None)
        if name in self._order:
            self._order.remove(name)

    def _add(self, name: str, obj: Any, replace: bool) -> None:
        if not isinstance(name, str) or not name:
            raise RegistryError(f"a {self.kind} needs a non-empty name, got {name!r}.")
        self._discover()
        self._collide(name, replace)
        if self._check is not None:
            self._check(name, obj)
        self._lazy.pop(name, None)
        self._objects[name] = obj
        if name not in self._order:
            self._order.append(name)

    def _collide(self, name: str, replace: bool) -> None:
        if replace or (name not in self._objects and name not in self._lazy):
            return
        where = self._lazy.get(name) or getattr(self._objects[name], "__module__", None) or type(self._objects[name]).__module__
        raise RegistryError(f"a {self.kind} named {name!r} is already registered (by {where}); "
                            "pick another name, or pass replace=True to override it.")

    def _discover(self) -> None:
        """Built-in lazy entries and entry points (strings only: nothing is imported here), then
        the modules that register themselves. Runs once."""
        if self._discovered:
            return
        self._discovered = True
        if self.group:
            from importlib.metadata import entry_points

            from robustart import plugins

            for name, target in plugins.BUILTIN.get(self.group, {}).items():
                self._lazy[name] = target
                self._order.append(name)
            for ep in entry_points(group=f"robustart.{self.group}"):
                if ep.name in self._lazy and self._lazy[ep.name] == ep.value:
                    continue  # the project's own, declared twice
                self._collide(ep.name, False)
                self._lazy[ep.name] = ep.value
                self._order.append(ep.name)
        for module in self._load:
            importlib.import_module(module)

    # ----------------------------------------------------------------- lookup

    def names(self) -> list[str]:
        self._discover()
        return list(self._order)

    def __contains__(self, name) -> bool:
        self._discover()
        return name in self._objects or name in self._lazy

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        return len(self.names())

    def hint(self, name: str) -> str:
        return did_you_mean(name, self.names(), n=self._n_hints, cutoff=self._cutoff)

    def unknown(self, name: str, names: Iterable[str] | None = None) -> Exception:
        """The error for an unknown name (with its "did you mean" hint)."""
        names = list(self.names() if names is None else names)
        hint = did_you_mean(name, names, n=self._n_hints, cutoff=self._cutoff)
        return self.error(self.message.format(name=name, hint=hint, names=", ".join(names), kind=self.kind))

    def get(self, name: str) -> Any:
        """The entry `name` (importing a lazy one now); an unknown name raises `self.error`."""
        self._discover()
        if name in self._objects:
            return self._objects[name]
        if name not in self._lazy:
            raise self.unknown(name)
        target = self._lazy[name]
        try:
            obj = load_target(target)
        except (ImportError, AttributeError) as e:
            raise RegistryError(f"{self.kind} {name!r}: cannot load {target} ({type(e).__name__}: {e}).") from e
        if self._check is not None:
            self._check(name, obj)
        if name in self._lazy:  # (importing it may have replaced the entry)
            del self._lazy[name]
            self._objects[name] = obj
        return self._objects[name]

    __getitem__ = get

    def items(self) -> list[tuple[str, Any]]:
        return [(n, self.get(n)) for n in self.names()]

    def values(self) -> list[Any]:
        return [self.get(n) for n in self.names()]

    def keys(self) -> list[str]:
        return self.names()

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self)} entries)"


def _name_of(obj) -> str:
    name = getattr(obj, "name", None)
    if not isinstance(name, str) or not name:
        raise RegistryError(f"{obj!r} has no `name`; register it with register('its-name').")
    return name
