"""What a noise is to the engine.

A noise family is one module in `robustart/noises/` (or any package) that defines a
`NoiseFamily` and registers it: one line in robustart/plugins.py for a built-in family, or
`NOISE_FAMILIES.register(name, family)` (robustart.noises) in code. A family provides

  names()                                  spec names it answers to -> one-line help
  params(name)                             a spec name's parameters -> help
  examples(name)                           quick specs of a name, run by the registry tests
  parse(name, args, kwargs, spec)          the job config(s) of a spec: a dict, or a list for a
                                           suite (e.g. `adversarial`, `imagenet-c`), one job each.
                                           Every config has "name" and is JSON-able: it goes
                                           into the job key, so it holds every setting that can
                                           change a result, and no setting that cannot.
  build(config) -> Noise | None            the runtime object for one job (None: clean)
  resolve(config, source)                  optional: the config completed from the job's dataset
                                           before its key is computed (no weights loaded)
  label(config), section                   a short name of a job's noise; its report section
  summarize(results)                       optional: suite metrics over the jobs of a suite
                                           (list of JobResult), e.g. WCAR or mCE
  dataset_metrics(kind, results)           optional: metrics a dataset kind gives its jobs
                                           (pre-rendered ImageNet-C folders: mCE of a clean run)
  warnings(metrics)                        optional: what a user should hear about a job's numbers
  cost(config)                             model passes per image of one job, for estimates
                                           (`robustart bench --dry-run`): {"forward", "backward"}
                                           and optionally "decode" (extra image decodes)

A family can also narrow a spec name another family owns (`extends`, `claims`, `owns`): the
quantized precision noise answers `precision:w8a8` that way, beside `precision:bf16`.

The engine decodes and preprocesses each image with the model's eval transform, computes the
clean logits once per batch, then calls `Noise.apply` and records the model's predictions on
what it returns. Records always carry `clean_pred`/`clean_correct` for non-clean noises, plus
the noise's own `fields`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # annotations only: importing the noise interface does not load torch
    import torch


@dataclass
class NoiseOutput:
    x: torch.Tensor  # float images in [0, 1], same shape as the input batch
    extras: dict[str, list] = field(default_factory=dict)  # one list per `Noise.fields` column


class Noise:
    """One job's noise. Subclasses set `fields` and implement `apply`; the other hooks are
    optional. The engine calls, in order: `check` (when the job is planned, before any weights
    are loaded), `prepare` (once, with the built model), then per batch `apply`, `predict` and
    `complete`, and at the end `job_checks`."""

    #: extra per-sample record columns: (name, pyarrow type)
    fields: list = []

    def __init__(self, config: dict):
        self.config = config

    @property
    def name(self) -> str:
        return self.config["name"]

    #: Optional: `loader(entry)` returns a picklable callable, path -> uint8 CHW tensor at the
    #: model's input geometry, that makes the noise's own image of a sample (ImageNet-S: another
    #: decoder and resizer). The engine then runs it in its decoding workers beside the model's
    #: eval transform, and `apply` gets those images (as floats in [0, 1]) as `variant=`.
    loader = None
    #: True when the loader must run in the main process (e.g. it decodes on the GPU, which a
    #: forked worker cannot use); the engine then decodes without worker processes.
    loader_in_main_process = False

    def check(self, entry, source) -> None:
        """Refuse a job this noise cannot run (raise a RobustartError saying why), before any
        weights are loaded: e.g. corruptions need RGB models. `entry` is the model's zoo entry,
        `source` the job's DataSource."""

    def prepare(self, model: torch.nn.Module, device: torch.device, data: "JobData | None" = None) -> None:
        """Once per job, before the first batch (e.g. build a transfer source model, calibrate a
        quantized copy). `data` is the job's dataset and samples (None outside the engine)."""

    def job_meta(self) -> dict:
        """Entries for the job's meta.json written when the job starts, after `prepare` (e.g.
        the calibration images and how many of them are evaluated too)."""
        return {}

    def predict(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model's logits on the noisy batch; override to change how the model runs
        (precision noise: autocast, TF32, channels_last). The clean pass always runs as is."""
        return model(x)

    def apply(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        ids: list[str],
        clean_logits: torch.Tensor,
        seed: int,
        variant: torch.Tensor | None = None,
    ) -> NoiseOutput:
        """The noisy batch for float images `x` in [0, 1] (N, 3, H, W) with labels `y`.

        `ids` are the sample ids: a stochastic noise draws each sample's randomness from
        (seed, id), so a sample's result does not depend on batching or resume. `variant` is
        the batch of the noise's own images when it has a `loader` (the engine passes it only
        then)."""
        raise NotImplementedError

    def complete(self, extras: dict, clean_logits: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> dict:
        """Columns that need the model's logits on the noisy batch (called by the engine after
        its forward pass on `NoiseOutput.x`); returns the full extras."""
        return extras

    def job_checks(self) -> dict:
        """Findings worth keeping in the job's meta.json (e.g. trust checks); called at the end."""
        return {}


@dataclass
class JobData:
    """What `Noise.prepare` may need of a job's data: its DataSource and the samples it
    evaluates, in order."""

    source: object
    samples: list


def default_label(cfg: dict) -> str:
    """A short, unique-enough name for a job's noise config: its name, then the settings that
    tell jobs of one family apart."""
    name = cfg.get("name", "?")
    parts = [name]
    for k in ("corruption", "severity", "decoder", "resize", "variant", "src", "norm"):
        if k in cfg and cfg[k] is not None:
            parts.append(str(cfg[k]))
    if "eps" in cfg and cfg["eps"] is not None:
        e = float(cfg["eps"])
        parts.append(f"{e * 255:.3g}/255" if cfg.get("norm") == "linf" else f"{e:.3g}")
    if cfg.get("budget"):
        parts.append(f"({cfg['budget']})")
    return " ".join(parts)


class NoiseFamily:
    """A family of noises (see the module docstring). Subclass it and override what applies;
    register an instance in robustart.noises.NOISE_FAMILIES."""

    #: the report section its jobs go to: clean, adversarial, corruption, imagenet-s, precision,
    #: or anything else (those jobs are listed under "Other noises")
    section: str = "other"
    #: spec names of other families this one narrows -> one-line help; `claims` decides
    extends: dict = {}

    def names(self) -> dict[str, str]:
        raise NotImplementedError

    def params(self, name: str) -> dict[str, str]:
        return {}

    def examples(self, name: str) -> list[str]:
        """Quick specs of a name (a job or two on a few images): what the registry tests run."""
        return []

    def parse(self, name: str, args: list, kwargs: dict, spec: str) -> dict | list[dict]:
        raise NotImplementedError

    def build(self, config: dict) -> Noise | None:
        raise NotImplementedError

    def claims(self, name: str, args: list, kwargs: dict) -> bool:
        """For a name in `extends`: True when this spec is this family's, not the owner's."""
        return False

    def syntax(self, name: str) -> str:
        """How the specs of a name in `extends` look, for listings (e.g. `precision:wNaM`)."""
        return f"{name}:..."

    def owns(self, config: dict) -> bool:
        """True when a job config is this family's (it has one of its names)."""
        return config.get("name") in self.names()

    def resolve(self, config: dict, source) -> dict:
        return config

    def label(self, config: dict) -> str:
        return default_label(config)

    def summarize(self, results: list) -> dict:
        return {}

    def dataset_metrics(self, kind: str, results: list) -> dict:
        return {}

    def warnings(self, metrics: dict) -> list[str]:
        return []

    def cost(self, config: dict) -> dict:
        """Passes of the model per image that one job of `config` makes, counting its clean pass:
        {"forward": f, "backward": b}, plus "decode" for image decodes beyond the one every job
        makes. An upper bound where the work stops early (attacks stop on fooled samples). The
        default: the clean pass and one pass on the noisy images."""
        return {"forward": 2.0, "backward": 0.0}


def sample_generator(seed: int, sample_id: str, salt: str = "", device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator seeded from (seed, sample id, salt): per-sample randomness that does not
    depend on batch composition, order or resume."""
    import hashlib

    import torch

    h = hashlib.sha256(f"{seed}\x00{sample_id}\x00{salt}".encode()).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
    return g
