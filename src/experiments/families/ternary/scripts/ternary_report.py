"""Picture of a hyperbolic Ternary run (v5.11, v5.11 partial freeze, v5.12):

    python src/experiments/families/ternary/scripts/ternary_report.py RUN_DIR [--ckpt last.ckpt] [--out FILE.png]

Left: Poincare radius of every one of the 19,683 operations by 3-adic valuation level, for the A and B
embeddings (boxes; deeper levels should sit nearer the centre). Right: coverage and hierarchy over the
epochs of the run's history. The checkpoint is read with weights_only=True and loaded strictly.
Writes RUN_DIR/report/ternary_report.png unless --out says otherwise, and prints the path.
"""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[5]  # the checkout: src/experiments/families/<family>/scripts
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--ckpt", default="last.ckpt", help="checkpoint file name in RUN_DIR/checkpoints")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    path = args.run_dir / "checkpoints" / args.ckpt
    try:
        ckpt, config, task, datamodule = load_run(path)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.family import atomic_savefig

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    print(f"{path} (epoch {ckpt['epoch'] + 1}): mean radius per level")
    draw_radii(left, task, datamodule)
    draw_history(right, ckpt["history"])
    right.set_title(f"{config.get('experiment')}, {origin_of(ckpt['frozen']['source'])}", fontsize=9)
    fig.tight_layout()
    out = args.out or args.run_dir / "report" / "ternary_report.png"
    atomic_savefig(fig, out, dpi=110)
    print(f"wrote {out}")
    return 0


def load_run(path: Path):
    """(checkpoint, its config, the task with its weights, the data module): read as data (weights_only, the
    config proved to build only registered classes), refused with one line (ValueError) otherwise."""
    from hydra.utils import instantiate

    from experiments.checkpoint.io import load_checkpoint
    from experiments.errors import UserError
    from experiments.untrusted import check_stored_config, current_registry

    try:
        ckpt = load_checkpoint(path)
        config = check_stored_config(ckpt.get("config", {}), current_registry(), str(path))
    except UserError as e:
        raise ValueError(str(e))
    if "frozen" not in ckpt:
        raise ValueError(
            f"{path} is not a hyperbolic Ternary run (v5.11 and later): it has no frozen parts; "
            f"experiment {config.get('experiment')!r}"
        )
    try:
        task = instantiate(config["task"], model=instantiate(config["model"]))
        if not hasattr(task, "radii_by_level"):
            raise TypeError(f"its task {type(task).__name__} is not a hyperbolic Ternary task")
        task.load_state_dict(ckpt["state_dict"], strict=True)
        datamodule = instantiate(config["data"], seed=config["seed"])
    except Exception as e:  # a checkpoint of another family, or one that does not fit its own config
        raise ValueError(f"{path} cannot be drawn: {type(e).__name__}: {' '.join(str(e).split())[:300]}")
    return ckpt, config, task, datamodule


def draw_radii(ax, task, datamodule) -> None:
    """Boxes of the Poincare radius of every operation by valuation level, embeddings A and B."""
    from experiments.families.ternary.hyperbolic_metrics import LEVELS

    positions = list(range(LEVELS))
    for side, shift, color in (("a", -0.2, "tab:blue"), ("b", 0.2, "tab:orange")):
        levels, radius = task.radii_by_level(datamodule, side)
        groups = [radius[levels == v].numpy() for v in positions]
        box = ax.boxplot(
            groups,
            positions=[p + shift for p in positions],
            widths=0.35,
            patch_artist=True,
            showfliers=False,
            manage_ticks=False,
        )
        for patch in box["boxes"]:
            patch.set_facecolor(color)
            patch.set_alpha(0.6)
        ax.plot([], [], color=color, lw=8, alpha=0.6, label=f"embedding {side.upper()}")
        print(f"  {side.upper()}: " + " ".join(f"{v}:{g.mean():.2f}" for v, g in zip(positions, groups)))
    ax.set_xticks(positions)
    ax.set_xlabel("3-adic valuation level v3(i) (counts 13122 ... 1)")
    ax.set_ylabel("Poincare radius 2 artanh(|z|)")
    ax.set_title("radius by valuation level (all 19,683 operations)")
    ax.legend()


def draw_history(ax, history: list[dict]) -> None:
    """Coverage and hierarchy over the run's epochs (whole-number ticks)."""
    from matplotlib.ticker import MaxNLocator

    epochs = [row["epoch"] + 1 for row in history]
    ax.plot(epochs, [row.get("coverage/recon_a") for row in history], "g-o", ms=3, label="coverage/recon_a")
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel("coverage (decoder A on encoder A's mean)")
    ax.set_ylim(-0.02, 1.02)
    twin = ax.twinx()
    for side, style in (("a", "b--"), ("b", "r-")):
        twin.plot(epochs, [row.get(f"hierarchy/{side}") for row in history], style, label=f"hierarchy/{side}")
    twin.axhline(-0.832, color="gray", lw=0.8, ls=":", label="ceiling -0.832 (radii distinct within levels)")
    twin.set_ylabel("hierarchy (Spearman of v3 with radius)")
    twin.set_ylim(-1.0, 0.2)
    lines, more = ax.get_legend_handles_labels(), twin.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)


def origin_of(source: dict) -> str:
    if source.get("allow_random"):
        return "RANDOM frozen parts (allow_random)"
    p = Path(source["path"])
    return "frozen parts from " + "/".join(p.parts[-4:-2] + (p.name,))


if __name__ == "__main__":
    sys.exit(main())
