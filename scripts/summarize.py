"""Rebuild a sweep's summary at any time, also from a partial or crashed sweep:

    python scripts/summarize.py outputs/sweeps/<sweep id> [--config-dir DIR ...] [--eval EVALUATION]

Reads the sweep's plan.json and jobs/*.json, and each job's final metrics from its own last.ckpt
(weights_only=True); writes summary.csv, summary.md and summary.png into the sweep directory and prints
the per-group table and the jobs that did not finish. With --eval: the same of eval.py's evaluation of each
job's last checkpoint (`eval.py ckpt=SWEEP_DIR data.tasks_from=evaluation` gives the evaluation
`data.tasks_from=evaluation`), into SWEEP_DIR/eval/EVALUATION/. Exit 0 when every job finished (and was
evaluated), 1 otherwise, 2 when SWEEP_DIR is not a sweep directory.
"""

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument(
        "--config-dir",
        action="append",
        default=[],
        help="a family's config folder, as given to train.py: its tasks say which metrics are judged",
    )
    parser.add_argument(
        "--eval",
        metavar="EVALUATION",
        dest="evaluation",
        help="summarise eval.py's evaluation of each job instead: the folder name under "
        "<run dir>/eval/ (its data and task arguments, e.g. data.tasks_from=evaluation)",
    )
    args = parser.parse_args()
    from experiments.sweep import is_sweep_dir, write_summary

    if not is_sweep_dir(args.sweep_dir):
        print(
            f"error: {args.sweep_dir} is not a sweep directory (no jobs/ folder); sweeps live under "
            f"<paths.outputs>/sweeps/",
            file=sys.stderr,
        )
        return 2
    from experiments.errors import UserError
    from experiments.untrusted import current_registry

    try:
        if args.evaluation:
            refuse_unknown_evaluation(args.sweep_dir, args.evaluation)
        summary = write_summary(args.sweep_dir, current_registry(tuple(args.config_dir)), args.evaluation)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(summary["text"])
    return 0 if all(r["status"] == "finished" for r in summary["rows"]) else 1


def refuse_unknown_evaluation(sweep_dir: Path, evaluation: str) -> None:
    """A misspelt --eval would summarise every job as not evaluated: refused, naming the evaluations there are."""
    from experiments.errors import UserError
    from experiments.run_dir import EVAL
    from experiments.sweep import read_record

    runs = [
        Path(r["run_dir"])
        for r in map(read_record, sorted((sweep_dir / "jobs").glob("*.json")))
        if r and r.get("run_dir")
    ]
    if any((run / EVAL / evaluation).is_dir() for run in runs):
        return
    found = sorted({p.name for run in runs if (run / EVAL).is_dir() for p in (run / EVAL).iterdir() if p.is_dir()})
    raise UserError(
        f"no job of {sweep_dir} has an evaluation {evaluation} (<run dir>/eval/{evaluation}); "
        + (f"there are: {', '.join(found)}" if found else "none has been evaluated by eval.py yet")
    )


if __name__ == "__main__":
    sys.exit(main())
