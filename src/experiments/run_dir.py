"""A run directory: its layout, its identity, auto-resume.

A run's directory is `<outputs>/<experiment>/<overrides that change the result>` (hydra/default.yaml).
Running the same command again lands in the same directory; `decide` then resumes from `last.ckpt`,
reports a finished run, or refuses when the stored config differs from the new one.

Layout (every program finds a run's files through the names and functions here):
    run.yaml                          the composed config, written once at the start
    history.csv                       one row per finished epoch (the checkpoint history), whatever the logger
    checkpoints/epoch=NNNN.ckpt       (+ .sha256 sidecars) the checkpoint policy's files (NNNN: `epoch_number`)
    checkpoints/last.ckpt             the newest state: what a rerun resumes from
    checkpoints/verification/         verify.py's reports, <checkpoint stem>.json and .md
    eval/<data>/<checkpoint stem>/    eval.py's results: metrics.json and the family's files
    superseded/<UTC time>/            an earlier run moved aside by resume=never
"""
import datetime
import shutil
from dataclasses import dataclass
from pathlib import Path

import yaml

from experiments.checkpoint.io import atomic_write_bytes, load_checkpoint
from experiments.errors import UserError

RUN_CONFIG = "run.yaml"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
VERIFICATION = "verification"
SUPERSEDED = "superseded"


def epoch_number(epoch: int) -> int:
    """An epoch as users read it everywhere (console, file names, history.csv, verify, eval): counted from
    1, so that "epoch 20" of a 20-epoch run is its last. Lightning's `current_epoch`, a checkpoint's
    `epoch` and the history rows inside a checkpoint count from 0, as Lightning resumes from them."""
    return epoch + 1


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def history_csv(run_dir: Path) -> Path:
    return Path(run_dir) / HISTORY


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS / LAST


def run_of(path: Path) -> Path:
    """The run directory of a run directory, its checkpoint folder, or a file in that folder."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    return path.parent if path.name == CHECKPOINTS else path


def checkpoint_files(target: Path) -> list[Path]:
    """The checkpoints of a run directory (or of a folder of checkpoints), in name order."""
    folder = checkpoint_dir(target) if checkpoint_dir(target).is_dir() else Path(target)
    return sorted(folder.glob("*.ckpt"))


def verification_report(checkpoint: Path) -> Path:
    """Where verify.py writes its JSON report of a checkpoint (the Markdown beside it)."""
    return checkpoint.parent / VERIFICATION / f"{checkpoint.stem}.json"


def is_superseded(path: Path) -> bool:
    return SUPERSEDED in Path(path).parts


def flatten(d, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
    else:
        out[prefix[:-1]] = d
    return out


def config_diff(old: dict, new: dict, ignore: list[str]) -> list[str]:
    """Lines 'key: old -> new' for every result-defining key that differs."""
    def ignored(key: str) -> bool:
        return any(key == i or key.startswith(i + ".") for i in ignore)
    a, b = flatten(old), flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if ignored(key):
            continue
        # A key that an older config lacks equals a null: new optional settings default to null (off).
        if a.get(key) != b.get(key):
            lines.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return lines


@dataclass
class Decision:
    action: str  # "fresh" | "resume" | "finished"
    ckpt_path: Path | None = None
    epoch: int | None = None


def supersede(run_dir: Path) -> Path | None:
    """Move an earlier run's state aside (nothing is deleted) so that a new run can start: its config,
    checkpoints and logger output alike."""
    items = [p for p in run_dir.iterdir() if p.name != SUPERSEDED] if run_dir.exists() else []
    if not items:
        return None
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    dest = run_dir / SUPERSEDED / stamp
    dest.mkdir(parents=True)
    for p in items:
        shutil.move(str(p), str(dest / p.name))
    return dest


def decide(run_dir: Path, config: dict, ignore: list[str]) -> Decision:
    stored_path, last = run_dir / RUN_CONFIG, last_checkpoint(run_dir)
    try:
        ckpt = load_checkpoint(last) if last.exists() else None
    except UserError as e:
        raise UserError(f"cannot resume: {e}. Move it away or rerun with resume=never")
    stored = None
    if stored_path.exists():
        try:
            stored = yaml.safe_load(stored_path.read_text())
        except yaml.YAMLError as e:
            raise UserError(f"{stored_path} is not valid YAML ({' '.join(str(e).split())[:200]}); "
                            f"rerun with resume=never to start over")
    elif ckpt is not None:  # the checkpoint holds the config too
        stored = ckpt.get("config")
    if stored is not None:
        diff = config_diff(stored, config, ignore)
        if diff:
            shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
            raise UserError(
                f"{run_dir} holds a run with a different config ({shown}). Rerun with resume=never to "
                f"start over (the old run is moved to {SUPERSEDED}/), or choose another paths.outputs")
    if ckpt is None:
        return Decision("fresh")
    run = ckpt.get("run", {})
    if run.get("finished"):
        return Decision("finished", last, ckpt.get("epoch"))
    return Decision("resume", last, ckpt.get("epoch"))


def write_run_config(run_dir: Path, config: dict) -> None:
    path = run_dir / RUN_CONFIG
    if not path.exists():
        atomic_write_bytes(path, yaml.safe_dump(config, sort_keys=False).encode())
