"""ABanditNAS (Chen et al., ECCV 2020): the robust search space (ops.py), the published genotypes
(genotypes.py), networks and the plain baseline (network.py, registered with timm in models.py,
zoo entries in entries.py), the anti-bandit search (search.py), adversarial training (train.py)
and the `robustart nas` commands (cli.py)."""
