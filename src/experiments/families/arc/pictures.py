"""Pictures of every held-out output: its input, true output and the model's two attempts, in ARC colours,
below its task's demonstrations (up to DEMOS pairs), so that the rule can be seen.

One row per output (and one per task's demonstrations), `per_page` outputs per PNG (`predictions.png`, then
`predictions_2.png`, ..., zero-padded to sort: `predictions_02.png` of 12 pages). The grids of a page share
one scale and show their cell lines, so a prediction of the wrong shape looks wrong."""

from pathlib import Path

import numpy as np

from experiments.family import atomic_savefig

PALETTE = ["#000000", "#0074D9", "#FF4136", "#2ECC40", "#FFDC00", "#AAAAAA", "#F012BE", "#FF851B", "#7FDBFF", "#870C25"]
STEM = "predictions"
DEMOS = 3  # demonstration pairs drawn above a task's outputs


def page_paths(folder: Path, pages: int) -> list[Path]:
    """predictions.png, then predictions_2.png ...; numbers zero-padded to the page count's width
    (predictions_02.png of 12 pages), so a listing sorts the pages in their order."""
    width = len(str(pages))
    return [Path(folder) / (f"{STEM}.png" if p == 1 else f"{STEM}_{p:0{width}d}.png") for p in range(1, pages + 1)]


def verdict(attempt, target) -> str:
    if attempt is None:
        return "no grid"
    if target is None:  # a prediction: nothing to compare with
        return f"{attempt.shape[0]}x{attempt.shape[1]}"
    if attempt.shape != target.shape:
        return f"wrong shape {attempt.shape[0]}x{attempt.shape[1]}"
    return "right" if (attempt == target).all() else f"{int((attempt != target).sum())} cells wrong"


def draw_grid(ax, grid, side: int, cmap) -> None:
    """A grid at the page's scale (`side` cells across the panel), one square per cell, with cell lines."""
    ax.set_xlim(0, side), ax.set_ylim(side, 0)
    ax.set_aspect("equal")
    ax.set_xticks([]), ax.set_yticks([])
    for spine in ax.spines.values():
        spine.set_visible(False)
    if grid is None:
        return
    grid = np.asarray(grid)
    h, w = grid.shape
    ax.pcolormesh(
        np.arange(w + 1), np.arange(h + 1), grid, cmap=cmap, vmin=0, vmax=9, edgecolors="#555555", linewidth=0.3
    )


def demonstrations_image(line: list, side: int) -> np.ndarray:
    """A row of demonstration grids as one RGB image at the page's scale (`side` cells a grid), a white column
    between grids: one panel instead of one per grid, which is what drawing a page costs."""
    from matplotlib.colors import to_rgb

    rgb, gap = np.array([to_rgb(c) for c in PALETTE]), 1
    image = np.ones((side, len(line) * (side + gap) - gap, 3))
    for k, (_, grid) in enumerate(line):
        grid = np.asarray(grid)
        image[: grid.shape[0], k * (side + gap) : k * (side + gap) + grid.shape[1]] = rgb[grid]
    return image


def draw_page(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap

    cmap = ListedColormap(PALETTE)
    lines = panel_rows(rows)
    side = max(max(np.asarray(grid).shape) for line in lines for _, grid in line if grid is not None)
    height = 2.1 * len(lines) + 0.5
    fig = plt.figure(figsize=(8, height))
    cells = fig.add_gridspec(len(lines), 4)
    for i, line in enumerate(lines):
        if " demonstration " in line[0][0]:
            ax = fig.add_subplot(cells[i, :])
            ax.imshow(demonstrations_image(line, side), interpolation="nearest")
            ax.set_axis_off()
            ax.set_title(
                f"{line[0][0].removesuffix(': input')} to {len(line) // 2}: each input, then its output", fontsize=7
            )
            continue
        for j, (label, grid) in enumerate(line):
            ax = fig.add_subplot(cells[i, j])
            draw_grid(ax, grid, side, cmap)
            ax.set_title(label, fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.45 / height))  # the page's title above the first row
    atomic_savefig(fig, path, dpi=80)
    plt.close(fig)


def panel_rows(rows: list[dict]) -> list[list[tuple[str, object]]]:
    """The page's rows of (label, grid) panels: a task's demonstrations before its first output on the page,
    then each output's input, true output and two attempts."""
    lines, shown = [], set()
    for r in rows:
        demos = r.get("demos") or []
        if r["task"] not in shown and demos:
            shown.add(r["task"])
            of = f" (of {len(demos)})" if len(demos) > DEMOS else ""  # more than the row shows
            lines.append(
                [
                    (f"{r['task']} demonstration {k + 1}{of if (k, side) == (0, 'input') else ''}: {side}", grid)
                    for k, (x, y) in enumerate(demos[:DEMOS])
                    for side, grid in (("input", x), ("output", y))
                ]
            )
        target = r["target"]
        a1, a2 = (list(r["attempts"]) + [None, None])[:2]
        lines.append(
            [
                (f"{r['task']} #{r['index']}: input", r.get("input")),
                (
                    "true output not known" if target is None else f"true output {target.shape[0]}x{target.shape[1]}",
                    target,
                ),
                (f"attempt 1: {verdict(a1, target)}", a1),
                (f"attempt 2: {verdict(a2, target)}", a2),
            ]
        )
    return lines


def draw_predictions(results: list[dict], folder: Path, title: str, per_page: int = 8) -> list[Path]:
    """Every result (task, index, input, target, attempts) on pages of `per_page`; earlier pages beyond
    the new count are removed, so the folder never mixes two drawings. Returns the pages."""
    import matplotlib

    matplotlib.use("Agg")
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    pages = max(1, -(-len(results) // per_page))
    paths = page_paths(folder, pages)
    for p, path in enumerate(paths):
        rows = results[p * per_page : (p + 1) * per_page]
        if rows:
            draw_page(rows, path, f"{title} (page {p + 1} of {pages})" if pages > 1 else title)
    for stale in folder.glob(f"{STEM}_*.png"):
        if stale not in paths:
            stale.unlink()
    return paths
