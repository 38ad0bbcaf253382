"""logger=mlflow: a local store under the run directory (no server), one MLflow run per run directory across a
SIGKILL and the resume, the run's name and directory tag, the config as parameters and whole, every epoch's
figures, the pictures as images."""
import importlib.util
import signal
import time

import torch
import yaml

from conftest import in_process, one_error_line, ROOT, start_train, wait_for
from experiments.loggers import MLFlowLogger, RUN_DIR_TAG, stable_id

ARGS = ["--config-dir", str(ROOT / "examples" / "sine" / "conf"), "experiment=sine", "logger=mlflow",
        "trainer.max_epochs=40", "trainer.enable_progress_bar=false"]
FINISHED = 3  # MLflow's RunStatus.FINISHED, as its file store writes it


def runs_in(store):
    """{run id: run folder} of every run in a file store's experiments."""
    return {r.name: r for e in store.iterdir() if e.is_dir() and e.name not in (".trash", "0")
            for r in e.iterdir() if r.is_dir()}


def logged(run_folder, key) -> list[tuple[int, float]]:
    """(step, value) of every entry of a metric, in the order logged."""
    rows = [line.split() for line in (run_folder / "metrics" / key).read_text().splitlines()]
    return [(int(step), float(value)) for _, value, step in rows]


def test_one_mlflow_run_per_run_directory_across_a_kill_with_config_figures_and_pictures(tmp_path):
    run = tmp_path / "outputs" / "sine" / "trainer.max_epochs=40"  # the logger is not part of the identity
    proc = start_train(*ARGS, cwd=tmp_path)
    wait_for(run / "checkpoints" / "last.ckpt", proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["run"]["finished"]
    (killed_id,) = runs_in(run / "mlruns")  # the killed start made the run
    again = in_process("train.py", *ARGS, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"MLflow: `mlflow ui --backend-store-uri {run}/mlruns`" in again.stdout
    assert "not found. Creating it" not in again.stdout + again.stderr

    runs = runs_in(run / "mlruns")
    assert list(runs) == [killed_id], "the resumed start continued the killed start's run"
    folder = runs[killed_id]
    meta = yaml.safe_load((folder / "meta.yaml").read_text())
    assert meta["run_name"] == "sine/trainer.max_epochs=40" and meta["status"] == FINISHED
    assert (folder / "tags" / RUN_DIR_TAG).read_text() == stable_id(str(run))

    # every epoch's figures, counted from 1; an epoch logged by both starts (the kill fell after its figures,
    # before its checkpoint) carries the same value twice: the resume is exact
    epochs = logged(folder, "epoch")
    assert sorted({int(value) for _, value in epochs}) == list(range(1, 41))
    for key in ("val/r2", "train/loss"):
        entries = logged(folder, key)
        by_step = {}
        for step, value in entries:
            by_step.setdefault(step, set()).add(value)
        assert len(by_step) == 40 and all(len(values) == 1 for values in by_step.values()), key
    history = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["history"]
    assert [v for _, (v,) in sorted(by_step.items())] == [row["train/loss"] for row in history]

    config = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["config"]
    assert yaml.safe_load((folder / "artifacts" / "config.yaml").read_text()) == config
    assert (folder / "params" / "trainer" / "max_epochs").read_text() == "40"
    assert (folder / "params" / "experiment").read_text() == "sine"
    assert [p for p in (folder / "artifacts" / "images").glob("fit+step+*.png")], "the fit picture as an image"


def test_a_figure_named_with_at_is_logged_with_at_spelled_out(tmp_path):
    logger = MLFlowLogger(save_dir=str(tmp_path))
    logger.log_metrics({"arc/exact_output@2": 0.25}, step=3)
    (folder,) = runs_in(tmp_path / "mlruns").values()
    assert logged(folder, "arc/exact_output_at2") == [(3, 0.25)]


def test_without_mlflow_a_run_is_refused_in_one_line_before_anything_runs(tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "mlflow" else real(name, *a))
    r = in_process("train.py", *ARGS, cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert one_error_line(r) == ("error: logger: experiments.loggers.MLFlowLogger needs mlflow, which is not "
                                 "installed: pip install -e '.[mlflow]' (or pip install mlflow-skinny)")
    assert "preflight" not in r.stdout and not (tmp_path / "outputs").exists()  # refused before anything ran
