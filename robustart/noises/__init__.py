"""Noise families. A noise spec (`--noise NAME[:k=v,...]`, grammar in robustart/spec.py) parses
into one job config, or a list of them for a suite; each config goes into its job's key.

A new noise family is one module (see `base.py` for what it provides) plus one registration:
a line in robustart/plugins.py for a built-in one, or `NOISE_FAMILIES.register(name, family)`.
"""

from __future__ import annotations

from robustart.noises.base import Noise, NoiseFamily, NoiseOutput
from robustart.noises.spec import NoiseSpecError, split_spec
from robustart.registry import Registry, RegistryError, did_you_mean


def _check_family(name, obj) -> None:
    if not isinstance(obj, NoiseFamily):
        raise TypeError(f"noise family {name!r} must be a robustart.noises.base.NoiseFamily, got {obj!r}")


NOISE_FAMILIES = Registry("noise family", "noise_families", error=NoiseSpecError, check=_check_family)

__all__ = ["NOISE_FAMILIES", "Noise", "NoiseFamily", "NoiseOutput", "NoiseSpecError", "available", "build_noise",
           "dataset_metrics", "expand_noise", "family_for", "family_of", "listing", "noise_label", "parse_noise",
           "section_of", "summarize", "warnings_of", "with_params"]


def _owners() -> dict[str, NoiseFamily]:
    """Spec name -> the family that owns it; two families owning one name is an error."""
    out: dict[str, NoiseFamily] = {}
    where: dict[str, str] = {}
    for fname, fam in NOISE_FAMILIES.items():
        for n in fam.names():
            if n in out:
                raise RegistryError(f"noise {n!r} is claimed by the families {where[n]!r} and {fname!r}; "
                                    "a family narrowing another's name lists it in `extends`.")
            out[n], where[n] = fam, fname
    return out


def available() -> dict[str, str]:
    """Every noise name a spec can start with -> one-line help."""
    out = {}
    for fam in NOISE_FAMILIES.values():
        out.update(fam.names())
    return out


def listing() -> list[tuple[str, str, dict]]:
    """(name, help, parameters) of every noise a spec can name, in registry order; a family
    narrowing another's name is listed as `NAME:...` after the owner."""
    rows = []
    for fam in NOISE_FAMILIES.values():
        for name, h in fam.names().items():
            rows.append((name, h, dict(fam.params(name))))
        for name, h in fam.extends.items():
            rows.append((fam.syntax(name), h, dict(fam.params(name))))
    return rows


def family_of(name: str, args: list | tuple = (), kwargs: dict | None = None) -> NoiseFamily:
    """The family a spec belongs to: one that narrows its name and claims it, else its owner."""
    kwargs = kwargs or {}
    owners = _owners()
    for fam in NOISE_FAMILIES.values():
        if name in fam.extends and fam.claims(name, list(args), kwargs):
            return fam
    if name in owners:
        return owners[name]
    names = sorted(owners)
    raise NoiseSpecError(f"Unknown noise {name!r}.{did_you_mean(name, names)} "
                         f"Available: {', '.join(names)} (see `robustart noises`).")


def family_for(config: dict) -> NoiseFamily:
    """The family a job config belongs to (e.g. read back from a store)."""
    name = config.get("name")
    for fam in NOISE_FAMILIES.values():
        if name in fam.extends and fam.owns(config):
            return fam
    owners = _owners()
    if name in owners:
        return owners[name]
    raise NoiseSpecError(f"no registered noise family has configs named {name!r} (config {config!r}).")


def family_name(family: NoiseFamily) -> str:
    for n, f in NOISE_FAMILIES.items():
        if f is family:
            return n
    raise NoiseSpecError(f"{family!r} is not a registered noise family.")


def expand_noise(spec: str | dict | list | None) -> list[dict]:
    """The job configs of a spec: one for a single noise, several for a suite."""
    if isinstance(spec, dict):
        return [dict(spec)]
    if isinstance(spec, list):
        return [c for s in spec for c in expand_noise(s)]
    spec = spec or "clean"
    name, args, kwargs = split_spec(spec)
    out = family_of(name, args, kwargs).parse(name, args, kwargs, spec)
    return out if isinstance(out, list) else [out]


def with_params(spec: str, **params) -> str:
    """`spec` with more `key=value` parameters (e.g. the CLI's --corruption-impl): an error when
    the noise it names takes none of that name."""
    name, args, kwargs = split_spec(spec)
    fam = family_of(name, args, kwargs)
    allowed = fam.params(name)
    for k in params:
        if k not in allowed:
            raise NoiseSpecError(f"noise spec {spec!r}: {name} takes no {k}= (it takes: {', '.join(allowed) or 'nothing'}).")
        if k in kwargs:
            raise NoiseSpecError(f"noise spec {spec!r}: {k} is given twice.")
    extra = ",".join(f"{k}={v}" for k, v in params.items())
    return f"{spec}{',' if ':' in spec else ':'}{extra}" if extra else spec


def parse_noise(spec: str | dict | None) -> dict:
    """The one job config of a spec; a suite spec is an error here (use `expand_noise`)."""
    configs = expand_noise(spec)
    if len(configs) != 1:
        raise NoiseSpecError(f"noise spec {spec!r} is a suite of {len(configs)} jobs: run it with "
                             "robustart.evaluate_suite() (the CLI's `eval` does).")
    return configs[0]


def build_noise(config: dict):
    """The runtime Noise of a job config (None for clean)."""
    return family_for(config).build(config)


def noise_label(config: dict) -> str:
    """A short name of a job's noise (`pgd linf 4/255`, `corruption fog 3`), as its family
    writes it; the generic label for configs no registered family owns (an old store)."""
    from robustart.noises.base import default_label

    try:
        fam = family_for(config)
    except NoiseSpecError:
        return default_label(config)
    return fam.label(config)


def section_of(config: dict) -> str:
    """The report section of a job's noise ("other" for configs no family owns)."""
    try:
        return family_for(config).section
    except NoiseSpecError:
        return "other"


def warnings_of(config: dict, metrics: dict) -> list[str]:
    try:
        return family_for(config).warnings(metrics)
    except NoiseSpecError:
        return []


def summarize(results) -> dict:
    """Suite metrics over finished jobs (JobResults): each family summarises its own jobs."""
    out = {}
    by_family: dict = {}
    for res in results:
        fam = family_for(res.meta["config"]["noise"])
        by_family.setdefault(id(fam), (fam, []))[1].append(res)
    for fam, group in by_family.values():
        out.update(fam.summarize(group))
    return out


def left_out(spec) -> list[str]:
    """What a suite spec leaves out because it cannot run here (an ImageNet-S decoder that is not
    set up, say), each with the command that makes it available; [] for most specs."""
    if not isinstance(spec, str):
        return []
    name, args, kwargs = split_spec(spec or "clean")
    fam = family_of(name, args, kwargs)
    hook = getattr(fam, "left_out", None)
    return list(hook(name, args, kwargs, spec)) if hook is not None else []


def dataset_metrics(kind: str, results) -> dict:
    """Metrics a dataset kind gives a suite's jobs, from the families that know that kind (a
    clean run over pre-rendered ImageNet-C folders: the corruption family's mCE)."""
    out = {}
    for fam in NOISE_FAMILIES.values():
        out.update(fam.dataset_metrics(kind, list(results)))
    return out
