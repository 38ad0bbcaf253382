"""ARC scoring: pure functions. A prediction of the wrong shape is wrong, whatever its cells."""
from collections import Counter

import numpy as np


def exact(pred: np.ndarray | None, target: np.ndarray) -> bool:
    return pred is not None and pred.shape == target.shape and bool((pred == target).all())


def cell_accuracy(pred: np.ndarray | None, target: np.ndarray) -> float:
    """Fraction of the target's cells predicted right; 0 for a prediction of the wrong shape (a grid with
    extra rows or columns around the right cells is a wrong answer, not a nearly right one)."""
    if pred is None or pred.shape != target.shape:
        return 0.0
    return float((pred == target).sum()) / target.size


def rank_attempts(candidates: list[np.ndarray | None], k: int = 2) -> list[np.ndarray | None]:
    """The k most voted distinct grids among candidates (first seen wins ties); None where fewer exist."""
    votes, first, grids = Counter(), {}, {}
    for i, g in enumerate(candidates):
        if g is None:
            continue
        key = (g.shape, g.tobytes())
        votes[key] += 1
        first.setdefault(key, i)
        grids[key] = g
    ranked = sorted(votes, key=lambda key: (-votes[key], first[key]))
    return [grids[key] for key in ranked[:k]] + [None] * (k - len(ranked[:k]))


def score(results: list[dict]) -> dict[str, float]:
    """results: one dict per test output: task, attempts [grid|None, grid|None], target.
    Exact match per output and per task (a task counts when all its outputs are right) with 1 and 2
    attempts (pass@2), cell accuracy of attempt 1, and how many attempt-1 grids had the right shape."""
    if not results:
        return {}
    at1 = [exact(r["attempts"][0], r["target"]) for r in results]
    at2 = [any(exact(a, r["target"]) for a in r["attempts"][:2]) for r in results]
    tasks = sorted({r["task"] for r in results})
    by_task = lambda ok: [all(o for o, r in zip(ok, results) if r["task"] == t) for t in tasks]  # noqa: E731
    shape = [r["attempts"][0] is not None and r["attempts"][0].shape == r["target"].shape for r in results]
    return {
        "arc/exact_output@1": float(np.mean(at1)), "arc/exact_output@2": float(np.mean(at2)),
        "arc/exact_task@1": float(np.mean(by_task(at1))), "arc/exact_task@2": float(np.mean(by_task(at2))),
        "arc/cell_accuracy": float(np.mean([cell_accuracy(r["attempts"][0], r["target"]) for r in results])),
        "arc/right_shape": float(np.mean(shape)), "arc/outputs": float(len(results)), "arc/tasks": float(len(tasks)),
    }
