"""Checkpoint bytes against the minimum (parameters + optimizer state).

    python scripts/checkpoint_size.py outputs/ternary_v5_5/default/checkpoints/last.ckpt [more.ckpt ...]
The last line is `ratio=<file bytes / minimum>` of the last file given."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from experiments.checkpoint.size import checkpoint_size_report  # noqa: E402


def main(paths: list[str]) -> int:
    if not paths:
        print("usage: python scripts/checkpoint_size.py CHECKPOINT [CHECKPOINT ...]", file=sys.stderr)
        return 2
    for p in paths:
        r = checkpoint_size_report(Path(p))
        print(
            f"{r['path']}: {r['file_bytes']:,} bytes; minimum {r['minimum_bytes']:,} "
            f"(weights {r['weight_bytes']:,} + optimizer {r['optimizer_bytes']:,}; {r['parameters']:,} parameters)"
        )
    print(f"ratio={r['ratio']:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
