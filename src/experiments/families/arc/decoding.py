"""Greedy autoregressive decoding of ARC outputs, one token per step for a whole batch.

A sequence stops as soon as it ends (EOS) or can no longer spell a grid, and then leaves the batch: a
finished short sequence does not hold a slot while the long ones go on.

Where the next token's logits come from:
- `CachedSteps` (evaluation): the model's key/value cache; a step runs one token through the layers.
- `FullRecomputation` (the reference): the whole decoder over the whole prefix at every step, as the
  first version of this code did. The tests and `scripts/bench_arc_decode.py` hold the two side by side:
  same tokens, logits equal to float tolerance.
Both take the same per-step input: the previous token of each sequence still running and the (row, col)
at which its next token will stand (what a decoder knows from the EOLs so far).
"""

import numpy as np
import torch

from experiments.families.arc import format as af
from experiments.families.arc.attention import select_rows
from experiments.families.arc.data import collate

ALLOWED = list(range(10)) + [af.EOL, af.EOS]  # what a decoder may emit


class GridState:
    """Tracks one sequence being decoded; stops it as soon as it can no longer spell a grid."""

    def __init__(self):
        self.row, self.col, self.width, self.done = 0, 0, None, False

    def position(self) -> tuple[int, int]:
        return min(self.row, af.MAX_SIDE), min(self.col, af.MAX_SIDE)

    def push(self, token: int) -> None:
        if token == af.EOS:
            self.done = True
        elif token == af.EOL:
            if self.col == 0 or (self.width is not None and self.col != self.width):
                self.done = True  # empty or ragged row: not a grid
            self.width, self.row, self.col = self.col, self.row + 1, 0
            if self.row > af.MAX_SIDE:
                self.done = True
        else:
            self.col += 1
            if self.col > af.MAX_SIDE or (self.width is not None and self.col > self.width):
                self.done = True


def first_token(fmt: str) -> int:
    """What the decoder is fed before its first output token."""
    return af.SEP if fmt == "decoder_only" else af.BOS


def prompt_of(example) -> torch.Tensor:
    return torch.from_numpy(af.grid_tokens(example.query[0])[0])


class CachedSteps:
    def __init__(self, model, fmt: str, examples: list, device):
        if fmt == "decoder_only":
            self.state = model.start([prompt_of(ex).to(device) for ex in examples])
        else:
            batch = {k: v.to(device) for k, v in collate(examples, fmt).items()}
            self.state = model.start(batch)
        self.model = model

    def __call__(self, tokens: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        return self.model.step(self.state, tokens, rows, cols)

    def keep(self, slots: torch.Tensor) -> None:
        self.state = select_rows(self.state, slots)


class FullRecomputation:
    """Every step reruns the decoder over every sequence's whole prefix (finished ones too, as before)."""

    def __init__(self, model, fmt: str, examples: list, device):
        self.model, self.fmt, self.device = model, fmt, device
        n = len(examples)
        self.fed = [[] for _ in range(n)]  # tokens fed so far, per sequence
        self.rows, self.cols = [[] for _ in range(n)], [[] for _ in range(n)]
        self.alive = list(range(n))  # sequence of each slot of the caller's batch
        if fmt == "decoder_only":
            self.prompts = [prompt_of(ex) for ex in examples]
        else:
            self.batch = {k: v.to(device) for k, v in collate(examples, fmt).items()}
            self.mapping, self.absent = model.colour_map(self.batch)
            self.condition = model.condition(self.batch, self.mapping)
            self.memory = model.encode(self.batch, self.mapping, self.condition)

    def __call__(self, tokens: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        for slot, seq in enumerate(self.alive):
            self.fed[seq].append(int(tokens[slot]))
            self.rows[seq].append(int(rows[slot]))
            self.cols[seq].append(int(cols[slot]))
        if self.fmt == "decoder_only":
            seqs = [torch.cat([p, torch.tensor(f)]) for p, f in zip(self.prompts, self.fed)]
            logits = self.model({"tokens": _right_padded(seqs, af.PAD).to(self.device)})
            last = torch.tensor([len(seqs[s]) - 1 for s in self.alive], device=self.device)
        else:
            tgt = _right_padded([torch.tensor(f) for f in self.fed], af.PAD).to(self.device)
            r = _right_padded([torch.tensor(x) for x in self.rows], 0).to(self.device)
            c = _right_padded([torch.tensor(x) for x in self.cols], 0).to(self.device)
            logits = self.model.decode(self.memory, self.batch, tgt, r, c, self.mapping, self.absent, self.condition)
            last = torch.tensor([len(self.fed[s]) - 1 for s in self.alive], device=self.device)
        return logits[torch.tensor(self.alive, device=self.device), last]

    def keep(self, slots: torch.Tensor) -> None:
        self.alive = [self.alive[s] for s in slots.tolist()]


def _right_padded(seqs: list[torch.Tensor], value: int) -> torch.Tensor:
    out = torch.full((len(seqs), max(len(s) for s in seqs)), value, dtype=torch.long)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return out


@torch.no_grad()
def greedy(steps, fmt: str, n: int, max_tokens: int, device, record: list | None = None) -> list[list[int]]:
    """Greedy decoding of n sequences through `steps` (CachedSteps or FullRecomputation). With `record`,
    appends (sequences still running, their logits) at every step."""
    allowed = torch.full((af.VOCAB,), float("-inf"), device=device)
    allowed[ALLOWED] = 0.0
    states, generated = [GridState() for _ in range(n)], [[] for _ in range(n)]
    running = list(range(n))  # the sequence in each slot of the batch
    tokens = torch.full((n,), first_token(fmt), dtype=torch.long, device=device)
    rows = cols = torch.zeros(n, dtype=torch.long, device=device)
    for _ in range(max_tokens):
        logits = steps(tokens, rows, cols)
        if record is not None:
            record.append((list(running), logits.float().cpu()))
        chosen = (logits + allowed).argmax(-1).tolist()
        for seq, token in zip(running, chosen):
            generated[seq].append(token)
            states[seq].push(token)
        slots = [s for s, seq in enumerate(running) if not states[seq].done]
        if not slots:
            break
        if len(slots) < len(running):
            steps.keep(torch.tensor(slots, device=device))
            running, chosen = [running[s] for s in slots], [chosen[s] for s in slots]
        tokens = torch.tensor(chosen, device=device)
        where = np.array([states[seq].position() for seq in running])
        rows, cols = torch.from_numpy(where[:, 0]).to(device), torch.from_numpy(where[:, 1]).to(device)
    return generated
