"""Fixtures shared across test folders."""

from slurm_cluster import slurm_cluster  # noqa: F401  (a real one-node Slurm cluster, or a stated skip)
