"""Installing robustart: the declared ranges hold every tested stack, the extras are the ones the
errors name, pip keeps the PyTorch it finds, and a missing extra stops with the pip command."""

import importlib.util
import json
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from typer.testing import CliRunner

from robustart.errors import EXTRAS, MissingExtraError, RobustartError, need, need_extra

ROOT = Path(__file__).resolve().parents[1]
PROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
OPTIONAL = PROJECT["optional-dependencies"]
STACKS = sorted(p.stem for p in (ROOT / "constraints").glob("torch-*.txt"))
TORCH_STACK = ("torch", "torchvision", "triton")


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, version = line.split("==")
            pins[canonicalize_name(name)] = version
    return pins


def _requirements(extras) -> list[Requirement]:
    reqs = [Requirement(r) for r in PROJECT["dependencies"]]
    reqs += [Requirement(r) for e in extras for r in OPTIONAL[e]]
    return [r for r in reqs if r.marker is None or r.marker.evaluate()]


def _names(reqs) -> set[str]:
    return {canonicalize_name(r.name) for r in reqs}


def test_extras_are_the_ones_the_errors_name():
    assert set(OPTIONAL) == set(EXTRAS) | {"all", "dev"}
    for extra, modules in EXTRAS.items():
        assert _names(Requirement(r) for r in OPTIONAL[extra]) == _names(Requirement(d) for d in modules.values())
    (everything,) = (Requirement(r) for r in OPTIONAL["all"])
    assert everything.name == "robustart" and everything.extras == set(EXTRAS)
    # The core depends on no extra's package (it would not be optional then).
    core = _names(Requirement(r) for r in PROJECT["dependencies"])
    assert not core & _names(Requirement(d) for modules in EXTRAS.values() for d in modules.values())


def test_two_stacks_are_tested():
    assert {s: _pins(ROOT / "constraints" / f"{s}.txt")["torch"] for s in STACKS} == {
        "torch-2.11": "2.11.0", "torch-2.14": "2.14.1"}


@pytest.mark.parametrize("stack", STACKS)
def test_each_tested_stack_is_inside_the_declared_ranges(stack):
    pins = {**_pins(ROOT / "constraints" / "common.txt"), **_pins(ROOT / "constraints" / f"{stack}.txt")}
    assert set(TORCH_STACK) <= set(_pins(ROOT / "constraints" / f"{stack}.txt"))
    for req in _requirements(set(EXTRAS) | {"dev"}):
        name = canonicalize_name(req.name)
        assert name in pins, f"{stack}: {req.name} is not pinned in constraints/"
        assert req.specifier.contains(pins[name], prereleases=True), f"{stack}: {name}=={pins[name]} is outside {req}"


def test_pip_keeps_the_pytorch_it_finds(tmp_path):
    """pip's resolver, given robustart's requirements (the core and every extra installed here),
    installs nothing: the PyTorch, torchvision and Triton of this environment satisfy them, so
    `pip install robustart` leaves them in place. --no-index: a requirement that this torch did
    not satisfy would fail here instead of fetching another one."""
    extras = [e for e, modules in EXTRAS.items() if all(importlib.util.find_spec(m) for m in modules)]
    reqs = _requirements(extras + ["dev"])
    assert set(TORCH_STACK) - {"triton"} <= _names(reqs)
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "--quiet", "--report", str(report),
           *map(str, reqs)]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    would_install = {i["metadata"]["name"]: i["metadata"]["version"] for i in json.loads(report.read_text())["install"]}
    assert would_install == {}


@pytest.mark.parametrize("module", [m for modules in EXTRAS.values() for m in modules])
def test_a_missing_extra_names_its_pip_command(module, monkeypatch):
    monkeypatch.setitem(sys.modules, module, None)  # what Python does for a module it cannot find
    extra = next(e for e, modules in EXTRAS.items() if module in modules)
    with pytest.raises(MissingExtraError, match=rf"pip install 'robustart\[{extra}\]'$"):
        need(module, "this feature")
    with pytest.raises(MissingExtraError, match=EXTRAS[extra][module]):
        need_extra(extra, "this feature")


def test_a_module_that_is_installed_but_broken_keeps_its_reason(tmp_path, monkeypatch):
    (tmp_path / "simplejpeg").mkdir()
    (tmp_path / "simplejpeg" / "__init__.py").write_text("import a_library_simplejpeg_links_to\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "simplejpeg", raising=False)
    with pytest.raises(RobustartError, match="installed but does not import: No module named 'a_library") as e:
        need("simplejpeg", "decoder 'turbo'")
    assert not isinstance(e.value, MissingExtraError)


@pytest.mark.parametrize("noise, module, extra", [
    ("imagenet-s", "cv2", "imagenet-s"),
    ("imagenet-c", "imagecorruptions", "corruptions"),
    ("corruption:fog,impl=reference", "imagecorruptions", "corruptions"),
    ("adversarial", "pyautoattack", "autoattack"),
    ("autoattack", "pyautoattack", "autoattack"),
    ("pgd:norm=l1", "pyautoattack", "autoattack"),
])
def test_cli_stops_with_the_pip_command(noise, module, extra, monkeypatch, tmp_path):
    from robustart.cli import app

    monkeypatch.setitem(sys.modules, module, None)
    r = CliRunner().invoke(app, ["eval", "--noise", noise, "--limit", "1", "--store", str(tmp_path)])
    assert r.exit_code == 2, r.output
    (line,) = r.output.strip().splitlines()  # one line, no traceback
    assert line.startswith("error: ") and line.endswith(f"pip install 'robustart[{extra}]'")
    assert not list(tmp_path.glob("jobs/*"))  # stopped while parsing, before any job


@pytest.mark.parametrize("noise, module", [("imagenet-s:decoder=turbo-fast,resize=model", "simplejpeg"),
                                           ("imagenet-s:decoder=pil,resize=opencv-area", "cv2")])
def test_one_imagenet_s_variant_names_the_extra_of_its_backend(noise, module, monkeypatch, tmp_path):
    """A variant chosen by hand is checked when its images are read (after the clean pass, which
    needs no extra), as a backend that cannot run here for other reasons is."""
    from robustart.cli import app

    monkeypatch.setitem(sys.modules, module, None)
    r = CliRunner().invoke(app, ["eval", "--noise", noise, "--limit", "1", "--store", str(tmp_path)])
    assert r.exit_code == 2, r.output
    assert r.output.strip().splitlines()[-1].endswith("pip install 'robustart[imagenet-s]'")


def test_core_noises_need_no_extra(monkeypatch, tmp_path):
    """PGD (Linf, L2), FGSM, MIM, C&W and the corruptions without frost parse with every extra gone."""
    from robustart.noises import expand_noise

    for modules in EXTRAS.values():
        for m in modules:
            monkeypatch.setitem(sys.modules, m, None)
    for spec in ("pgd", "pgd:norm=l2", "fgsm", "mim", "cw", "corruption:gaussian_noise:3", "imagenet-s:decoder=pil,resize=torch-bilinear"):
        assert expand_noise(spec)
