"""Labs as Slurm jobs on the cluster's workers (docs/cluster.md)."""
