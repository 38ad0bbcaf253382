"""Each family trained twice with the same settings, in fp32 and in bf16-mixed (Lightning's autocast, on the
CPU too), its last epoch's figures side by side: what the docs' precision table shows.

    python scripts/precision_figures.py [--only NAME ...]

One run at a time (each in its own train.py process, outputs in a temporary folder); prints a Markdown table
per family and, last, the seconds each side took.
"""

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
QUIET = ["logger=none", "trainer.enable_progress_bar=false"]
RUNS = {
    "arc": [
        "experiment=exp3_champion",
        "data=arc_tiny",
        "data.batch_size=4",
        "data.dihedral=false",
        "data.colours=false",
        "trainer.max_epochs=60",
        "task.eval_every_n_epochs=60",
    ],
    "ternary": ["experiment=ternary_v5_5", "trainer.max_epochs=6"],
    "magvit": [
        "experiment=magvit",
        "data.train_clips=16",
        "data.val_clips=8",
        "data.batch_size=4",
        "trainer.max_epochs=2",
    ],
    "magvit_v2": [
        "experiment=magvit_v2",
        "data.train_clips=16",
        "data.val_clips=8",
        "data.batch_size=4",
        "trainer.max_epochs=2",
    ],
}


def last_row(args: list[str], precision: str, folder: Path) -> tuple[dict, float]:
    t0 = time.perf_counter()
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            *args,
            *QUIET,
            f"trainer.precision={precision}",
            f"paths.outputs={folder}",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    if r.returncode != 0:
        sys.exit(f"error: {' '.join(args)} in {precision} failed:\n{r.stdout[-2000:]}{r.stderr[-2000:]}")
    (ckpt,) = folder.glob("*/*/checkpoints/last.ckpt")
    return torch.load(ckpt, weights_only=True)["history"][-1], time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", nargs="*", choices=list(RUNS), default=list(RUNS))
    names = parser.parse_args().only
    seconds = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            rows = {}
            for precision in ("32-true", "bf16-mixed"):
                folder = Path(tmp) / name / precision
                rows[precision], seconds[name, precision] = last_row(RUNS[name], precision, folder)
            keys = [k for k in rows["32-true"] if not k.startswith("time/") and k not in ("epoch", "global_step")]
            print(f"\n{name}: `python train.py {' '.join(RUNS[name])} trainer.precision=32-true|bf16-mixed`\n")
            print("| figure | fp32 | bf16-mixed |\n|---|---|---|")
            for k in keys:
                print(f"| {k} | {rows['32-true'][k]:.4g} | {rows['bf16-mixed'].get(k, float('nan')):.4g} |")
    print(
        f"\nthreads={torch.get_num_threads()}; seconds (fp32 / bf16-mixed): "
        + ", ".join(f"{n} {seconds[n, '32-true']:.0f} / {seconds[n, 'bf16-mixed']:.0f}" for n in names)
    )


if __name__ == "__main__":
    main()
