"""Loggers as the programs configure them (conf/logger/)."""
import hashlib
import inspect
import os
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger


def stable_id(run_dir: str) -> str:
    """16 hex characters, a function of the run directory's absolute path alone."""
    return hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:16]


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger with what a run directory implies: unless given, the run's id is derived
    from its directory (so every start of one run directory, resumes included, continues one wandb run)
    and its name is the directory's `<experiment>/<overrides>`. Less the `anonymous` setting Lightning
    always passes to `wandb.init`: wandb >= 0.19 warns on every run that it has no effect."""

    def __init__(self, *args, **kwargs):
        bound = inspect.signature(LightningWandbLogger.__init__).bind(None, *args, **kwargs).arguments
        run_dir = bound.get("save_dir")
        if run_dir:
            kwargs["id"] = kwargs.get("id") or stable_id(run_dir)
            kwargs["name"] = kwargs.get("name") or f"{Path(run_dir).parent.name}/{Path(run_dir).name}"
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)


# The config check (stages/config_check.py) reads a target's signature: keep Lightning's, key for key.
WandbLogger.__init__.__signature__ = inspect.signature(LightningWandbLogger.__init__)


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger (event files under `<run dir>/tensorboard/`, written through
    tensorboardX), able to take the run's pictures as wandb's logger does (`log_image`, which
    callbacks.LoggerReport calls for every PNG the run writes)."""

    def log_image(self, key: str, images: list, step: int | None = None) -> None:
        import matplotlib.image

        for path in images:
            pixels = matplotlib.image.imread(str(path))[..., :3]  # PNG as floats in [0, 1], alpha dropped
            self.experiment.add_image(key, pixels, global_step=step, dataformats="HWC")
