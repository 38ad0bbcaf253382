"""init_from=PATH: a new run starts from another run's weights, checked before training: the same task,
weights that fit (or init_strict=false, naming what is left out); never a resume of that run."""

import pytest
import torch

from conftest import SINE, in_process, one_error_line
from experiments.checkpoint.io import save_checkpoint


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("source")
    r = in_process("train.py", *SINE, "trainer.max_epochs=3", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    return root / "outputs" / "sine" / "trainer.max_epochs=3"


def test_a_run_starts_from_the_given_weights(source, tmp_path):
    # lr 0: the one epoch changes nothing, so the new run's weights are the ones it started from
    r = in_process(
        "train.py",
        *SINE,
        f"init_from={source}",
        "task.lr=0",
        "trainer.max_epochs=1",
        "validation.preflight=[config]",
        cwd=tmp_path,
    )  # (the optimizer_step stage refuses lr 0)
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"Initialised from {source / 'checkpoints' / 'last.ckpt'} (epoch 3" in r.stdout
    (run,) = (tmp_path / "outputs" / "sine").iterdir()
    assert "init_from=" in run.name  # where it started is part of the run's identity
    started = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    given = torch.load(source / "checkpoints" / "last.ckpt", weights_only=True)
    assert started["config"]["init_from"] == str(source) and started["epoch"] == 0  # its own epochs, from 1
    for key, value in given["state_dict"].items():
        assert torch.equal(started["state_dict"][key], value), key


def test_another_tasks_checkpoint_is_refused(source, tmp_path):
    other = torch.load(source / "checkpoints" / "last.ckpt", weights_only=True)
    other["config"]["task"]["_target_"] = "experiments.families.arc.task.ArcTask"
    save_checkpoint(other, tmp_path / "arc.ckpt")
    r = in_process("train.py", *SINE, f"init_from={tmp_path / 'arc.ckpt'}", cwd=tmp_path)
    assert r.returncode == 2
    line = one_error_line(r)  # the stored name is data: shown quoted and shortened
    # (ArcTask, the class's name until 2026-12, is read as the class it became)
    stored = "'experiments.families.arc.task.ArcLightningTask'"
    assert f"a checkpoint of {stored}, and this run trains examples.sine.task.SineTask" in line
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("*.ckpt"))


def test_weights_that_do_not_fit_are_refused_or_loaded_where_they_fit(source, tmp_path):
    wider = [*SINE, f"init_from={source}", "model.depth=3", "trainer.max_epochs=1"]
    r = in_process("train.py", *wider, cwd=tmp_path)
    assert r.returncode == 2 and "its weights do not fit this model (missing model." in one_error_line(r)
    r = in_process("train.py", *wider, "init_strict=false", "preflight_only=true", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    line = next(x for x in r.stdout.splitlines() if x.startswith("Initialised from"))
    assert "left as initialised (init_strict=false): model." in line, line
