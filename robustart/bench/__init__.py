"""Benchmarks at scale (`robustart bench`): plans of models x noises expanded into the exact jobs
`robustart eval` makes (plan.py, select.py, presets.py), their cost before anything runs
(cost.py), their state in the store (status.py), and their units of work (job, shard) run by an
executor (run.py; executors/: in this process, worker processes, Ray, Slurm). A layer above
engine/, results/, noises/, zoo/ and reports/; only the CLI and the API import it."""
