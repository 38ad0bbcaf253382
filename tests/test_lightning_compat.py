"""What Lightning and its loggers expect of a checkpoint callback, and the run's history.csv: a run
built exactly as train.py builds it (assemble.py), fitted in this process."""

import csv

import pytest
import torch
from hydra import compose, initialize_config_dir
from lightning.pytorch.loggers.logger import Logger

from conftest import ROOT
from experiments.assemble import build, build_trainer, plain_config
from experiments.config_schema import register


class RecordingLogger(Logger):
    """Keeps what the checkpoint callback showed it after each save."""

    def __init__(self):
        super().__init__()
        self.saves = []

    name, version = "recording", "0"

    def log_metrics(self, metrics, step=None):
        pass

    def log_hyperparams(self, params, *args, **kwargs):
        pass

    def after_save_checkpoint(self, checkpoint_callback):
        self.saves.append(
            (
                checkpoint_callback.last_model_path,
                checkpoint_callback.best_model_path,
                checkpoint_callback.best_model_score,
            )
        )


@pytest.fixture(scope="module")
def fitted(tmp_path_factory):
    register()
    run_dir = tmp_path_factory.mktemp("run")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=ternary_v5_5",
                "logger=none",
                "data.batch_size=256",
                "task.coverage_samples=2000",
                "trainer.max_epochs=3",
                "trainer.enable_progress_bar=false",
            ],
        )
    datamodule, model, task = build(cfg)
    trainer, policy = build_trainer(cfg, run_dir, plain_config(cfg), task)
    recorder = RecordingLogger()
    trainer.loggers = [recorder]
    trainer.fit(task, datamodule=datamodule)
    return run_dir, trainer, policy, task, datamodule, recorder


def test_history_csv_rows_equal_the_checkpoint_history(fitted):
    run_dir, *_ = fitted
    history = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["history"]
    rows = list(csv.DictReader(open(run_dir / "history.csv")))
    assert len(rows) == len(history) == 3
    for row, expected in zip(rows, history):
        assert set(row) == set(expected)
        # epochs as users count them (from 1); inside a checkpoint they count as Lightning does (from 0)
        assert {k: float(v) for k, v in row.items()} == {
            **{k: float(v) for k, v in expected.items()},
            "epoch": expected["epoch"] + 1.0,
        }


def test_validate_with_ckpt_path_best_loads_the_best_checkpoint(fitted):
    run_dir, trainer, policy, task, datamodule, _ = fitted
    history = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)["history"]
    best = min(history, key=lambda row: row["val/ce"])  # the default run's monitor: val/ce, minimised
    assert policy.best_model_path == str(run_dir / "checkpoints" / f"best-epoch={best['epoch'] + 1:04d}.ckpt")
    assert policy.best_model_score.item() == pytest.approx(best["val/ce"])
    with torch.no_grad():  # whatever the task holds now, "best" must load the file's weights
        for parameter in task.parameters():
            parameter.zero_()
    (metrics,) = trainer.validate(task, datamodule=datamodule, ckpt_path="best", verbose=False)
    assert trainer.ckpt_path == policy.best_model_path and "val/ce" in metrics
    saved = torch.load(policy.best_model_path, weights_only=True)["state_dict"]
    assert all(torch.equal(v, saved[k]) for k, v in task.state_dict().items())  # validated the best weights


def test_loggers_hear_of_every_save_with_the_paths(fitted):
    run_dir, *_, recorder = fitted
    assert len(recorder.saves) == 3  # one write per epoch (last.ckpt, with best and epoch files as copies)
    last, best, score = recorder.saves[-1]
    assert last == str(run_dir / "checkpoints" / "last.ckpt") and best.startswith(str(run_dir / "checkpoints"))
    assert score is not None
