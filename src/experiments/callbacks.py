"""Small Lightning callbacks the programs attach to every run."""
import random
from pathlib import Path

import numpy as np
import torch
from lightning.pytorch.callbacks import Callback

from experiments.run_dir import epoch_number


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


def summary_line(row: dict, keys, max_epochs: int | None, percent_keys=()) -> str:
    """One console line for a finished epoch: the task's summary keys (`percent_keys` as percentages)
    and the epoch's wall time."""
    parts = [f"epoch {epoch_number(row['epoch'])}/{max_epochs}"]
    for key in keys:
        if key in row:
            value = row[key]
            parts.append(f"{key} {value:.2%}" if key in percent_keys else f"{key} {value:.4g}")
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


class LoggerReport(Callback):
    """What a logger gets beyond the metrics Lightning logs: every PNG the run writes in its directory (as
    an image, keyed by its folder or name: `reconstructions`, `predictions`), after each validation and
    at the end; and at the end the final epoch's figures (train and validation together) as the run's
    summary, for loggers that keep one."""

    def __init__(self, run_dir: Path):
        self.run_dir = Path(run_dir)
        self._seen: dict[Path, float] = {}

    def _new_pictures(self) -> list[Path]:
        # The loggers' own folders, checkpoints, earlier runs and eval.py's results are not descended
        # into: this runs after every validation.
        skipped = ("wandb", "tensorboard", "superseded", "checkpoints", "eval")
        tops = [p for p in self.run_dir.iterdir() if p.name not in skipped]
        found = []
        for path in sorted(q for p in tops for q in ([p] if p.is_file() else p.rglob("*.png")) if q.suffix == ".png"):
            mtime = path.stat().st_mtime
            if self._seen.get(path) != mtime:
                self._seen[path] = mtime
                found.append(path)
        return found

    def _log_pictures(self, trainer) -> None:
        takers = [lg for lg in trainer.loggers if hasattr(lg, "log_image")]
        if not takers or not trainer.is_global_zero:
            return
        for path in self._new_pictures():
            key = path.relative_to(self.run_dir).parts[0].removesuffix(".png")
            for logger in takers:
                logger.log_image(key=key, images=[str(path)], step=trainer.global_step)

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
