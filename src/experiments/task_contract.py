"""The contract between a family and the framework, in one place.

A family's task is a LightningModule that subclasses `ExperimentTask`. What each part of the framework
reads from it:

- train.py and the preflight stages: `training_loss(batch, batch_idx)` (the scalar one step minimises;
  the preflight runs exactly this on real batches), `configure_optimizers()`, `preflight_stages` (the
  family's own stages, named in its preset's `validation.preflight`) and `frozen_parts`.
- the checkpoint policy: `epoch_metrics` (this epoch's figures: the training means after
  `on_train_epoch_end`, the validation figures after the family's `on_validation_epoch_end`; copied into
  the history), `summary_keys` and `percent_keys` (the console's epoch line), `monitor(...)` (which
  metric picks the best checkpoint when the config names none).
- verify.py: `evaluate(datamodule, epoch)` (the validation figures outside a Trainer, writing nothing),
  `check_outputs(batch)` ((name, output, expected shape) of a forward pass on real data),
  `primary_metric`, `higher_is_better` / `lower_is_better` (how each metric is judged against an
  untrained control; the others are shown, not judged) and `frozen_parts`.
- eval.py: `evaluate_to(datamodule, epoch, folder)` (the figures of `evaluate` on any data of the family,
  and the family's files of them, e.g. predictions and pictures, written into `folder`).
- the sweep summary: `primary_metric` and the judged metrics (its columns), and for paired per-output
  comparisons `paired_metrics` (metric -> column of the run's `per_output.csv`, which has `task` and
  `index` columns) and `binary_metrics` (those that also get an exact McNemar test).

What every family repeated lives here once: the training terms summed over an epoch's batches, summed
again over DDP processes at the epoch's end, and carried by a mid-epoch checkpoint so that a preempted
epoch resumes with its partial sums. A family calls `add_training_terms` from `training_loss`.
"""
from typing import Callable, ClassVar

import lightning as L
import torch

from experiments.data.epoch_sampler import epoch_state_for_this_rank, totals_over_ranks


class ExperimentTask(L.LightningModule):
    summary_keys: ClassVar[tuple[str, ...]] = ()      # shown in the epoch line, when present
    percent_keys: ClassVar[tuple[str, ...]] = ()      # ... as a percentage
    primary_metric: ClassVar[str | None] = None       # the figure a run stands or falls by
    higher_is_better: ClassVar[tuple[str, ...]] = ()
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    paired_metrics: ClassVar[dict[str, str]] = {}
    binary_metrics: ClassVar[tuple[str, ...]] = ()
    long_validation: ClassVar[bool] = False           # validation is long work: the progress bar shows it
    # Submodules of `self.model` loaded from another run's checkpoint by the `frozen_checkpoint` preflight
    # stage (checkpoint/frozen.py). Such a task sets `frozen_source` and saves `checkpoint["frozen"]` =
    # {"source", "always_frozen", "ever_trained"}, which verify.py's stages read.
    frozen_parts: ClassVar[tuple[str, ...]] = ()
    # The family's own preflight stages: name -> stage(ctx) (stages/registry.py), run when its preset's
    # `validation.preflight` names them.
    preflight_stages: ClassVar[dict[str, Callable]] = {}
    train_terms: ClassVar[tuple[str, ...]] = ("loss",)  # the training figures summed over an epoch

    def __init__(self) -> None:
        super().__init__()
        self.epoch_metrics: dict[str, float] = {}
        self._epoch_sums = torch.zeros(len(self.train_terms))
        self._epoch_count = 0

    # ---- what a family implements ----
    def training_loss(self, batch, batch_idx: int) -> torch.Tensor:
        raise NotImplementedError

    def evaluate(self, datamodule, epoch: int) -> dict[str, float]:
        raise NotImplementedError

    def check_outputs(self, batch) -> list[tuple[str, torch.Tensor, tuple]]:
        raise NotImplementedError

    def evaluate_to(self, datamodule, epoch: int, folder) -> dict[str, float]:
        """eval.py: the figures of `evaluate` on this data, and the family's files of them in `folder`
        (a `pathlib.Path`, maybe not yet created). Without files of its own a family inherits this."""
        return self.evaluate(datamodule, epoch)

    # ---- provided ----
    @classmethod
    def monitor(cls, name: str | None = None, mode: str | None = None) -> tuple[str | None, str]:
        """(metric, 'min' | 'max') that picks the best checkpoint: the config's `checkpoint.monitor` when
        set, else the primary metric in its own direction."""
        if name:
            return name, mode or "min"
        return cls.primary_metric, "max" if cls.primary_metric in cls.higher_is_better else "min"

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self.training_loss(batch, batch_idx)

    def add_training_terms(self, terms: torch.Tensor, count: float = 1) -> None:
        """Add one batch's training terms (in `train_terms` order) and its weight (1 per batch, or e.g.
        its tokens when `terms` are already weighted): the epoch reports sums / count."""
        terms = terms.detach().reshape(-1)
        if self._epoch_sums.device != terms.device:
            self._epoch_sums = self._epoch_sums.to(terms.device)
        self._epoch_sums += terms
        self._epoch_count += count

    def training_figures(self, means: list[float], count: float) -> dict[str, float]:
        """The epoch's training figures from the means of `train_terms` (a family may add its own)."""
        return {f"train/{k}": v for k, v in zip(self.train_terms, means)}

    def on_train_epoch_start(self) -> None:
        # Not called when Lightning resumes mid-epoch: the sums loaded from the checkpoint carry on.
        self.epoch_metrics = {}  # an epoch without validation must not inherit the last one's figures
        self._epoch_sums = torch.zeros(len(self.train_terms))
        self._epoch_count = 0

    def on_train_epoch_end(self) -> None:
        sums, count = totals_over_ranks(self, self._epoch_sums, self._epoch_count)  # DDP: every process's share
        train = self.training_figures((sums / max(1, count)).tolist(), count)
        self.epoch_metrics.update(train)
        self.log_dict(train)

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["task_epoch_state"] = {"sums": self._epoch_sums.detach().cpu().clone(), "count": self._epoch_count}

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        state = epoch_state_for_this_rank(self, checkpoint)
        if state is None:
            return
        # Checkpoints written before this contract named the sums and their count per family.
        sums = state.get("sums", state.get("sum"))
        count = next(state[k] for k in ("count", "batches", "tokens") if k in state)
        self._epoch_sums, self._epoch_count = sums.clone().reshape(-1), count
