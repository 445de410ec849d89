"""What a noise is to the engine.

A noise family is one module in `robustart/noises/` with:

  NAMES: dict[str, str]                    spec names it answers to -> one-line help
  parse(name, args, kwargs, spec) -> dict | list[dict]
                                           the job config(s) of a spec; a list for a suite
                                           (e.g. `adversarial`, `imagenet-c`), one job each.
                                           Every config has "name" and is JSON-able: it goes
                                           into the job key, so it holds every setting that can
                                           change a result, and no setting that cannot.
  build(config) -> Noise                   the runtime object for one job
  summarize(results) -> dict               optional: suite metrics over the jobs of a suite
                                           (list of JobResult), e.g. WCAR or mCE

and one line in `robustart/noises/__init__.py`'s FAMILIES.

The engine decodes and preprocesses each image with the model's eval transform, computes the
clean logits once per batch, then calls `Noise.apply` and records the model's predictions on
what it returns. Records always carry `clean_pred`/`clean_correct` for non-clean noises, plus
the noise's own `fields`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass
class NoiseOutput:
    x: torch.Tensor  # float images in [0, 1], same shape as the input batch
    extras: dict[str, list] = field(default_factory=dict)  # one list per `Noise.fields` column


class Noise:
    """One job's noise. Subclasses set `fields` and implement `apply`."""

    #: extra per-sample record columns: (name, pyarrow type)
    fields: list = []
    #: True when `apply` needs gradients of the model (the engine then runs it outside no_grad)
    needs_grad: bool = False

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

    def predict(self, model: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
        """The model's logits on the noisy batch; override to change how the model runs
        (precision noise: autocast, TF32, channels_last). The clean pass always runs as is."""
        return model(x)

    def prepare(self, model: torch.nn.Module, device: torch.device) -> None:
        """Once per job, before the first batch (e.g. build a transfer source model)."""

    def apply(
        self,
        model: torch.nn.Module,
        x: torch.Tensor,
        y: torch.Tensor,
        ids: list[str],
        clean_logits: torch.Tensor,
        seed: int,
    ) -> NoiseOutput:
        """The noisy batch for float images `x` in [0, 1] (N, 3, H, W) with labels `y`.

        `ids` are the sample ids: a stochastic noise draws each sample's randomness from
        (seed, id), so a sample's result does not depend on batching or resume."""
        raise NotImplementedError

    def complete(self, extras: dict, clean_logits: torch.Tensor, logits: torch.Tensor, y: torch.Tensor) -> dict:
        """Columns that need the model's logits on the noisy batch (called by the engine after
        its forward pass on `NoiseOutput.x`); returns the full extras."""
        return extras

    def job_checks(self) -> dict:
        """Findings worth keeping in the job's meta.json (e.g. trust checks); called at the end."""
        return {}


def sample_generator(seed: int, sample_id: str, salt: str = "", device: str | torch.device = "cpu") -> torch.Generator:
    """A torch Generator seeded from (seed, sample id, salt): per-sample randomness that does not
    depend on batch composition, order or resume."""
    import hashlib

    h = hashlib.sha256(f"{seed}\x00{sample_id}\x00{salt}".encode()).digest()
    g = torch.Generator(device=device)
    g.manual_seed(int.from_bytes(h[:8], "little") & ((1 << 63) - 1))
    return g
