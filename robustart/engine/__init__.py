"""The evaluation engine: plan (plan.py: a model, dataset and noise spec -> picklable job specs
with keys and shard layouts, no weights loaded), execute (execute.py: a job spec and any subset
of its shards -> records in the store), the per-batch record code (records.py), and the public
`evaluate` / `evaluate_suite` (evaluate.py)."""
