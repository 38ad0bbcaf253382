"""Verify and certify a checkpoint or a run directory: `python verify.py ckpt=PATH` (docs/verify.md)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # also runs from a plain checkout

from experiments.cli import verify_main  # noqa: E402

if __name__ == "__main__":
    verify_main()
