"""Schema of the top-level config keys, so a wrong type fails at composition.

Group nodes (model, data, task, trainer, ...) are checked against their `_target_` signatures instead
(stages/config_check.py)."""

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from hydra.core.config_store import ConfigStore

from experiments import run_dir as rd


class Resume(str, Enum):  # noqa: UP042 (the str-and-Enum form OmegaConf documents for structured configs)
    auto = "auto"  # resume from last.ckpt if the run directory has one; say so if the run is complete
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
    init_from: Any = None  # a checkpoint or run directory whose weights a new run starts from
    init_strict: bool = True
    progress_refresh_rate: int = 20
    sweep_name: Any = None
    sweep_chain: Any = None  # [experiment, ...]: the steps of a sweep's paired comparisons
    paths: Paths = field(default_factory=Paths)
    validation: Validation = field(default_factory=Validation)
    model: Any = None
    data: Any = None
    task: Any = None
    trainer: Any = None
    checkpoint: Any = None
    logger: Any = None
    callbacks: Any = None  # {name: _target_ node}: extra Lightning callbacks of a preset
    frozen_checkpoint: Any = None  # tasks with frozen parts: where they come from (checkpoint/frozen.py)


def gpu_precision() -> str:
    """bf16 mixed precision where the GPU supports it (Ampere and later), else fp16 mixed."""
    import torch

    return (
        "bf16-mixed"
        if torch.cuda.is_available() and torch.cuda.is_bf16_supported(including_emulation=False)
        else "16-mixed"
    )


def current_sweep_id() -> str | None:
    """`${sweep_id:}`: the id of the sweep this job belongs to, or null (a logger's group)."""
    from experiments.sweep import current_id

    return current_id()


def register() -> None:
    from omegaconf import OmegaConf

    ConfigStore.instance().store(name="train_schema", node=TrainSchema)
    for name, resolver in (
        ("run_id", rd.run_id),
        ("outputs_root", rd.outputs_root),
        ("run_subdir", rd.run_subdir),
        ("run_dir", rd.run_path),
    ):
        if not OmegaConf.has_resolver(name):
            OmegaConf.register_new_resolver(name, resolver)
    if not OmegaConf.has_resolver("gpu_precision"):
        OmegaConf.register_new_resolver("gpu_precision", gpu_precision)
    if not OmegaConf.has_resolver("sweep_id"):
        OmegaConf.register_new_resolver("sweep_id", current_sweep_id)
