"""Metrics of the hyperbolic Ternary VAE variants (v5.11 and later): pure functions over tensors, each
tested against a hand-computed case (tests/test_metrics_hyperbolic.py).

Definitions:
- valuation v3(i): the largest k with 3^k dividing i, and v3(0) = 9 (the level of operation i, 0..9).
- radius: Poincare distance of a point x of the unit ball from the origin, 2 artanh(|x|) (curvature -1).
- hierarchy: Spearman correlation (average ranks for ties) of v3(i) with the radius, over all operations.
  Negative is the wanted order (deeper levels nearer the centre). With radii distinct inside each level
  it cannot go below -0.832 on the 19,683 operations: the levels themselves are ties.
- richness: (1/10) * sum over the 10 levels of the population variance of the radius within the level
  (a level that holds no operation contributes 0).
- dist_corr: Pearson correlation, over a fixed set of operation pairs, between the Poincare distance of
  the two embeddings and their 3-adic distance 3^-v3(|i - j|). Positive is the wanted order.
- Q = dist_corr + 1.5 |hierarchy|.
"""

import torch

LEVELS = 10  # v3 of an operation index is 0..9 (v3(0) = 9 by convention)


def valuation(index: torch.Tensor, max_level: int = LEVELS - 1) -> torch.Tensor:
    """3-adic valuation of non-negative integers; v3(0) = max_level."""
    index = index.long()
    v = torch.zeros_like(index)
    x = index.clone()
    for _ in range(max_level):
        divisible = (x % 3 == 0) & (x > 0)
        v += divisible.long()
        x = torch.where(divisible, x // 3, x)
    return torch.where(index == 0, torch.full_like(v, max_level), v)


def poincare_radius(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """Distance from the origin in the Poincare ball of curvature -1: 2 artanh(|x|), for (..., D) -> (...)."""
    return 2 * torch.atanh(x.norm(dim=-1).clamp(max=1 - eps))


def poincare_distance(x: torch.Tensor, y: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    """arcosh(1 + 2 |x - y|^2 / ((1 - |x|^2)(1 - |y|^2))), row by row."""
    sq = (x - y).pow(2).sum(-1)
    denom = ((1 - x.pow(2).sum(-1)).clamp(min=eps)) * ((1 - y.pow(2).sum(-1)).clamp(min=eps))
    return torch.acosh((1 + 2 * sq / denom).clamp(min=1 + eps))


def average_ranks(x: torch.Tensor) -> torch.Tensor:
    """Ranks 1..n, tied values sharing the mean of their ranks."""
    values, order = torch.sort(x.double(), stable=True)
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = torch.cumsum(counts, 0).double()
    ranks = torch.empty_like(values)
    ranks[order] = ((ends - counts.double() + 1 + ends) / 2)[inverse]
    return ranks


def pearson(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double() - a.double().mean(), b.double() - b.double().mean()
    denom = a.norm() * b.norm()
    return 0.0 if denom == 0 else (a @ b / denom).item()


def spearman(a: torch.Tensor, b: torch.Tensor) -> float:
    return pearson(average_ranks(a), average_ranks(b))


def hierarchy(levels: torch.Tensor, radius: torch.Tensor) -> float:
    return spearman(levels, radius)


def richness(levels: torch.Tensor, radius: torch.Tensor, num_levels: int = LEVELS) -> float:
    total = 0.0
    for v in range(num_levels):
        r = radius[levels == v].double()
        if len(r):
            total += r.var(unbiased=False).item()
    return total / num_levels


def padic_distance(i: torch.Tensor, j: torch.Tensor) -> torch.Tensor:
    """3^-v3(|i - j|), and 0 for i == j."""
    diff = (i.long() - j.long()).abs()
    d = torch.pow(3.0, -valuation(diff).double())
    return torch.where(diff == 0, torch.zeros_like(d), d)


def metric_pairs(num_operations: int, num_pairs: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of distinct-operation pairs (i, j) for dist_corr: a function of the seed only."""
    g = torch.Generator().manual_seed(seed)
    i = torch.randint(num_operations, (num_pairs,), generator=g)
    j = (i + torch.randint(1, num_operations, (num_pairs,), generator=g)) % num_operations
    return i, j


def dist_corr(embedding_distance: torch.Tensor, padic: torch.Tensor) -> float:
    return pearson(embedding_distance, padic)


def q_metric(distance_correlation: float, hierarchy_value: float) -> float:
    return distance_correlation + 1.5 * abs(hierarchy_value)
