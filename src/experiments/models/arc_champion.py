"""ARC Exp 3, the champion: Exp 2 (Grid2D positions, equivariant colours) + a context encoder over two
demonstration pairs of the task + a bridge that joins the context vector to every token.

Context encoder: each context cell embedded (canonical colour, its true row and column, which pair,
input or output role), one transformer layer over the non-pad cells of both pairs together (so output
cells attend to input cells), then attention pooling with a learned query into one vector.
Bridge: concat(token, context) -> Linear -> ReLU -> LayerNorm, on encoder and decoder inputs.
"""
import torch
from torch import nn

from experiments.data.arc_format import PAD
from experiments.models.arc_encoder_decoder import EncoderDecoder
from experiments.models.arc_layers import ColourEmbedding, canonical_colours, grid2d


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

    def forward(self, context: torch.Tensor, mapping: torch.Tensor) -> torch.Tensor:
        """context (B, 2, 2, H, W) -> (B, d_context)."""
        b, pairs, roles, h, w = context.shape
        rows = torch.arange(h, device=context.device).view(1, 1, 1, h, 1).expand_as(context)
        cols = torch.arange(w, device=context.device).view(1, 1, 1, 1, w).expand_as(context)
        which = (torch.arange(pairs * roles, device=context.device).view(1, pairs, roles, 1, 1)).expand_as(context)
        flat = lambda t: t.reshape(b, -1)  # noqa: E731
        cells = flat(context)
        x = self.embed(cells, mapping) + grid2d(flat(rows), flat(cols), self.d_model) + self.pair_role(flat(which))
        pad = cells == PAD
        x = self.layer(x, src_key_padding_mask=pad)
        pooled, _ = self.pool(self.query.expand(b, -1, -1), x, x, key_padding_mask=pad)
        return self.out(pooled.squeeze(1))


class Bridge(nn.Module):
    def __init__(self, d_model: int, d_context: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(d_model + d_context, d_model), nn.ReLU(), nn.LayerNorm(d_model))

    def forward(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([h, context.unsqueeze(1).expand(-1, h.shape[1], -1)], dim=-1))


class Champion(nn.Module):
    def __init__(self, d_model: int = 64, heads: int = 4, encoder_layers: int = 1, decoder_layers: int = 2,
                 d_ff: int = 256, d_context: int = 32, dropout: float = 0.0):
        super().__init__()
        self.core = EncoderDecoder(d_model, heads, encoder_layers, decoder_layers, d_ff, dropout,
                                   positions="grid2d", colours="equivariant")
        self.context = ContextEncoder(d_model, d_context, heads, d_ff)
        self.bridge = Bridge(d_model, d_context)

    def colour_map(self, batch: dict):
        # first appearance over the context grids, then the query input: one relabelling for the task
        reference = torch.cat([batch["context"].reshape(batch["context"].shape[0], -1), batch["src"]], dim=1)
        return canonical_colours(reference)

    def condition(self, batch: dict, mapping):
        vector = self.context(batch["context"], mapping)
        return lambda h: self.bridge(h, vector)

    def encode(self, batch: dict, mapping=None, condition=None) -> torch.Tensor:
        return self.core.encode(batch, mapping, condition)

    def decode(self, memory, batch, tgt_in, rows, cols, mapping=None, absent=None, condition=None):
        return self.core.decode(memory, batch, tgt_in, rows, cols, mapping, absent, condition)

    def forward(self, batch: dict) -> torch.Tensor:
        mapping, absent = self.colour_map(batch)
        condition = self.condition(batch, mapping)
        memory = self.encode(batch, mapping, condition)
        return self.decode(memory, batch, batch["tgt_in"], batch["tgt_rows"], batch["tgt_cols"], mapping, absent,
                           condition)
