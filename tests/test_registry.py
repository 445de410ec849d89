"""The generic registry every extension point uses: objects and lazy `module:attr` entries,
collisions, "did you mean", the built-in catalogue and installed packages' entry points."""

import sys

import pytest

from robustart import plugins
from robustart.registry import Registry, RegistryError, UnknownNameError, did_you_mean


def test_register_get_and_decorators():
    r = Registry("widget")
    r.register("a", 1)

    @r.register("b")
    def b():
        return 2

    class C:
        name = "c"

    r.register(C)  # bare: the name is the object's `name`
    assert r.names() == ["a", "b", "c"] and list(r) == ["a", "b", "c"] and len(r) == 3
    assert r.get("a") == 1 and r["b"] is b and r.get("c") is C and "c" in r and "d" not in r
    assert r.items()[0] == ("a", 1)
    r.unregister("b")
    assert r.names() == ["a", "c"]


def test_collisions_are_errors_unless_replaced():
    r = Registry("widget")
    r.register("a", 1)
    with pytest.raises(RegistryError, match="widget named 'a' is already registered"):
        r.register("a", 2)
    r.register("a", 2, replace=True)
    assert r.get("a") == 2
    r.register_lazy("p", "robustart.plugins:BUILTIN")
    with pytest.raises(RegistryError, match="already registered .by robustart.plugins:BUILTIN"):
        r.register("p", 3)


def test_unknown_names_say_what_would_do():
    r = Registry("widget", message="no widget {name!r}.{hint} Widgets: {names}.")
    for n in ("sprocket", "gear", "spring"):
        r.register(n, n)
    with pytest.raises(UnknownNameError) as e:
        r.get("sprokcet")
    assert str(e.value) == "no widget 'sprokcet'. Did you mean 'sprocket'? Widgets: sprocket, gear, spring."
    assert isinstance(e.value, KeyError)  # a lookup error, for code that catches KeyError
    with pytest.raises(UnknownNameError) as e:
        r.get("zzz")
    assert "Did you mean" not in str(e.value)
    assert did_you_mean("obsrver", ["observer", "act"], inline=True) == " (did you mean 'observer'?)"
    assert did_you_mean("x", ["observer"]) == ""


def test_lazy_entries_import_on_first_use(tmp_path, monkeypatch):
    (tmp_path / "lazy_widget_mod.py").write_text("IMPORTED = True\nWIDGET = object()\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    r = Registry("widget")
    r.register_lazy("w", "lazy_widget_mod:WIDGET")
    assert "w" in r and r.names() == ["w"]
    assert "lazy_widget_mod" not in sys.modules  # listing imports nothing
    w = r.get("w")
    assert sys.modules["lazy_widget_mod"].WIDGET is w and r.get("w") is w
    r.register_lazy("broken", "lazy_widget_mod:MISSING")
    with pytest.raises(RegistryError, match="cannot load lazy_widget_mod:MISSING"):
        r.get("broken")
    with pytest.raises(RegistryError, match="not 'module:attr'"):
        r.register_lazy("x", "lazy_widget_mod")


def test_check_validates_objects():
    def only_ints(name, obj):
        if not isinstance(obj, int):
            raise TypeError(f"{name} is not an int")

    r = Registry("number", check=only_ints)
    r.register("one", 1)
    with pytest.raises(TypeError, match="two is not an int"):
        r.register("two", "2")


def test_builtin_catalogue_entries_resolve():
    """Every line of robustart/plugins.py names an object that exists."""
    from robustart.registry import load_target

    for group, entries in plugins.BUILTIN.items():
        for name, target in entries.items():
            assert load_target(target) is not None, f"{group}: {name} -> {target}"


def test_installed_packages_extend_a_registry_by_entry_point(tmp_path, monkeypatch):
    """A package declaring `[project.entry-points."robustart.quant_backends"]` adds a backend,
    with no edit to robustart (a real dist-info folder on sys.path, read by importlib.metadata)."""
    (tmp_path / "toy_backend_pkg.py").write_text(
        "from robustart.quant.backends import Backend\n"
        "class Toy(Backend):\n    name = 'toy-int'\n    help = 'a toy backend'\n"
        "BACKEND = Toy()\n")
    dist = tmp_path / "toy_backend_pkg-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: toy-backend-pkg\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[robustart.quant_backends]\ntoy-int = toy_backend_pkg:BACKEND\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from robustart.quant.backends import Backend

    r = Registry("quantization backend", "quant_backends")  # a fresh one: discovery runs once per registry
    assert r.names() == [*plugins.BUILTIN["quant_backends"], "toy-int"]
    assert isinstance(r.get("toy-int"), Backend) and r.get("toy-int").help == "a toy backend"
