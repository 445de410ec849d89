"""How a kernel is launched: compiled and autotuned on CUDA, interpreted on the CPU.

Each kernel is written once as a plain Python function and wrapped twice: ``triton.jit`` (with
``triton.autotune`` over a few H100-oriented tile configurations) for CUDA tensors, and
Triton's interpreter (``InterpretedFunction``, what ``TRITON_INTERPRET=1`` selects) for CPU
tensors. The interpreter runs the same kernel code with numpy, exactly, so CPU-only machines
and CI can run and test the ``triton`` backend (slowly) whatever the import order of triton.

A ``@triton.jit`` helper is a compiled-mode object unless triton was imported with
``TRITON_INTERPRET=1`` (timm imports triton early), and the interpreter cannot call it. So the
interpreted form of a kernel gets its own globals, in which each of its module's helpers (the
shared tile code of ``tiles.py``) is an interpreted function too. Helpers reached as attributes
of ``tl`` (``tl.sum``, ``tl.cdiv``, the ``@triton.jit`` code of ``triton.language.standard``)
are not swapped: kernel bodies use builtins there (``tl.reduce`` with
``tl.standard._sum_combine``, ``(K + B - 1) // B``).
"""

from __future__ import annotations

import types

import torch

from robustart.errors import need

triton = need("triton", "robustart's Triton kernels (backend 'triton')")
from triton.runtime import interpreter as _interpreter  # noqa: E402
from triton.runtime.interpreter import InterpretedFunction  # noqa: E402


def _triton_version() -> tuple[int, int]:
    major, minor = triton.__version__.split(".")[:2]
    return int(major), int(minor)


def _interpreter_scalar_index():
    """Triton < 3.7's interpreter turns a scalar into a Python int (``range(K // BLOCK_K)``,
    indexing) with ``int()`` of its one-element 1-D numpy array, which NumPy >= 2.4 refuses ("only
    0-dimensional arrays can be converted to Python scalars", triton-lang/triton#9171). Triton
    3.7 takes ``int(data.squeeze())``; this gives older interpreters the same ``__index__``,
    restored with the rest of the interpreter's patches when a kernel returns."""
    patch_tensor = _interpreter._patch_lang_tensor

    def patch(tensor, scope):
        patch_tensor(tensor, scope)
        scope.set_attr(tensor, "__index__", lambda self: int(self.handle.data.squeeze()))

    _interpreter._patch_lang_tensor = patch


if _triton_version() < (3, 7):
    _interpreter_scalar_index()


def _interpretable(fn, _done=None):
    """``fn`` with every ``@triton.jit`` helper among its globals swapped for its interpreted
    form (a copy of the function: the module's names stay compiled-mode for ``triton.jit``)."""
    from triton.runtime.jit import JITFunction

    done = {} if _done is None else _done  # helper function -> its interpreted form
    helpers = {name: v.fn for name, v in fn.__globals__.items() if isinstance(v, JITFunction)}
    if not helpers:
        return fn
    g = dict(fn.__globals__)
    for name, h in helpers.items():
        if h not in done:
            done[h] = InterpretedFunction.__new__(InterpretedFunction)  # placeholder for cycles
            done[h].__init__(_interpretable(h, done))
        g[name] = done[h]
    return types.FunctionType(fn.__code__, g, fn.__name__, fn.__defaults__, fn.__closure__)


class Kernel:
    """A Triton kernel with its CUDA (autotuned) and CPU (interpreted) forms.

    ``interp_meta``: the block sizes used under the interpreter (small, so that tests with small
    shapes still span several tiles and exercise the ragged edges)."""

    def __init__(self, fn, configs, key, interp_meta, prune=None):
        self.name = fn.__name__
        self.interpreted = InterpretedFunction(_interpretable(fn))
        if triton.knobs.runtime.interpret:
            # TRITON_INTERPRET=1 was set: triton.jit would interpret too, so every device does.
            self.compiled = None
        else:
            self.compiled = triton.autotune(
                configs=configs, key=key,
                prune_configs_by={"early_config_prune": prune} if prune else None,
            )(triton.jit(fn))
        self.interp_meta = dict(interp_meta)

    def __call__(self, grid, device: torch.device, *args, **kwargs):
        """``grid``: a function of the meta-parameters (block sizes) -> launch grid."""
        if device.type == "cuda" and self.compiled is not None:
            self.compiled[grid](*args, **kwargs)
        elif device.type in ("cpu", "cuda"):
            meta = dict(self.interp_meta)
            self.interpreted[grid(meta)](*args, **kwargs, **meta)
        else:
            raise ValueError(f"{self.name}: tensors on device {device} are not supported; "
                             "use CUDA tensors, CPU tensors (Triton interpreter) or backend='torch'")


def tile(bm, bn, bk, stages, warps, group_m=8, k_name="BLOCK_K"):
    """One autotune configuration: an (M, N, K) tile, pipeline stages, warps, and GROUP_M (how many
    M-tiles share an N-tile in the launch order, for L2 reuse)."""
    return triton.Config({"BLOCK_M": bm, "BLOCK_N": bn, k_name: bk, "GROUP_M": group_m},
                         num_stages=stages, num_warps=warps)


def prune_by_m(configs, named_args, **kwargs):
    """Keep the small-M (GEMV-like, memory-bound) tiles for M <= 32 and the big tiles otherwise."""
    m = named_args["M"]
    small = [c for c in configs if c.kwargs["BLOCK_M"] <= 32]
    big = [c for c in configs if c.kwargs["BLOCK_M"] > 32]
    keep = small if m <= 32 else big
    return keep or configs
