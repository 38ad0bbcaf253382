"""Exact resume: a run killed at any moment and restarted with the same command ends bit-identical
to a run never stopped; SIGTERM saves a checkpoint first."""
import signal
import time

import pytest
import torch

from conftest import FAST, run_train, start_train

ARGS = [*FAST, "trainer.max_epochs=4", "checkpoint.every_n_epochs=1"]
# Hydra names the run directory after the sorted result-defining overrides.
RUN = "outputs/ternary_v5_5/" + ",".join(sorted(a for a in ARGS if a.split("=")[0] not in (
    "logger", "trainer.enable_progress_bar")))
# An ARC preset: length-bucketed batches, augmentation drawn per (seed, epoch, example), evaluations.
ARC_ARGS = ["experiment=exp3_champion", "data=arc_tiny", "data.batch_size=4", "data.bucket_window=2",
            "trainer.max_epochs=40",
            "checkpoint.last_every_n_epochs=1", "task.eval_every_n_epochs=15", "logger=none",
            "trainer.enable_progress_bar=false"]


def final_state(root, run=RUN, last_epoch=3):
    ckpt = torch.load(root / run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["run"]["finished"] and ckpt["epoch"] == last_epoch
    return ckpt


def assert_identical(a, b):
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), f"weights differ at {k}"
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), f"optimizer state {k} differs"
    assert a["global_step"] == b["global_step"]
    strip = lambda h: [{k: v for k, v in row.items() if k != "time/epoch_s"} for row in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])


def wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.05)


@pytest.mark.parametrize("args, run, last_epoch, delay", [
    (ARGS, RUN, 3, 0.3),
    (ARC_ARGS, "outputs/exp3_champion/" + ",".join(sorted(ARC_ARGS[1:7])), 39, 1.0),
], ids=["ternary", "arc_champion"])
def test_sigkill_then_rerun_is_bit_identical(tmp_path, args, run, last_epoch, delay):
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    ref_dir.mkdir(), killed_dir.mkdir()
    done = run_train(*args, cwd=ref_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    reference = final_state(ref_dir, run, last_epoch)

    proc = start_train(*args, cwd=killed_dir)
    wait_for(killed_dir / run / "checkpoints" / "last.ckpt", proc)
    time.sleep(delay)  # somewhere inside a later epoch
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = torch.load(killed_dir / run / "checkpoints" / "last.ckpt", weights_only=True)
    assert not partial["run"]["finished"], "the kill came too late to test anything"

    again = run_train(*args, cwd=killed_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Resuming" in again.stdout
    assert_identical(final_state(killed_dir, run, last_epoch), reference)


def test_sigterm_saves_mid_epoch_and_resumes_exactly(tmp_path):
    ref_dir, term_dir = tmp_path / "ref", tmp_path / "term"
    ref_dir.mkdir(), term_dir.mkdir()
    assert run_train(*ARGS, cwd=ref_dir).returncode == 0
    reference = final_state(ref_dir)

    proc = start_train(*ARGS, cwd=term_dir)
    wait_for(term_dir / RUN / "checkpoints" / "last.ckpt", proc)
    time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 143, out
    assert "SIGTERM: saved" in out
    saved = torch.load(term_dir / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["run"]["preempted"] and not saved["run"]["finished"]
    steps_per_epoch = 77
    assert saved["global_step"] % steps_per_epoch != 0, "expected a mid-epoch checkpoint"

    again = run_train(*ARGS, cwd=term_dir)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_identical(final_state(term_dir), reference)
