"""A PNG of a few held-out test inputs, their true outputs and the model's first attempts, in ARC colours."""
from pathlib import Path

import numpy as np

PALETTE = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF",
           "#870C25"]


def draw_predictions(results: list[dict], path: Path, examples: int = 6) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(PALETTE)
    shown = results[:examples]
    fig, axes = plt.subplots(len(shown), 3, figsize=(7.5, 2.6 * len(shown)), squeeze=False)
    for row, r in zip(axes, shown):
        attempt = r["attempts"][0]
        right = attempt is not None and attempt.shape == r["target"].shape and (attempt == r["target"]).all()
        panels = [("input", r.get("input")), ("true output", r["target"]),
                  ("attempt 1 " + ("(right)" if right else "(wrong)" if attempt is not None else "(no grid)"), attempt)]
        for ax, (title, grid) in zip(row, panels):
            ax.set_xticks([]), ax.set_yticks([])
            ax.set_title(f"{r['task']} {title}" if title == "input" else title, fontsize=8)
            if grid is not None:
                ax.imshow(np.asarray(grid), cmap=cmap, vmin=0, vmax=9)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
