"""Losses of the hyperbolic Ternary VAE variants: pure functions of radii, embeddings and valuations.

All radii are Poincare distances from the origin (hyperbolic_metrics.py). The target radius of level v
is r*(v) = outer - (v / 9) (outer - inner): level 0 (13,122 operations) on the outside, operation 0
(v3 = 9) nearest the centre.
"""

import torch

from experiments.families.ternary.hyperbolic_metrics import LEVELS, padic_distance, poincare_distance


def target_radius(levels: torch.Tensor, inner: float, outer: float) -> torch.Tensor:
    return outer - levels.float() / (LEVELS - 1) * (outer - inner)


def radial_loss(radius: torch.Tensor, levels: torch.Tensor, inner: float, outer: float) -> torch.Tensor:
    """v5.11 radial hierarchy: mean squared distance of each radius from its level's target."""
    return (radius - target_radius(levels, inner, outer)).pow(2).mean()


def geodesic_loss(z: torch.Tensor, index: torch.Tensor, pairs: torch.Tensor, scale: float) -> torch.Tensor:
    """v5.11 p-adic geodesic loss: for the row pairs (a, b) of `pairs` (P, 2), the Poincare distance of
    the embeddings should be `scale` times the 3-adic distance of the operations."""
    a, b = pairs[:, 0], pairs[:, 1]
    target = scale * padic_distance(index[a], index[b]).to(z.dtype)
    return (poincare_distance(z[a], z[b]) - target).pow(2).mean()


def level_means(radius: torch.Tensor, levels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(levels present, mean radius per present level, variance per present level), levels ascending."""
    present = torch.unique(levels)
    onehot = (levels.unsqueeze(0) == present.unsqueeze(1)).to(radius.dtype)  # (L, N)
    counts = onehot.sum(1)
    means = onehot @ radius / counts
    var = onehot @ radius.pow(2) / counts - means.pow(2)
    return present, means, var.clamp(min=0)


def rich_hierarchy_loss(
    radius: torch.Tensor, levels: torch.Tensor, inner: float, outer: float, margin: float, richness_floor: float
) -> dict[str, torch.Tensor]:
    """The three radius terms of v5.12's rich hierarchy loss, on the levels present in the batch:
    - hierarchy: squared distance of each level's MEAN radius from r*(v) (room is left for spread inside
      a level, unlike the per-operation radial loss);
    - richness: how far each level's radius variance falls short of `richness_floor` (no reward beyond:
      spread is kept, not bought at the price of order);
    - separation: consecutive present levels must lie `margin` apart, deeper levels inside."""
    present, means, var = level_means(radius, levels)
    out = {
        "hierarchy": (means - target_radius(present, inner, outer)).pow(2).mean(),
        "richness": torch.relu(richness_floor - var).mean(),
    }
    if len(present) > 1:
        out["separation"] = torch.relu(means[1:] - means[:-1] + margin).mean()
    else:
        out["separation"] = radius.new_zeros(())
    return out
