"""All 3^9 = 19,683 ternary operations as a data module.

Training batches are whole index tensors drawn from a permutation that is a pure function of
(seed, epoch): no per-sample collation (fast for this tiny model) and an exactly reproducible order.
Prediction (`predict_dataloader`): all operations in order, or those of an `operations` file.
"""

from pathlib import Path

import lightning as L
import torch

from experiments.family import BatchLoader, EpochBatchSampler, batches_done, excerpt, read_text, shard

NUM_TRITS = 9
NUM_OPERATIONS = 3**NUM_TRITS


def all_operations(num_trits: int = NUM_TRITS) -> torch.Tensor:
    """Operation i, trit k: ((i // 3**k) % 3) - 1. Returns (3**num_trits, num_trits) int64 in {-1, 0, 1}."""
    i = torch.arange(3**num_trits).unsqueeze(1)
    powers = 3 ** torch.arange(num_trits)
    return (i // powers) % 3 - 1


def operation_index(trits: torch.Tensor) -> torch.Tensor:
    """Inverse of all_operations: i = sum((t_k + 1) * 3**k)."""
    powers = 3 ** torch.arange(trits.shape[-1], device=trits.device)
    return ((trits.long() + 1) * powers).sum(-1)


def read_operations(path: Path) -> torch.Tensor:
    """A file of operations, one a line: its index (0 to 19,682) or its 9 trits (-1, 0, 1; separated by commas
    or spaces), `#` starting a comment. Returns their indices in the file's order; anything else is refused
    (ValueError naming the line)."""
    try:
        text = read_text(path, limit=4 << 20)  # 19,683 lines of 9 trits are 0.6 MB
    except OSError as e:
        raise ValueError(f"{path}: cannot be read ({e.strerror})")
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        words = line.split("#", 1)[0].replace(",", " ").split()
        if not words:
            continue
        try:
            values = [int(w) for w in words]
        except ValueError:
            values = []
        if len(values) == 1 and 0 <= values[0] < NUM_OPERATIONS:
            found.append(values[0])
        elif len(values) == NUM_TRITS and all(v in (-1, 0, 1) for v in values):
            found.append(int(operation_index(torch.tensor(values))))
        else:
            raise ValueError(
                f"{path}:{n}: {excerpt(line.strip(), 40)} is not an operation: give its index "
                f"(0-{NUM_OPERATIONS - 1}) or its {NUM_TRITS} trits (-1, 0 or 1)"
            )
    if not found:
        raise ValueError(f"{path} holds no operation (one a line: an index or {NUM_TRITS} trits)")
    return torch.tensor(found)


class TernaryOpsDataModule(L.LightningDataModule):
    def __init__(self, batch_size: int = 64, val_batch_size: int = 4096, seed: int = 0, operations: str | None = None):
        super().__init__()
        self.batch_size, self.val_batch_size, self.seed = batch_size, val_batch_size, seed
        self.operations = all_operations().float()
        # what predict_dataloader gives: a file's operations (read_operations), or all of them
        self.predicted = self.operations[read_operations(Path(operations))] if operations else self.operations
        self.source = operations
        self.train_sampler = EpochBatchSampler(len(self.operations), batch_size, seed, shuffle=True)

    def train_dataloader(self) -> BatchLoader:
        return BatchLoader(self.operations, shard(self.train_sampler, self.trainer))

    def val_dataloader(self) -> BatchLoader:
        # Validation scores every operation once, in order.
        return BatchLoader(
            self.operations, EpochBatchSampler(len(self.operations), self.val_batch_size, self.seed, shuffle=False)
        )

    def predict_dataloader(self) -> BatchLoader:
        return BatchLoader(
            self.predicted, EpochBatchSampler(len(self.predicted), self.val_batch_size, self.seed, shuffle=False)
        )

    def describe(self) -> str:
        if not self.source:
            return f"all {NUM_OPERATIONS:,} ternary operations"
        n = len(self.predicted)
        return f"{n:,} operation{'s' * (n != 1)} of {self.source} to predict (validation: all {NUM_OPERATIONS:,})"

    def state_dict(self) -> dict:
        return {"train_sampler": self.train_sampler.state_dict(batches_done(self.trainer))}

    def load_state_dict(self, state: dict) -> None:
        self.train_sampler.load_state_dict(state["train_sampler"])
