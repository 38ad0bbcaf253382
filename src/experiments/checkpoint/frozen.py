"""Frozen parts: submodules a task loads from another run's checkpoint (the task's `frozen_parts`, keys
`model.<part>.*`): find the source checkpoint, prove it fits, load it.

The failure this guards against: a null source path once trained a variant from random init to 0.01%
coverage without a word. Here a task that needs frozen parts cannot start without them unless the user
says `frozen_checkpoint.allow_random=true`, and every refusal is one line naming the problem and the
compatible checkpoints found under the outputs root.

Which experiments a variant may load from is the `frozen_checkpoint.compatibility` matrix in its config;
a checkpoint's experiment is the name its own config records.
"""
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import yaml

from experiments import run_dir as rd
from experiments.checkpoint.io import load_checkpoint, sha256_file
from experiments.errors import StageFailure, UserError


@dataclass
class Candidate:
    path: Path
    experiment: str
    verified: bool
    mtime: float


def _verified_file(ckpt_dir: Path) -> Path | None:
    """The newest checkpoint of a run that passed verify.py and has not changed since (its sha256 still
    matches the report's)."""
    found = []
    for report in (ckpt_dir / rd.VERIFICATION).glob("*.json"):
        try:
            rep = json.loads(report.read_text())
        except (OSError, ValueError):
            continue
        ckpt = ckpt_dir / f"{report.stem}.ckpt"
        if rep.get("passed") is True and ckpt.is_file() and rep.get("checkpoint", {}).get("sha256") == sha256_file(ckpt):
            found.append(ckpt)
    return max(found, key=lambda p: p.stat().st_mtime) if found else None


def find_candidates(outputs: Path, compatible: list[str]) -> list[Candidate]:
    """Runs under `outputs` whose experiment is in `compatible`, newest first: the verified checkpoint
    when the run passed verify.py, else its last.ckpt."""
    out = []
    for run_yaml in sorted(Path(outputs).glob(f"**/{rd.RUN_CONFIG}")):
        if rd.is_superseded(run_yaml):
            continue
        try:
            experiment = (yaml.safe_load(run_yaml.read_text()) or {}).get("experiment")
        except (OSError, yaml.YAMLError):
            continue
        if experiment not in compatible:
            continue
        verified = _verified_file(rd.checkpoint_dir(run_yaml.parent))
        path = verified or rd.last_checkpoint(run_yaml.parent)
        if path.is_file():
            out.append(Candidate(path, experiment, verified is not None, path.stat().st_mtime))
    return sorted(out, key=lambda c: -c.mtime)


def describe(candidates: list[Candidate], limit: int = 4) -> str:
    if not candidates:
        return "none found"
    shown = [f"{c.path} ({c.experiment}{', verified' if c.verified else ', not verified'})" for c in candidates[:limit]]
    more = f" and {len(candidates) - limit} more" if len(candidates) > limit else ""
    return "; ".join(shown) + more


def source_parts(state: dict, parts) -> dict:
    """The entries of a task's state dict that belong to `parts` (keys `model.<part>.*`)."""
    return {k: v for k, v in state.items() if k.startswith("model.") and k.split(".")[1] in parts}


def parts_digest(state: dict, parts) -> str:
    """sha256 over the tensors of `parts`, in key order: recorded per part when the frozen parts are
    loaded, so that verify.py can prove them unchanged even without the source file."""
    h = hashlib.sha256()
    for key, tensor in sorted(source_parts(state, parts).items()):
        h.update(key.encode())
        h.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def check_fit(source: dict, own: dict, path: Path) -> None:
    """Every key of the frozen parts present with the same shape; otherwise name the keys and shapes."""
    missing = sorted(set(own) - set(source))
    shapes = [f"{k} {tuple(source[k].shape)} in the checkpoint vs {tuple(own[k].shape)} here"
              for k in sorted(set(own) & set(source)) if source[k].shape != own[k].shape]
    if shapes:
        more = f" (and {len(shapes) - 3} more)" if len(shapes) > 3 else ""
        raise StageFailure(f"shapes of {path} do not fit this model: {'; '.join(shapes[:3])}{more}")
    if missing:
        raise StageFailure(f"{path} lacks {len(missing)} key(s) of the frozen parts, e.g. {', '.join(missing[:3])}")


def read_source(path: Path, compatible: list[str], variant: str) -> dict:
    try:
        ckpt = load_checkpoint(path)
    except UserError as e:
        raise StageFailure(str(e))
    config = ckpt.get("config")
    if not isinstance(config, dict) or "state_dict" not in ckpt:
        raise StageFailure(f"{path} is not a checkpoint of this framework (no config or state_dict)")
    experiment = config.get("experiment")
    if experiment not in compatible:
        raise StageFailure(f"{path} is a {experiment} checkpoint; {variant} loads frozen parts only from "
                           f"{' or '.join(compatible)} (frozen_checkpoint.compatibility)")
    return ckpt


def resolve_auto(outputs: Path, compatible: list[str], variant: str, own: dict, parts) -> tuple[Path, dict, str]:
    """The newest verified compatible checkpoint whose frozen parts fit this model."""
    candidates = find_candidates(outputs, compatible)
    skipped = []
    for c in (c for c in candidates if c.verified):
        try:
            ckpt = read_source(c.path, compatible, variant)
            check_fit(source_parts(ckpt["state_dict"], parts), own, c.path)
        except StageFailure as e:
            skipped.append(str(e))
            continue
        note = f"; skipped {len(skipped)} newer that did not fit" if skipped else ""
        return c.path, ckpt, f"frozen_checkpoint.path=auto picked {c.path} ({c.experiment}, passed verify.py{note})"
    unverified = [c for c in candidates if not c.verified]
    hint = (f"; unverified candidates: {describe(unverified)}; verify one first: python verify.py "
             f"ckpt={unverified[0].path.parent.parent}"
            if unverified else f"; train one first: python train.py experiment={compatible[0]}, then python "
                               f"verify.py ckpt={outputs}/{compatible[0]}/default")
    why = f" ({skipped[0]})" if skipped else ""
    raise StageFailure(f"frozen_checkpoint.path=auto: no checkpoint of {' or '.join(compatible)} under {outputs} "
                       f"passed verify.py and fits this model{why}{hint}")


def load_frozen_parts(task, node: dict, variant: str, outputs: Path, resume_from: Path | None = None) -> str:
    """Find, check and load the task's `frozen_parts` into `task.model`. Returns a one-line account;
    raises StageFailure with one line naming the problem."""
    parts = tuple(task.frozen_parts)
    if not parts:
        raise StageFailure(f"this config has a frozen_checkpoint node, but {type(task).__name__} names no "
                           f"frozen_parts: remove frozen_checkpoint or name the parts in the task")
    matrix = node.get("compatibility") or {}
    if variant not in matrix:
        raise StageFailure(f"experiment {variant} has no row in frozen_checkpoint.compatibility "
                           f"(rows: {sorted(matrix)}); add one naming the experiments it may load from")
    compatible = list(matrix[variant])
    own = source_parts(task.state_dict(), parts)
    path = node.get("path")
    if resume_from is not None:  # a resumed run takes its frozen parts from its own last checkpoint
        path, compatible = str(resume_from), compatible + [variant]
    if path is None:
        if node.get("allow_random"):
            task.frozen_source = {"path": None, "allow_random": True}
            return ("frozen_checkpoint.allow_random=true: the frozen parts are RANDOM (no checkpoint); this "
                    "run's figures say nothing about a trained source")
        raise StageFailure(f"frozen_checkpoint.path is null, but {variant} trains on frozen {', '.join(parts)} "
                           f"from a {' or '.join(compatible)} checkpoint; set frozen_checkpoint.path=PATH or "
                           f"frozen_checkpoint.path=auto (compatible under {outputs}: "
                           f"{describe(find_candidates(outputs, compatible))}), or allow_random=true to train "
                           f"from random init on purpose")
    if path == "auto":
        file, ckpt, account = resolve_auto(outputs, compatible, variant, own, parts)
    else:
        file = Path(path)
        if file.is_dir():  # a run directory: its last checkpoint
            file = rd.last_checkpoint(file) if rd.checkpoint_dir(file).is_dir() else file / rd.LAST
        if not file.is_file():
            raise StageFailure(f"frozen_checkpoint.path={path} does not exist; compatible checkpoints under "
                               f"{outputs}: {describe(find_candidates(outputs, compatible))}")
        ckpt = read_source(file, compatible, variant)
        account = f"loaded from {file} ({ckpt['config'].get('experiment')}, epoch {rd.epoch_number(ckpt['epoch'])})"
    source = source_parts(ckpt["state_dict"], parts)
    try:
        check_fit(source, own, file)
    except StageFailure as e:
        raise StageFailure(f"{e}; compatible checkpoints under {outputs}: {describe(find_candidates(outputs, compatible))}")
    task.load_state_dict({**task.state_dict(), **source}, strict=True)
    if resume_from is not None:
        task.frozen_source = dict(ckpt.get("frozen", {}).get("source", {}))
    else:
        task.frozen_source = {
            "path": str(file.resolve()), "sha256": sha256_file(file), "experiment": ckpt["config"].get("experiment"),
            "epoch": ckpt.get("epoch"), "allow_random": False,
            "part_digests": {p: parts_digest(source, [p]) for p in parts},
        }
    return account
