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


def output_record(r: dict) -> dict:
    """One held-out output's row of `per_output.csv`: task, index, exact@1, exact@2 (pass@2), right_shape,
    cell_accuracy (of attempt 1), nll_bits (teacher-forced, bits per output token) and tokens (the true
    output's tokens, row ends and EOS included); nan / 0 where the result carries no likelihood."""
    first, target = r["attempts"][0], r["target"]
    return {"task": r["task"], "index": r["index"], "exact@1": int(exact(first, target)),
            "exact@2": int(any(exact(a, target) for a in r["attempts"][:2])),
            "right_shape": int(first is not None and first.shape == target.shape),
            "cell_accuracy": cell_accuracy(first, target), "nll_bits": float(r.get("nll_bits", float("nan"))),
            "tokens": int(r.get("tokens", 0))}


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
        "arc/exact_output@1": mean("exact@1"), "arc/exact_output@2": mean("exact@2"),
        "arc/exact_task@1": float(np.mean(by_task("exact@1"))), "arc/exact_task@2": float(np.mean(by_task("exact@2"))),
        "arc/cell_accuracy": mean("cell_accuracy"), "arc/right_shape": mean("right_shape"),
        "arc/outputs": float(len(rows)), "arc/tasks": float(len(tasks)),
    }
    if all("nll_bits" in r for r in results):
        out["arc/test_nll"] = mean("nll_bits")
    return out


def nll_bits(logits, targets, pad: int):
    """Teacher-forced negative log-likelihood of each sequence's targets (B, L) under logits (B, L, V), in
    bits per target token (positions holding `pad` do not count); returns (bits (B,), tokens (B,))."""
    import math

    import torch.nn.functional as F

    nats = F.cross_entropy(logits.float().transpose(1, 2), targets, ignore_index=pad, reduction="none")
    tokens = (targets != pad).sum(1)
    return nats.sum(1) / tokens.clamp(min=1) / math.log(2), tokens
