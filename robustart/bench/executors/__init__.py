"""Executors: where a plan's units of work run.

Serial stand-in: the `local` executor only, in this process. The executors' own work (local
worker processes, Ray, Slurm) replaces this module."""

from __future__ import annotations

from robustart.registry import Registry

EXECUTORS = Registry("executor", message="unknown executor {name!r}.{hint} Executors: {names}.")
EXECUTORS.register_lazy("local", "robustart.bench.run:run_serial")
