"""Hyperbolic Ternary metrics and losses against hand-computed cases."""

import math

import pytest
import torch

from experiments.families.ternary import hyperbolic_losses as hl
from experiments.families.ternary import hyperbolic_metrics as hm
from experiments.families.ternary.data import NUM_OPERATIONS


def test_valuation_by_hand_and_level_counts():
    i = torch.tensor([0, 1, 2, 3, 6, 9, 18, 27, 6561, 19682])
    assert hm.valuation(i).tolist() == [9, 0, 0, 1, 1, 2, 2, 3, 8, 0]
    counts = torch.bincount(hm.valuation(torch.arange(NUM_OPERATIONS)), minlength=10)
    assert counts.tolist() == [13122, 4374, 1458, 486, 162, 54, 18, 6, 2, 1]  # 2 x 3^(8-k) at level k < 9, 1 at level 9


def test_poincare_radius_and_distance_by_hand():
    x, y, o = torch.tensor([0.5, 0.0]), torch.tensor([-0.5, 0.0]), torch.zeros(2)
    assert hm.poincare_radius(x).item() == pytest.approx(math.log(3))  # 2 artanh(1/2) = ln 3
    assert hm.poincare_radius(o).item() == 0
    # arcosh(1 + 2 * 1 / (0.75 * 0.75)) = arcosh(41/9) = ln 9: the geodesic runs through the origin
    assert hm.poincare_distance(x, y).item() == pytest.approx(2 * math.log(3), rel=1e-5)
    assert hm.poincare_distance(o, x).item() == pytest.approx(math.log(3), rel=1e-4)


def test_ranks_and_spearman_by_hand():
    assert hm.average_ranks(torch.tensor([10.0, 20.0, 20.0, 30.0])).tolist() == [1, 2.5, 2.5, 4]
    # no ties: 1 - 6 * sum(d^2) / (n (n^2 - 1)) = 1 - 12 / 60
    assert hm.spearman(torch.tensor([1.0, 2, 3, 4]), torch.tensor([1.0, 3, 2, 4])) == pytest.approx(0.8)


def test_hierarchy_with_tied_levels_by_hand():
    # level ranks (1.5, 1.5, 3.5, 3.5) - 2.5 = (-1, -1, 1, 1); radius ranks (3, 4, 2, 1) - 2.5
    # = (0.5, 1.5, -0.5, -1.5): r = -4 / (2 * sqrt(5))
    h = hm.hierarchy(torch.tensor([0, 0, 1, 1]), torch.tensor([2.0, 3.0, 1.0, 0.5]))
    assert h == pytest.approx(-2 / math.sqrt(5))


def test_hierarchy_ceiling_with_distinct_radii_is_minus_0_832():
    levels = hm.valuation(torch.arange(NUM_OPERATIONS))
    perfect_but_rich = -levels.double() * 10 + torch.rand(NUM_OPERATIONS, generator=torch.Generator().manual_seed(0))
    assert -0.8325 < hm.hierarchy(levels, perfect_but_rich) < -0.8315
    assert hm.hierarchy(levels, -levels.double()) == pytest.approx(-1.0)  # one radius per level


def test_richness_by_hand():
    # level 0: (1, 3) -> var 1; level 1: (2, 2, 5) -> mean 3, var (1 + 1 + 4) / 3 = 2; (1 + 2) / 10
    r = hm.richness(torch.tensor([0, 0, 1, 1, 1]), torch.tensor([1.0, 3.0, 2.0, 2.0, 5.0]))
    assert r == pytest.approx(0.3)


def test_padic_distance_dist_corr_and_q_by_hand():
    d = hm.padic_distance(torch.tensor([0, 1, 5, 0, 10]), torch.tensor([9, 2, 5, 27, 1]))
    assert d.tolist() == pytest.approx([1 / 9, 1.0, 0.0, 1 / 27, 1 / 9])
    assert hm.dist_corr(torch.tensor([1.0, 2, 3]), torch.tensor([2.0, 4, 6])) == pytest.approx(1.0)
    assert hm.q_metric(0.5, -0.8) == pytest.approx(1.7)
    i, j = hm.metric_pairs(NUM_OPERATIONS, 1000, seed=3)
    assert (i != j).all() and torch.equal(i, hm.metric_pairs(NUM_OPERATIONS, 1000, seed=3)[0])


def test_losses_by_hand():
    assert hl.target_radius(torch.tensor([0, 9]), 0.3, 3.0).tolist() == pytest.approx([3.0, 0.3])
    # ((2 - 3)^2 + (0.3 - 0.3)^2) / 2
    assert hl.radial_loss(torch.tensor([2.0, 0.3]), torch.tensor([0, 9]), 0.3, 3.0).item() == pytest.approx(0.5)
    rich = hl.rich_hierarchy_loss(
        torch.tensor([3.0, 2.8, 0.3]), torch.tensor([0, 0, 9]), 0.3, 3.0, margin=0.1, richness_floor=0.002
    )
    # level means (2.9, 0.3), variances (0.01, 0): hierarchy ((2.9 - 3)^2 + 0) / 2; richness shortfall
    # (0 + 0.002) / 2; separation relu(0.3 - 2.9 + 0.1) = 0
    assert rich["hierarchy"].item() == pytest.approx(0.005, rel=1e-4)
    assert rich["richness"].item() == pytest.approx(0.001, rel=1e-4)
    assert rich["separation"].item() == 0
    inverted = hl.rich_hierarchy_loss(torch.tensor([1.0, 2.0]), torch.tensor([0, 1]), 0.3, 3.0, 0.1, 0.002)
    assert inverted["separation"].item() == pytest.approx(1.1)  # relu(2 - 1 + 0.1)


def test_geodesic_loss_by_hand():
    z = torch.tensor([[0.5, 0.0], [-0.5, 0.0]])
    index = torch.tensor([0, 9])  # 3-adic distance 1/9
    loss = hl.geodesic_loss(z, index, torch.tensor([[0, 1]]), scale=2.0)
    assert loss.item() == pytest.approx((2 * math.log(3) - 2 / 9) ** 2, rel=1e-4)
