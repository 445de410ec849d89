"""Turning one batch of decoded images into per-sample records: the clean forward pass, the
noise (`apply`, `predict`, `complete`), predictions and failures. The record columns are the
base ones of `record_schema` plus each noise's own `fields`."""

from __future__ import annotations

import torch

from robustart.data.decode import BadImageError, load_rgb
from robustart.data.sources import DataSource, Sample


def record_schema(noise=None):
    """Per-sample record columns: the base ones, then for a noise job the model's clean
    prediction on the same sample and the noise family's own columns."""
    import pyarrow as pa

    fields = [
        ("sample_id", pa.string()),
        ("label", pa.int32()),
        ("pred", pa.int32()),
        ("top5", pa.list_(pa.int32())),
        ("correct", pa.bool_()),
        ("prob", pa.float32()),  # softmax probability of the true class
        ("margin", pa.float32()),  # true-class logit minus the largest other logit
        ("status", pa.string()),  # "ok" or "failed"
        ("error", pa.string()),  # why a sample failed
        ("note", pa.string()),  # conversions applied while decoding (e.g. from CMYK)
    ]
    if noise is not None:
        fields += [("clean_pred", pa.int32()), ("clean_correct", pa.bool_())] + list(noise.fields)
    return pa.schema(fields)


class ImageDataset(torch.utils.data.Dataset):
    """Decode + eval transform; a bad file yields its reason instead of an image. With a
    noise's `loader` (e.g. another decoder and resizer), each item also carries the noise's own
    image of the sample (or the reason it could not be made)."""

    def __init__(self, samples: list[Sample], indices: list[int], transform, loader=None, read=None):
        self.samples = samples
        self.indices = indices
        self.transform = transform
        self.loader = loader
        self.read = read  # in-memory datasets: sample -> uint8 CHW tensor (no file to decode)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, j: int):
        i = self.indices[j]
        try:
            if self.read is not None:
                img, note = self.read(self.samples[i]), ""
            else:
                img, note = load_rgb(self.samples[i].path)
            x = self.transform(img)
        except BadImageError as e:
            return i, None, str(e), "", None
        except Exception as e:  # a transform failing on an odd image must not end the run
            return i, None, f"{type(e).__name__}: {e}", "", None
        if self.loader is None:
            return i, x, "", note, None
        try:
            return i, x, "", note, self.loader(self.samples[i].path)
        except Exception as e:  # the noise's pipeline failing on one file fails that sample only
            return i, None, f"{type(e).__name__} in the noise's image pipeline: {e}", note, None


def entry_transform(entry, source: DataSource | None = None):
    from robustart.data.transforms import array_transform, eval_transform

    if source is not None and source.read is not None:  # in-memory images: the entry's geometry, no crop
        return array_transform(entry)
    return eval_transform(entry)


def collate(batch):
    return batch


def forward(model, x: torch.Tensor, predict=None) -> torch.Tensor:
    """Logits (through a noise's own `predict`, e.g. at another precision, when given); on CUDA
    out-of-memory, in halves instead of failing the job."""
    from robustart.oom import on_halves

    def run(lo, hi):
        xs = x if (lo, hi) == (0, x.shape[0]) else x[lo:hi]
        return predict(model, xs) if predict is not None else model(xs)

    return on_halves(run, x.shape[0], lambda a, b: torch.cat([a, b]))


class SubsetModel(torch.nn.Module):
    """A 1000-class model restricted to a dataset's class subset (ImageNet-A/R: 200 classes):
    logits of those classes only, so attacks and softmax see the same task the dataset poses."""

    def __init__(self, model, subset):
        super().__init__()
        self.model = model
        self.register_buffer("subset", torch.as_tensor(subset, dtype=torch.long))

    def forward(self, x):
        return self.model(x).index_select(1, self.subset.to(x.device))


def outcome(logits: torch.Tensor, labels: torch.Tensor):
    """pred, top5, true-class probability and margin per row; labels must be in range."""
    top5 = logits.topk(min(5, logits.shape[1]), dim=1).indices
    true_logit = logits.gather(1, labels[:, None])[:, 0]
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    prob = logits.softmax(1).gather(1, labels[:, None])[:, 0]
    return top5.cpu(), prob.cpu(), (true_logit - other).cpu()


def batch_records(model, batch, samples: list[Sample], device, noise=None, seed: int = 0,
                  subset=None, clean_cache: dict | None = None) -> list[dict]:
    """Per-sample records for one batch of (index, uint8 image | None, error, note).

    With a noise: the clean logits are computed once (or taken from `clean_cache`, shared by the
    jobs of a suite), the noise makes its batch, and the model's predictions on it are recorded
    beside the clean prediction. `subset`: class indices the model is restricted to."""
    rows = {}
    good = []
    extra_cols = [name for name, _ in noise.fields] if noise is not None else []

    def failed(s, note, err):
        row = {"sample_id": s.id, "label": s.label, "note": note, "pred": -1, "top5": [], "correct": False,
               "prob": float("nan"), "margin": float("nan"), "status": "failed", "error": err}
        if noise is not None:
            row.update({"clean_pred": -1, "clean_correct": False}, **{c: None for c in extra_cols})
        return row

    to_pos = {c: k for k, c in enumerate(subset)} if subset is not None else None
    variants = {}
    for i, x, err, note, xv in batch:
        s = samples[i]
        if x is None:
            rows[i] = failed(s, note, err)
        elif to_pos is not None and s.label not in to_pos:
            rows[i] = failed(s, note, f"label {s.label} is not among the dataset's {len(to_pos)} classes")
        else:
            good.append((i, x, note))
            variants[i] = xv
    if good:
        xb = torch.stack([x for _, x, _ in good]).to(device, non_blocking=True).float().div_(255.0)
        ids = [samples[i].id for i, _, _ in good]
        labels = [samples[i].label for i, _, _ in good]
        labels = torch.tensor([to_pos[lab] for lab in labels] if to_pos else labels, device=xb.device)
        cached = [clean_cache.get(sid) for sid in ids] if clean_cache is not None and noise is not None else None
        if cached is not None and all(c is not None for c in cached):
            clean_logits = torch.stack(cached).to(xb.device)
        else:
            with torch.inference_mode():
                clean_logits = forward(model, xb).float()
            if clean_cache is not None and noise is not None:
                clean_cache.update(zip(ids, clean_logits.cpu()))
        n_cls = clean_logits.shape[1]
        in_range = labels < n_cls
        lab = labels.clamp(max=n_cls - 1)
        extras: dict = {}
        if noise is None:
            logits = clean_logits
        else:
            if noise.loader is not None:  # the noise's own images of these samples, as floats
                xv = torch.stack([variants[i] for i, _, _ in good]).to(xb.device).float().div_(255.0)
                out = noise.apply(model, xb, lab, ids, clean_logits, seed, variant=xv)
            else:
                out = noise.apply(model, xb, lab, ids, clean_logits, seed)
            with torch.inference_mode():
                logits = forward(model, out.x, noise.predict).float()
            extras = noise.complete(out.extras, clean_logits, logits, lab)
            clean_pred = clean_logits.argmax(1).cpu()
        top5, prob, margin = outcome(logits, lab)
        back = (lambda k: subset[k]) if subset is not None else (lambda k: k)
        for k, (i, _, note) in enumerate(good):
            s = samples[i]
            if not bool(in_range[k]):
                rows[i] = failed(s, note, f"label {s.label} is outside the model's {n_cls} classes")
                continue
            t5 = [back(c) for c in top5[k].tolist()]
            rows[i] = {"sample_id": s.id, "label": s.label, "pred": t5[0], "top5": t5,
                       "correct": t5[0] == s.label, "prob": float(prob[k]), "margin": float(margin[k]),
                       "status": "ok", "error": "", "note": note}
            if noise is not None:
                cp = back(int(clean_pred[k]))
                rows[i].update(clean_pred=cp, clean_correct=cp == s.label,
                               **{c: extras[c][k] for c in extra_cols})
    return [dict(rows[i], _index=i) for i in sorted(rows)]
