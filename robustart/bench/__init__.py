"""Studies: many jobs (models x noises x datasets) run as units of work (job, shard) by an
executor (robustart.bench.executors: in this process, worker processes, Ray, Slurm). A layer
above engine/, results/ and reports/; only the CLI and the API import it."""
