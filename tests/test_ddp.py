"""trainer=ddp on CPU: two processes over gloo through the real train.py. Each process trains on half of
every epoch's batches and evaluates half of the validation batches (gathered, the figures are those of one
process evaluating all), one process prints, and a run killed (both processes) after a checkpoint resumes
to the same weights as a run never stopped."""

import json
import os
import signal
import subprocess
import time

import pytest
import torch

from conftest import SINE, env, run_program, run_train, train_cmd

pytestmark = pytest.mark.slow  # two DDP processes over gloo, killed and resumed

DDP = ["trainer=ddp", *SINE, "data.train_points=16384", "trainer.max_epochs=3"]
STEPS_PER_EPOCH = 128  # 256 batches of 64, split over 2 processes


def ckpt_dir(root):
    (run,) = (root / "outputs" / "sine").iterdir()
    return run / "checkpoints"


COUNTING = """
from lightning.pytorch.callbacks import Callback


class CountParts(Callback):
    \"\"\"Writes how many validation batches each process evaluated (before the task gathers them), in the
    folder the run was started from.\"\"\"

    def on_validation_epoch_end(self, trainer, pl_module):
        with open(f"parts_rank{trainer.global_rank}.txt", "a") as f:
            f.write(f"{len(pl_module._parts)}\\n")
"""


def test_ddp_trains_on_two_processes_and_resumes_exactly(tmp_path):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    whole.mkdir(), killed.mkdir()
    (tmp_path / "counting.py").write_text(COUNTING)
    count = "callbacks={count: {_target_: counting.CountParts}}"
    r = run_train(*DDP, count, cwd=whole, timeout=600, extra_env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("epoch 3/3 |") == 1  # one process speaks
    last = torch.load(ckpt_dir(whole) / "last.ckpt", weights_only=True)
    assert last["epoch"] == 2 and last["global_step"] == 3 * STEPS_PER_EPOCH and last["run"]["finished"]
    assert sorted(p.name for p in ckpt_dir(whole).iterdir() if not p.name.startswith(".")) == sorted(
        [
            "best-epoch=0003.ckpt",
            "best-epoch=0003.ckpt.sha256",
            "epoch=0003.ckpt",
            "epoch=0003.ckpt.sha256",
            "last.ckpt",
            "last.ckpt.sha256",
        ]
    )
    assert [row["epoch"] for row in last["history"]] == [0, 1, 2]
    # each process evaluated one of the two validation batches at each of the 3 epochs
    assert [(whole / f"parts_rank{k}.txt").read_text().split() for k in (0, 1)] == [["1"] * 3] * 2

    # the same run, both processes killed once the first epoch's checkpoint is on disk, then rerun
    p = subprocess.Popen(
        train_cmd(*DDP),
        cwd=killed,
        env=env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    for line in p.stdout:
        if line.startswith("epoch 1/3 |"):
            break
    deadline = time.time() + 60
    while time.time() < deadline and not (ckpt_dir(killed) / "last.ckpt").exists():
        time.sleep(0.01)
    os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=60)
    assert torch.load(ckpt_dir(killed) / "last.ckpt", weights_only=True)["epoch"] in (0, 1)
    r = run_train(*DDP, cwd=killed, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "Resuming" in r.stdout
    resumed = torch.load(ckpt_dir(killed) / "last.ckpt", weights_only=True)
    assert resumed["global_step"] == last["global_step"]
    differ = [k for k, v in last["state_dict"].items() if not torch.equal(v, resumed["state_dict"][k])]
    assert not differ, differ[:5]
    assert [r["train/loss"] for r in resumed["history"]] == [r["train/loss"] for r in last["history"]]
    # gathered, the figures are one process's: eval.py's on the same checkpoint (the killed run: its config
    # names no callback of the test's own, which eval.py would refuse to build)
    (run,) = (killed / "outputs" / "sine").iterdir()
    e = run_program("eval.py", *SINE[:2], f"ckpt={run}", cwd=killed)
    assert e.returncode == 0, e.stdout + e.stderr
    alone = json.loads((run / "eval" / "own" / "last" / "metrics.json").read_text())["metrics"]
    assert alone == {k: resumed["history"][-1][k] for k in ("val/mse", "val/r2")}


STOPPING = """
from experiments.family import RunStopped
from lightning.pytorch.callbacks import Callback


class StopSeedZero(Callback):
    \"\"\"A guard that cannot be met by the job of seed 0: it stops every process of that run after an epoch.\"\"\"

    def __init__(self, seed):
        self.seed = seed

    def on_validation_end(self, trainer, pl_module):
        if self.seed == 0 and not trainer.sanity_checking:
            raise RunStopped("the guard stopped the run at epoch 1")
"""


def test_ddp_jobs_of_a_sweep_land_in_their_own_run_directories_and_a_failed_one_does_not_stop_it(tmp_path):
    """Lightning restarts the command line for each extra process: in a multirun that would rerun the whole
    sweep elsewhere; each job's processes must share the job's single-run directory instead. And when a job's
    processes stop (a callback stops the run in both), Lightning's watcher in rank 0 kills the job: the sweep
    must still run the next job and report the failure once."""
    (tmp_path / "stopping.py").write_text(STOPPING)
    guard = "callbacks={guard: {_target_: stopping.StopSeedZero, seed: ${seed}}}"
    r = run_train(
        "-m",
        "trainer=ddp",
        "seed=0,1",
        guard,
        *SINE,
        "trainer.max_epochs=1",
        cwd=tmp_path,
        timeout=600,
        extra_env={"PYTHONPATH": str(tmp_path)},
    )
    assert r.returncode == 1, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("Training sine") == 2 and "1 of 2 jobs finished" in r.stdout
    assert r.stdout.count("error: the guard stopped the run at epoch 1") == 1  # one report for the job, from rank 0
    runs = sorted(p.name for p in (tmp_path / "outputs" / "sine").iterdir())
    assert len(runs) == 2 and [("seed=0" in n, "seed=1" in n) for n in runs] == [(True, False), (False, True)]
    last = torch.load(tmp_path / "outputs" / "sine" / runs[1] / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 16 and last["run"]["finished"]  # 32 batches of 64, over 2 processes
