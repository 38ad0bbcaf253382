"""Small Lightning callbacks the programs attach to every run."""

import random
import struct
import time
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.callbacks import EarlyStopping as LightningEarlyStopping

from experiments.errors import UserError
from experiments.run_dir import epoch_number
from experiments.untrusted import open_regular


class StepSeeding(Callback):
    """Reseed python, numpy and torch from (seed, global_step) before every training batch.

    Restoring one RNG state at resume is not enough for a bit-identical continuation (the DataLoader
    draws from the global RNG at iterator creation, at different points in a fresh and a resumed fit);
    a per-step seed makes every batch's randomness a pure function of the step."""

    def __init__(self, seed: int):
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        s = (self.seed * 1_000_003 + trainer.global_step) % (2**32)
        random.seed(s)
        np.random.seed(s)
        # torch.manual_seed would also queue a lazy CUDA seeding call that records a stack trace
        # (about 1 ms a step); seed the CPU generator directly and CUDA only once it is running.
        torch.default_generator.manual_seed(s)
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(s)


def format_figure(key: str, figures: dict, task_cls, digits: int = 4) -> str:
    """A figure as the console shows it: a count of its denominator (`count_keys`: 3/18), a percentage
    (`percent_keys`), or `digits` significant digits."""
    value, total = figures[key], figures.get(getattr(task_cls, "count_keys", {}).get(key))
    if total:
        return f"{round(value * total)}/{round(total)}"
    return f"{value:.2%}" if key in getattr(task_cls, "percent_keys", ()) else f"{value:.{digits}g}"


def summary_line(row: dict, task_cls, max_epochs: int | None) -> str:
    """One console line for a finished epoch: the task's summary keys, as `format_figure`, and the epoch's wall
    time."""
    parts = [f"epoch {epoch_number(row['epoch'])}/{max_epochs}"]
    for key in task_cls.summary_keys:
        if key in row:
            parts.append(f"{key} {format_figure(key, row, task_cls)}")
    if "time/epoch_s" in row:
        parts.append(f"{row['time/epoch_s']:.1f}s")
    return " | ".join(parts)


def console_print(trainer, line: str) -> None:
    """Print above the progress bar when there is one."""
    bar = trainer.progress_bar_callback
    if bar is not None and hasattr(bar, "print"):
        bar.print(line)
    else:
        print(line, flush=True)


class SameBatches(Callback):
    """debug=overfit: every epoch trains on the first epoch's batches (with `trainer.limit_train_batches`, the
    same few). The framework's samplers draw each epoch's order from (seed, epoch), so Lightning's
    `overfit_batches` alone would give new batches every epoch; this holds every training sampler at epoch 0
    (`EpochBatchSampler.hold_epoch`), set before the fit loop sets the epoch, so a mid-epoch resume goes on
    within the same batches as its checkpoint's sampler state says."""

    replayed = True  # it changes what is trained: verify.py's replay (resume_exact) builds it too

    def on_train_start(self, trainer, pl_module) -> None:
        loaders = trainer.train_dataloader
        loaders = (
            loaders.values()
            if isinstance(loaders, dict)
            else loaders
            if isinstance(loaders, (list, tuple))
            else [loaders]
        )
        found = [
            s
            for loader in loaders
            for s in (loader, getattr(loader, "sampler", None), getattr(loader, "batch_sampler", None))
            if s is not None and hasattr(s, "hold_epoch")
        ]
        if not found:
            raise UserError(
                "debug=overfit needs the framework's EpochBatchSampler in the training data "
                "(experiments.family), whose epoch it holds; this data module samples otherwise"
            )
        for sampler in found:
            sampler.hold_epoch = 0
            sampler.set_epoch(0)


class ValidationLines(Callback):
    """A long validation's progress without a bar (the console is not a terminal): a line a minute while it
    runs, and one when it ends if it took 10 s or more."""

    def __init__(self, every_s: float = 60.0):
        self.every_s = every_s

    def on_validation_start(self, trainer, pl_module) -> None:
        self._started = self._said = time.monotonic()

    def on_validation_batch_end(self, trainer, pl_module, outputs, batch, batch_idx, dataloader_idx=0) -> None:
        now = time.monotonic()
        if now - self._said >= self.every_s:
            self._said = now
            total = sum(trainer.num_val_batches) if trainer.num_val_batches else "?"
            print(
                f"  evaluating epoch {epoch_number(trainer.current_epoch)}: batch {batch_idx + 1}/{total}, "
                f"{now - self._started:.0f}s",
                flush=True,
            )

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking and time.monotonic() - self._started >= 10:  # short ones: the epoch line
            print(
                f"  evaluated epoch {epoch_number(trainer.current_epoch)} in {time.monotonic() - self._started:.0f}s",
                flush=True,
            )


MAX_PICTURE_PIXELS = 4096 * 4096  # a figure of this framework is far smaller; a logger decodes it whole, as floats


def picture_fits(path: Path) -> bool:
    """Whether a PNG found in the run directory is one a logger may decode: a regular file whose header (read
    as data: 24 bytes) declares at most MAX_PICTURE_PIXELS. A 28 KB file can declare 9000x9000."""
    try:
        with open_regular(path) as f:
            head = f.read(24)
    except (OSError, UserError):
        return False
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return False
    width, height = struct.unpack(">II", head[16:24])
    return width * height <= MAX_PICTURE_PIXELS


class LoggerReport(Callback):
    """What a logger gets beyond the metrics Lightning logs: every PNG the run writes in its directory (as
    an image, keyed by its folder or name: `reconstructions`, `predictions`; one that is not a PNG of at most
    MAX_PICTURE_PIXELS is left out), after each validation and
    at the end; and at the end the final epoch's figures (train and validation together) as the run's
    summary, for loggers that keep one."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._seen: dict[Path, float] = {}

    def _new_pictures(self) -> list[Path]:
        # The loggers' own folders, checkpoints, earlier runs, eval.py's and predict.py's results are not descended
        # into: this runs after every validation.
        skipped = ("wandb", "tensorboard", "mlruns", "superseded", "checkpoints", "eval", "predict")
        tops = [p for p in self.run_dir.iterdir() if p.name not in skipped]
        found = []
        for path in sorted(q for p in tops for q in ([p] if p.is_file() else p.rglob("*.png")) if q.suffix == ".png"):
            mtime = path.stat().st_mtime
            if self._seen.get(path) != mtime:
                self._seen[path] = mtime
                if picture_fits(path):
                    found.append(path)
        return found

    def _log_pictures(self, trainer) -> None:
        takers = [lg for lg in trainer.loggers if hasattr(lg, "log_image")]
        if not takers or not trainer.is_global_zero:
            return
        # Lightning logs an epoch's figures at the step of its last batch, one less than the steps done by then
        step = max(trainer.global_step - 1, 0)
        for path in self._new_pictures():
            key = path.relative_to(self.run_dir).parts[0].removesuffix(".png")
            for logger in takers:
                logger.log_image(key=key, images=[str(path)], step=step)

    # Lightning tags each logged row with its own `epoch`, counted from 0; a logged `epoch` takes its place,
    # so that charts count epochs as the console, file names and history.csv do (from 1).
    def on_validation_epoch_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            pl_module.log("epoch", float(epoch_number(trainer.current_epoch)))

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        pl_module.log("epoch", float(epoch_number(trainer.current_epoch)))

    def on_validation_end(self, trainer, pl_module) -> None:
        if not trainer.sanity_checking:
            self._log_pictures(trainer)

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._log_pictures(trainer)  # e.g. a picture drawn by the task's on_fit_end
        if not trainer.is_global_zero or not pl_module.epoch_metrics:
            return
        for logger in trainer.loggers:
            summary = getattr(getattr(logger, "experiment", None), "summary", None)
            if summary is not None and hasattr(summary, "update"):
                summary.update(dict(pl_module.epoch_metrics))


class EarlyStopping(LightningEarlyStopping):
    """Lightning's EarlyStopping on what the run monitors: `monitor` null takes the checkpoint policy's
    (`checkpoint.monitor`, else the family's primary metric) and `mode` null its direction. Checked at the
    end of each epoch that evaluated the metric (an ARC run evaluates every few epochs: `patience` counts
    evaluations, not epochs). The stop ends the run as its last epoch would (the checkpoint policy marks
    it finished); wait count and best score resume with the run (Lightning keeps them in the checkpoint)."""

    def __init__(self, monitor: str | None = None, mode: str | None = None, patience: int = 10, min_delta: float = 0.0):
        if patience < 1:
            raise ValueError(f"callbacks.early_stopping.patience must be >= 1, got {patience}")
        super().__init__(
            monitor=monitor or "",
            mode=mode or "min",
            patience=patience,
            min_delta=min_delta,
            strict=False,
            check_on_train_epoch_end=True,
        )
        self._asked = (monitor, mode, abs(min_delta))

    def setup(self, trainer, pl_module, stage: str) -> None:
        monitor, mode, min_delta = self._asked
        policy = trainer.checkpoint_callback
        if monitor is None and policy is not None and getattr(policy, "monitor", None):
            monitor, mode = policy.monitor, mode or policy.mode
        self.monitor, self.mode = type(pl_module).monitor(monitor, mode)
        if not self.monitor:
            raise ValueError("callbacks.early_stopping: no metric to watch; set callbacks.early_stopping.monitor")
        self.min_delta = min_delta if self.monitor_op == torch.gt else -min_delta
        self.best_score = torch.tensor(-torch.inf if self.monitor_op == torch.gt else torch.inf)
        super().setup(trainer, pl_module, stage)

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        if self.monitor not in pl_module.epoch_metrics:  # an epoch that did not evaluate it
            return
        super().on_train_epoch_end(trainer, pl_module)
        if trainer.should_stop and self.stopped_epoch == trainer.current_epoch:
            reason = self.stopping_reason_message or f"{self.monitor} did not improve"
            console_print(trainer, f"early stopping after epoch {epoch_number(trainer.current_epoch)}: {reason}")
