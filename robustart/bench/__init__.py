"""Benchmarks at scale (`robustart bench`): plans of models x noises expanded into the exact jobs
`robustart eval` makes (plan.py, select.py, presets.py), their cost before anything runs
(cost.py), their state in the store (status.py), and running their units of work on an executor
(run.py, executors/). A layer above engine/, results/, noises/, zoo/ and reports/."""
