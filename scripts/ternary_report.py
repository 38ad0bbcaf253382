"""Picture of a hyperbolic Ternary run (v5.11, v5.11 partial freeze, v5.12):

    python scripts/ternary_report.py RUN_DIR [--ckpt last.ckpt] [--out FILE.png]

Left: Poincare radius of every one of the 19,683 operations by 3-adic valuation level, for the A and B
embeddings (boxes; deeper levels should sit nearer the centre). Right: coverage and hierarchy over the
epochs of the run's history. The checkpoint is read with weights_only=True and loaded strictly.
Writes RUN_DIR/report/ternary_report.png unless --out says otherwise, and prints the path.
"""
import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--ckpt", default="last.ckpt", help="checkpoint file name in RUN_DIR/checkpoints")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from hydra.utils import instantiate

    from experiments.checkpoint.io import load_checkpoint
    from experiments.errors import UserError
    from experiments.metrics.hyperbolic import LEVELS
    from experiments.untrusted import check_stored_config, current_registry

    path = args.run_dir / "checkpoints" / args.ckpt
    try:
        ckpt = load_checkpoint(path)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    config = ckpt.get("config", {})
    try:  # the checkpoint's config is data: it may build only what the package's config tree builds
        check_stored_config(config, current_registry(), str(path))
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if "frozen" not in ckpt:
        print(f"error: {path} is not a hyperbolic Ternary run (v5.11 and later): it has no frozen parts; "
              f"experiment {config.get('experiment')!r}", file=sys.stderr)
        return 2
    try:
        task = instantiate(config["task"], model=instantiate(config["model"]))
        if not hasattr(task, "radii_by_level"):
            raise TypeError(f"its task {type(task).__name__} is not a hyperbolic Ternary task")
        task.load_state_dict(ckpt["state_dict"], strict=True)
        datamodule = instantiate(config["data"], seed=config["seed"])
    except Exception as e:  # a checkpoint of another family, or one that does not fit its own config
        print(f"error: {path} cannot be drawn: {type(e).__name__}: {' '.join(str(e).split())[:300]}", file=sys.stderr)
        return 2

    fig, (left, right) = plt.subplots(1, 2, figsize=(13, 4.8))
    positions = list(range(LEVELS))
    print(f"{path} (epoch {ckpt['epoch'] + 1}): mean radius per level")
    for side, shift, color in (("a", -0.2, "tab:blue"), ("b", 0.2, "tab:orange")):
        levels, radius = task.radii_by_level(datamodule, side)
        groups = [radius[levels == v].numpy() for v in positions]
        box = left.boxplot(groups, positions=[p + shift for p in positions], widths=0.35, patch_artist=True,
                           showfliers=False, manage_ticks=False)
        for patch in box["boxes"]:
            patch.set_facecolor(color)
            patch.set_alpha(0.6)
        left.plot([], [], color=color, lw=8, alpha=0.6, label=f"embedding {side.upper()}")
        print(f"  {side.upper()}: " + " ".join(f"{v}:{g.mean():.2f}" for v, g in zip(positions, groups)))
    left.set_xticks(positions)
    left.set_xlabel("3-adic valuation level v3(i) (counts 13122 ... 1)")
    left.set_ylabel("Poincare radius 2 artanh(|z|)")
    left.set_title("radius by valuation level (all 19,683 operations)")
    left.legend()

    history = ckpt["history"]
    epochs = [row["epoch"] + 1 for row in history]
    right.plot(epochs, [row.get("coverage/recon_a") for row in history], "g-o", ms=3, label="coverage/recon_a")
    right.set_xlabel("epoch")
    right.set_ylabel("coverage (decoder A on encoder A's mean)")
    right.set_ylim(-0.02, 1.02)
    twin = right.twinx()
    for side, style in (("a", "b--"), ("b", "r-")):
        twin.plot(epochs, [row.get(f"hierarchy/{side}") for row in history], style, label=f"hierarchy/{side}")
    twin.axhline(-0.832, color="gray", lw=0.8, ls=":", label="ceiling -0.832 (radii distinct within levels)")
    twin.set_ylabel("hierarchy (Spearman of v3 with radius)")
    twin.set_ylim(-1.0, 0.2)
    lines = right.get_legend_handles_labels()
    more = twin.get_legend_handles_labels()
    right.legend(lines[0] + more[0], lines[1] + more[1], loc="center right", fontsize=8)
    source = ckpt["frozen"]["source"]
    if source.get("allow_random"):
        origin = "RANDOM frozen parts (allow_random)"
    else:
        p = Path(source["path"])
        origin = "frozen parts from " + "/".join(p.parts[-4:-2] + (p.name,))
    right.set_title(f"{config.get('experiment')}, {origin}", fontsize=9)
    fig.tight_layout()
    out = args.out or args.run_dir / "report" / "ternary_report.png"
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
