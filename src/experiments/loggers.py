"""Loggers as the programs configure them (conf/logger/)."""
import hashlib
import inspect
import os
from pathlib import Path

from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger

from experiments.console import is_terminal


def stable_id(run_dir: str) -> str:
    """16 hex characters, a function of the run directory's absolute path alone."""
    return hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:16]


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger with what a run directory implies: unless given, the run's id is derived
    from its directory (so every start of one run directory, resumes included, continues one wandb run)
    and its name is the directory's `<experiment>/<overrides>`. Less the `anonymous` setting Lightning
    always passes to `wandb.init`: wandb >= 0.19 warns on every run that it has no effect. Quiet (the run's
    closing summary says where its files are and how to upload every start of it) and without colour codes
    when the console is not a terminal."""

    def __init__(self, *args, **kwargs):
        bound = inspect.signature(LightningWandbLogger.__init__).bind(None, *args, **kwargs).arguments
        run_dir = bound.get("save_dir")
        if run_dir:
            kwargs["id"] = kwargs.get("id") or stable_id(run_dir)
            kwargs["name"] = kwargs.get("name") or f"{Path(run_dir).parent.name}/{Path(run_dir).name}"
        if "settings" not in kwargs:
            import wandb

            kwargs["settings"] = wandb.Settings(quiet=True, show_colors=is_terminal())
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)

    def finalize(self, status: str) -> None:
        """Lightning's, then the wandb run finished here, while the run's console (and train.log) still
        listens, instead of at the process's exit."""
        super().finalize(status)
        # ("finished": Lightning's SLURM requeue handler, mid-training: the run goes on in the next job)
        if status in ("success", "failed") and self._experiment is not None and hasattr(self._experiment, "finish"):
            self._experiment.finish(exit_code=0 if status == "success" else 1)


# The config check (stages/config_check.py) reads a target's signature: keep Lightning's, key for key.
WandbLogger.__init__.__signature__ = inspect.signature(LightningWandbLogger.__init__)


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger (event files under `<run dir>/tensorboard/`, written through
    tensorboardX), able to take the run's pictures as wandb's logger does (`log_image`, which
    callbacks.LoggerReport calls for every PNG the run writes). A figure named with `@` (not allowed in a
    TensorBoard tag) is filed with `_at` instead (`arc/exact_output_at2`), and the `epoch` figure once a step
    (the training and the validation figures of an epoch both carry it, at the same step)."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        metrics = {key.replace("@", "_at"): value for key, value in metrics.items()}
        if "epoch" in metrics:
            if getattr(self, "_epoch_logged", None) == (step, metrics["epoch"]):
                del metrics["epoch"]
            else:
                self._epoch_logged = (step, metrics["epoch"])
        if metrics:
            super().log_metrics(metrics, step)

    def log_image(self, key: str, images: list, step: int | None = None) -> None:
        import matplotlib.image

        for path in images:
            pixels = matplotlib.image.imread(str(path))[..., :3]  # PNG as floats in [0, 1], alpha dropped
            self.experiment.add_image(key, pixels, global_step=step, dataformats="HWC")
