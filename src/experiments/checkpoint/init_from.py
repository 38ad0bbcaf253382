"""`init_from=PATH`: a new run starts from another run's weights (fine-tuning, a longer schedule, other
data). Only the weights: the optimizer, the epoch and the history start afresh. Checked before anything
trains: the file is read as data (checkpoint/io.py: bounded, weights_only=True), its stored config is only
compared, never built: its task must be this run's task (moved classes under their current names), and its
weights must fit this model key for key and shape for shape, unless `init_strict=false`, which loads the
keys that fit and names every one left out."""

from pathlib import Path

from experiments import run_dir as rd
from experiments.checkpoint.io import load_checkpoint, sha256_file, state_dict_problem
from experiments.errors import UserError
from experiments.untrusted import excerpt, with_current_targets


def source_file(path: str) -> Path:
    """A checkpoint file, or a run directory's last.ckpt."""
    given = Path(path)
    if given.is_dir():
        last = rd.last_checkpoint(given)
        if not last.is_file():
            raise UserError(
                f"init_from={path}: a folder without checkpoints/{rd.LAST}; give a checkpoint file or a run directory"
            )
        return last
    if not given.is_file():
        raise UserError(f"init_from={path}: no such checkpoint or run directory")
    return given


def mismatch(own: dict, stored: dict) -> tuple[list[str], list[str], list[str]]:
    """(keys this model has and the file lacks, keys the file has and this model lacks, keys of other shapes)."""
    missing = [k for k in own if k not in stored]
    unexpected = [k for k in stored if k not in own]
    shaped = [
        f"{k} {tuple(stored[k].shape)} vs {tuple(own[k].shape)}"
        for k in own
        if k in stored and tuple(stored[k].shape) != tuple(own[k].shape)
    ]
    return missing, unexpected, shaped


def listed(keys: list[str]) -> str:
    return ", ".join(keys[:6]) + (f" and {len(keys) - 6} more" if len(keys) > 6 else "")


def initialise(task, path: str, strict: bool, task_target: str, renamed: dict) -> str:
    """Load the weights of `path` into `task`; returns the line that says what was loaded."""
    source = source_file(path)
    checkpoint = load_checkpoint(source)
    config = with_current_targets(checkpoint.get("config") or {}, renamed)
    stored_task = (config.get("task") or {}).get("_target_") if isinstance(config.get("task"), dict) else None
    if stored_task != task_target:
        raise UserError(
            f"init_from={path}: a checkpoint of {excerpt(stored_task)}, and this run trains {task_target}; "
            f"weights start only from a run of the same task"
        )
    state = checkpoint.get("state_dict")
    if state_dict_problem(state):
        raise UserError(f"init_from={path}: {source} holds no weights (state_dict)")
    own = task.state_dict()
    missing, unexpected, shaped = mismatch(own, state)
    if strict and (missing or unexpected or shaped):
        parts = [
            f"missing {listed(missing)}" if missing else "",
            f"unexpected {listed(unexpected)}" if unexpected else "",
            f"other shapes {listed(shaped)}" if shaped else "",
        ]
        raise UserError(
            f"init_from={path}: its weights do not fit this model ({'; '.join(p for p in parts if p)}); "
            f"init_strict=false loads the keys that fit"
        )
    fits = {k: v for k, v in state.items() if k in own and tuple(v.shape) == tuple(own[k].shape)}
    task.load_state_dict(fits, strict=False)
    left = missing + [s.split(" ")[0] for s in shaped]
    epoch = checkpoint.get("epoch")
    line = (
        f"Initialised from {source} (epoch {rd.epoch_number(epoch) if isinstance(epoch, int) else '?'}, "
        f"sha256 {sha256_file(source)[:12]}): {len(fits)} of {len(own)} tensors"
    )
    if left or unexpected:
        line += (
            f"; left as initialised (init_strict=false): {', '.join(left) or 'none'}; in the file only: "
            f"{', '.join(unexpected) or 'none'}"
        )
    return line
