"""ARC Exp -1: a decoder-only transformer over `input SEP output`, causal, 1D sinusoidal positions.

Decoding (`start`, `step`): the prompts `input` of a batch are left-padded so that every row's next
token lands in the same column of the key/value cache; each row's positions count from its own first
token, and its padding is never attended to.
"""

import torch
from torch import nn

from experiments.families.arc.attention import KVCache, encoder_block, encoder_block_step, key_mask
from experiments.families.arc.format import PAD, VOCAB
from experiments.families.arc.layers import positions_1d, sinusoid
from experiments.families.arc.packing import layout


class DecoderOnly(nn.Module):
    def __init__(
        self,
        d_model: int = 64,
        heads: int = 4,
        layers: int = 3,
        d_ff: int = 256,
        dropout: float = 0.0,
        packed: bool = False,
    ):
        super().__init__()
        self.d_model = d_model
        self.packed = packed  # the full pass with the batch's tokens end to end (`packing`): no padding computed
        self.embed = nn.Embedding(VOCAB, d_model, padding_idx=PAD)
        self.blocks = nn.TransformerEncoder(  # parameters only: the computation is attention.py's
            nn.TransformerEncoderLayer(d_model, heads, d_ff, dropout, batch_first=True, norm_first=True),
            layers,
            enable_nested_tensor=False,
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits (B, L, VOCAB); position t sees tokens 0..t only."""
        tokens = batch["tokens"]
        tokens_layout = layout(tokens != PAD, self.packed)
        h = tokens_layout.tokens(self.embed(tokens) + positions_1d(tokens.shape[1], self.d_model, tokens.device))
        mask = tokens_layout.causal_mask()
        for layer in self.blocks.layers:
            h = encoder_block(layer, h, mask, causal=True)
        return tokens_layout.rows(self.head(self.norm(h)))

    # ---- decoding with a key/value cache ----
    def start(self, prompts: list[torch.Tensor]) -> dict:
        """Run the prompts (each `input SEP` without its SEP, which the first `step` feeds) into a fresh cache."""
        device = self.head.weight.device
        width = max(len(p) for p in prompts)
        tokens = torch.full((len(prompts), width), PAD, dtype=torch.long, device=device)
        for i, p in enumerate(prompts):
            tokens[i, width - len(p) :] = p
        offset = (tokens == PAD).sum(1)  # left padding of each row
        positions = (torch.arange(width, device=device) - offset[:, None]).clamp(min=0)
        cache = KVCache(len(self.blocks.layers))
        # causal, never a padding key; a padding query sees itself so that no row is empty
        causal = torch.ones(width, width, dtype=torch.bool, device=device).tril()
        mask = (causal & (real_keys(offset, width)[:, None, :] | torch.eye(width, dtype=torch.bool, device=device)))[
            :, None
        ]
        h = self.embed(tokens) + sinusoid(positions, self.d_model)
        for i, layer in enumerate(self.blocks.layers):
            h = encoder_block_step(layer, cache, i, h, mask)
        cache.advance(width)
        return {"cache": cache, "offset": offset}

    def step(self, state: dict, tokens: torch.Tensor, rows=None, cols=None) -> torch.Tensor:
        """Logits (B, VOCAB) of the token after `tokens` (B,); rows/cols unused (1D positions)."""
        cache, offset = state["cache"], state["offset"]
        h = self.embed(tokens[:, None]) + sinusoid((cache.length - offset)[:, None], self.d_model)
        mask = key_mask(real_keys(offset, cache.length + 1))
        for i, layer in enumerate(self.blocks.layers):
            h = encoder_block_step(layer, cache, i, h, mask)
        cache.advance(1)
        return self.head(self.norm(h))[:, 0]


def real_keys(offset: torch.Tensor, length: int) -> torch.Tensor:
    """(B, length): True past each row's left padding."""
    return torch.arange(length, device=offset.device)[None, :] >= offset[:, None]
