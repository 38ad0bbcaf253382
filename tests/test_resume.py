"""Exact resume: a run killed at any moment and restarted with the same command ends bit-identical
to a run never stopped; SIGTERM and Ctrl-C save a checkpoint first; a second launch of a running run is
refused; a damaged last checkpoint or a failed write loses nothing that was written before."""

import csv
import json
import os
import re
import signal
import socket
import subprocess
import sys

import pytest
import torch

from conftest import (
    ROOT,
    SINE,
    assert_identical,
    env,
    in_process,
    killed_then_rerun,
    options_first,
    run_name,
    run_program,
    run_train,
    start_train,
    wait_for,
)
from experiments.checkpoint.io import read_intact

pytestmark = pytest.mark.slow  # real processes killed at every moment of a run, and resumed

# The smallest family, 128 steps an epoch: long enough for a kill to land inside one.
STEPS = 128
ARGS = [*SINE, f"data.train_points={STEPS * 64}", "trainer.max_epochs=4", "checkpoint.every_n_epochs=1"]
RUN = "outputs/sine/" + run_name(ARGS)


def final_state(root, run=RUN, last_epoch=3):
    ckpt = torch.load(root / run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["run"]["finished"] and ckpt["epoch"] == last_epoch
    return ckpt


def test_sigkill_then_rerun_is_bit_identical(tmp_path, reference):
    killed_then_rerun(ARGS, tmp_path / RUN, tmp_path, delay=0.3)
    assert_identical(final_state(tmp_path), reference)


@pytest.fixture(scope="module")
def reference_dir(tmp_path_factory):
    """ARGS trained once, never interrupted: what every interrupted run below must end identical to."""
    ref_dir = tmp_path_factory.mktemp("reference")
    done = in_process("train.py", *ARGS, cwd=ref_dir)
    assert done.returncode == 0, done.stdout + done.stderr
    return ref_dir


@pytest.fixture(scope="module")
def reference(reference_dir):
    return final_state(reference_dir)


# The signals are sent by the process to itself from a hook, at a set place: sent from outside, they land
# wherever a loaded machine happens to be (inside an epoch's validation instead of in the middle of its batches).
SIGNALS_AT = """
import os, runpy, signal, sys
from experiments.checkpoint.policy import CheckpointPolicy
EPOCH, BATCH = int(os.environ["SIGNAL_EPOCH"]) - 1, int(os.environ["SIGNAL_BATCH"])  # batch -1: as it validates
def send(trainer):
    if not trainer.sanity_checking and trainer.current_epoch == EPOCH:
        for name in os.environ["SIGNALS"].split(","):
            os.kill(os.getpid(), signal.Signals[name])
def on_validation_start(self, trainer, pl_module):
    if BATCH == -1:
        send(trainer)
def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
    if batch_idx == BATCH:
        send(trainer)
CheckpointPolicy.on_validation_start = on_validation_start
CheckpointPolicy.on_train_batch_start = on_train_batch_start
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def with_signals(*args, epoch, batch=-1, signals=("SIGINT",), cwd):
    """train.py, with `signals` sent in epoch `epoch` (1-based) before its batch `batch` (or as it validates)."""
    return subprocess.run(
        [sys.executable, "-c", SIGNALS_AT, str(ROOT / "train.py"), *options_first(args)],
        cwd=cwd,
        env={**env(), "SIGNAL_EPOCH": str(epoch), "SIGNAL_BATCH": str(batch), "SIGNALS": ",".join(signals)},
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    "signals, code, said",
    [
        (["SIGTERM"], 143, "SIGTERM: saved "),
        (["SIGINT", "SIGINT"], 130, "interrupted in epoch "),  # Ctrl-C pressed twice: the save goes on
    ],
    ids=["sigterm", "ctrl_c"],
)
def test_a_stop_signal_saves_mid_epoch_and_resumes_exactly(tmp_path, reference, signals, code, said):
    r = with_signals(*ARGS, epoch=2, batch=50, signals=signals, cwd=tmp_path)
    assert r.returncode == code, r.stdout + r.stderr
    (line,) = [x for x in r.stdout.splitlines() if x.startswith(said)]
    last = tmp_path / RUN / "checkpoints" / "last.ckpt"
    assert "checkpoints/last.ckpt" in line and "rerun the same command to resume" in line
    assert read_intact(last)[1] is None, "the saved checkpoint is whole and matches its sidecar"
    saved = torch.load(last, weights_only=True)
    assert saved["run"]["preempted"] and not saved["run"]["finished"]
    assert saved["global_step"] == STEPS + 51, "saved after the batch the signal came in"
    where = f"in epoch 2 at step {STEPS + 51}"  # the same words for the same place:
    assert where in line

    again = in_process("train.py", *ARGS, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert f"(saved {where})" in again.stdout  # the rerun's "Resuming" line
    assert_identical(final_state(tmp_path), reference)
    # the resumed epoch's time: since the rerun started it (never negative, nor zero)
    assert all(row["time/epoch_s"] > 0 for row in final_state(tmp_path)["history"])


def test_a_kill_between_a_checkpoints_two_renames_loses_nothing(tmp_path, reference):
    """A write killed after renaming the new last.ckpt but before its sidecar (the only moment a write leaves
    the pair mismatched): the new sidecar is still a temporary file, and the rerun completes the pair and
    resumes from that checkpoint, not from an older one. The state is made as such a kill leaves it."""
    r = with_signals(*ARGS, epoch=2, batch=50, signals=["SIGTERM"], cwd=tmp_path)
    assert r.returncode == 143, r.stdout + r.stderr
    folder = tmp_path / RUN / "checkpoints"
    new_sidecar = (folder / "last.ckpt.sha256").read_bytes()
    (folder / f".last.ckpt.sha256.tmp-{2**22 + 7}-{socket.gethostname()}").write_bytes(new_sidecar)
    (folder / "last.ckpt.sha256").write_bytes(
        (folder / "epoch=0001.ckpt.sha256").read_bytes().replace(b"epoch=0001.ckpt", b"last.ckpt")
    )  # the one it replaced
    again = in_process("train.py", *ARGS, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "completed the write of last.ckpt that a kill cut between its two renames" in again.stdout
    assert f"(saved in epoch 2 at step {STEPS + 51})" in again.stdout, again.stdout
    assert not (folder / "damaged").exists()
    assert_identical(final_state(tmp_path), reference)


def test_ctrl_c_during_validation_stops_at_the_epochs_end(tmp_path, reference):
    logged = [a if a != "logger=none" else "logger=csv" for a in ARGS]  # the stopped epoch reaches the logger
    r = with_signals(*logged, epoch=2, cwd=tmp_path)
    assert r.returncode == 130, r.stdout + r.stderr
    saved = torch.load(tmp_path / RUN / "checkpoints" / "last.ckpt", weights_only=True)
    assert (saved["epoch"], saved["global_step"]) == (1, 2 * STEPS), "epoch 2's end"
    assert len(saved["history"]) == 2, "epoch 2 validated and recorded before the stop"
    assert f"interrupted after epoch 2 (step {2 * STEPS}); saved " in r.stdout
    with open(next((tmp_path / RUN).rglob("metrics.csv")), newline="") as f:
        rows = list(csv.DictReader(f))
    assert {float(row["epoch"]) for row in rows if row.get("train/loss")} == {1, 2}, "epoch 2's train figures logged"

    again = in_process("train.py", *ARGS, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "(epoch 2 done)" in again.stdout
    assert_identical(final_state(tmp_path), reference)
    assert all(row["time/epoch_s"] > 0 for row in final_state(tmp_path)["history"])


def test_ctrl_c_as_the_last_epoch_validates_completes_the_run_and_stops_a_sweep(tmp_path, reference):
    r = with_signals(*ARGS, epoch=4, cwd=tmp_path)  # nothing is left to stop: complete, and it says so
    assert r.returncode == 0, r.stdout + r.stderr
    assert "Ctrl-C came as the last epoch ended: the run is complete." in r.stdout
    assert_identical(final_state(tmp_path), reference)

    (tmp_path / "sweep").mkdir()
    sweep = with_signals("-m", *ARGS, "seed=0,1", epoch=4, cwd=tmp_path / "sweep")
    assert sweep.returncode == 130, sweep.stdout + sweep.stderr
    assert "Ctrl-C: the sweep stops; rerun the same command to resume it." in sweep.stdout
    records = [json.loads(p.read_text()) for p in (tmp_path / "sweep").glob("outputs/sweeps/*/jobs/*.json")]
    assert [(r["num"], r["status"]) for r in records] == [(0, "finished")], "the second job never started"


def test_a_second_launch_is_refused_while_the_first_trains(tmp_path, reference):
    first = start_train(*ARGS, cwd=tmp_path)
    wait_for(tmp_path / RUN / "checkpoints" / "last.ckpt", first)
    first.send_signal(signal.SIGSTOP)  # paused while the second launches: it holds the lock, and is still running
    second = in_process("train.py", *ARGS, cwd=tmp_path)  # (refused: no process start needed)
    first.send_signal(signal.SIGCONT)
    assert first.poll() is None, "the first run ended before the second launch was tried"
    assert second.returncode == 2, second.stdout + second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and f"PID {first.pid} on " in lines[0] and "being trained by" in lines[0], second.stderr
    out, _ = first.communicate(timeout=300)
    assert first.returncode == 0, out
    assert_identical(final_state(tmp_path), reference)  # the first finished untouched


def test_the_lock_of_a_killed_run_is_taken_over(tmp_path, reference):
    proc = start_train(*ARGS, cwd=tmp_path)
    wait_for(tmp_path / RUN / "checkpoints" / "last.ckpt", proc)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert f"PID {proc.pid} on " in (tmp_path / RUN / ".lock").read_text()  # left behind by the dead process
    run, host = tmp_path / RUN, socket.gethostname()
    stale = [
        run / "checkpoints" / f".last.ckpt.tmp-{proc.pid}-{host}",  # as writes killed mid-way leave them
        run / "validation" / f".per_output_epoch=0002.csv.tmp-{proc.pid}-{host}",
    ]
    running_eval = run / "eval" / "own" / "last" / f".metrics.json.tmp-{os.getpid()}-{host}"  # an eval.py at work
    for path in [*stale, running_eval]:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"half a file")
    again = run_train(*ARGS, cwd=tmp_path)  # a process of its own: the planted eval.py's PID is another's
    assert again.returncode == 0, again.stdout + again.stderr
    assert "being trained by" not in again.stdout + again.stderr
    # the two planted; a third if the kill landed inside a write
    assert not any(p.exists() for p in stale) and re.search(r"removed [23] temporary file\(s\)", again.stdout)
    assert running_eval.exists(), "a temporary of a live eval.py is not the run's to remove"
    assert_identical(final_state(tmp_path), reference)


def test_a_damaged_last_checkpoint_resumes_from_the_newest_intact_one(tmp_path, reference):
    done = in_process("train.py", *ARGS, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    ckpts = tmp_path / RUN / "checkpoints"
    with open(ckpts / "last.ckpt", "r+b") as f:  # a disk or copy error, in place, after the save
        f.seek(f.seek(0, 2) // 2)
        f.write(b"\xff" * 64)
    again = in_process("train.py", *ARGS, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    (warning,) = [x for x in again.stdout.splitlines() if x.startswith("warning: damaged checkpoint")]
    # last.ckpt is a hard link of the final epoch's file: both carry the damage; epoch 3's is the newest intact
    assert "last.ckpt: its sha256 differs" in warning or "last.ckpt: is not a readable checkpoint" in warning
    assert "Resuming from epoch=0003.ckpt" in warning
    moved = {p.name for p in (ckpts / "damaged").rglob("*.ckpt")}  # aside, never deleted
    assert {"epoch=0004.ckpt", "last.ckpt"} <= moved and all("0004" in n or n == "last.ckpt" for n in moved)
    assert "Resuming" in again.stdout
    assert_identical(final_state(tmp_path), reference)

    for path in ckpts.glob("*.ckpt"):  # now every checkpoint is damaged
        with open(path, "r+b") as f:
            f.seek(f.seek(0, 2) // 2)
            f.write(b"\xff" * 64)
    for attempt in ("first", "second"):  # refused, and refused again: never a silent fresh start
        refused = in_process("train.py", *ARGS, cwd=tmp_path)
        assert refused.returncode == 2, refused.stdout + refused.stderr
        (line,) = refused.stderr.strip().splitlines()
        assert "no intact checkpoint" in line and "resume=never" in line, line
        if attempt == "second":
            assert "only damaged ones, moved to" in line
        assert not list(ckpts.glob("*.ckpt")), "every damaged file is aside"
        assert len((tmp_path / RUN / "history.csv").read_text().splitlines()) == 5, "the run's history is untouched"


FULL_DISK = """
import errno, os, runpy, sys
import experiments.atomic as atomic
import experiments.checkpoint.io as io
write = atomic.write_and_sync
def full(tmp, data):  # the disk fills up half way through the file named in FULL_AT
    if tmp.name.startswith("." + os.environ["FULL_AT"] + ".tmp-"):
        tmp.write_bytes(data[: len(data) // 2])
        raise OSError(errno.ENOSPC, "No space left on device")
    write(tmp, data)
atomic.write_and_sync = io.write_and_sync = full  # every writer: checkpoints, their sidecars, other files
sys.argv = [sys.argv[1], *sys.argv[2:]]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def on_a_full_disk(program, at, *args, cwd):
    return subprocess.run(
        [sys.executable, "-c", FULL_DISK, str(ROOT / program), *options_first(args)],
        cwd=cwd,
        env={**env(), "FULL_AT": at},
        capture_output=True,
        text=True,
        timeout=300,
    )


# The third epoch's checkpoint, or its sidecar once the checkpoint's bytes are written: either way nothing is renamed
@pytest.mark.parametrize("at", ["epoch=0003.ckpt", "epoch=0003.ckpt.sha256"], ids=["checkpoint", "sidecar"])
def test_a_full_disk_stops_the_run_with_one_line_and_loses_nothing(tmp_path, reference, at):
    r = on_a_full_disk("train.py", at, *ARGS, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    (line,) = [x for x in r.stdout.splitlines() if x.startswith("error:")]
    assert f"{at}: No space left on device" in line and "last good checkpoint" in line
    assert "(epoch 2)" in line and "Traceback" not in r.stdout + r.stderr
    run = tmp_path / RUN
    assert not [p for p in run.rglob("*") if ".tmp-" in p.name], "no temporary file is left"
    assert not [p for p in run.rglob("*0003*")], "neither the checkpoint nor its sidecar was renamed into place"
    ckpts = sorted((run / "checkpoints").glob("*.ckpt"))
    assert {"epoch=0001.ckpt", "epoch=0002.ckpt", "last.ckpt"} <= {p.name for p in ckpts}
    assert all(read_intact(p)[1] is None for p in ckpts), "every earlier checkpoint loads and matches its sidecar"

    again = in_process("train.py", *ARGS, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert_identical(final_state(tmp_path), reference)


def test_a_full_disk_outside_the_fit_is_one_line_too(tmp_path, reference_dir):
    """run.yaml before training, eval.py's metrics.json after it; then eval removes what killed evals left."""
    r = on_a_full_disk("train.py", "run.yaml", *ARGS, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert line.startswith("error: could not write ") and "run.yaml: No space left on device" in line, line
    assert not [p for p in (tmp_path / RUN).rglob("*") if ".tmp-" in p.name or p.suffix == ".ckpt"]

    run = reference_dir / RUN
    r = on_a_full_disk("eval.py", "metrics.json", *SINE[:2], f"ckpt={run}", cwd=reference_dir)
    assert r.returncode == 1, r.stdout + r.stderr
    (line,) = r.stderr.strip().splitlines()
    assert "metrics.json: No space left on device" in line and "Traceback" not in r.stdout, r.stdout + r.stderr
    folder = run / "eval" / "own" / "last"
    assert [p.name for p in folder.iterdir()] == ["fit.png"], "the family's file, whole; no metrics.json, no temporary"

    ended = subprocess.Popen(["true"])
    ended.wait()
    killed = folder / f".metrics.json.tmp-{ended.pid}-{socket.gethostname()}"  # an eval killed while writing
    killed.write_bytes(b"half")
    ok = run_program("eval.py", *SINE[:2], f"ckpt={run}", cwd=reference_dir)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert sorted(p.name for p in folder.iterdir()) == ["fit.png", "metrics.json"]

    reports = run / "checkpoints" / "verification"  # verify.py, likewise, for its own reports
    reports.mkdir(exist_ok=True)
    killed = reports / f".last.json.tmp-{ended.pid}-{socket.gethostname()}"
    killed.write_bytes(b"half")
    checked = run_program(
        "verify.py", *SINE[:2], f"ckpt={run}/checkpoints/last.ckpt", "stages=[loadable]", cwd=reference_dir
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert sorted(p.name for p in reports.iterdir()) == ["last.json", "last.md"]


def test_a_full_disk_at_a_sweeps_summary_is_one_line_and_exit_1(tmp_path):
    one_epoch = [a if a != "trainer.max_epochs=4" else "trainer.max_epochs=1" for a in ARGS]
    r = on_a_full_disk("train.py", "summary.md", "-m", *one_epoch, "seed=0,1", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr  # Hydra alone would have made it a warning, and exit 0
    (line,) = [x for x in r.stderr.splitlines() if x.startswith("error:")]
    assert "summary.md: No space left on device" in line and "Traceback" not in r.stdout + r.stderr, r.stderr
    records = [json.loads(p.read_text()) for p in tmp_path.glob("outputs/sweeps/*/jobs/*.json")]
    assert sorted((r["num"], r["status"]) for r in records) == [(0, "finished"), (1, "finished")]
    assert not [p for p in tmp_path.rglob("*") if ".tmp-" in p.name]
