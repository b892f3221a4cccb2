"""Where runs execute: a private local Ray (the default), an existing Ray cluster, or a Ray cluster Matrix starts on
SLURM (through submitit) or on this machine. See docs/clusters.md."""

from matrix_core.cluster.connect import RayTarget

__all__ = ["RayTarget"]
