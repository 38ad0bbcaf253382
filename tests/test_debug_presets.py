"""The debugging switches (`debug=`) and the `callbacks` group: each runs the real program, and early
stopping ends a run as its last epoch would and resumes exactly (its wait count and best score kept)."""

import signal
import time

import pytest
import torch
import yaml
from test_resume import with_signals

from conftest import SINE, assert_identical, in_process, start_train

pytestmark = pytest.mark.slow  # every debug preset run as a process


def history_rows(run) -> int:
    path = run / "history.csv"
    return len(path.read_text().splitlines()) - 1 if path.exists() else 0


def test_fast_dev_run_tries_the_code_and_keeps_nothing_to_resume(tmp_path):
    r = in_process("train.py", *SINE, "debug=fast_dev_run", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "outputs" / "sine" / "debug=fast_dev_run"  # a run directory of its own
    assert [line.split(" |")[0] for line in r.stdout.splitlines() if line.startswith("epoch ")] == ["epoch 1/1"]
    assert not (run / "checkpoints").exists() and not (run / "history.csv").exists()
    assert "no checkpoint written" in r.stdout and not list(run.rglob("*.ckpt"))


def test_limit_profiler_and_anomaly_presets_run(tmp_path):
    r = in_process("train.py", *SINE, "-m", "debug=limit,profiler,anomaly", "trainer.max_epochs=2", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    runs = tmp_path / "outputs" / "sine"
    limited = torch.load(runs / "debug=limit,trainer.max_epochs=2" / "checkpoints" / "last.ckpt", weights_only=True)
    assert limited["global_step"] == 2 * 4 and len(limited["history"]) == 2  # 4 training batches an epoch
    assert "Profiler Report" in (runs / "debug=profiler,trainer.max_epochs=2" / "fit-profile.txt").read_text()
    config = yaml.safe_load((runs / "debug=anomaly,trainer.max_epochs=2" / "run.yaml").read_text())
    assert config["trainer"]["detect_anomaly"] is True
    assert (
        len(
            torch.load(runs / "debug=anomaly,trainer.max_epochs=2" / "checkpoints" / "last.ckpt", weights_only=True)[
                "history"
            ]
        )
        == 2
    )


OVERFIT = [
    *SINE,
    "debug=overfit",
    "trainer.max_epochs=40",
    "+callbacks.record._target_=tests.batch_record.FirstBatches",
]


def recorded(folder) -> dict:
    """{(epoch, batch index): what the batch held} of every training batch run from `folder`."""
    rows = [line.split() for line in (folder / "batches.txt").read_text().splitlines()]
    return {(int(epoch), int(index)): digest for epoch, index, digest in rows}


def test_overfit_trains_on_the_same_few_batches_every_epoch_fits_them_and_resumes_exactly(tmp_path):
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    whole.mkdir(), stopped.mkdir()
    r = in_process("train.py", *OVERFIT, cwd=whole)
    assert r.returncode == 0, r.stdout + r.stderr
    batches = recorded(whole)
    first = [batches[(0, i)] for i in range(4)]
    assert sorted(batches) == [(e, i) for e in range(40) for i in range(4)] and len(set(first)) == 4
    assert all(batches[(e, i)] == first[i] for e, i in batches)  # the same 4 batches, in order, every epoch
    (run,) = (whole / "outputs" / "sine").iterdir()
    done = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    losses = [row["train/loss"] for row in done["history"]]
    assert losses[-1] < losses[0] / 4, losses  # fitted (0.37 -> 0.066 when measured)

    # stopped inside epoch 4 (SIGTERM saves there) and rerun: on within the same batches, to the same weights
    s = with_signals(*OVERFIT, epoch=4, batch=2, signals=("SIGTERM",), cwd=stopped)
    assert s.returncode == 143, s.stdout + s.stderr
    again = in_process("train.py", *OVERFIT, cwd=stopped)
    assert again.returncode == 0 and "Resuming" in again.stdout, again.stdout + again.stderr
    assert recorded(stopped) == batches
    assert_identical(
        torch.load(stopped / run.relative_to(whole) / "checkpoints" / "last.ckpt", weights_only=True), done
    )


def test_an_overfit_run_resumes_exactly_from_an_epochs_end_and_verify_replays_it(tmp_path):
    """debug=overfit resumed from an epoch's end trains the same batches again, not the next ones: every
    epoch draws one order, and the saved position is the fit loop's epoch. verify.py's replay (resume_exact,
    from epoch 3's checkpoint to epoch 4's) builds SameBatches (`replayed = True`) and reproduces the run."""
    r = in_process(
        "train.py", *SINE, "debug=overfit", "trainer.max_epochs=4", "checkpoint.every_n_epochs=1", cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (tmp_path / "outputs" / "sine").iterdir()
    v = in_process("verify.py", *SINE[:2], f"ckpt={run}", "stages=[resume_exact]", cwd=tmp_path)
    assert v.returncode == 0 and "resumed epoch=0003.ckpt for 1 epoch(s): bit-identical" in v.stdout, (
        v.stdout + v.stderr
    )


EARLY = [
    *SINE,
    "trainer.max_epochs=30",
    "callbacks=early_stopping",
    "callbacks.early_stopping.patience=2",
    "callbacks.early_stopping.min_delta=0.5",
]  # val/r2 never gains 0.5 again after its first epoch


def test_early_stopping_ends_the_run_and_resumes_exactly(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    r = in_process("train.py", *EARLY, cwd=whole)  # (only the killed run needs a process of its own)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "early stopping after epoch 3: Monitored metric val/r2 did not improve in the last 2 records" in r.stdout
    run = next((whole / "outputs" / "sine").iterdir())
    final = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert final["epoch"] == 2 and final["run"]["finished"]  # epochs count from 0 in a checkpoint
    assert "Run already complete (epoch 3)" in in_process("train.py", *EARLY, cwd=whole).stdout

    proc = start_train(*EARLY, cwd=killed)  # killed after epoch 2: one evaluation without improvement so far
    other = killed / "outputs" / "sine" / run.name
    while history_rows(other) < 2:
        assert proc.poll() is None, proc.stdout.read()
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = torch.load(other / "checkpoints" / "last.ckpt", weights_only=True)
    assert not partial["run"]["finished"], "the kill came too late to test anything"
    again = in_process("train.py", *EARLY, cwd=killed)
    assert again.returncode == 0 and "Resuming" in again.stdout and "early stopping after epoch 3" in again.stdout
    assert_identical(final, torch.load(other / "checkpoints" / "last.ckpt", weights_only=True))
