"""The contract between a family and the framework, in one place.

A family's task is a LightningModule that subclasses `ExperimentTask`. What it implements, what it may
implement, what it gets and what its class attributes mean are the tables below (`IMPLEMENTS`,
`MAY_IMPLEMENT`, `PREDICTS`, `PROVIDED`, `ATTRIBUTES`): the framework checks a task against them before
training (`contract_gaps`, `prediction_gaps`), and docs/FAMILIES.md's tables are generated from them
(`python -m experiments.contract_doc`; a test holds the page equal to what that prints). Evaluation is two
parts the framework runs for training's validation, `verify.py` and `eval.py` alike, so their figures are
equal by construction: `evaluation_step` per batch, `figures` over the collected parts.

Everything else (the epoch sums over batches and DDP processes and their checkpoint state, the validation
hooks, the frozen-part bookkeeping) is provided here, once.
"""

import contextlib
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import lightning as L
import torch

from experiments.epoch_sampler import (
    epoch_state_for_this_rank,
    epoch_state_of_ranks,
    evaluates_batch,
    parts_over_ranks,
    totals_over_ranks,
)
from experiments.errors import UserError

# ---- the contract, as data: method -> (what it returns or does, who runs it) ----
IMPLEMENTS = {
    "training_loss": (
        "scalar `Tensor`, the loss one step minimises; calls `add_training_terms(terms, count)` with the batch's "
        "detached figures in `train_terms` order (a loss never counted stops the run: `train/loss` would read 0)",
        "every training step, the preflight",
    ),
    "configure_optimizers": ("an optimizer (Lightning's forms)", "Lightning, the preflight's `optimizer_step`"),
    "evaluation_step": (
        "any part (e.g. predictions beside targets; picklable: under DDP the parts are gathered from the "
        "processes, each of which evaluated every world_size-th batch); moves the batch to `self.device` itself",
        "each validation batch, `verify.py`, `eval.py`",
    ),
    "figures": (
        "`dict[str, float]`, the metrics of the parts",
        "the end of each validation, `verify.py`'s `metrics`, `eval.py`",
    ),
    "check_outputs": (
        "`list[tuple[name, output Tensor, expected shape]]`: a forward pass on the batch",
        "`verify.py`'s `predicts`",
    ),
}
MAY_IMPLEMENT = {
    "evaluation_files": (
        "`None`: the family's files of an evaluation (pictures, per-output records); during training `folder` is "
        "the run directory, for `eval.py` its result folder",
        "after `figures`, on rank 0",
    ),
    "evaluates": ("`bool`: whether this epoch's validation evaluates (default: every epoch)", "validation"),
    "training_figures": (
        "`dict[str, float]` from the epoch's means of `train_terms` (default: `train/<term>` each)",
        "the end of each training epoch",
    ),
}
PREDICTS = {  # all three, or none (predict.py and load_run(...).predict; the data module then has predict_dataloader())
    "prediction_data": (
        "the data config that reads `path` (a file or a folder of new inputs, answers unknown; `None` when `input=` "
        "is not given: the family's default, or a `UserError` asking for one), as a node of the run's own data "
        "module (`data`, its stored config), so the input gets the checks the family's data gets; its `_target_` "
        "must stay the run's",
        'once, before the data module is built (with the run\'s seed) and `setup("predict")`',
    ),
    "prediction_step": (
        "`list[dict]`: one record per input of a batch of the data module's `predict_dataloader()`, with what "
        "identifies the input (a task id, a clip's name, an operation's index) and the answers; no targets needed",
        "each batch, in eval mode, without gradients",
    ),
    "prediction_files": (
        "`None`: the family's files of the records in `folder` (atomic writers); `prediction.json` is the framework's",
        "`predict.py`, after all batches",
    ),
}
PROVIDED = {  # for a family's own use
    "add_training_terms": ("sums the batch's training figures over the epoch and the DDP processes", "`training_loss`"),
    "evaluation_parts": ("every validation batch's `evaluation_step`, in eval mode", "e.g. pictures of one evaluation"),
    "evaluate": ("the figures of `evaluation_parts`", "`verify.py`'s `metrics`, a family's own stages and scripts"),
    "predictions": ("every batch's `prediction_step` records", "`predict.py`, `load_run(...).predict`"),
    "monitor_of": ("`(metric, 'min' | 'max')` a checkpoint node monitors", "the checkpoint policy, `callbacks`"),
    "mark_trained": ("records that a frozen part trains on purpose from now on", "a family that unfreezes a part"),
}
ATTRIBUTES = {  # class attribute -> what it means
    "primary_metric": "the figure a run stands or falls by; the best checkpoint follows it unless "
    "`checkpoint.monitor` names another",
    "higher_is_better": "how `verify.py` judges each metric against an untrained control, and the direction of a "
    "monitored metric (`checkpoint.mode` is derived from it)",
    "lower_is_better": "as `higher_is_better`, for metrics where less is better",
    "summary_keys": "the figures of the console's epoch line, when present",
    "percent_keys": "... shown as a percentage",
    "count_keys": "... shown as a count, `3/18`: metric -> the figure of the same evaluation holding its denominator",
    "paired_metrics": "metric -> column of the run's `per_output.csv` (which has `task` and `index` columns): a "
    "sweep's per-output paired comparisons",
    "binary_metrics": "paired metrics that also get an exact McNemar test",
    "long_validation": "validation is long work: a progress bar, and lines a minute when the console is not a terminal",
    "frozen_parts": "submodules of `self.model` that the `frozen_checkpoint` stage loads from another run; the "
    "framework refuses to train when they were never loaded",
    "preflight_stages": "`{name: stage(ctx) -> StageResult}`: the family's own checks, run after the framework's "
    "loading stages without being listed in `validation.preflight`",
    "train_terms": 'the names of what `add_training_terms` sums (default `("loss",)`)',
    "evaluation_settings": "the constructor parameters that `task.KEY=VALUE` of `eval.py` and `predict.py` may set: "
    "how the task evaluates, never what it is",
}
REQUIRED = tuple(IMPLEMENTS)
PREDICTING = tuple(PREDICTS)
MIXED = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16}  # Lightning's mixed precisions: autocast dtype


class ExperimentTask(L.LightningModule):
    """A family's task: the contract is this module's tables (docs/FAMILIES.md shows them with types)."""

    summary_keys: ClassVar[tuple[str, ...]] = ()  # shown in the epoch line, when present
    percent_keys: ClassVar[tuple[str, ...]] = ()  # ... as a percentage
    count_keys: ClassVar[dict[str, str]] = {}  # ... as a count: metric -> the figure of how many it is of
    primary_metric: ClassVar[str | None] = None  # the figure a run stands or falls by
    higher_is_better: ClassVar[tuple[str, ...]] = ()
    lower_is_better: ClassVar[tuple[str, ...]] = ()
    paired_metrics: ClassVar[dict[str, str]] = {}  # metric -> column of per_output.csv
    binary_metrics: ClassVar[tuple[str, ...]] = ()
    long_validation: ClassVar[bool] = False  # validation is long work: the progress bar shows it
    frozen_parts: ClassVar[tuple[str, ...]] = ()  # submodules of self.model loaded from another run
    preflight_stages: ClassVar[dict[str, Callable]] = {}
    train_terms: ClassVar[tuple[str, ...]] = ("loss",)  # the training figures summed over an epoch
    evaluation_settings: ClassVar[tuple[str, ...]] = ()  # task parameters eval.py may set (task.KEY=VALUE)

    def __init__(self) -> None:
        super().__init__()
        self.epoch_metrics: dict[str, float] = {}
        self._epoch_sums = torch.zeros(len(self.train_terms))
        self._epoch_count = 0
        self._parts: list = []
        # Where the frozen parts came from (set by the frozen_checkpoint preflight stage) and which of them
        # trained at some point on purpose: kept in every checkpoint for verify.py's frozen_identical.
        self.frozen_source: dict = {}
        self.ever_trained: set[str] = set()
        # The run's trainer.precision, for evaluating outside a Trainer (verify.py, eval.py, predict.py,
        # load_run) as its validation ran inside one: set by StoredRun; None (full precision) otherwise
        self.evaluation_precision: str | None = None

    # ---- what a family implements ----
    def training_loss(self, batch, batch_idx: int) -> torch.Tensor:
        raise NotImplementedError(
            f"{type(self).__name__} must implement training_loss(batch, batch_idx) (docs/FAMILIES.md)"
        )

    def evaluation_step(self, batch, epoch: int) -> Any:
        raise NotImplementedError(
            f"{type(self).__name__} must implement evaluation_step(batch, epoch) (docs/FAMILIES.md)"
        )

    def figures(self, parts: list, epoch: int) -> dict[str, float]:
        raise NotImplementedError(f"{type(self).__name__} must implement figures(parts, epoch) (docs/FAMILIES.md)")

    def check_outputs(self, batch) -> list[tuple[str, torch.Tensor, tuple]]:
        raise NotImplementedError(f"{type(self).__name__} must implement check_outputs(batch) (docs/FAMILIES.md)")

    def evaluation_files(
        self, parts: list, figures: dict[str, float], folder: Path, epoch: int, during_training: bool, datamodule=None
    ) -> None:
        """The family's files of an evaluation (none by default); `datamodule` is the one evaluated."""

    def evaluates(self, epoch: int) -> bool:
        """Whether this epoch's validation evaluates (an expensive evaluation may skip epochs)."""
        return True

    # ---- what a family implements to predict (optional: all three) ----
    def prediction_data(self, data: dict, path: Path | None) -> dict:
        """The data config (a node of the run's own data module, `data`) that reads `path` for prediction."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement prediction_data(data, path) to predict (docs/FAMILIES.md)"
        )

    def prediction_step(self, batch) -> list[dict]:
        """One batch of the prediction data module's `predict_dataloader()`: a record per input."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement prediction_step(batch) to predict (docs/FAMILIES.md)"
        )

    def prediction_files(self, records: list[dict], folder: Path, datamodule) -> None:
        """The family's files of the predictions in `folder`."""
        raise NotImplementedError(
            f"{type(self).__name__} must implement prediction_files(records, folder, "
            f"datamodule) to predict (docs/FAMILIES.md)"
        )

    # ---- provided: the contract, checked ----
    @classmethod
    def contract_gaps(cls) -> list[str]:
        """The required methods a family's task does not implement (checked before training)."""
        # (ExperimentTask leaves configure_optimizers to Lightning's: the same object when not implemented)
        return [name for name in REQUIRED if getattr(cls, name) is getattr(ExperimentTask, name, None)]

    @classmethod
    def prediction_gaps(cls) -> list[str]:
        """The prediction methods a family's task does not implement: all three when it does not predict."""
        return [name for name in PREDICTING if getattr(cls, name) is getattr(ExperimentTask, name)]

    @classmethod
    def load_from_checkpoint(cls, checkpoint_path, map_location=None, **kwargs):
        """Lightning's way to load a module: here through `experiments.load_run` (the checkpoint read as data,
        its config building only what the config folders register: the built-in families' and the `conf/`
        beside this class's module), on `map_location` ('cpu' by default), in eval mode."""
        if kwargs:
            raise UserError(
                f"{cls.__name__}.load_from_checkpoint takes the path and map_location only (a run's "
                f"model and settings come from its checkpoint): from experiments import load_run; "
                f"load_run(PATH, device=...)"
            )
        import inspect

        from experiments.api import load_run

        own = Path(inspect.getfile(cls)).parent / "conf"  # a family's config folder sits beside its modules
        task = load_run(
            checkpoint_path, device=str(map_location or "cpu"), config_dir=own if own.is_dir() else None
        ).task
        if not isinstance(task, cls):
            raise UserError(
                f"{checkpoint_path} holds a {type(task).__name__}, not a {cls.__name__}: "
                f"from experiments import load_run; load_run(PATH) loads any run"
            )
        return task

    @classmethod
    def monitor(cls, name: str | None = None, mode: str | None = None) -> tuple[str | None, str]:
        """(metric, 'min' | 'max') that picks the best checkpoint: the config's `checkpoint.monitor` when
        set, else the primary metric. The direction of the primary metric is the family's
        (`higher_is_better` / `lower_is_better`); that of a named monitor `checkpoint.mode` when set, else
        the family's too."""
        if mode not in (None, "min", "max"):
            raise UserError(f"checkpoint.mode must be 'min' or 'max' (or null: the family's direction), got {mode!r}")
        if name and mode:
            return name, mode
        name = name or cls.primary_metric
        direction = (
            "max" if name in cls.higher_is_better else "min" if name in cls.lower_is_better or name is None else None
        )
        if direction and mode and mode != direction:  # a mode without a monitor would keep the worst checkpoint
            raise UserError(
                f"checkpoint.mode={mode} contradicts {cls.__name__}: higher is "
                f"{'better' if direction == 'max' else 'worse'} for {name}; leave checkpoint.mode null "
                f"or name the metric it is meant for in checkpoint.monitor"
            )
        if direction:
            return name, direction
        raise UserError(
            f"checkpoint.monitor={name}: {cls.__name__} does not say whether higher or lower is better "
            f"for it; give checkpoint.mode=min or checkpoint.mode=max"
        )

    @classmethod
    def monitor_of(cls, checkpoint) -> tuple[str | None, str]:
        """`monitor` for a config's `checkpoint` node (its `monitor` and `mode`; either may be absent)."""
        checkpoint = checkpoint or {}
        return cls.monitor(checkpoint.get("monitor"), checkpoint.get("mode"))

    # ---- provided: training ----
    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        counted = self._epoch_count
        loss = self.training_loss(batch, batch_idx)
        if self._epoch_count == counted:
            raise UserError(
                f"{type(self).__name__}.training_loss did not call add_training_terms(...): the epoch's "
                f"train/loss would read 0 (docs/FAMILIES.md)"
            )
        return loss

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

    def on_train_start(self) -> None:
        # The frozen_checkpoint stage is the only door to training on frozen parts: a config that dropped it
        # must not train on random parts in silence (the failure this framework was built against).
        if self.frozen_parts and not self.frozen_source:
            raise UserError(
                "the frozen parts were never loaded: keep the frozen_checkpoint stage in validation.preflight"
            )

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

    # ---- provided: evaluation (training's validation, verify.py, eval.py) ----
    def on_validation_epoch_start(self) -> None:
        self._parts = []

    def validation_step(self, batch, batch_idx: int) -> None:
        # DDP: each process evaluates its share of the batches (every world_size-th); the epoch's end
        # gathers them back in batch order, so the figures are those of one process evaluating them all
        if self.evaluates(self.current_epoch) and evaluates_batch(self.trainer, batch_idx):
            self._parts.append((batch_idx, self.evaluation_step(batch, self.current_epoch)))

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking or not self.evaluates(self.current_epoch):
            return
        parts = parts_over_ranks(self, self._parts)
        figures = self.figures(parts, self.current_epoch)
        self.epoch_metrics.update(figures)
        self.log_dict(figures)
        if self.trainer.is_global_zero:  # DDP: every process has every part; one writes
            self.evaluation_files(
                parts,
                figures,
                Path(self.trainer.default_root_dir),
                self.current_epoch,
                during_training=True,
                datamodule=self.trainer.datamodule,
            )
        self._parts = []

    @torch.no_grad()
    def evaluate(self, datamodule, epoch: int) -> dict[str, float]:
        """The validation figures of `epoch` on the data module's validation data, outside a Trainer (verify.py,
        the preflight); writes nothing."""
        return self.figures(self.evaluation_parts(datamodule, epoch), epoch)

    @torch.no_grad()
    def evaluate_to(self, datamodule, epoch: int, folder: Path) -> dict[str, float]:
        """eval.py: the figures of `evaluate`, and the family's files of them in `folder`."""
        parts = self.evaluation_parts(datamodule, epoch)
        figures = self.figures(parts, epoch)
        self.evaluation_files(parts, figures, Path(folder), epoch, during_training=False, datamodule=datamodule)
        return figures

    @torch.no_grad()
    def predictions(self, datamodule) -> list[dict]:
        """`prediction_step` of every batch of `datamodule.predict_dataloader()`, in eval mode: the records, in
        order."""
        was_training = self.training
        self.eval()
        with self.autocast():
            records = [r for batch in datamodule.predict_dataloader() for r in self.prediction_step(batch)]
        self.train(was_training)
        return records

    def evaluation_parts(self, datamodule, epoch: int) -> list:
        """`evaluation_step` of every validation batch of `datamodule`, in eval mode (a family may call it to
        draw more from the same evaluation, e.g. its own pictures)."""
        was_training = self.training
        self.eval()
        with self.autocast():
            parts = [self.evaluation_step(batch, epoch) for batch in datamodule.val_dataloader()]
        self.train(was_training)
        return parts

    def autocast(self):
        """Outside a Trainer, the mixed precision the run's validation ran under (`evaluation_precision`:
        bf16-mixed, 16-mixed), as Lightning's precision plugin autocasts it; inside one, Lightning's own."""
        precision = str(self.evaluation_precision or "")
        if self._trainer is not None or precision not in MIXED:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=MIXED[precision])

    # ---- provided: frozen parts ----
    def mark_trained(self, part: str) -> None:
        """A frozen part that now trains on purpose (verify.py then does not hold it byte-identical)."""
        self.ever_trained.add(part)

    def always_frozen(self) -> list[str]:
        """The frozen parts that have not trained at any point of this run."""
        return [
            p
            for p in self.frozen_parts
            if p not in self.ever_trained and not any(q.requires_grad for q in getattr(self.model, p).parameters())
        ]

    # ---- provided: what travels in every checkpoint ----
    def on_save_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["task_epoch_state"] = epoch_state_of_ranks(self, self._epoch_sums, self._epoch_count)
        if self.frozen_parts:
            checkpoint["frozen"] = {
                "source": dict(self.frozen_source),
                "ever_trained": sorted(self.ever_trained),
                "always_frozen": self.always_frozen(),
            }

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        frozen = checkpoint.get("frozen")
        if self.frozen_parts and isinstance(frozen, dict):
            self.frozen_source = dict(frozen.get("source") or {})
            self.ever_trained = set(frozen.get("ever_trained") or [])
        state = epoch_state_for_this_rank(self, checkpoint)
        if state is None:
            return
        # Checkpoints written before this contract named the sums and their count per family.
        sums = state.get("sums", state.get("sum"))
        count = next(state[k] for k in ("count", "batches", "tokens") if k in state)
        self._epoch_sums, self._epoch_count = sums.clone().reshape(-1), count
