"""All 3^9 = 19,683 ternary operations as a data module.

Training batches are whole index tensors drawn from a permutation that is a pure function of
(seed, epoch): no per-sample collation (fast for this tiny model) and an exactly reproducible order.
"""
import lightning as L
import torch

from experiments.family import batches_done, BatchLoader, EpochBatchSampler, shard

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


class TernaryOpsDataModule(L.LightningDataModule):
    def __init__(self, batch_size: int = 64, val_batch_size: int = 4096, seed: int = 0):
        super().__init__()
        self.batch_size, self.val_batch_size, self.seed = batch_size, val_batch_size, seed
        self.operations = all_operations().float()
        self.train_sampler = EpochBatchSampler(len(self.operations), batch_size, seed, shuffle=True)

    def train_dataloader(self) -> BatchLoader:
        return BatchLoader(self.operations, shard(self.train_sampler, self.trainer))

    def val_dataloader(self) -> BatchLoader:
        # Validation scores every operation once, in order.
        return BatchLoader(self.operations, EpochBatchSampler(len(self.operations), self.val_batch_size, self.seed,
                                                              shuffle=False))

    def state_dict(self) -> dict:
        return {"train_sampler": self.train_sampler.state_dict(batches_done(self.trainer))}

    def load_state_dict(self, state: dict) -> None:
        self.train_sampler.load_state_dict(state["train_sampler"])
