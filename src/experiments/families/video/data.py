"""Video clips, (C, T, H, W) float in [0, 1] (batches (B, C, T, H, W)), never 0-255.

Default: procedurally generated clips of 1-3 coloured squares and discs moving with constant velocity and
bouncing off the borders, each clip a pure function of (seed, clip index); train and validation clips
are disjoint indices. Or `folder=PATH`: each `*.npy` in it is one clip, shaped (C, T, H, W) (uint8 clips
are divided by 255, float clips must already lie in [0, 1]); each video file (.mp4 .webm .avi .mkv .mov
.gif) and each folder of image frames is cut into clips of `frames` frames, a new one every `stride`
frames, each frame's central square resized to `size` (files.py). The last `val_fraction` of the sources
(sorted by name: a video's clips stay on one side) validate; `val_fraction=1`: all of them (eval.py on a
folder of clips, predict.py). `folder` may also be one clip file or one folder of frames.
"""

from pathlib import Path

import lightning as L
import numpy as np
import torch

from experiments.families.video.files import clips_of, sources
from experiments.family import BatchLoader, EpochBatchSampler, batches_done, shard


def moving_shapes(index: int, seed: int, frames: int, size: int) -> np.ndarray:
    rng = np.random.default_rng([seed, index])
    clip = np.zeros((3, frames, size, size), dtype=np.float32)
    yy, xx = np.mgrid[0:size, 0:size]
    for _ in range(rng.integers(1, 4)):
        r = rng.uniform(size / 10, size / 5)
        pos = rng.uniform(r, size - r, 2)
        vel = rng.uniform(-size / 12, size / 12, 2)
        colour = rng.uniform(0.3, 1.0, 3).astype(np.float32)
        disc = rng.random() < 0.5
        for t in range(frames):
            cy, cx = pos
            mask = (
                ((yy - cy) ** 2 + (xx - cx) ** 2 <= r * r)
                if disc
                else ((np.abs(yy - cy) <= r) & (np.abs(xx - cx) <= r))
            )
            clip[:, t][:, mask] = colour[:, None]
            pos = pos + vel
            for k in range(2):  # bounce
                if pos[k] < r or pos[k] > size - r:
                    vel[k] = -vel[k]
                    pos[k] = np.clip(pos[k], r, size - r)
    return clip


def load_folder(
    folder: Path, frames: int = 8, size: int = 16, stride: int | None = None
) -> tuple[torch.Tensor, list[str], list[int]]:
    """Every clip of the folder's sources, their names, and which source (its index, by name) each came from."""
    if stride is not None and stride < 1:
        raise ValueError(f"data.stride must be >= 1 (or null: data.frames), got {stride}")
    clips, names, origin = [], [], []
    for i, source in enumerate(sources(Path(folder))):
        got, called = clips_of(source, frames, size, stride or frames)
        clips += got
        names += called
        origin += [i] * len(got)
    if len({c.shape for c in clips}) != 1:
        raise ValueError(f"clips in {folder} differ in shape: {sorted({tuple(c.shape) for c in clips})}")
    return torch.stack(clips), names, origin


class VideoDataModule(L.LightningDataModule):
    def __init__(
        self,
        frames: int = 8,
        size: int = 16,
        train_clips: int = 64,
        val_clips: int = 16,
        batch_size: int = 8,
        folder: str | None = None,
        val_fraction: float = 0.2,
        stride: int | None = None,
        seed: int = 0,
    ):
        super().__init__()
        self.batch_size, self.seed = batch_size, seed
        if not 0 < val_fraction <= 1:
            raise ValueError(f"data.val_fraction must lie in (0, 1], got {val_fraction}")
        if folder:
            clips, names, origin = load_folder(Path(folder), frames, size, stride)
            n_sources = origin[-1] + 1
            first_val = n_sources - max(1, int(round(n_sources * val_fraction)))  # whole sources on each side
            train = [i for i, o in enumerate(origin) if o < first_val]
            val = [i for i, o in enumerate(origin) if o >= first_val]
            self.train, self.val = clips[train], clips[val]
            self.val_names = [names[i] for i in val]
        else:
            make = lambda i: moving_shapes(i, seed, frames, size)  # noqa: E731
            self.train = torch.from_numpy(np.stack([make(i) for i in range(train_clips)]))
            self.val = torch.from_numpy(np.stack([make(train_clips + i) for i in range(val_clips)]))
            self.val_names = [f"generated_{train_clips + i}" for i in range(val_clips)]
        self.train_sampler = EpochBatchSampler(len(self.train), batch_size, seed, shuffle=True)

    def describe(self) -> str:
        if not len(self.train):  # a folder read whole: eval.py's, predict.py's
            return f"{len(self.val)} clip{'s' * (len(self.val) != 1)} {tuple(self.val.shape[1:])}"
        return f"{len(self.train)} training clips, {len(self.val)} validation clips {tuple(self.val.shape[1:])}"

    def train_dataloader(self) -> BatchLoader:
        if not len(self.train):
            raise ValueError(
                f"no training clips: whole sources (files, frame folders) are split, and all "
                f"{len(set(n.split('@')[0] for n in self.val_names))} validate "
                f"(data.val_fraction); give the folder more sources"
            )
        return BatchLoader(self.train, shard(self.train_sampler, self.trainer))

    def val_dataloader(self) -> BatchLoader:
        return BatchLoader(self.val, EpochBatchSampler(len(self.val), self.batch_size, self.seed, shuffle=False))

    def predict_dataloader(self):
        """The validation clips in the validation's batches, each batch with its clips' names:
        {"clips": (B, C, T, H, W), "names": [...]}."""
        for start in range(0, len(self.val), self.batch_size):
            yield {
                "clips": self.val[start : start + self.batch_size],
                "names": self.val_names[start : start + self.batch_size],
            }

    def state_dict(self) -> dict:
        return {"train_sampler": self.train_sampler.state_dict(batches_done(self.trainer))}

    def load_state_dict(self, state: dict) -> None:
        self.train_sampler.load_state_dict(state["train_sampler"])
