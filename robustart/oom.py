"""Running a batch that may not fit: on CUDA out-of-memory, the same work on its two halves
(recursively, down to one sample), so a job never fails for a batch size that is too large."""

from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


def on_halves(fn: Callable[[int, int], T], n: int, cat: Callable[[T, T], T]) -> T:
    """`fn(lo, hi)` on the rows [0, n); when CUDA runs out of memory, `fn` on each half and the
    two results joined with `cat`."""
    import torch

    def run(lo: int, hi: int) -> T:
        try:
            return fn(lo, hi)
        except torch.cuda.OutOfMemoryError:
            if hi - lo <= 1:
                raise
            torch.cuda.empty_cache()
            mid = lo + (hi - lo) // 2
            return cat(run(lo, mid), run(mid, hi))

    return run(0, n)
