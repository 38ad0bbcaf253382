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

from experiments import run_dir as rd
from experiments.checkpoint.io import load_checkpoint, read_intact, sha256_file, state_dict_problem
from experiments.errors import UserError
from experiments.untrusted import excerpt, read_text, read_yaml


class SourceRefused(UserError):
    """A frozen-parts source that cannot be used: bad input (exit 2), one line."""


@dataclass
class Candidate:
    path: Path
    experiment: str
    verified: bool
    mtime: float
    why_not: str = ""  # why it does not count as verified


# verify.py's stages whose pass `auto` counts as a verification: the checkpoint opens safely, matches its
# sidecar, loads strictly, predicts finite outputs and beats its untrained control. A report with fewer
# (e.g. `stages=[loadable]`) does not count.
VERIFIED_BY = ("loadable", "integrity", "restorable", "predicts", "metrics")


def verification_of(ckpt: Path) -> str | None:
    """None when verify.py's report of `ckpt` passed every stage of VERIFIED_BY for the file as it is now
    (same sha256), else why not. A report is damage detection, not proof: `auto` recomputes what it relies
    on (resolve_auto) whatever a report says."""
    report = rd.verification_report(ckpt)
    if not report.is_file():
        return "not verified"
    try:
        rep = json.loads(read_text(report))
        statuses = {s["name"]: s["status"] for s in rep["stages"]}
        recorded = rep["checkpoint"]["sha256"]
    except (OSError, ValueError, UserError, KeyError, TypeError, RecursionError):
        return f"its report {report.name} is unreadable"
    missing = [name for name in VERIFIED_BY if statuses.get(name) != "pass"]
    if missing:
        return f"verified without {', '.join(missing)} passing"
    if recorded != sha256_file(ckpt):
        return "changed since it was verified"
    return None


def _newest_verified(run_dir: Path) -> tuple[Path | None, str]:
    """A run's newest checkpoint that verification_of counts, or (None, why its reports did not count)."""
    whys = {}
    for ckpt in rd.checkpoint_files(run_dir) if rd.checkpoint_dir(run_dir).is_dir() else []:
        why = verification_of(ckpt)
        if why is None:
            whys.setdefault("", []).append(ckpt)
        elif why != "not verified":
            whys.setdefault(f"{ckpt.name} {why}", [])
    found = whys.pop("", [])
    if found:
        return max(found, key=lambda p: p.stat().st_mtime), ""
    return None, "; ".join(whys) or "not verified"


def find_candidates(outputs: Path, compatible: list[str]) -> list[Candidate]:
    """Runs under `outputs` whose experiment is in `compatible`, newest first: the newest fully verified
    checkpoint when the run has one, else its last.ckpt (with why it does not count as verified)."""
    out = []
    for run_yaml in sorted(Path(outputs).glob(f"**/{rd.RUN_CONFIG}")):
        if rd.is_superseded(run_yaml):
            continue
        try:
            experiment = (read_yaml(run_yaml) or {}).get("experiment")
        except (OSError, UserError, AttributeError):
            continue
        if not isinstance(experiment, str) or experiment not in compatible:
            continue
        verified, why_not = _newest_verified(run_yaml.parent)
        path = verified or rd.last_checkpoint(run_yaml.parent)
        if path.is_file():
            out.append(Candidate(path, experiment, verified is not None, path.stat().st_mtime, why_not))
    return sorted(out, key=lambda c: -c.mtime)


def describe(candidates: list[Candidate], limit: int = 4) -> str:
    if not candidates:
        return "none found"
    shown = [f"{c.path} ({c.experiment}, {'verified' if c.verified else c.why_not})" for c in candidates[:limit]]
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
    shapes = [
        f"{k} {tuple(source[k].shape)} in the checkpoint vs {tuple(own[k].shape)} here"
        for k in sorted(set(own) & set(source))
        if source[k].shape != own[k].shape
    ]
    if shapes:
        more = f" (and {len(shapes) - 3} more)" if len(shapes) > 3 else ""
        raise SourceRefused(f"shapes of {path} do not fit this model: {'; '.join(shapes[:3])}{more}")
    if missing:
        raise SourceRefused(f"{path} lacks {len(missing)} key(s) of the frozen parts, e.g. {', '.join(missing[:3])}")


def read_source(path: Path, compatible: list[str], variant: str) -> dict:
    try:
        ckpt = load_checkpoint(path)
    except UserError as e:
        raise SourceRefused(str(e))
    config = ckpt.get("config")
    if not isinstance(config, dict) or "state_dict" not in ckpt:
        raise SourceRefused(f"{path} is not a checkpoint of this framework (no config or state_dict)")
    why = state_dict_problem(ckpt["state_dict"])
    if why:
        raise SourceRefused(f"{path} is not a checkpoint of this framework: its state_dict {why}")
    experiment = config.get("experiment")
    if experiment not in compatible:
        named = experiment[:80] if isinstance(experiment, str) else excerpt(experiment)
        raise SourceRefused(
            f"{path} is a {named} checkpoint; {variant} loads frozen parts only from "
            f"{' or '.join(compatible)} (frozen_checkpoint.compatibility)"
        )
    return ckpt


def _short(text: str, limit: int = 160) -> str:
    return text if len(text) <= limit else text[:limit] + "..."


def _recheck(
    path: Path, compatible: list[str], variant: str, own: dict, parts, judge
) -> tuple[dict | None, str | None]:
    """(the checkpoint, None) when a candidate of `auto` is usable now, else (None, why): it opens safely and
    matches its sidecar, is compatible, its frozen parts are tensors that fit, and `judge` finds nothing."""
    ckpt, why = read_intact(path)
    try:
        if ckpt is None:
            raise SourceRefused(why)
        read_source(path, compatible, variant)
        source = source_parts(ckpt["state_dict"], parts)  # tensors by name: read_intact checked
        check_fit(source, own, path)
        why = judge(path, source)
    except SourceRefused as e:
        why = str(e)
    except Exception as e:  # a file is data: whatever it holds, it is passed over, never the run's end
        why = f"could not be checked ({type(e).__name__}: {' '.join(str(e).split())[:120]})"
    return (None, why) if why else (ckpt, None)


def resolve_auto(
    outputs: Path, compatible: list[str], variant: str, own: dict, parts, judge=lambda path, state: None
) -> tuple[Path, dict, str]:
    """The newest fully verified compatible checkpoint whose frozen parts, checked again here, are usable:
    it opens safely and matches its sidecar, its parts fit this model, and `judge(path, parts)` (the
    family's checks of frozen parts, e.g. their coverage) finds nothing wrong. Nothing is taken from a
    report on trust. Says which candidates it passed over and why."""
    candidates = find_candidates(outputs, compatible)
    passed_over = [f"{c.path} ({c.why_not})" for c in candidates if not c.verified]
    for c in (c for c in candidates if c.verified):
        ckpt, why = _recheck(c.path, compatible, variant, own, parts, judge)
        if why:
            passed_over.append(f"{c.path} ({_short(why)})")
            continue
        note = f"; passed over: {'; '.join(passed_over)}" if passed_over else ""
        return (
            c.path,
            ckpt,
            (
                f"frozen_checkpoint.path=auto picked {c.path} ({c.experiment}, verified; intact, fits "
                f"and passes this run's frozen-part checks, rechecked now{note})"
            ),
        )
    hint = (
        f"; verify one: python verify.py ckpt={candidates[0].path.parent.parent}"
        if candidates
        else f"; train one first: python train.py experiment={compatible[0]}, then python verify.py "
        f"ckpt={outputs}/{compatible[0]}/default"
    )
    over = f" (passed over: {'; '.join(passed_over[:4])})" if passed_over else ""
    raise SourceRefused(
        f"frozen_checkpoint.path=auto: no checkpoint of {' or '.join(compatible)} under {outputs} "
        f"is verified, intact, fits this model and passes its frozen-part checks{over}{hint}"
    )


def _compatible(task, node: dict, variant: str) -> tuple[tuple, list[str]]:
    """The task's frozen parts and the experiments its row of the compatibility matrix admits."""
    parts = tuple(task.frozen_parts)
    if not parts:
        raise UserError(
            f"this config has a frozen_checkpoint node, but {type(task).__name__} names no "
            f"frozen_parts: remove frozen_checkpoint or name the parts in the task"
        )
    matrix = node.get("compatibility") or {}
    if variant not in matrix:
        raise UserError(
            f"experiment {variant} has no row in frozen_checkpoint.compatibility "
            f"(rows: {sorted(matrix)}); add one naming the experiments it may load from"
        )
    return parts, list(matrix[variant])


def _given(path: str, compatible: list[str], variant: str, outputs: Path) -> tuple[Path, dict, str]:
    """frozen_checkpoint.path=PATH: a checkpoint file, or a run directory's last checkpoint."""
    file = Path(path)
    if file.is_dir():
        file = rd.last_checkpoint(file) if rd.checkpoint_dir(file).is_dir() else file / rd.LAST
    if not file.is_file():
        raise SourceRefused(
            f"frozen_checkpoint.path={path} does not exist; compatible checkpoints under "
            f"{outputs}: {describe(find_candidates(outputs, compatible))}"
        )
    ckpt = read_source(file, compatible, variant)
    epoch = rd.epoch_number(ckpt["epoch"])
    return file, ckpt, f"loaded from {file} ({ckpt['config'].get('experiment')}, epoch {epoch})"


def _source_record(file: Path, ckpt: dict, source: dict, parts) -> dict:
    """What the task saves as `checkpoint["frozen"]["source"]`, for verify.py's frozen_identical stage."""
    return {
        "path": str(file.resolve()),
        "sha256": sha256_file(file),
        "experiment": ckpt["config"].get("experiment"),
        "epoch": ckpt.get("epoch"),
        "allow_random": False,
        "part_digests": {p: parts_digest(source, [p]) for p in parts},
    }


def load_frozen_parts(
    task, node: dict, variant: str, outputs: Path, resume_from: Path | None = None, judge=lambda path, parts: None
) -> str:
    """Find, check and load the task's `frozen_parts` into `task.model`. Returns a one-line account; a source
    that cannot be used is SourceRefused (bad input), one line naming the problem. `judge` checks a
    candidate of `auto` further (resolve_auto)."""
    parts, compatible = _compatible(task, node, variant)
    if resume_from is not None:  # a resumed run takes its frozen parts from its own last checkpoint
        file, ckpt, account = _given(str(resume_from), compatible + [variant], variant, outputs)
    elif node.get("path") is None:
        if node.get("allow_random"):
            task.frozen_source = {"path": None, "allow_random": True}
            return (
                "frozen_checkpoint.allow_random=true: the frozen parts are RANDOM (no checkpoint); this "
                "run's figures say nothing about a trained source"
            )
        raise SourceRefused(
            f"frozen_checkpoint.path is null, but {variant} trains on frozen {', '.join(parts)} "
            f"from a {' or '.join(compatible)} checkpoint; set frozen_checkpoint.path=PATH or "
            f"frozen_checkpoint.path=auto (compatible under {outputs}: "
            f"{describe(find_candidates(outputs, compatible))}), or allow_random=true to train "
            f"from random init on purpose"
        )
    elif node["path"] == "auto":
        file, ckpt, account = resolve_auto(
            outputs, compatible, variant, source_parts(task.state_dict(), parts), parts, judge
        )
    else:
        file, ckpt, account = _given(str(node["path"]), compatible, variant, outputs)
    source = source_parts(ckpt["state_dict"], parts)
    try:
        check_fit(source, source_parts(task.state_dict(), parts), file)
    except SourceRefused as e:
        found = describe(find_candidates(outputs, compatible))
        raise SourceRefused(f"{e}; compatible checkpoints under {outputs}: {found}")
    task.load_state_dict({**task.state_dict(), **source}, strict=True)
    if resume_from is not None:
        task.frozen_source = dict(ckpt.get("frozen", {}).get("source", {}))
    else:
        task.frozen_source = _source_record(file, ckpt, source, parts)
    return account
