"""`robustart quant`: tools around quantized forms (data-free calibration images)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from robustart import console as C

app = typer.Typer(help="Quantized forms: data-free calibration images.", no_args_is_help=True)
err = C.err


def _fail(e: Exception) -> None:
    C.fail(e)


@app.command("calib-gen")
def calib_gen(
    model: Annotated[str, typer.Argument(help="Zoo model name (its float form; needs BatchNorm for dsg / zeroq).")],
    method: Annotated[str, typer.Option("--method", help="dsg | zeroq | noise.")] = "dsg",
    n: Annotated[int, typer.Option("--n", help="Number of images (a form's calib=N).")] = 64,
    seed: Annotated[int, typer.Option("--seed", help="Seed (a form's seed=).")] = 0,
    iters: Annotated[Optional[int], typer.Option("--iters", help="Optimizer steps per batch (a form's gen_iters=; default 60).")] = None,
    margin: Annotated[Optional[float], typer.Option("--margin", help="dsg: slack in units of a layer's BN std (a form's gen_margin=; default 0.25).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", "-o", help="Grid PNG of the images (default: beside the cache file).")] = None,
    threads: Annotated[Optional[int], typer.Option("--threads", help="torch CPU threads.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
) -> None:
    """Generate (or reuse) the calibration images that `NAME@wNaM:calib_data=METHOD,calib=N,seed=S[,gen_iters=I,gen_margin=K]`
    uses, and write a grid PNG of them."""
    import torch

    from robustart.errors import RobustartError
    from robustart.quant import dsg

    if threads:
        torch.set_num_threads(threads)
    try:
        if method not in dsg.METHODS:
            raise RobustartError(f"--method {method!r}: choose one of {', '.join(dsg.METHODS)}.")
        kw = {k: v for k, v in (("iters", iters), ("margin", margin)) if v is not None}
        try:
            cfg = dsg.GenConfig(method=method, n=n, seed=seed, **kw)
        except ValueError as e:
            raise RobustartError(str(e)) from None
        from robustart.zoo.build import load_model
        from robustart.zoo.registry import get_entry

        entry = get_entry(model)
        if entry.form != "fp":
            raise RobustartError(f"model {model!r} is a {entry.form} form; give the float model's name.")
        m = load_model(entry, progress=False)
        from rich.progress import Progress

        with Progress(console=err, disable=as_json) as bar:
            images, path = dsg.images_for(m, cfg, progress=bar)
        png = dsg.grid_png(images, out or path.with_suffix(".png"))
        with torch.no_grad():
            probs = m(images.float() / 255).softmax(1)
        res = {"model": entry.name, "method": method, "n": n, "seed": seed, "cache": str(path), "grid": str(png),
               "settings": cfg.to_dict(), "mean_max_prob": float(probs.max(1).values.mean()),
               "distinct_top1": int(probs.argmax(1).unique().numel())}
    except RobustartError as e:
        _fail(e)
    if as_json:
        sys.stdout.write(json.dumps(res, indent=1) + "\n")
    else:
        err.print(f"{n} {method} images for {entry.name}: {path}\ngrid: {png}\n"
                  f"mean max prob {res['mean_max_prob']:.3f}, {res['distinct_top1']} distinct top-1 classes",
                  highlight=False)
