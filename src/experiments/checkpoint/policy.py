"""When checkpoints are written and what each one holds.

Every `every_n_epochs` epochs, the final epoch always (so the last checkpoint matches the last history
entry), `last.ckpt` every `last_every_n_epochs` epochs and whenever another file is written, optionally
the `save_top_k` best by `monitor`, and one on SIGTERM. A run killed without warning redoes at most
`last_every_n_epochs` epochs.
Besides Lightning's own keys, each checkpoint holds only plain values and tensors:
`config` (the composed config), `history` (one row of metrics per finished epoch), `rng`, `framework`
(name, version, git commit, library versions) and `run` (finished / preempted flags).
"""

import math
import random
import re
import time
from pathlib import Path
from weakref import proxy

import lightning
import numpy as np
import torch
from lightning.pytorch.callbacks import Checkpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException

import experiments
from experiments import run_dir as rd
from experiments.atomic import atomic_write_csv
from experiments.callbacks import console_print, summary_line
from experiments.checkpoint.io import copy_checkpoint, sidecar
from experiments.commit import checkout_commit
from experiments.epoch_sampler import at_limit
from experiments.errors import UserError
from experiments.run_dir import LAST
from experiments.stop import StopRequest, preempted, stop_lightning


def epoch_name(epoch: int, prefix: str = "") -> str:
    """The file of an epoch (Lightning's, from 0) as users count it (from 1): `epoch=0020.ckpt` is the 20th."""
    return f"{prefix}epoch={rd.epoch_number(epoch):04d}.ckpt"


def history_rows(history: list[dict]) -> list[dict]:
    """history.csv: the checkpoint's history rows, epochs counted as users count them (from 1)."""
    return [{**row, "epoch": rd.epoch_number(row["epoch"])} for row in history]


def git_commit() -> str:
    """The framework's git commit ('+dirty' when the tree has uncommitted changes), or 'unknown': recorded
    in the package when it was built (an installed copy, setup.py), else asked of the checkout it runs from."""
    package = Path(__file__).resolve().parents[1]
    if (package / "BUILD_COMMIT").is_file():
        return (package / "BUILD_COMMIT").read_text().strip() or "unknown"
    return checkout_commit(package.parents[1])


def framework_info() -> dict:
    return {
        "name": "experiments",
        "version": experiments.__version__,
        "git_commit": git_commit(),
        "torch": str(torch.__version__),
        "lightning": str(lightning.__version__),
    }


def rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {
        "python": list(random.getstate()[1]) + [random.getstate()[0]],
        "numpy": {
            "keys": torch.from_numpy(keys.astype(np.int64)),
            "pos": int(pos),
            "has_gauss": int(has_gauss),
            "gauss": float(gauss),
        },
        "torch": torch.get_rng_state(),
    }


def restore_rng_state(state: dict) -> None:
    py = state["python"]
    random.setstate((py[-1], tuple(py[:-1]), None))
    n = state["numpy"]
    np.random.set_state(("MT19937", n["keys"].numpy().astype(np.uint32), n["pos"], n["has_gauss"], n["gauss"]))
    torch.set_rng_state(state["torch"])


class CheckpointPolicy(Checkpoint):
    def __init__(
        self,
        dirpath: str,
        every_n_epochs: int = 1,
        save_last: bool = True,
        save_top_k: int = 0,
        monitor: str | None = None,
        mode: str | None = "min",
        last_every_n_epochs: int = 1,
        run_config: dict | None = None,
    ):
        for key, value in (("every_n_epochs", every_n_epochs), ("last_every_n_epochs", last_every_n_epochs)):
            if value < 1:
                raise UserError(f"checkpoint.{key} must be >= 1, got {value}")
        if mode not in ("min", "max"):
            raise UserError(f"checkpoint.mode must be 'min' or 'max', got {mode!r}")
        if save_top_k > 0 and not monitor:
            raise UserError("checkpoint.save_top_k > 0 needs checkpoint.monitor (a metric name)")
        self.dirpath = Path(dirpath)
        self.every_n_epochs, self.save_last, self.last_every_n_epochs = every_n_epochs, save_last, last_every_n_epochs
        self.save_top_k, self.monitor, self.mode = save_top_k, monitor, mode
        self.config = run_config or {}
        self.framework = framework_info()
        self.history: list[dict] = []
        self.best: list[dict] = []  # [{"score", "epoch", "path"}], best first
        self._finished = False
        self._preempted = False
        self._last_saved_step = -1
        self._epoch_t0 = time.perf_counter()
        self.stop = StopRequest()  # Ctrl-C's (stop.py): the stop is the user's, not SIGTERM's

    @property
    def state_key(self) -> str:
        return "CheckpointPolicy"

    # ---- what goes into every checkpoint ----
    def state_dict(self) -> dict:
        return {"best": [dict(b) for b in self.best]}

    def load_state_dict(self, state: dict) -> None:
        """The kept best checkpoints, as saved. A checkpoint is data: an entry that is not one of this
        policy's own files (`best-epoch=NNNN.ckpt` in its folder, a finite score, an epoch) is dropped, since
        an evicted entry's file is deleted."""
        self.best = [dict(b) for b in state.get("best", []) if self._own_best(b)]

    @staticmethod
    def _own_best(entry) -> bool:
        return (
            isinstance(entry, dict)
            and isinstance(entry.get("path"), str)
            and re.fullmatch(r"best-epoch=\d{4,}\.ckpt", entry["path"]) is not None
            and isinstance(entry.get("epoch"), int)
            and isinstance(entry.get("score"), (int, float))
            and math.isfinite(entry["score"])
        )

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        checkpoint["config"] = self.config
        checkpoint["history"] = [dict(row) for row in self.history]
        checkpoint["rng"] = rng_state()
        checkpoint["framework"] = self.framework
        checkpoint["run"] = {"finished": self._finished, "preempted": self._preempted}

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict) -> None:
        self.history = [dict(row) for row in checkpoint.get("history", [])]
        if "rng" in checkpoint:
            restore_rng_state(checkpoint["rng"])

    # ---- when ----
    def on_train_start(self, trainer, pl_module) -> None:
        self._epoch_t0 = time.perf_counter()  # a mid-epoch resume has no epoch start: its epoch's time is since here

    def on_train_epoch_start(self, trainer, pl_module) -> None:
        self._epoch_t0 = time.perf_counter()

    def on_train_epoch_end(self, trainer, pl_module) -> None:
        # A Checkpoint callback runs after the task's own on_train_epoch_end, so the task's
        # epoch_metrics are complete here: record the history row, print it, then write.
        if trainer.sanity_checking:
            return
        row = self._record(trainer, pl_module)
        if trainer.fast_dev_run:  # debug=fast_dev_run: a trial of the code paths, not a run to keep or resume
            return
        self._finished = self._is_final(trainer, row["epoch"])
        names, evicted = self._files_of(row)
        self._write(trainer, names)
        if self.stop.requested or preempted(trainer):  # Ctrl-C or the cluster's warning: Lightning stops at the end
            stop_lightning(trainer, not self._finished)  # of this epoch (logged), unless it was the last
        if not trainer.is_global_zero:  # DDP: one process owns the files
            return
        for name in evicted:  # only after the new checkpoint is safely on disk
            for p in (self.dirpath / name, sidecar(self.dirpath / name)):
                p.unlink(missing_ok=True)
        atomic_write_csv(history_rows(self.history), self.history_path)  # whatever the logger

    def _record(self, trainer, pl_module) -> dict:
        """The epoch's history row (replacing a row of the same epoch a resume redid), printed on rank 0."""
        epoch = trainer.current_epoch
        row = {"epoch": epoch, "global_step": trainer.global_step}
        row.update({k: float(v) for k, v in pl_module.epoch_metrics.items()})
        row["time/epoch_s"] = time.perf_counter() - self._epoch_t0
        self.history = [r for r in self.history if r["epoch"] < epoch] + [row]
        if trainer.is_global_zero:
            console_print(trainer, summary_line(row, type(pl_module), trainer.max_epochs))
        return row

    def _files_of(self, row: dict) -> tuple[list[str], list[str]]:
        """(the checkpoint names this epoch writes, those evicted from the top k)."""
        epoch = row["epoch"]
        names = [epoch_name(epoch)] if (epoch + 1) % self.every_n_epochs == 0 or self._finished else []
        best, evicted = self._update_top_k(row)
        names += best
        if self.save_last and ((epoch + 1) % self.last_every_n_epochs == 0 or self._finished or names):
            names.append(LAST)  # whenever anything is written, last.ckpt is the newest state
        return names, evicted

    @staticmethod
    def _is_final(trainer, epoch: int) -> bool:
        return at_limit(trainer, epoch) or trainer.should_stop

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx: int) -> None:
        # Ctrl-C or the cluster's warning (stop.py): acted on here rather than in the signal handler (Lightning
        # clears its flag while the fit starts); the fit ends after this batch with its loop state complete
        if self.stop.requested or preempted(trainer):
            stop_lightning(trainer)

    def on_exception(self, trainer, pl_module, exception: BaseException) -> None:
        # Cluster preemption or Ctrl-C (stop.py): Lightning raises SIGTERMException after the
        # current batch, its loop state complete.
        if (
            isinstance(exception, SIGTERMException)
            and trainer.global_step != self._last_saved_step
            and not trainer.fast_dev_run
        ):  # a trial keeps nothing to resume
            self._preempted = True
            self._write(trainer, [LAST])
            self._preempted = False

    def _update_top_k(self, row: dict) -> tuple[list[str], list[str]]:
        """Returns (names to write, names evicted from the top k)."""
        if self.save_top_k <= 0:
            return [], []
        if self.monitor not in row:  # an epoch without evaluation, or a typo: say so if it never appears
            if self._finished and not any(self.monitor in r for r in self.history):
                print(
                    f"warning: checkpoint.monitor={self.monitor!r} appeared in no epoch's metrics "
                    f"{sorted(k for k in row if k not in ('epoch', 'global_step'))}; no best checkpoint was kept",
                    flush=True,
                )
            return [], []
        score = row[self.monitor]
        sign = 1 if self.mode == "min" else -1
        candidates = sorted(
            self.best + [{"score": score, "epoch": row["epoch"], "path": None}],
            key=lambda b: (sign * b["score"], b["epoch"]),
        )
        keep, dropped = candidates[: self.save_top_k], candidates[self.save_top_k :]
        name = None
        for b in keep:
            if b["path"] is None:
                name = b["path"] = epoch_name(row["epoch"], prefix="best-")
        self.best = keep
        return ([name] if name else []), [b["path"] for b in dropped if b["path"]]

    def _write(self, trainer, names: list[str]) -> None:
        if not names:
            return
        first = self.dirpath / names[0]
        trainer.save_checkpoint(first, weights_only=False)  # the full training state (written by rank 0 only)
        for name in names[1:] if trainer.is_global_zero else ():
            copy_checkpoint(first, self.dirpath / name)
        self._last_saved_step = trainer.global_step
        for logger in trainer.loggers:  # e.g. wandb's model upload (log_model) looks at the paths below
            logger.after_save_checkpoint(proxy(self))

    @property
    def last_path(self) -> Path:
        return self.dirpath / LAST

    @property
    def best_path(self) -> Path | None:
        return self.dirpath / self.best[0]["path"] if self.best else None

    @property
    def history_path(self) -> Path:
        return rd.history_csv(rd.run_of(self.dirpath))

    # ---- what Lightning and its loggers read from a checkpoint callback (ModelCheckpoint's names) ----
    @property
    def best_model_path(self) -> str:
        """The best checkpoint by `monitor` ('' when none is kept): `trainer.validate(ckpt_path="best")`."""
        return str(self.best_path) if self.best_path else ""

    @property
    def best_model_score(self) -> torch.Tensor | None:
        return torch.tensor(self.best[0]["score"]) if self.best else None

    @property
    def last_model_path(self) -> str:
        return str(self.last_path) if self.last_path.exists() else ""

    @property
    def current_score(self) -> torch.Tensor | None:
        score = self.history[-1].get(self.monitor) if self.history and self.monitor else None
        return None if score is None else torch.tensor(score)

    @property
    def best_k_models(self) -> dict[str, torch.Tensor]:
        return {str(self.dirpath / b["path"]): torch.tensor(b["score"]) for b in self.best}
