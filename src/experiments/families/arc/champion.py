"""ARC Exp 3, the champion: Exp 2 (Grid2D positions, equivariant colours) + a context encoder over two
demonstration pairs of the task + a bridge that joins the context vector to every token.

Context encoder: each context cell embedded (canonical colour, its true row and column, which pair,
input or output role), one transformer layer over the cells of both pairs together (so output cells
attend to input cells), then attention pooling with a learned query into one vector. The cells come as
one sequence per example (`data.context_cells`), padding only at its end.
Bridge: concat(token, context) -> Linear -> ReLU -> LayerNorm, on encoder and decoder inputs.
"""

import torch
from torch import nn

from experiments.families.arc.attention import attend, encoder_block, keys_values_of, query_of
from experiments.families.arc.encoder_decoder import EncoderDecoder
from experiments.families.arc.format import PAD
from experiments.families.arc.layers import ColourEmbedding, canonical_colours, grid2d
from experiments.families.arc.packing import layout


class ContextEncoder(nn.Module):
    def __init__(self, d_model: int, d_context: int, heads: int, d_ff: int):
        super().__init__()
        self.d_model = d_model
        self.embed = ColourEmbedding(d_model, equivariant=True)
        self.pair_role = nn.Embedding(4, d_model)  # (pair 0/1) x (input/output)
        self.layer = nn.TransformerEncoderLayer(d_model, heads, d_ff, 0.0, batch_first=True, norm_first=True)
        self.query = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.pool = nn.MultiheadAttention(d_model, heads, batch_first=True)
        self.out = nn.Linear(d_model, d_context)

    def forward(self, batch: dict, mapping: torch.Tensor, packed: bool = False) -> torch.Tensor:
        """The context cells (B, N) with their rows, columns and grids -> (B, d_context)."""
        cells = batch["context"]
        cells_layout = layout(cells != PAD, packed)
        x = cells_layout.tokens(
            self.embed(cells, mapping)
            + self.pair_role(batch["context_which"])
            + grid2d(batch["context_rows"], batch["context_cols"], self.d_model)
        )
        x = encoder_block(self.layer, x, cells_layout.self_mask())
        query = query_of(self.pool, cells_layout.one_each(self.query))
        pooled = attend(self.pool, query, *keys_values_of(self.pool, x), cells_layout.pooling_mask())
        return self.out(pooled.reshape(cells.shape[0], -1))


class Bridge(nn.Module):
    def __init__(self, d_model: int, d_context: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model + d_context, d_model), nn.ReLU(), nn.LayerNorm(d_model))

    def forward(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """Tokens h (..., d_model), each beside its example's context vector (..., d_context)."""
        return self.net(torch.cat([h, context], dim=-1))


class Champion(nn.Module):
    def __init__(
        self,
        d_model: int = 64,
        heads: int = 4,
        encoder_layers: int = 1,
        decoder_layers: int = 2,
        d_ff: int = 256,
        d_context: int = 32,
        dropout: float = 0.0,
        packed: bool = False,
    ):
        super().__init__()
        self.core = EncoderDecoder(
            d_model,
            heads,
            encoder_layers,
            decoder_layers,
            d_ff,
            dropout,
            positions="grid2d",
            colours="equivariant",
            packed=packed,
        )
        self.context = ContextEncoder(d_model, d_context, heads, d_ff)
        self.bridge = Bridge(d_model, d_context)

    def colour_map(self, batch: dict):
        # first appearance over the context grids, then the query input: one relabelling for the task
        reference = torch.cat([batch["context"], batch["src"]], dim=1)
        return canonical_colours(reference)

    def condition(self, batch: dict, mapping):
        return self._bridge_to(self.context(batch, mapping))

    def _bridge_to(self, vector: torch.Tensor):
        """The bridge as `condition(h, layout)` of the core: each token joined to its example's vector (a
        layout None: h is (B, t, D), as in a decoding step)."""

        def condition(h, tokens_layout=None):
            if tokens_layout is None:
                return self.bridge(h, vector.unsqueeze(1).expand(-1, h.shape[1], -1))
            return self.bridge(h, tokens_layout.spread(vector))

        return condition

    def encode(self, batch: dict, mapping=None, condition=None) -> torch.Tensor:
        return self.core.encode(batch, mapping, condition)

    def decode(self, memory, batch, tgt_in, rows, cols, mapping=None, absent=None, condition=None):
        return self.core.decode(memory, batch, tgt_in, rows, cols, mapping, absent, condition)

    def forward(self, batch: dict) -> torch.Tensor:
        mapping, absent = self.colour_map(batch)
        condition = self._bridge_to(self.context(batch, mapping, self.core.packed))
        layouts = self.core.layouts(batch)
        memory = self.core.encode(batch, mapping, condition, layouts[0])
        return self.core.decode(
            memory, batch, batch["tgt_in"], batch["tgt_rows"], batch["tgt_cols"], mapping, absent, condition, layouts
        )

    # ---- decoding with a key/value cache: the core's, with the context vector kept beside its state ----
    def start(self, batch: dict) -> dict:
        colours = self.colour_map(batch)
        vector = self.context(batch, colours[0])
        return {**self.core.start(batch, colours, self._bridge_to(vector)), "context": vector}

    def step(self, state: dict, tokens, rows, cols) -> torch.Tensor:
        return self.core.step(state, tokens, rows, cols, self._bridge_to(state["context"]))
