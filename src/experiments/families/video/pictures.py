"""A PNG of a few clips: input frames side by side (a white gap between frames) above, their reconstruction
below; each clip named with its PSNR, the picture titled with what it shows (the epoch and its figures)."""

from pathlib import Path

import numpy as np
import torch

from experiments.family import atomic_savefig


def strip(clip: torch.Tensor, gap: int = 1) -> np.ndarray:
    """(C, T, H, W) -> (H, T*W + (T-1)*gap, C) (or (H, ...) for one channel), frames left to right, `gap`
    white columns between them."""
    c, t, h, w = clip.shape
    out = torch.ones(c, h, t * w + (t - 1) * gap)
    for i in range(t):
        out[:, :, i * (w + gap) : i * (w + gap) + w] = clip[:, i]
    img = out.permute(1, 2, 0).numpy()
    return img if c == 3 else img[..., 0]


def psnr(clip: torch.Tensor, recon: torch.Tensor) -> float:
    mse = float(((clip.float() - recon.float()) ** 2).mean())
    return float("inf") if mse == 0 else 10 * np.log10(1 / mse)


def draw_reconstructions(
    inputs: torch.Tensor, recons: torch.Tensor, path: Path, title: str = "", names: list | None = None
) -> None:
    """inputs, recons: (N, C, T, H, W) in [0, 1]; `names` of the clips (default: their index)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = names or [str(i) for i in range(len(inputs))]
    rows = [
        (img, label)
        for clip, rec, name in zip(inputs, recons, names)
        for img, label in (
            (strip(clip), f"{name}: input"),
            (strip(rec), f"reconstruction, PSNR {psnr(clip, rec):.1f} dB"),
        )
    ]
    fig, axes = plt.subplots(len(rows), 1, figsize=(1.2 * inputs.shape[2], 1.3 * len(rows) + 0.4), squeeze=False)
    for ax, (img, label) in zip(axes[:, 0], rows):
        ax.imshow(np.clip(img, 0, 1), cmap="gray" if img.ndim == 2 else None, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(label, fontsize=7, loc="left")
    if title:
        fig.suptitle(title, fontsize=8)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=80)
    plt.close(fig)
