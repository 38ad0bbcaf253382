"""Which DDP process this is, from the environment alone (no torch import: the CLI asks before building)."""

import os

RANK_VARIABLES = ("RANK", "LOCAL_RANK", "SLURM_PROCID")


def process_rank() -> int:
    """Non-zero in any extra DDP process (Lightning-started: LOCAL_RANK; srun-started: SLURM_PROCID), 0
    in the process the user started. Any non-zero rank variable counts: a Lightning-started process
    inside an interactive SLURM allocation inherits SLURM_PROCID=0."""
    return max(int(os.environ.get(k) or 0) for k in RANK_VARIABLES)
