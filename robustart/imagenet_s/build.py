"""`robustart imagenet-s build`: decoder x resize variants of a dataset as uint8 shards.

  OUT/manifest.json                         dataset, geometry, variants, per-shard sha256, fingerprint
  OUT/<decoder>__<resize>__<geometry>/shard-00000.npz
                                            images (n, 3, S, S) uint8, ok (n,), error (n,): the
                                            samples [k*shard_size, (k+1)*shard_size) in id order

Every shard is written to a temporary name and renamed, so a shard on disk is whole; a run that
stops keeps its shards and the next run does only what is missing. The manifest is rewritten at
the end with each shard's sha256 and a fingerprint over all of them (the key of jobs that read
these shards), and `status: complete` only when every shard exists.
"""

from __future__ import annotations

import io
import json
import os
from pathlib import Path

import numpy as np

from robustart.zoo.weights import file_sha256
from robustart.errors import RobustartError

MANIFEST = "manifest.json"
FORMAT = 1


def resolve_dir(path) -> Path:
    return Path(path).expanduser().resolve()


def variant_key(decoder: str, resize: str, geometry: str) -> str:
    return f"{decoder}__{resize}__{geometry}"


def read_manifest(path) -> dict:
    d = resolve_dir(path)
    f = d / MANIFEST
    if not f.is_file():
        raise RobustartError(f"{d} has no {MANIFEST}: build variants there with `robustart imagenet-s build --out {d}`.")
    m = json.loads(f.read_text())
    if m.get("format") != FORMAT:
        raise RobustartError(f"{f}: unknown manifest format {m.get('format')!r}; rebuild with this robustart.")
    if m.get("status") != "complete":
        raise RobustartError(f"{d}: the build has not finished ({m.get('status')}); run `robustart imagenet-s build` "
                             "again with the same arguments to finish it.")
    return m


def _fingerprint(m: dict, key: str | None = None) -> str:
    """Hash of what decides the images: the data, geometry and shards' sha256 of one variant
    (`key`), or of all. A job reading one variant is keyed on that variant's fingerprint, so
    adding variants to a build later does not invalidate finished jobs."""
    from robustart.results.store import stable_hash

    body = {k: m[k] for k in ("format", "dataset", "samples", "geometry", "shard_size")}
    keys = [key] if key else sorted(m["variants"])
    body["variants"] = {k: {f: m["variants"][k][f] for f in ("decoder", "resize", "resizer", "geometry", "sha256")}
                        for k in keys}
    return stable_hash(body)


def _write_atomic(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _make_shard(task) -> tuple[str, int, int, int]:
    """Worker: one variant's images of one range of samples -> one shard file."""
    pipeline, paths, dest = task
    size = pipeline.size
    images = np.zeros((len(paths), 3, size, size), np.uint8)
    ok = np.zeros(len(paths), bool)
    errors = []
    for k, p in enumerate(paths):
        try:
            images[k] = pipeline.array(Path(p).read_bytes()).transpose(2, 0, 1)
            ok[k] = True
            errors.append("")
        except Exception as e:  # one bad file is recorded, not fatal
            errors.append(f"{type(e).__name__}: {e}")
    buf = io.BytesIO()
    np.savez(buf, images=images, ok=ok, error=np.array(errors, dtype=str))
    dest = Path(dest)
    _write_atomic(dest, buf.getvalue())
    return str(dest), len(paths), int(ok.sum()), os.getpid()


def build(data, out, *, decoders=None, resizers=None, grid: str = "sweep", model: str = "efficientnet_lite0",
          geometry: str = "eval", limit: int | None = None, workers: int = 2, shard_size: int = 256,
          data_root=None, progress: bool = True, log=print) -> dict:
    from robustart.data.sources import DataSource, open_source
    from robustart.imagenet_s import decoders as D
    from robustart.imagenet_s import grid as G
    from robustart.imagenet_s.pipeline import Pipeline, geometry_of
    from robustart.zoo.registry import get_entry

    if grid not in ("sweep", "full", "decoders", "resizers"):
        raise RobustartError(f"--grid must be sweep, full, decoders or resizers, got {grid!r}.")
    if shard_size < 1 or workers < 1:
        raise RobustartError("--shard-size and --workers must be at least 1.")
    entry = get_entry(model)
    size, crop_pct, interp = geometry_of(entry)
    source = open_source(data, root=data_root)
    samples = source.take(limit)
    if not samples:
        raise RobustartError(f"dataset {source.name} has no samples (limit={limit}).")
    pairs = G.variants(grid, decoders, resizers)
    pipelines = {}
    for d, r in pairs:
        p = Pipeline.for_entry(entry, d, r, geometry)  # unknown names fail here, with the lists
        why = p.unavailable()
        if why:
            raise RobustartError(f"variant {d}/{r}: {why}")
        pipelines[variant_key(d, r, geometry)] = (d, r, p)

    out = resolve_dir(out)
    out.mkdir(parents=True, exist_ok=True)
    plan = {"format": FORMAT,
            "dataset": {"kind": source.kind, "name": source.name, "root": str(source.root), "n": len(samples),
                        "fingerprint": DataSource.fingerprint(samples)},
            "samples": [s.id for s in samples],
            "geometry": {"model": entry.name, "size": size, "crop_pct": crop_pct, "interpolation": interp},
            "shard_size": shard_size}
    old = None
    if (out / MANIFEST).is_file():
        old = json.loads((out / MANIFEST).read_text())
        same = {k: old.get(k) for k in ("format", "dataset", "samples", "shard_size")} == \
               {k: plan[k] for k in ("format", "dataset", "samples", "shard_size")} and \
            {k: v for k, v in old.get("geometry", {}).items() if k != "model"} == \
            {k: v for k, v in plan["geometry"].items() if k != "model"}
        if not same:
            raise RobustartError(f"{out} holds variants of other data, geometry or shard size; use another --out "
                                 "or delete it.")
    variants = dict(old["variants"]) if old else {}
    for key, (d, r, p) in pipelines.items():
        variants.setdefault(key, {"decoder": d, "resize": r, "resizer": p.resizer, "geometry": geometry,
                                  "versions": {}, "sha256": []})
    manifest = {**plan, "status": "building", "variants": variants}
    _write_atomic(out / MANIFEST, json.dumps(manifest, indent=1).encode())

    n_shards = (len(samples) + shard_size - 1) // shard_size
    tasks = []
    for key, (d, r, p) in pipelines.items():
        (out / key).mkdir(exist_ok=True)
        for s in range(n_shards):
            dest = out / key / f"shard-{s:05d}.npz"
            if not dest.is_file():
                paths = [str(x.path) for x in samples[s * shard_size:(s + 1) * shard_size]]
                tasks.append((p, paths, str(dest)))
    done_before = len(pipelines) * n_shards - len(tasks)
    if done_before:
        log(f"resuming: {done_before} of {len(pipelines) * n_shards} shards are already built.")
    total = sum(len(t[1]) for t in tasks)
    if tasks:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        with Progress(TextColumn("imagenet-s build"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=Console(stderr=True), disable=not progress) as bar:
            t = bar.add_task("build", total=total)
            if workers == 1:
                for task in tasks:
                    bar.update(t, advance=_make_shard(task)[1])
            else:
                import multiprocessing as mp

                # fork: workers inherit the imported backends; each starts its own Pillow-SIMD worker
                with mp.get_context("fork").Pool(workers) as pool:
                    for _, n, _, _ in pool.imap_unordered(_make_shard, tasks):
                        bar.update(t, advance=n)
    for key, v in variants.items():
        files = [out / key / f"shard-{s:05d}.npz" for s in range(n_shards)]
        if all(f.is_file() for f in files):
            old_sha = v.get("sha256") or []
            v["sha256"] = old_sha if len(old_sha) == n_shards and key not in pipelines else [file_sha256(f) for f in files]
            if key in pipelines:
                try:
                    v["versions"] = {"decoder": D.get(v["decoder"]).version()}
                except Exception as e:
                    v["versions"] = {"error": str(e)}
    manifest["status"] = "complete" if all(len(v["sha256"]) == n_shards for v in variants.values()) else "partial"
    for key, v in variants.items():
        v["fingerprint"] = _fingerprint(manifest, key)
    manifest["fingerprint"] = _fingerprint(manifest)
    _write_atomic(out / MANIFEST, json.dumps(manifest, indent=1).encode())
    return manifest


def verify_shards(directory, key: str, manifest: dict) -> None:
    """Each shard of variant `key` has the sha256 its manifest recorded (the job's key is made
    from those hashes), or a RobustartError naming the shard that changed."""
    d = resolve_dir(directory)
    hashes = manifest["variants"][key].get("sha256") or []
    n_shards = -(-len(manifest["samples"]) // int(manifest["shard_size"]))
    if len(hashes) != n_shards:
        raise RobustartError(f"{d}: the manifest lists {len(hashes)} shard hashes for {key}, not {n_shards}; run "
                             "`robustart imagenet-s build` again with the same arguments.")
    for s, want in enumerate(hashes):
        f = d / key / f"shard-{s:05d}.npz"
        if not f.is_file():
            raise RobustartError(f"ImageNet-S shard {f} is missing; run `robustart imagenet-s build` again with the "
                                 "same arguments to remake it.")
        if file_sha256(f) != want:
            raise RobustartError(f"ImageNet-S shard {f} was changed after the build (its sha256 is not the "
                                 "manifest's); refusing to read it. Delete it and run `robustart imagenet-s build` "
                                 "again with the same arguments to remake it.")


class ShardReader:
    """A picklable path -> uint8 CHW tensor that reads one built variant instead of decoding.
    Samples are found by id (their relative path), so the dataset may have moved since."""

    def __init__(self, directory, key: str, manifest: dict, pipeline):
        self.dir = str(directory)
        self.key = key
        self.ids = {sid: k for k, sid in enumerate(manifest["samples"])}
        self.shard_size = int(manifest["shard_size"])
        self.pipeline = pipeline
        self._cache: dict = {}

    @classmethod
    def for_entry(cls, directory, fingerprint: str, entry, decoder: str, resize: str, geometry: str):
        from robustart.imagenet_s.pipeline import Pipeline, geometry_of

        m = read_manifest(directory)
        key = variant_key(decoder, resize, geometry)
        if key not in m["variants"]:
            raise RobustartError(f"variant {decoder}/{resize} ({geometry}) is not built in {directory}.")
        if m["variants"][key]["fingerprint"] != fingerprint:
            raise RobustartError(f"the shards of {decoder}/{resize} in {directory} changed since this job was "
                                 f"specified (fingerprint {m['variants'][key]['fingerprint']}, job keyed on "
                                 f"{fingerprint}); run the eval again.")
        verify_shards(directory, key, m)
        size, crop_pct, interp = geometry_of(entry)
        g = m["geometry"]
        if (g["size"], g["crop_pct"]) != (size, crop_pct):
            raise RobustartError(f"the shards in {directory} were built at {g['size']}px, crop_pct {g['crop_pct']} "
                                 f"(for {g['model']}); {entry.name} needs {size}px, crop_pct {crop_pct}. Build them "
                                 f"for it: robustart imagenet-s build --model {entry.name} ...")
        pipe = Pipeline.for_entry(entry, decoder, resize, geometry)
        if m["variants"][key]["resizer"] != pipe.resizer:
            raise RobustartError(f"the shards' `model` resizer is {m['variants'][key]['resizer']} (for {g['model']}); "
                                 f"{entry.name}'s is {pipe.resizer}. Build them with --model {entry.name}.")
        return cls(resolve_dir(directory), key, m, pipe)

    def _index(self, path) -> int:
        parts = Path(path).parts
        for k in range(1, len(parts) + 1):
            k_id = "/".join(parts[-k:])
            if k_id in self.ids:
                return self.ids[k_id]
        raise ValueError(f"{path} is not among the built samples in {self.dir}")

    def __call__(self, path):
        import torch

        i = self._index(path)
        s, j = divmod(i, self.shard_size)
        if s not in self._cache:
            if len(self._cache) >= 2:  # a loader walks samples in order: two shards are plenty
                self._cache.pop(next(iter(self._cache)))
            with np.load(Path(self.dir) / self.key / f"shard-{s:05d}.npz") as z:
                self._cache[s] = (z["images"], z["ok"], z["error"])
        images, ok, error = self._cache[s]
        if not ok[j]:
            raise ValueError(f"not built: {error[j]}")
        return torch.from_numpy(images[j].copy())

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cache"] = {}
        return state
