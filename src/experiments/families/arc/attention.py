"""Transformer blocks of the ARC models, computed through `F.scaled_dot_product_attention`, with a
key/value cache for decoding one token at a time.

The parameters stay torch's `nn.TransformerEncoderLayer` / `nn.TransformerDecoderLayer` /
`nn.MultiheadAttention` (their names and their initialisation), so checkpoints written before this file
existed still load; only the computation is ours. It is written once here and serves both the full pass
(training, teacher forcing) and the cached step (evaluation), which is what makes the two agree.

All layers are pre-norm (`norm_first=True`). Masks follow `scaled_dot_product_attention`: a boolean
`attend` is True where a query may look at a key (the opposite of nn.MultiheadAttention's masks).
"""

import torch
import torch.nn.functional as F
from torch import nn

from experiments.families.arc.packing import Segments, attend_segments


def heads(x: torch.Tensor, n: int) -> torch.Tensor:
    """(B, L, D) -> (B, n, L, D / n)."""
    return x.unflatten(-1, (n, x.shape[-1] // n)).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, n, L, D / n) -> (B, L, D)."""
    return x.transpose(1, 2).flatten(2)


def qkv_of(mha: nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Queries, keys and values of self-attention, in one projection."""
    q, k, v = F.linear(x, mha.in_proj_weight, mha.in_proj_bias).chunk(3, dim=-1)
    return heads(q, mha.num_heads), heads(k, mha.num_heads), heads(v, mha.num_heads)


def query_of(mha: nn.MultiheadAttention, x: torch.Tensor) -> torch.Tensor:
    d = x.shape[-1]
    return heads(F.linear(x, mha.in_proj_weight[:d], mha.in_proj_bias[:d]), mha.num_heads)


def keys_values_of(mha: nn.MultiheadAttention, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    d = x.shape[-1]
    k, v = F.linear(x, mha.in_proj_weight[d:], mha.in_proj_bias[d:]).chunk(2, dim=-1)
    return heads(k, mha.num_heads), heads(v, mha.num_heads)


def attend(mha: nn.MultiheadAttention, q, k, v, attend_mask=None, causal: bool = False) -> torch.Tensor:
    """Attention of queries (B, n, Lq, d) over keys/values (B, n, Lk, d), then the output projection.
    `attend_mask` may be `packing.Segments` (packed tokens: each example attends to its own)."""
    drop = mha.dropout if mha.training else 0.0
    if isinstance(attend_mask, Segments):
        out = attend_segments(q, k, v, attend_mask, drop, causal)
    else:
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attend_mask, dropout_p=drop, is_causal=causal)
    return mha.out_proj(merge_heads(out))


def key_mask(valid: torch.Tensor) -> torch.Tensor:
    """(B, Lk) True for real tokens -> an `attend` mask (B, 1, 1, Lk) for every query."""
    return valid[:, None, None, :]


def additive(mask: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A boolean `attend` mask as the float mask SDPA adds to the scores (0 or -inf): converted once for
    a mask read at every decoding step rather than at every call."""
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def feed_forward(layer, x: torch.Tensor) -> torch.Tensor:
    return layer.linear2(layer.dropout(layer.activation(layer.linear1(x))))


def encoder_block(layer: nn.TransformerEncoderLayer, x: torch.Tensor, attend_mask=None, causal: bool = False):
    """One pre-norm self-attention block over the whole sequence."""
    q, k, v = qkv_of(layer.self_attn, layer.norm1(x))
    x = x + layer.dropout1(attend(layer.self_attn, q, k, v, attend_mask, causal))
    return x + layer.dropout2(feed_forward(layer, layer.norm2(x)))


def decoder_block(
    layer: nn.TransformerDecoderLayer, x: torch.Tensor, memory_kv, memory_mask, self_mask=None
) -> torch.Tensor:
    """One pre-norm decoder block over the whole target, causal. Right padding needs no self-attention
    mask (`self_mask` None): a real token at t only sees positions 0..t, all real."""
    q, k, v = qkv_of(layer.self_attn, layer.norm1(x))
    x = x + layer.dropout1(attend(layer.self_attn, q, k, v, self_mask, causal=True))
    x = x + layer.dropout2(
        attend(layer.multihead_attn, query_of(layer.multihead_attn, layer.norm2(x)), *memory_kv, memory_mask)
    )
    return x + layer.dropout3(feed_forward(layer, layer.norm3(x)))


class KVCache:
    """Keys and values of every layer for the tokens seen so far, (B, n, capacity, d) each, filled one
    step at a time; the capacity doubles when full. `select` keeps the rows of the sequences still
    being decoded."""

    def __init__(self, layers: int):
        self.k: list = [None] * layers
        self.v: list = [None] * layers
        self.length = 0

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store (B, n, t, d) new keys/values after those of the earlier steps; all of them so far."""
        end = self.length + k.shape[2]
        if self.k[layer] is None or end > self.k[layer].shape[2]:
            self.k[layer], self.v[layer] = _grown(self.k[layer], k, end), _grown(self.v[layer], v, end)
        self.k[layer][:, :, self.length : end] = k
        self.v[layer][:, :, self.length : end] = v
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]

    def advance(self, steps: int) -> None:
        self.length += steps

    def select(self, rows: torch.Tensor) -> None:
        self.k = [None if t is None else t[rows] for t in self.k]
        self.v = [None if t is None else t[rows] for t in self.v]


def _grown(t: torch.Tensor | None, like: torch.Tensor, needed: int) -> torch.Tensor:
    """Room for at least `needed` positions (twice the old capacity, at least 64), the old content kept."""
    b, n, _, d = like.shape
    capacity = 0 if t is None else t.shape[2]
    room = like.new_zeros(b, n, max(needed, 2 * capacity, 64) - capacity, d)
    return room if t is None else torch.cat([t, room], dim=2)


def cached_self_attention(layer, cache: KVCache, index: int, h: torch.Tensor, attend_mask=None):
    """Self-attention of the new tokens h (B, t, D) over every token so far (cached ones included)."""
    q, k, v = qkv_of(layer.self_attn, h)
    return attend(layer.self_attn, q, *cache.append(index, k, v), attend_mask)


def encoder_block_step(layer, cache: KVCache, index: int, x: torch.Tensor, attend_mask=None) -> torch.Tensor:
    """`encoder_block` (used causally, as a decoder-only stack) for new tokens, with the earlier ones cached."""
    x = x + layer.dropout1(cached_self_attention(layer, cache, index, layer.norm1(x), attend_mask))
    return x + layer.dropout2(feed_forward(layer, layer.norm2(x)))


def decoder_block_step(layer, cache: KVCache, index: int, x: torch.Tensor, memory_kv, memory_mask) -> torch.Tensor:
    """`decoder_block` for one new token (B, 1, D), the earlier tokens' keys/values cached."""
    x = x + layer.dropout1(cached_self_attention(layer, cache, index, layer.norm1(x)))
    x = x + layer.dropout2(
        attend(layer.multihead_attn, query_of(layer.multihead_attn, layer.norm2(x)), *memory_kv, memory_mask)
    )
    return x + layer.dropout3(feed_forward(layer, layer.norm3(x)))


def select_rows(state, rows: torch.Tensor):
    """A decoding state (dicts, lists, tuples of batch-first tensors and caches) cut to `rows`: the
    sequences still being decoded, so that a finished one no longer takes a slot."""
    if isinstance(state, KVCache):
        state.select(rows)
        return state
    if isinstance(state, torch.Tensor):
        return state[rows]
    if isinstance(state, dict):
        return {k: select_rows(v, rows) for k, v in state.items()}
    if isinstance(state, (list, tuple)):
        return type(state)(select_rows(v, rows) for v in state)
    return state
