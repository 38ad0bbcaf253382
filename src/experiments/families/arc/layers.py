"""Pieces the ARC models share: sinusoidal positions (1D and Grid2D) and colour canonicalisation."""

import math

import torch
from torch import nn

from experiments.families.arc.format import PAD, VOCAB

NEW = VOCAB  # canonical id shared by every colour 1-9 absent from the reference grids
CANONICAL_VOCAB = VOCAB + 1


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(...,) integer positions -> (..., dim) sinusoidal encoding."""
    half = dim // 2
    freq = torch.exp(-math.log(10000.0) * torch.arange(half, device=positions.device) / max(1, half))
    angles = positions.float().unsqueeze(-1) * freq
    return torch.cat([angles.sin(), angles.cos()], dim=-1)


def positions_1d(length: int, dim: int, device) -> torch.Tensor:
    return sinusoid(torch.arange(length, device=device), dim)


def grid2d(rows: torch.Tensor, cols: torch.Tensor, dim: int) -> torch.Tensor:
    """Half the channels encode each token's true row, half its true column."""
    return torch.cat([sinusoid(rows, dim // 2), sinusoid(cols, dim - dim // 2)], dim=-1)


def canonical_colours(reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per example, colours 1-9 relabelled by order of first appearance in `reference` (B, L) (row-major,
    context before query); colours that never appear all map to NEW. 0 and special tokens keep their ids.
    Returns (to_canonical (B, VOCAB), absent (B,) number of absent colours 1-9)."""
    b, length = reference.shape
    is_colour = (reference >= 1) & (reference <= 9)
    first = torch.full((b, 10), length, dtype=torch.long, device=reference.device)
    idx = torch.arange(length, device=reference.device).expand(b, length)
    first.scatter_reduce_(
        1, torch.where(is_colour, reference, 0), torch.where(is_colour, idx, length), reduce="amin", include_self=True
    )
    first[:, 0] = -1  # colour 0 stays first, kept as itself
    order = first.argsort(dim=1, stable=True)  # order[:, r] = colour with rank r
    rank = order.argsort(dim=1)  # rank[:, c]
    present = first < length
    mapping = torch.arange(VOCAB, device=reference.device).expand(b, VOCAB).clone()
    mapping[:, :10] = torch.where(present, rank, torch.full_like(rank, NEW))
    absent = (~present[:, 1:]).sum(1)
    return mapping, absent


def to_canonical(tokens: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
    return torch.gather(mapping, 1, tokens.reshape(tokens.shape[0], -1)).view_as(tokens)


def from_canonical_logits(logits: torch.Tensor, mapping: torch.Tensor, absent: torch.Tensor) -> torch.Tensor:
    """Canonical logits (B, L, CANONICAL_VOCAB) -> logits over the original VOCAB: a present colour takes
    its rank's logit, each absent colour an equal share of NEW's probability. Equivariant by construction."""
    index = mapping.unsqueeze(1).expand(-1, logits.shape[1], -1)
    out = torch.gather(logits, 2, index)
    share = torch.log(absent.clamp(min=1).float()).view(-1, 1, 1)
    is_new = (mapping == NEW).unsqueeze(1)
    return torch.where(is_new, out - share, out)


class ColourEmbedding(nn.Module):
    """Token embedding. `equivariant=False`: a plain table over the 15 tokens. `equivariant=True`: a
    table over canonical ids (colours by first appearance), so permuting colours 1-9 in every input
    permutes the output distribution the same way."""

    def __init__(self, d_model: int, equivariant: bool):
        super().__init__()
        self.equivariant = equivariant
        self.table = nn.Embedding(CANONICAL_VOCAB if equivariant else VOCAB, d_model, padding_idx=PAD)

    def forward(self, tokens: torch.Tensor, mapping: torch.Tensor | None) -> torch.Tensor:
        return self.table(to_canonical(tokens, mapping) if self.equivariant else tokens)
