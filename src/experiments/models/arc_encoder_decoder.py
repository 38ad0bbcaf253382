"""ARC Exp 0, 1 and 2: one encoder-decoder transformer whose ablated components are switches, so the
three presets differ in exactly one component each.

Exp 0: positions="1d", colours="table". Exp 1: positions="grid2d" (each token's true row and column).
Exp 2: positions="grid2d", colours="equivariant" (colours canonicalised by first appearance).
"""
import torch
from torch import nn

from experiments.data.arc_format import PAD, VOCAB
from experiments.models.arc_layers import (CANONICAL_VOCAB, ColourEmbedding, canonical_colours, causal_mask,
                                           from_canonical_logits, grid2d, positions_1d)


class EncoderDecoder(nn.Module):
    def __init__(self, d_model: int = 64, heads: int = 4, encoder_layers: int = 1, decoder_layers: int = 2,
                 d_ff: int = 256, dropout: float = 0.0, positions: str = "1d", colours: str = "table"):
        super().__init__()
        if positions not in ("1d", "grid2d") or colours not in ("table", "equivariant"):
            raise ValueError(f"positions must be '1d' or 'grid2d', colours 'table' or 'equivariant'; "
                             f"got {positions!r}, {colours!r}")
        self.d_model, self.positions, self.equivariant = d_model, positions, colours == "equivariant"
        self.embed = ColourEmbedding(d_model, self.equivariant)
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, heads, d_ff, dropout, batch_first=True, norm_first=True),
            encoder_layers, enable_nested_tensor=False)
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d_model, heads, d_ff, dropout, batch_first=True, norm_first=True),
            decoder_layers)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, CANONICAL_VOCAB if self.equivariant else VOCAB)

    def _position(self, tokens, rows, cols):
        if self.positions == "grid2d":
            return grid2d(rows, cols, self.d_model)
        return positions_1d(tokens.shape[1], self.d_model, tokens.device).unsqueeze(0)

    def colour_map(self, batch: dict):
        return canonical_colours(batch["src"]) if self.equivariant else (None, None)

    def condition(self, batch: dict, mapping):
        return None  # the champion conditions on its context here

    def encode(self, batch: dict, mapping=None, condition=None) -> torch.Tensor:
        src = batch["src"]
        h = self.embed(src, mapping) + self._position(src, batch["src_rows"], batch["src_cols"])
        if condition is not None:
            h = condition(h)
        return self.encoder(h, src_key_padding_mask=src == PAD)

    def decode(self, memory, batch: dict, tgt_in, rows, cols, mapping=None, absent=None, condition=None):
        h = self.embed(tgt_in, mapping) + self._position(tgt_in, rows, cols)
        if condition is not None:
            h = condition(h)
        causal = causal_mask(tgt_in.shape[1], tgt_in.device)
        out = self.decoder(h, memory, tgt_mask=causal, tgt_is_causal=True,
                           tgt_key_padding_mask=tgt_in == PAD, memory_key_padding_mask=batch["src"] == PAD)
        logits = self.head(self.norm(out))
        return from_canonical_logits(logits, mapping, absent) if self.equivariant else logits

    def forward(self, batch: dict) -> torch.Tensor:
        """Teacher-forced logits (B, L_tgt, VOCAB) over the original tokens."""
        mapping, absent = self.colour_map(batch)
        memory = self.encode(batch, mapping)
        return self.decode(memory, batch, batch["tgt_in"], batch["tgt_rows"], batch["tgt_cols"], mapping, absent)
