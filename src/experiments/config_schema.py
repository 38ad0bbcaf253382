"""Schema of the top-level config keys, so a wrong type fails at composition.

Group nodes (model, data, task, trainer, ...) are checked against their `_target_` signatures instead
(stages/config_check.py)."""
from dataclasses import dataclass, field
from enum import Enum
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
    paths: Paths = field(default_factory=Paths)
    validation: Validation = field(default_factory=Validation)
    model: Any = None
    data: Any = None
    task: Any = None
    trainer: Any = None
    checkpoint: Any = None
    logger: Any = None


def register() -> None:
    from omegaconf import OmegaConf

    from experiments.run_dir import run_id

    ConfigStore.instance().store(name="train_schema", node=TrainSchema)
    if not OmegaConf.has_resolver("run_id"):
        OmegaConf.register_new_resolver("run_id", run_id)
