"""Schema of the top-level config keys, so a wrong type fails at composition.

Group nodes (model, data, task, trainer, ...) are checked against their `_target_` signatures instead
(stages/config_check.py)."""
import hashlib
import os
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path, PurePosixPath
from typing import Any

from hydra.core.config_store import ConfigStore


class Resume(str, Enum):
    auto = "auto"    # resume from last.ckpt if the run directory has one; say so if the run is complete
    never = "never"  # start over; an earlier run in the same directory is moved to superseded/


@dataclass
class Validation:
    preflight: list[str] = field(default_factory=lambda: ["config"])
    batches: int = 3


@dataclass
class Paths:
    outputs: str = "outputs"


@dataclass
class TrainSchema:
    seed: int = 0
    resume: Resume = Resume.auto
    preflight_only: bool = False
    progress_refresh_rate: int = 20
    sweep_name: Any = None
    sweep_chain: Any = None        # [experiment, ...]: the steps of a sweep's paired comparisons
    paths: Paths = field(default_factory=Paths)
    validation: Validation = field(default_factory=Validation)
    model: Any = None
    data: Any = None
    task: Any = None
    trainer: Any = None
    checkpoint: Any = None
    logger: Any = None
    callbacks: Any = None          # {name: _target_ node}: extra Lightning callbacks of a preset
    frozen_checkpoint: Any = None  # tasks with frozen parts: where they come from (checkpoint/frozen.py)


def run_id(override_dirname: str) -> str:
    """Directory name for a run's overrides: 'default' when there are none; '/' is not a separator."""
    # quotes are the command line's (cli.quote_path_values), not part of the value
    name = override_dirname.replace("/", "~").replace("'", "").replace('"', "") or "default"
    if len(name) > 150:  # file systems cap a name at 255 bytes
        name = name[:120] + "-" + hashlib.sha1(name.encode()).hexdigest()[:12]
    return name


def outputs_root(outputs) -> str:
    """`${outputs_root:${paths.outputs}}`: the folder that holds every run directory, refused (one line,
    before Hydra creates anything) when it is empty, a file, or under a folder this process cannot write."""
    from experiments.errors import UserError

    text = "" if outputs is None else str(outputs)
    if not text.strip():
        raise UserError("paths.outputs is empty: give the folder that holds the run directories, e.g. "
                        "paths.outputs=outputs")
    path = Path(text)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if existing.exists() and not existing.is_dir():
        raise UserError(f"paths.outputs={text}: {existing} is a file, not a folder; choose another paths.outputs")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"paths.outputs={text}: {existing} is not writable by this user; choose another paths.outputs")
    return text


def run_subdir(experiment, override_dirname: str) -> str:
    """`${run_subdir:${hydra:runtime.choices.experiment},${hydra:job.override_dirname}}`: a run's directory
    below the outputs root, `<experiment>/<overrides>`; an experiment given as a path that leaves the
    outputs root (`experiment=../x`, an absolute path) is refused."""
    from experiments.errors import UserError

    name = str(experiment)
    if not name or name.startswith(("/", "\\")) or ".." in PurePosixPath(name).parts:
        raise UserError(f"experiment={name}: an experiment is the name of a preset (experiment/<name>.yaml), not a "
                        f"path; its run directory must stay inside paths.outputs")
    return f"{name}/{run_id(override_dirname)}"


def run_dir(outputs, experiment, override_dirname: str) -> str:
    """`hydra.run.dir`: <outputs root>/<experiment>/<overrides>, both parts checked."""
    return f"{outputs_root(outputs)}/{run_subdir(experiment, override_dirname)}"


def gpu_precision() -> str:
    """bf16 mixed precision where the GPU supports it (Ampere and later), else fp16 mixed."""
    import torch

    return "bf16-mixed" if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False) else "16-mixed"


def sweep_id() -> str | None:
    """`${sweep_id:}`: the id of the sweep this job belongs to, or null (a logger's group)."""
    from experiments.sweep import current_id

    return current_id()


def register() -> None:
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="train_schema", node=TrainSchema)
    for name, resolver in (("run_id", run_id), ("outputs_root", outputs_root), ("run_subdir", run_subdir),
                           ("run_dir", run_dir)):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("gpu_precision"):
        OmegaConf.register_new_resolver("gpu_precision", gpu_precision)
    if not OmegaConf.has_resolver("sweep_id"):
        OmegaConf.register_new_resolver("sweep_id", sweep_id)
