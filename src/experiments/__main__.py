"""`python -m experiments ...` is `train.py ...` (how DDP starts its extra processes in an installed copy)."""

from experiments.cli import train_main

train_main()
