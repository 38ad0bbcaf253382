"""Rebuild a sweep's summary at any time, also from a partial or crashed sweep:

    python scripts/summarize.py outputs/sweeps/<sweep id>

Reads the sweep's plan.json and jobs/*.json, and each job's final metrics from its own last.ckpt
(weights_only=True); writes summary.csv, summary.md and summary.png into the sweep directory and prints
the per-group table and the jobs that did not finish. Exit 0 when every job finished, 1 otherwise,
2 when SWEEP_DIR is not a sweep directory.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    args = parser.parse_args()
    if not (args.sweep_dir / "jobs").is_dir():
        print(f"error: {args.sweep_dir} is not a sweep directory (no jobs/ folder); sweeps live under "
              f"<paths.outputs>/sweeps/", file=sys.stderr)
        return 2
    from experiments.sweep import write_summary

    summary = write_summary(args.sweep_dir)
    print(summary["text"])
    return 0 if all(r["status"] == "finished" for r in summary["rows"]) else 1


if __name__ == "__main__":
    sys.exit(main())
