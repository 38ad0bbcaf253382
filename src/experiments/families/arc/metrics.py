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


def distinct(candidates: list[np.ndarray | None]) -> tuple[list[np.ndarray], list[int]]:
    """The distinct grids among candidates, in order of first appearance, and the votes of each (how many
    candidates spell it); None (no grid) is no candidate."""
    votes, grids = Counter(), {}
    for g in candidates:
        if g is not None:
            key = (g.shape, g.astype(np.int64).tobytes())
            votes[key] += 1
            grids.setdefault(key, g)
    return list(grids.values()), [votes[key] for key in grids]


def top(grids: list[np.ndarray], order: list[int], k: int) -> list[np.ndarray | None]:
    return [grids[i] for i in order[:k]] + [None] * (k - len(order[:k]))


def rank_attempts(candidates: list[np.ndarray | None], k: int = 2) -> list[np.ndarray | None]:
    """Voting: the k most voted distinct grids among candidates (first seen wins ties); None where fewer
    exist."""
    grids, votes = distinct(candidates)
    return top(grids, sorted(range(len(grids)), key=lambda i: (-votes[i], i)), k)


def rank_by_product(grids: list[np.ndarray], votes: list[int], log_probs, k: int = 2) -> list[np.ndarray | None]:
    """Product of experts: the k distinct grids whose log-probabilities summed over the views are highest
    (`log_probs[i][v]`: grid i, mapped into view v, under the model given view v of the task); ties go
    to the more voted, then the first seen."""
    if not grids:
        return [None] * k
    totals = np.asarray(log_probs, dtype=np.float64).reshape(len(grids), -1).sum(1)
    return top(grids, sorted(range(len(grids)), key=lambda i: (-totals[i], -votes[i], i)), k)


PLACEHOLDER = np.zeros((1, 1), dtype=np.int64)  # the format's usual grid where a model has none to give


def submitted(attempts: list) -> list[np.ndarray]:
    """The two attempts as `submission.json` holds them, which is what exact match scores (as the ARC Prize
    scores the file): a missing second attempt repeats the first (no free guess), and where the model
    spelled no grid at all both are the 1x1 placeholder."""
    first = attempts[0] if attempts and attempts[0] is not None else PLACEHOLDER
    second = attempts[1] if len(attempts) > 1 and attempts[1] is not None else first
    return [first, second]


def output_record(r: dict) -> dict:
    """One held-out output's row of `per_output.csv`: task, index, exact@1, exact@2 (pass@2; of the attempts
    as submitted), right_shape, cell_accuracy (of the model's attempt 1: none is wrong), nll_bits
    (teacher-forced, bits per output token) and tokens (the true output's tokens, row ends and EOS
    included); nan / 0 where the result carries no likelihood."""
    first, target = r["attempts"][0], r["target"]
    attempts = submitted(r["attempts"])
    return {
        "task": r["task"],
        "index": r["index"],
        "exact@1": int(exact(attempts[0], target)),
        "exact@2": int(any(exact(a, target) for a in attempts)),
        "right_shape": int(first is not None and first.shape == target.shape),
        "cell_accuracy": cell_accuracy(first, target),
        "nll_bits": float(r.get("nll_bits", float("nan"))),
        "tokens": int(r.get("tokens", 0)),
        **{key: r[key] for key in HOW if key in r},
    }


# How an output was predicted, recorded beside its figures (per_output.csv) so that runs can be told apart.
HOW = ("views", "ranking", "ttt_steps", "candidates")


def score(results: list[dict]) -> dict[str, float]:
    """results: one dict per test output: task, attempts [grid|None, grid|None], target, and (optional)
    nll_bits. Exact match per output and per task (a task counts when all its outputs are right) with 1
    and 2 attempts (pass@2), cell accuracy of attempt 1, how many attempt-1 grids had the right shape, and
    the held-out likelihood: bits per output token, averaged over outputs."""
    if not results:
        return {}
    rows = [output_record(r) for r in results]
    tasks = sorted({r["task"] for r in rows})
    by_task = lambda key: [all(r[key] for r in rows if r["task"] == t) for t in tasks]  # noqa: E731
    mean = lambda key: float(np.mean([r[key] for r in rows]))  # noqa: E731
    out = {
        "arc/exact_output@1": mean("exact@1"),
        "arc/exact_output@2": mean("exact@2"),
        "arc/exact_task@1": float(np.mean(by_task("exact@1"))),
        "arc/exact_task@2": float(np.mean(by_task("exact@2"))),
        "arc/prize_score": prize_score(rows, tasks),
        "arc/cell_accuracy": mean("cell_accuracy"),
        "arc/right_shape": mean("right_shape"),
        "arc/outputs": float(len(rows)),
        "arc/tasks": float(len(tasks)),
    }
    if all("nll_bits" in r for r in results):
        out["arc/test_nll"] = mean("nll_bits")
    return out


def prize_score(rows: list[dict], tasks: list[str]) -> float:
    """The ARC Prize figure: a task scores the fraction of its test outputs solved within two attempts,
    and the benchmark is the mean over all `tasks` of the set (a task with no row scores 0)."""
    if not tasks:
        return 0.0
    solved = {t: [r["exact@2"] for r in rows if r["task"] == t] for t in tasks}
    return float(np.mean([np.mean(s) if s else 0.0 for s in solved.values()]))


def nll_bits(logits, targets, pad: int):
    """Teacher-forced negative log-likelihood of each sequence's targets (B, L) under logits (B, L, V), in
    bits per target token (positions holding `pad` do not count); returns (bits (B,), tokens (B,))."""
    import math

    import torch.nn.functional as F

    nats = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=pad, reduction="none")
    tokens = (targets != pad).sum(1)
    return nats.sum(1) / tokens.clamp(min=1) / math.log(2), tokens
