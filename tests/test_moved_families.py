"""Checkpoints and run directories written before the families moved into their folders (their classes
under the old paths, `experiments.models...`, `experiments.tasks...`) still verify, evaluate and resume:
each family's `families/<name>/conf/renamed_targets.yaml` maps the old paths to the current ones, through the same check
every stored config passes (untrusted.py)."""

import shutil

import pytest
import torch
import yaml

from conftest import FAST, ROOT, in_process, run_program
from experiments.checkpoint.io import save_checkpoint
from experiments.untrusted import registry

pytestmark = pytest.mark.slow  # a Ternary run trained, then verified and evaluated under its old class paths

FAMILIES = ROOT / "src" / "experiments" / "families"


def old_paths() -> dict:
    """{current path: the path checkpoints of the previous layout name}, from every family's file."""
    renamed = registry([str(conf) for conf in sorted(FAMILIES.glob("*/conf"))]).renamed
    moved = {old: new for old, new in renamed.items() if "families" not in old}  # not a rename inside a family
    assert len(moved) == 16 and all(old.startswith("experiments.") for old in moved)
    return {new: old for old, new in moved.items()}


def as_before(config, old: dict):
    if isinstance(config, dict):
        return {k: old.get(v, v) if k == "_target_" else as_before(v, old) for k, v in config.items()}
    return config


def test_an_old_checkpoint_verifies_and_evaluates(ternary_run, tmp_path):
    old = old_paths()
    ckpt = torch.load(ternary_run / "checkpoints" / "epoch=0006.ckpt", weights_only=True)
    ckpt["config"] = as_before(ckpt["config"], old)
    assert ckpt["config"]["model"]["_target_"] == "experiments.models.ternary_vae_v5_5.DualVAE"
    save_checkpoint(ckpt, tmp_path / "old.ckpt")
    r = run_program(
        "verify.py", f"ckpt={tmp_path / 'old.ckpt'}", "stages=[loadable,restorable,predicts,metrics]", cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    e = run_program("eval.py", f"ckpt={tmp_path / 'old.ckpt'}", f"out={tmp_path / 'eval'}", cwd=tmp_path)
    assert e.returncode == 0, e.stdout + e.stderr
    assert (tmp_path / "eval" / "metrics.json").is_file()
    assert (tmp_path / "eval" / "latent.png").stat().st_size > 10_000  # the family's picture, drawn by eval.py too


def test_an_old_run_directory_is_recognised_as_the_same_run(ternary_run, tmp_path):
    """Its run.yaml names the old paths: the same command finds the same run (complete), not another."""
    run = tmp_path / "outputs" / "ternary_v5_5" / ternary_run.name
    shutil.copytree(ternary_run, run)
    stored = yaml.safe_load((run / "run.yaml").read_text())
    (run / "run.yaml").write_text(yaml.safe_dump(as_before(stored, old_paths()), sort_keys=False))
    assert "experiments.tasks.ternary.TernaryVAETask" in (run / "run.yaml").read_text()
    r = in_process(
        "train.py",
        *FAST,
        "trainer.max_epochs=6",
        "checkpoint.every_n_epochs=2",
        "task.coverage_samples=19683",
        cwd=tmp_path,
    )  # (trains nothing: the run is complete)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Run already complete (epoch 6)" in r.stdout
