"""ARC Exp -1: a decoder-only transformer over `input SEP output`, causal, 1D sinusoidal positions."""
import torch
from torch import nn

from experiments.data.arc_format import PAD, VOCAB
from experiments.models.arc_layers import causal_mask, positions_1d


class DecoderOnly(nn.Module):
    def __init__(self, d_model: int = 64, heads: int = 4, layers: int = 3, d_ff: int = 256, dropout: float = 0.0):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(VOCAB, d_model, padding_idx=PAD)
        self.blocks = nn.TransformerEncoder(
            nn.TransformerEncoderLayer(d_model, heads, d_ff, dropout, batch_first=True, norm_first=True),
            layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(d_model)
        self.head = nn.Linear(d_model, VOCAB)

    def forward(self, batch: dict) -> torch.Tensor:
        """Logits (B, L, VOCAB); position t sees tokens 0..t only."""
        tokens = batch["tokens"]
        h = self.embed(tokens) + positions_1d(tokens.shape[1], self.d_model, tokens.device).unsqueeze(0)
        causal = causal_mask(tokens.shape[1], tokens.device)
        return self.head(self.norm(self.blocks(h, mask=causal, is_causal=True)))
