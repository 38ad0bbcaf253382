"""How the full pass over a batch (training, teacher-forced likelihood) lays out its tokens.

`Padded`: one row per example, (B, L, D), padded at its end to the longest of the batch; attention masks
the padding out, but every padding token still goes through every projection and feed-forward layer.
The cached decoding always runs this way.

`Packed`: the real tokens of every example end to end in a single row, (1, N, D), N the batch's real
tokens; attention runs example by example over that example's own tokens (`Segments`), so no padding
token is computed anywhere. The same function of the weights as `Padded`, up to float rounding (sums
taken in another order); it pays where the examples of a batch differ in length, as ARC's do even in
length-bucketed batches (`model.packed`, on in the presets).

Both answer the same questions, so a model's code reads the same either way: `tokens` lays a (B, L, ...)
tensor out, `rows` brings a laid-out one back to (B, L, ...) (packed: zeros where the padding is), `spread` gives each
token its example's vector, and the `*_mask` methods give `attention.attend` its mask.
"""

import torch
import torch.nn.functional as F


class Segments:
    """`attention.attend`'s mask for packed tokens: query i of example j sees only example j's keys.
    `queries` and `keys`: each example's number of query and key tokens, in order."""

    def __init__(self, queries: list[int], keys: list[int]):
        self.queries, self.keys = queries, keys


def attend_segments(q, k, v, segments: Segments, dropout: float, causal: bool) -> torch.Tensor:
    """Attention of packed queries (1, n, Nq, d) over packed keys/values (1, n, Nk, d), one example at a
    time: exactly the arithmetic of each example alone."""
    parts = zip(q.split(segments.queries, 2), k.split(segments.keys, 2), v.split(segments.keys, 2))
    return torch.cat(
        [F.scaled_dot_product_attention(qi, ki, vi, dropout_p=dropout, is_causal=causal) for qi, ki, vi in parts], 2
    )


class Padded:
    def __init__(self, valid: torch.Tensor):
        self.valid = valid  # (B, L): True for real tokens

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def spread(self, vector: torch.Tensor) -> torch.Tensor:
        """(B, C) -> (B, L, C)."""
        return vector.unsqueeze(1).expand(-1, self.valid.shape[1], -1)

    def self_mask(self):
        return self.valid[:, None, None, :]

    def causal_mask(self):
        return None  # right padding: a real token at t sees 0..t, all real

    def cross_mask(self, keys: "Padded"):
        return keys.valid[:, None, None, :]

    def one_each(self, query: torch.Tensor) -> torch.Tensor:
        """A (1, 1, D) query for every example: (B, 1, D)."""
        return query.expand(self.valid.shape[0], -1, -1)

    def pooling_mask(self):
        return self.self_mask()


class Packed:
    def __init__(self, valid: torch.Tensor):
        self.valid = valid
        self.counts = valid.sum(1)
        self.lengths = self.counts.tolist()

    def tokens(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, ...) -> (1, N, ...): the real tokens only, example after example."""
        return x[self.valid].unsqueeze(0)

    def rows(self, x: torch.Tensor) -> torch.Tensor:
        """(1, N, ...) -> (B, L, ...), zeros where the padding would be."""
        out = x.new_zeros(*self.valid.shape, *x.shape[2:])
        out[self.valid] = x[0]
        return out

    def spread(self, vector: torch.Tensor) -> torch.Tensor:
        """(B, C) -> (1, N, C)."""
        return vector.repeat_interleave(self.counts, 0).unsqueeze(0)

    def self_mask(self) -> Segments:
        return Segments(self.lengths, self.lengths)

    def causal_mask(self) -> Segments:
        return Segments(self.lengths, self.lengths)

    def cross_mask(self, keys: "Packed") -> Segments:
        return Segments(self.lengths, keys.lengths)

    def one_each(self, query: torch.Tensor) -> torch.Tensor:
        """A (1, 1, D) query for every example: (1, B, D)."""
        return query.expand(1, len(self.lengths), -1)

    def pooling_mask(self) -> Segments:
        return Segments([1] * len(self.lengths), self.lengths)


def layout(valid: torch.Tensor, packed: bool) -> Padded | Packed:
    return Packed(valid) if packed else Padded(valid)
