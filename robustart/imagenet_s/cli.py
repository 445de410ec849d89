"""`robustart imagenet-s ...`: set up Pillow-SIMD, build decoder x resize variants as shards.
Only typer at module level: the main CLI imports this for `--help`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

app = typer.Typer(help="ImageNet-S system noise: decoder x resize variants of a dataset.", no_args_is_help=True)


def _fail(e: Exception) -> None:
    from robustart.console import fail

    fail(e)


def _split(value: Optional[str]) -> Optional[list[str]]:
    return [v.strip() for v in value.replace("+", ",").split(",") if v.strip()] if value else None


@app.command("setup")
def setup_cmd(
    target: Annotated[Optional[Path], typer.Option("--target", help="Install folder [env ROBUSTART_PILLOW_SIMD; default: <active virtual environment>/pillow-simd, else $ROBUSTART_HOME/pillow-simd].")] = None,
    version: Annotated[Optional[str], typer.Option("--version", help="Pillow-SIMD version (default: the newest).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Reinstall even if it is set up.")] = False,
) -> None:
    """Install Pillow-SIMD into its own folder (it builds from source).

    The pil-simd decoder and resizers run it in a worker process.
    """
    from robustart.errors import RobustartError
    from robustart.imagenet_s.setup import install

    from robustart import console as C

    try:
        install(target, version=version, force=force, log=lambda m: C.out.print(m, soft_wrap=True))
    except RobustartError as e:
        _fail(e)


@app.command("list")
def list_cmd(
    fmt: Annotated[Optional[str], typer.Option("--format", help="table, tsv or json (default: table on a terminal, tsv when piped).")] = None,
) -> None:
    """Decoders and resizers, and whether each can run here."""
    from robustart import console as C
    from robustart.imagenet_s import decoders as D
    from robustart.imagenet_s import resize as R

    try:
        fmt = C.output_format(fmt)
    except Exception as e:
        _fail(e)
    rows = []
    for name, spec in D.DECODERS.items():
        why = D.unavailable(name)
        rows.append(["decoder", name, spec.help, "yes" if why is None else why])
    for name, r in R.RESIZERS.items():
        why = r.unavailable()
        rows.append(["resizer", name, r.help, "yes" if why is None else why])
    C.emit_table(["kind", "name", "what", "here"], rows, fmt=fmt, title="ImageNet-S backends", keep=("name",),
                 drop_order=("what",))


@app.command("build")
def build_cmd(
    data: Annotated[str, typer.Option("--data", "-d", help="Dataset: ImageFolder root, flat `<wnid>_*.JPEG` folder or labels file.")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output folder (manifest.json + shards).")],
    decoders: Annotated[Optional[str], typer.Option("--decoders", help="Decoders, comma-separated (default: all that run here).")] = None,
    resizers: Annotated[Optional[str], typer.Option("--resizers", help="Resizers, comma-separated; `model` is the model's own (default: all that run here).")] = None,
    grid: Annotated[str, typer.Option("--grid", help="sweep (one factor at a time) or full (decoders x resizers).")] = "sweep",
    model: Annotated[str, typer.Option("--model", "-m", help="Zoo model whose eval geometry (input size, crop_pct, interpolation) the variants use.")] = "efficientnet_lite0",
    geometry: Annotated[str, typer.Option("--geometry", help="eval (the model's) or square (ImageNet-S's).")] = "eval",
    limit: Annotated[Optional[int], typer.Option("--limit", help="First N samples (ordered by relative path).")] = None,
    workers: Annotated[int, typer.Option("--workers", "-w", help="Worker processes.")] = 2,
    shard_size: Annotated[int, typer.Option("--shard-size", help="Images per shard (the unit of resume).")] = 256,
    data_root: Annotated[Optional[Path], typer.Option("--data-root", help="Folder a labels file's paths are relative to.")] = None,
) -> None:
    """Materialise decoder x resize variants as uint8 shards with a manifest.

    Resumable: shards already written are kept; run it again to finish. Evaluate them with
    `robustart eval --noise imagenet-s:shards=OUT`.
    """
    import sys

    from robustart.errors import RobustartError
    from robustart.imagenet_s import build as B

    try:
        m = B.build(data, out, decoders=_split(decoders), resizers=_split(resizers), grid=grid, model=model,
                    geometry=geometry, limit=limit, workers=workers, shard_size=shard_size, data_root=data_root,
                    progress=sys.stderr.isatty())
    except (RobustartError, KeyError) as e:
        _fail(e)
    from robustart import console as C
    from robustart.imagenet_s import grid as G

    C.out.print(f"{len(m['variants'])} variants x {len(m['samples'])} images in {out} "
                f"(fingerprint {m['fingerprint']}); evaluate with --noise imagenet-s:shards={out}", soft_wrap=True)
    for why in G.left_out(decoders=decoders is None, resizers=resizers is None):  # named, never dropped silently
        C.warning(why.replace("of the sweep", "of the build"))
