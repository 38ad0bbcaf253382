"""ARC's data order resumes exactly: length-bucketed batches and augmentations drawn per (seed, epoch,
example), with evaluations in between; a run killed with SIGKILL and started again ends bit-identical to
one never interrupted, test-time training at every evaluation included (the framework's resume itself is
tested on the smallest family: tests/test_resume.py)."""

import json

import pytest
import torch

from conftest import assert_identical, in_process, killed_then_rerun, run_name, run_program

pytestmark = pytest.mark.slow  # ARC runs killed and resumed with test-time training

ARGS = [
    "experiment=exp3_champion",
    "data=arc_tiny",
    "data.batch_size=4",
    "data.bucket_window=2",
    "trainer.max_epochs=12",
    "checkpoint.last_every_n_epochs=1",
    "task.eval_every_n_epochs=4",
    "task.ttt.steps=4",
    "task.ttt.periodic=true",
    "task.ranking=poe",
    "task.eval_augmentations=2",
    "task.train_exact=false",
    "logger=none",
    "trainer.enable_progress_bar=false",
]
RUN = "outputs/exp3_champion/" + run_name(ARGS)


def final(root):
    ckpt = torch.load(root / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["run"]["finished"] and ckpt["epoch"] == 11
    return ckpt


def test_sigkill_then_rerun_is_bit_identical(tmp_path):
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    ref_dir.mkdir(), killed_dir.mkdir()
    done = in_process("train.py", *ARGS, cwd=ref_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    killed_then_rerun(ARGS, killed_dir / RUN, killed_dir, delay=1.0)
    assert_identical(final(killed_dir), final(ref_dir))
    # verify.py on the resumed run, test-time training on: the replay is exact, the evaluation recomputed
    # (its `progress` and `metrics` stages may fail: 12 epochs on 4 tasks need not beat the control, which is
    # fine-tuned too)
    r = run_program("verify.py", f"ckpt={killed_dir / RUN}", cwd=killed_dir)
    (report,) = (killed_dir / RUN / "checkpoints" / "verification").glob("*.json")
    stages = {s["name"]: s for s in json.loads(report.read_text())["stages"]}
    assert stages["resume_exact"]["status"] == "pass" and "bit-identical" in stages["resume_exact"]["details"], r.stdout
    assert "time/ttt_s_per_task" in stages["metrics"]["metrics"], "the evaluation is recomputed with fine-tuning"
