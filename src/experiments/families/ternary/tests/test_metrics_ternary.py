"""Each metric against a case computed by hand."""

import math

import torch

from experiments.families.ternary import metrics as tm
from experiments.families.ternary.data import all_operations, operation_index


def test_operations_formula_and_inverse():
    ops = all_operations()
    assert ops.shape == (19683, 9)
    # operation 5 = 5 = 2*3^0 + 1*3^1 -> trits (2-1, 1-1, 0-1, ...) = (1, 0, -1, -1, ...)
    assert ops[5].tolist() == [1, 0, -1, -1, -1, -1, -1, -1, -1]
    assert ops[0].tolist() == [-1] * 9 and ops[-1].tolist() == [1] * 9
    assert torch.equal(operation_index(ops), torch.arange(19683))


def test_trits_from_logits_is_argmax_minus_one():
    logits = torch.tensor([[[0.0, 5.0, 1.0], [9.0, 0.0, 0.0], [0.0, 0.0, 2.0]]])
    assert tm.trits_from_logits(logits).tolist() == [[0, -1, 1]]


def test_reconstruction_coverage_counts_rows_exactly_right():
    ops = torch.tensor([[1, 0, -1], [0, 0, 0], [1, 1, 1], [-1, -1, -1]])
    pred = torch.tensor([[1, 0, -1], [0, 0, 1], [1, 1, 1], [-1, 0, -1]])
    assert tm.reconstruction_coverage(pred, ops) == 0.5


def test_distinct_fraction_counts_distinct_operations():
    trits = torch.tensor([[1, 0], [1, 0], [-1, -1], [0, 1]])
    assert tm.distinct_fraction(trits, num_operations=9) == 3 / 9


def test_sample_trits_is_a_sample_not_an_expectation():
    # Each position is 50/50 between classes 0 and 2: the expectation would be trit 0 (class 1),
    # which a sample can never produce.
    logits = torch.log(torch.tensor([0.5, 1e-12, 0.5])).expand(4000, 9, 3)
    draws = tm.sample_trits(logits, generator=torch.Generator().manual_seed(0))
    assert set(draws.unique().tolist()) == {-1, 1}
    assert abs((draws == 1).float().mean().item() - 0.5) < 0.03
    # and the sampled coverage of a certain decoder is one operation, whatever the count
    certain = torch.tensor([0.0, 50.0, 0.0]).expand(1000, 9, 3)
    assert tm.distinct_fraction(tm.sample_trits(certain), 19683) == 1 / 19683


def test_histogram_entropy_by_hand():
    # Column 0: all values in one bin -> 0 nats. Column 1: half in each of two bins -> ln 2.
    values = torch.tensor([[0.01, -2.9], [0.02, -2.9], [0.03, 2.9], [0.04, 2.9]])
    assert abs(tm.histogram_entropy(values) - math.log(2) / 2) < 1e-6
    # values beyond the range are clamped into the edge bins, not dropped
    assert abs(tm.histogram_entropy(torch.tensor([[-100.0], [100.0]])) - math.log(2)) < 1e-6


def test_kl_free_bits_by_hand():
    mu = torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    logvar = torch.zeros(2, 2)
    floored, raw = tm.kl_free_bits(mu, logvar, free_bits=0.1)
    # dim 0: 0.5 * 1 = 0.5; dim 1: 0 -> floored to 0.1
    assert abs(raw.item() - 0.5) < 1e-6
    assert abs(floored.item() - 0.6) < 1e-6


def test_gaussian_batch_entropy_by_hand():
    z = torch.tensor([[1.0], [-1.0]])  # variance 1
    expected = 0.5 * math.log(2 * math.pi * math.e * (1 + 5e-4))
    assert abs(tm.gaussian_batch_entropy(z).item() - expected) < 1e-6
