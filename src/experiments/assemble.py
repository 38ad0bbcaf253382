"""Build a run's pieces from a composed config: data, model and task, then the Trainer with the
checkpoint policy, callbacks and logger. The training program and verify.py's `resume_exact` stage (which
replays a run's epochs) both build through here, so a replay is assembled exactly as the run was."""

import contextlib
import sys
import time
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.errors import InstantiationException
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException
from omegaconf import DictConfig, OmegaConf

from experiments import run_dir as rd
from experiments.callbacks import LoggerReport, StepSeeding, ValidationLines
from experiments.checkpoint.io import load_checkpoint, save_checkpoint
from experiments.console import is_terminal
from experiments.errors import UserError
from experiments.task_contract import ExperimentTask


def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def built(node, key: str, **supplied):
    """`instantiate(node, **supplied)`, a constructor's refusal of its arguments (a ValueError or a UserError:
    an empty clip folder, an unknown task id, a file of the data refused) being the user's mistake in config key
    `key`: one line, exit 2."""
    try:
        return instantiate(node, **supplied)
    except InstantiationException as e:
        if isinstance(e.__cause__, (ValueError, UserError)):  # a file of the data refused, too
            raise UserError(f"{key}: {' '.join(str(e.__cause__).split())}") from e
        raise


def build(cfg: DictConfig):
    """Instantiate data, model and task from the config (no trainer)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = built(cfg.data, "data", seed=cfg.seed)
    model = built(cfg.model, "model")
    task = built(cfg.task, "task", model=model)
    if not isinstance(task, ExperimentTask):
        raise UserError(
            f"task._target_={cfg.task._target_} is not an experiments.family.ExperimentTask: "
            f"a family's task subclasses it (docs/FAMILIES.md)"
        )
    gaps = type(task).contract_gaps()
    if gaps:
        raise UserError(
            f"{cfg.task._target_} does not implement {', '.join(gaps)} of the family contract (docs/FAMILIES.md)"
        )
    return datamodule, model, task


class TrainingBar(TQDMProgressBar):
    """Lightning's bar for training, on a terminal only. Validation is usually one short pass, summarised in
    the epoch line; a task whose evaluation is long work (`long_validation`) gets a bar for it too. The bar
    is redrawn every `refresh_rate` batches, and at least twice a second (an epoch of a few slow batches
    would otherwise sit at 0/N until its end); a stop (Ctrl-C) closes it before the stop's line."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._drawn = 0.0

    def _should_update(self, current: int, total: int) -> bool:
        now = time.monotonic()
        if super()._should_update(current, total) or (self.is_enabled and now - self._drawn >= 0.5):
            self._drawn = now
            return True
        return False

    def on_exception(self, trainer, pl_module, exception) -> None:
        for bar in (self._train_progress_bar, self._val_progress_bar):
            if bar is not None:
                bar.leave = False
                bar.close()

    def init_validation_tqdm(self):
        if self.trainer.lightning_module.long_validation:
            return super().init_validation_tqdm()
        return Tqdm(disable=True)  # disabled at construction, so it never draws

    def on_train_epoch_start(self, trainer, *args) -> None:
        """Lightning's, but the epoch as every other line counts it (from 1: run_dir.epoch_number), set
        before the bar is first drawn."""
        if self._leave:
            self.train_progress_bar = self.init_train_tqdm()
        epoch = f"Epoch {rd.epoch_number(trainer.current_epoch)}/{trainer.max_epochs}"
        self.train_progress_bar.set_description(epoch, refresh=False)
        self.train_progress_bar.reset(total=convert_inf(self.total_train_batches))
        self.train_progress_bar.initial = 0

    def get_metrics(self, trainer, pl_module) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        metrics.pop("v_num", None)  # the logger's version: no figure of this run
        return metrics


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic and hashed, and its reader, bounded and weights-only
    (checkpoint/io.py)."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        save_checkpoint(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint(Path(path), map_location=map_location)


def plugins() -> list:
    """The checkpoint writer, and in a Slurm job Lightning's Slurm environment without its own requeue (a save
    from inside its USR1 handler into `hpc_ckpt_*.ckpt`, which the next start would prefer to last.ckpt): the
    framework saves on the cluster's warning itself (stop.py)."""
    from lightning.pytorch.plugins.environments import SLURMEnvironment

    return [AtomicCheckpointIO()] + ([SLURMEnvironment(auto_requeue=False)] if SLURMEnvironment.detect() else [])


def build_trainer(cfg: DictConfig, run_dir: Path, config: dict, task):
    """The Trainer and its checkpoint policy. The policy's monitor is the config's, else the task's
    primary metric (task_contract.ExperimentTask.monitor)."""
    monitor, mode = task.monitor_of(cfg.checkpoint)
    # _partial_: the run config holds _target_ nodes that must stay plain values, not be built
    policy = instantiate(cfg.checkpoint, _partial_=True)(
        dirpath=str(rd.checkpoint_dir(run_dir)), run_config=config, monitor=monitor, mode=mode
    )
    callbacks = [StepSeeding(cfg.seed), policy]
    callbacks += [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]
    bar = cfg.trainer.get("enable_progress_bar", True) and is_terminal()  # redrawn bars garble a file
    if bar:
        callbacks.append(TrainingBar(refresh_rate=cfg.progress_refresh_rate))
    elif task.long_validation:
        callbacks.append(ValidationLines())
    logger = instantiate(cfg.logger, save_dir=str(run_dir)) if cfg.logger else False
    if logger:
        callbacks.append(LoggerReport(run_dir))
    try:
        trainer = instantiate(
            cfg.trainer,
            callbacks=callbacks,
            logger=logger,
            plugins=plugins(),
            default_root_dir=str(run_dir),
            enable_progress_bar=bar,
        )
    except Exception as e:  # e.g. trainer=gpu on a machine without one (Hydra wraps Lightning's error)
        cause = e if isinstance(e, MisconfigurationException) else e.__cause__
        if not isinstance(cause, MisconfigurationException):
            raise
        raise UserError(f"trainer: {' '.join(str(cause).split())} (check trainer.accelerator/devices, or trainer=cpu)")
    for each in trainer.loggers:  # the composed config as the logged run's config
        each.log_hyperparams(config)
    return trainer, policy


def ddp_child_command(local_rank: int):
    """Lightning starts each extra DDP process by rerunning the command line; for a Hydra app it appends
    `hydra.run.dir=<run.dir>`. A job of a multirun would then rerun the whole sweep (`-m` and the sweep
    lists are on the command line) in a directory of its own. Instead: this job's overrides only, in
    this job's run directory, as a single run, with the same config folders (`--config-dir`)."""
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    extra_dirs = [s.path for s in hc.runtime.config_sources if s.provider == "command-line"]
    script = Path(__file__).resolve().parents[2] / "train.py"  # a checkout; an installed copy has `-m experiments`
    start = [sys.executable, str(script)] if script.is_file() else [sys.executable, "-m", "experiments"]
    command = [
        *start,
        *[f"--config-dir={d}" for d in extra_dirs],
        *hc.overrides.task,
        f'hydra.run.dir="{hc.runtime.output_dir}"',
        f"hydra.job.name=train_ddp_process_{local_rank}",
        "hydra.output_subdir=null",
        "hydra.mode=RUN",
    ]
    return command, get_original_cwd()


@contextlib.contextmanager
def ddp_children_as_this_job(cfg: DictConfig):
    """While the Trainer starts DDP processes, Lightning builds their command with `ddp_child_command`.
    Lightning has no option for it: its module-level hook is swapped for this fit only and put back."""
    if "ddp" not in str(cfg.trainer.get("strategy", "")) or not HydraConfig.initialized():
        yield
        return
    from lightning.pytorch.strategies.launchers import subprocess_script

    original = subprocess_script._hydra_subprocess_cmd
    subprocess_script._hydra_subprocess_cmd = ddp_child_command
    try:
        yield
    finally:
        subprocess_script._hydra_subprocess_cmd = original
