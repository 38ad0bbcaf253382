"""Evaluate a checkpoint on any data of its family: `python eval.py ckpt=PATH [data=GROUP] [data.KEY=VALUE]`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # also runs from a plain checkout

from experiments.cli import eval_main  # noqa: E402

if __name__ == "__main__":
    eval_main()
