"""ARC Exp 0, 1 and 2: one encoder-decoder transformer whose ablated components are switches, so the
three presets differ in exactly one component each.

Exp 0: positions="1d", colours="table". Exp 1: positions="grid2d" (each token's true row and column).
Exp 2: positions="grid2d", colours="equivariant" (colours canonicalised by first appearance).
"""

import torch
from torch import nn

from experiments.families.arc.attention import (
    KVCache,
    additive,
    decoder_block,
    decoder_block_step,
    encoder_block,
    key_mask,
    keys_values_of,
)
from experiments.families.arc.format import PAD, VOCAB
from experiments.families.arc.layers import (
    CANONICAL_VOCAB,
    ColourEmbedding,
    canonical_colours,
    from_canonical_logits,
    grid2d,
    sinusoid,
)
from experiments.families.arc.packing import Padded, layout


class EncoderDecoder(nn.Module):
    def __init__(
        self,
        d_model: int = 64,
        heads: int = 4,
        encoder_layers: int = 1,
        decoder_layers: int = 2,
        d_ff: int = 256,
        dropout: float = 0.0,
        positions: str = "1d",
        colours: str = "table",
        packed: bool = False,
    ):
        super().__init__()
        if positions not in ("1d", "grid2d") or colours not in ("table", "equivariant"):
            raise ValueError(
                f"positions must be '1d' or 'grid2d', colours 'table' or 'equivariant'; got {positions!r}, {colours!r}"
            )
        self.d_model, self.positions, self.equivariant = d_model, positions, colours == "equivariant"
        self.packed = packed  # the full pass with the batch's tokens end to end (`packing`): no padding computed
        self.embed = ColourEmbedding(d_model, self.equivariant)
        # torch's layers hold the parameters; the computation is attention.py's
        self.encoder = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, heads, d_ff, dropout, batch_first=True, norm_first=True),
            encoder_layers,
            enable_nested_tensor=False,
        )
        self.decoder = nn.TransformerDecoder(
            nn.TransformerDecoderLayer(d_model, heads, d_ff, dropout, batch_first=True, norm_first=True), decoder_layers
        )
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, CANONICAL_VOCAB if self.equivariant else VOCAB)

    def _position(self, rows, cols, start: int = 0):
        """Grid2D: each token's (row, col). 1D: its index, counted from `start` (the tokens decoded before)."""
        if self.positions == "grid2d":
            return grid2d(rows, cols, self.d_model)
        return sinusoid(torch.arange(start, start + rows.shape[1], device=rows.device), self.d_model).unsqueeze(0)

    def colour_map(self, batch: dict):
        return canonical_colours(batch["src"]) if self.equivariant else (None, None)

    def condition(self, batch: dict, mapping):
        return None  # the champion conditions on its context here

    def layouts(self, batch: dict) -> tuple:
        """The full pass's layout of the sources and of the targets (`packing`)."""
        return layout(batch["src"] != PAD, self.packed), layout(batch["tgt_in"] != PAD, self.packed)

    def encode(self, batch: dict, mapping=None, condition=None, src_layout=None) -> torch.Tensor:
        src = batch["src"]
        src_layout = src_layout or Padded(src != PAD)
        h = src_layout.tokens(self.embed(src, mapping) + self._position(batch["src_rows"], batch["src_cols"]))
        if condition is not None:
            h = condition(h, src_layout)
        mask = src_layout.self_mask()
        for layer in self.encoder.layers:
            h = encoder_block(layer, h, mask)
        return h

    def _logits(self, h, mapping, absent, tgt_layout=None):
        logits = self.head(self.norm(h))
        if tgt_layout is not None:
            logits = tgt_layout.rows(logits)
        return from_canonical_logits(logits, mapping, absent) if self.equivariant else logits

    def decode(self, memory, batch: dict, tgt_in, rows, cols, mapping=None, absent=None, condition=None, layouts=None):
        """Teacher-forced logits (B, L_tgt, VOCAB); `layouts`: (sources', targets') as `layouts` gives them
        (default: padded, what the memory of `encode` without a layout is)."""
        src_layout, tgt_layout = layouts or (Padded(batch["src"] != PAD), Padded(tgt_in != PAD))
        h = tgt_layout.tokens(self.embed(tgt_in, mapping) + self._position(rows, cols))
        if condition is not None:
            h = condition(h, tgt_layout)
        self_mask, memory_mask = tgt_layout.causal_mask(), tgt_layout.cross_mask(src_layout)
        for layer in self.decoder.layers:
            h = decoder_block(layer, h, keys_values_of(layer.multihead_attn, memory), memory_mask, self_mask)
        return self._logits(h, mapping, absent, tgt_layout)

    def forward(self, batch: dict) -> torch.Tensor:
        """Teacher-forced logits (B, L_tgt, VOCAB) over the original tokens."""
        mapping, absent = self.colour_map(batch)
        layouts = self.layouts(batch)
        memory = self.encode(batch, mapping, src_layout=layouts[0])
        return self.decode(
            memory, batch, batch["tgt_in"], batch["tgt_rows"], batch["tgt_cols"], mapping, absent, layouts=layouts
        )

    # ---- decoding with a key/value cache ----
    def start(self, batch: dict, colours=None, condition=None) -> dict:
        """Encode the sources once; the decoder's cross-attention keys and values of that memory are
        computed here, once; its self-attention cache starts empty. The champion
        passes its colour relabelling (`colours`: mapping, absent) and its bridge (`condition`)."""
        mapping, absent = colours or self.colour_map(batch)
        memory = self.encode(batch, mapping, condition)
        return {
            "cache": KVCache(len(self.decoder.layers)),
            "memory_kv": [
                tuple(t.contiguous() for t in keys_values_of(layer.multihead_attn, memory))
                for layer in self.decoder.layers
            ],  # contiguous: read at every step
            "memory_mask": additive(key_mask(batch["src"] != PAD), memory.dtype),
            "mapping": mapping,
            "absent": absent,
        }

    def step(
        self, state: dict, tokens: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor, condition=None
    ) -> torch.Tensor:
        """Logits (B, VOCAB) of the next token, given the previous one (B,) and the (row, col) at which
        the next one will stand."""
        cache, mapping = state["cache"], state["mapping"]
        h = self.embed(tokens[:, None], mapping) + self._position(rows[:, None], cols[:, None], cache.length)
        if condition is not None:
            h = condition(h)
        for i, layer in enumerate(self.decoder.layers):
            h = decoder_block_step(layer, cache, i, h, state["memory_kv"][i], state["memory_mask"])
        cache.advance(1)
        return self._logits(h, mapping, state["absent"])[:, 0]
