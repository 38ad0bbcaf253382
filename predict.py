"""Predict new inputs with a trained run: `python predict.py ckpt=PATH input=PATH [task.KEY=VALUE]`."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent / "src"))  # also runs from a plain checkout

from experiments.cli import predict_main  # noqa: E402

if __name__ == "__main__":
    predict_main()
