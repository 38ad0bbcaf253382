"""Sweeps on a real one-node Slurm started for these tests (scripts/local_slurm.py: Debian's slurmctld and
slurmd, installed when missing as root), through `hydra/launcher=slurm` and real `sbatch`: no mocks. Skipped,
with the reason, only where Slurm can be neither found nor installed (not root)."""
import csv
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import env, ROOT, SINE_CONF

SLURM_JOB = ["hydra/launcher=slurm", "hydra.launcher.gpus_per_node=0", "hydra.launcher.cpus_per_task=1",
             "hydra.launcher.mem_gb=1", "hydra.launcher.timeout_min=10"]


def local_slurm():
    spec = importlib.util.spec_from_file_location("local_slurm", ROOT / "scripts" / "local_slurm.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """The cluster's environment (SLURM_CONF) while the module's tests run; its daemons ended after them."""
    slurm = local_slurm()
    folder = tmp_path_factory.mktemp("slurm")
    try:
        environment = slurm.start(folder)
    except slurm.Unavailable as e:
        if os.geteuid() != 0 and slurm.missing():
            pytest.skip(f"no Slurm here: {e}")
        raise
    groups = [int((folder / f"{name}.group").read_text()) for name in slurm.DAEMONS]
    yield {"SLURM_CONF": environment["SLURM_CONF"]}
    slurm.stop(folder)
    assert not any(slurm.running(group) for group in groups), "a Slurm daemon outlived the tests"


def sweep(*overrides: str, cwd: Path, cluster: dict) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "train.py"), "--config-dir", str(SINE_CONF), "-m", *SLURM_JOB,
               "experiment=sine", "logger=none", "trainer.enable_progress_bar=false", *overrides]
    return subprocess.run(command, cwd=cwd, env={**env(), **cluster}, capture_output=True, text=True, timeout=180)


def test_a_sweep_runs_each_job_as_a_slurm_job_in_its_own_run_directory(cluster, tmp_path):
    r = sweep("trainer.max_epochs=2", "seed=0,1", "task.lr=0.001,0.002", cwd=tmp_path, cluster=cluster)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (directory,) = (tmp_path / "outputs" / "sweeps").iterdir()
    rows = list(csv.DictReader(open(directory / "summary.csv")))
    assert sorted(Path(row["run_dir"]).name for row in rows) == [
        f"seed={seed},task.lr={lr},trainer.max_epochs=2" for seed in (0, 1) for lr in ("0.001", "0.002")]
    assert all(row["status"] == "finished" for row in rows)
    # each job ran as a Slurm job of its own (submitit submits a job array): a folder per <array>_<task>, with
    # the job's log
    jobs = [d for d in (tmp_path / "outputs" / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", d.name)]
    assert len(jobs) == 4, [d.name for d in jobs]
    logs = [(d / f"{d.name}_0_log.out").read_text() for d in jobs]
    assert all("Training sine" in log and "Done: sine, 2 epochs" in log for log in logs)
    assert "| task.lr=0.001 | 2 | 0,1 |" in (directory / "summary.md").read_text().replace(
        "experiment=sine ", "").replace(" trainer.max_epochs=2", "")


def test_without_root_and_without_slurm_the_reason_is_one_line(monkeypatch):
    """What the tests skip with, and what `local_slurm.py start` says (exit 2), where Slurm cannot be had."""
    slurm = local_slurm()
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    monkeypatch.setattr(slurm.os, "geteuid", lambda: 1000)
    with pytest.raises(slurm.Unavailable, match=r"^Slurm is not installed \(slurmctld, slurmd, .* this is not root"):
        slurm.install()
