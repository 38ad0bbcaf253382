"""What predict.py writes for the Ternary VAEs: `latent.csv`, one row per operation (its index, trits, whether
each decoder reconstructs it exactly, for the hyperbolic variants its valuation level and Poincare radii, then
every coordinate of each encoder's latent mean), and the pictures of where the operations sit."""

from pathlib import Path

import torch

from experiments.family import atomic_savefig, atomic_write_csv

SCALARS = ("operation", "trits", "valuation", "radius_a", "radius_b", "exact_a", "exact_b")


def write_latent_csv(records: list[dict], path: Path) -> None:
    """latent.csv: the record's scalars, then mu_a_0 ... and mu_b_0 ... (floats written in full: float32 read
    back exactly)."""
    rows = []
    for r in records:
        row = {k: r[k] for k in SCALARS if k in r}
        for side in ("a", "b"):
            row.update({f"mu_{side}_{i}": float(v) for i, v in enumerate(r[f"mu_{side}"].tolist())})
        rows.append(row)
    atomic_write_csv(rows, path)


def trits_text(trits: torch.Tensor) -> str:
    """An operation's trits as written in latent.csv and read back by the data module: `-1 0 1 ...`."""
    return " ".join(str(int(t)) for t in trits.tolist())


def draw_radii(records: list[dict], path: Path) -> None:
    """The hyperbolic variants: each operation's Poincare radius against its valuation level, per embedding
    (a good hierarchy puts the higher levels nearer the centre, every level in its own band)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = torch.tensor([r["valuation"] for r in records], dtype=torch.float64)
    jitter = (torch.rand(len(records), generator=torch.Generator().manual_seed(0)) - 0.5) * 0.5
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.2), sharey=True)
    for ax, side in zip(axes, ("a", "b")):
        radii = torch.tensor([r[f"radius_{side}"] for r in records])
        ax.scatter((levels + jitter).numpy(), radii.numpy(), s=2, alpha=0.4, linewidths=0)
        ax.set_title(f"embedding {side.upper()}", fontsize=9)
        ax.set_xlabel("valuation level (3-adic)")
    axes[0].set_ylabel("Poincare radius")
    fig.suptitle(f"{len(records):,} operations: radius by valuation level", fontsize=10)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=90)
    plt.close(fig)
