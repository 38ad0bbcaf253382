"""A PNG of a few clips: input frames side by side above, their reconstruction below."""
from pathlib import Path

import numpy as np
import torch

from experiments.family import atomic_savefig


def draw_reconstructions(inputs: torch.Tensor, recons: torch.Tensor, path: Path) -> None:
    """inputs, recons: (N, C, T, H, W) in [0, 1]."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def strip(clip):  # (C, T, H, W) -> (H, T*W, C)
        c, t, h, w = clip.shape
        img = clip.permute(2, 1, 3, 0).reshape(h, t * w, c).numpy()
        return img if c == 3 else img[..., 0]

    rows = [img for clip, rec in zip(inputs, recons) for img in (strip(clip), strip(rec))]
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.2 * inputs.shape[2], 1.3 * len(rows)), squeeze=False)
    for i, (ax, img) in enumerate(zip(axes[:, 0], rows)):
        ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title("input" if i % 2 == 0 else "reconstruction", fontsize=7, loc="left")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=80)
    plt.close(fig)
