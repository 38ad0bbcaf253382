"""ARC grids as token sequences, and augmentation of whole tasks.

Tokens: colours 0-9, PAD 10, EOL 11 (end of a row), EOS 12 (end of a grid), SEP 13, BOS 14. A grid is
its rows, each followed by EOL, then EOS, so a predicted sequence carries its own height and width.
Every token has the (row, col) it stands at: a cell (r, c), the EOL of row r at (r, W), the EOS at (H, 0).
"""

import numpy as np

PAD, EOL, EOS, SEP, BOS = 10, 11, 12, 13, 14
VOCAB = 15
MAX_SIDE = 30


def grid_tokens(grid: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(tokens, rows, cols) of one grid, EOS included."""
    h, w = grid.shape
    body = np.concatenate([np.asarray(grid, dtype=np.int64), np.full((h, 1), EOL)], axis=1)
    rows = np.repeat(np.arange(h), w + 1)
    cols = np.tile(np.arange(w + 1), h)
    return (np.append(body.reshape(-1), EOS), np.append(rows, h), np.append(cols, 0))


def positions_of(tokens: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rows, cols) of a (possibly partial) grid sequence, from its EOL tokens: what a decoder knows."""
    rows, cols, r, c = [], [], 0, 0
    for t in tokens:
        rows.append(r)
        cols.append(c if t != EOS else 0)
        if t == EOL:
            r, c = r + 1, 0
        else:
            c += 1
    return np.array(rows, dtype=np.int64), np.array(cols, dtype=np.int64)


def tokens_to_grid(tokens) -> np.ndarray | None:
    """The grid a sequence spells, or None when it is not one (no EOS, ragged or empty rows, a stray token)."""
    rows, row = [], []
    for t in tokens:
        t = int(t)
        if t == EOS:
            break
        if t == EOL:
            if not row:
                return None
            rows.append(row)
            row = []
        elif 0 <= t <= 9:
            row.append(t)
        else:
            return None
    else:
        return None
    if row or not rows or len({len(r) for r in rows}) != 1:
        return None
    return np.array(rows, dtype=np.int64)


# ---- augmentation: one of 8 dihedral transforms and a permutation of colours 1-9, for a whole task ----
def dihedral(grid: np.ndarray, k: int) -> np.ndarray:
    """k in 0..7: rotate by 90 * (k % 4) degrees, then transpose if k >= 4."""
    g = np.rot90(grid, k % 4)
    return np.ascontiguousarray(g.T if k >= 4 else g)


def dihedral_inverse(grid: np.ndarray, k: int) -> np.ndarray:
    g = grid.T if k >= 4 else grid
    return np.ascontiguousarray(np.rot90(g, -(k % 4)))


class Augmentation:
    """A dihedral transform `k` and a colour permutation `perm` (perm[c] is the new colour of c; 0 kept)."""

    def __init__(self, k: int = 0, perm: np.ndarray | None = None):
        self.k = k
        self.perm = np.arange(10) if perm is None else np.asarray(perm)
        assert self.perm[0] == 0 and sorted(self.perm.tolist()) == list(range(10))
        self.inverse_perm = np.argsort(self.perm)

    @classmethod
    def random(cls, rng: np.random.Generator, dihedral_on: bool = True, colours_on: bool = True) -> "Augmentation":
        k = int(rng.integers(8)) if dihedral_on else 0
        perm = np.concatenate([[0], 1 + rng.permutation(9)]) if colours_on else None
        return cls(k, perm)

    def __call__(self, grid: np.ndarray) -> np.ndarray:
        return dihedral(self.perm[np.asarray(grid)], self.k)

    def invert(self, grid: np.ndarray) -> np.ndarray:
        return self.inverse_perm[dihedral_inverse(np.asarray(grid), self.k)]

    @property
    def is_identity(self) -> bool:
        return self.k == 0 and (self.perm == np.arange(10)).all()
