"""Ternary VAE metrics: pure functions over tensors, each tested against a hand-computed case."""

import math

import torch


def trits_from_logits(logits: torch.Tensor) -> torch.Tensor:
    """Most likely trit per position: (..., 9, 3) logits -> (..., 9) in {-1, 0, 1}."""
    return logits.argmax(-1) - 1


def sample_trits(logits: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """One categorical sample per position (never the expectation): (..., 9, 3) -> (..., 9) in {-1, 0, 1}."""
    probs = torch.softmax(logits.float(), -1).reshape(-1, logits.shape[-1])
    draws = torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1])
    return draws - 1


def reconstruction_coverage(predicted: torch.Tensor, operations: torch.Tensor) -> float:
    """Fraction of rows whose 9 predicted trits all equal the operation's."""
    return (predicted == operations).all(-1).float().mean().item()


def distinct_fraction(trits: torch.Tensor, num_operations: int) -> float:
    """Distinct operations among sampled rows, divided by the size of the space."""
    powers = 3 ** torch.arange(trits.shape[-1], device=trits.device)
    index = ((trits.long() + 1) * powers).sum(-1)
    return index.unique().numel() / num_operations


def histogram_entropy(values: torch.Tensor, bins: int = 50, low: float = -3.0, high: float = 3.0) -> float:
    """Mean over columns of the histogram entropy (nats) of each column of `values` (N, D).

    Values outside [low, high] are clamped into the edge bins, so every row counts."""
    x = values.float().clamp(low, high)
    width = (high - low) / bins
    idx = ((x - low) / width).long().clamp(max=bins - 1)  # (N, D)
    counts = torch.zeros(bins, x.shape[1]).scatter_add_(0, idx, torch.ones_like(x))
    p = counts / x.shape[0]
    ent = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum(0)
    return ent.mean().item()


def gaussian_batch_entropy(z: torch.Tensor, eps: float = 5e-4) -> torch.Tensor:
    """Differentiable entropy proxy of a batch of latents: a diagonal Gaussian fitted to the batch,
    0.5 * sum_d log(2 pi e (var_d + eps)). Used for the lambda3 |H_A - H_B| term of v5.5."""
    var = z.var(0, unbiased=False) + eps
    return 0.5 * torch.log(2 * math.pi * math.e * var).sum()


def kl_free_bits(mu: torch.Tensor, logvar: torch.Tensor, free_bits: float) -> tuple[torch.Tensor, torch.Tensor]:
    """KL(q(z|x) || N(0, I)) per latent dimension averaged over the batch, each dimension floored at
    `free_bits` nats. Returns (floored sum, raw sum)."""
    kl_dim = 0.5 * (mu.pow(2) + logvar.exp() - 1 - logvar).mean(0)
    return kl_dim.clamp(min=free_bits).sum(), kl_dim.sum()
