"""Train one experiment: `python train.py experiment=ternary_v5_5` (docs/training.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # also runs from a plain checkout

from experiments.cli import train_main  # noqa: E402

if __name__ == "__main__":
    train_main()
