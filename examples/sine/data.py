"""Generated data: points x in [-pi, pi] and y = sin(frequency * x) * exp(-x^2 / 8) + noise.

Training points are noisy; validation points lie on a regular grid with the clean curve, so the
validation figures measure the function learned, not the noise. The points are a function of
`data_seed` alone; the batch order is a pure function of (seed, epoch) through the framework's
EpochBatchSampler, which is what makes an interrupted run resume bit-identically. `points`: a file of x
values to predict (predict.py), one or more a line, read as data: bounded, every value checked.
"""

import math
from pathlib import Path

import lightning as L
import torch

from experiments.family import BatchLoader, EpochBatchSampler, batches_done, excerpt, read_text, shard


def curve(x: torch.Tensor, frequency: float) -> torch.Tensor:
    return torch.sin(frequency * x) * torch.exp(-(x**2) / 8)


class SineDataModule(L.LightningDataModule):
    def __init__(
        self,
        train_points: int = 2048,
        val_points: int = 512,
        noise: float = 0.1,
        frequency: float = 3.0,
        batch_size: int = 64,
        data_seed: int = 1234,
        seed: int = 0,
        points: str | None = None,
    ):
        super().__init__()
        g = torch.Generator().manual_seed(data_seed)
        x = (torch.rand(train_points, generator=g) * 2 - 1) * math.pi
        y = curve(x, frequency) + noise * torch.randn(train_points, generator=g)
        self.train_pairs = torch.stack([x, y], 1)  # one row per point: (x, y)
        grid = torch.linspace(-math.pi, math.pi, val_points)
        self.val_pairs = torch.stack([grid, curve(grid, frequency)], 1)
        self.batch_size, self.seed = batch_size, seed
        self.train_sampler = EpochBatchSampler(train_points, batch_size, seed, shuffle=True)
        self.points = read_points(Path(points)) if points else grid  # what predict_dataloader gives

    def train_dataloader(self) -> BatchLoader:
        return BatchLoader(self.train_pairs, shard(self.train_sampler, self.trainer))

    def val_dataloader(self) -> BatchLoader:
        return BatchLoader(self.val_pairs, EpochBatchSampler(len(self.val_pairs), 256, self.seed, shuffle=False))

    def predict_dataloader(self) -> BatchLoader:
        return BatchLoader(self.points, EpochBatchSampler(len(self.points), 256, self.seed, shuffle=False))

    # The data order travels with every checkpoint (a mid-epoch one resumes after the batches done).
    def state_dict(self) -> dict:
        return {"train_sampler": self.train_sampler.state_dict(batches_done(self.trainer))}

    def load_state_dict(self, state: dict) -> None:
        self.train_sampler.load_state_dict(state["train_sampler"])


def read_points(path: Path) -> torch.Tensor:
    """x values from a text file (separated by commas, spaces or lines); anything not a finite number is refused."""
    values = []
    for word in read_text(path, limit=1 << 20).replace(",", " ").split():
        try:
            values.append(float(word))
        except ValueError:
            what = excerpt(word, 24)
            raise ValueError(f"{path}: {what} is not a number; give x values separated by commas or spaces")
    x = torch.tensor(values)
    if not len(x) or not torch.isfinite(x).all():
        raise ValueError(f"{path}: give at least one x value, every one finite")
    return x
