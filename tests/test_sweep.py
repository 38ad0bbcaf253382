"""Multirun sweeps through the real train.py: a sweep killed in its second job resumes it, skips the
finished one and summarises all four; a failing job does not stop the others; the summary's numbers are
the jobs' own final metrics."""

import csv
import hashlib
import json
import math
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from conftest import FAST, ROOT, SINE, SINE_CONF, env, in_process, run_train, start_train
from experiments.sweep import mean_std

pytestmark = pytest.mark.slow  # sweeps of real processes, killed and rerun

SWEEP = ["-m", "seed=0,1", "task.lr=0.001,0.002", *SINE, "data.train_points=16384", "trainer.max_epochs=3"]


def sweep_dir(cwd: Path) -> Path:
    (d,) = (cwd / "outputs" / "sweeps").iterdir()
    return d


def summarize(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "summarize.py"), str(directory), "--config-dir", str(SINE_CONF)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_killed_sweep_resumes_skips_finished_jobs_and_summarises_all(workdir):
    p = start_train(*SWEEP, cwd=workdir)
    trainings = 0
    for line in p.stdout:
        trainings += line.startswith("Training ")
        if trainings == 2 and line.startswith("epoch 1/3"):  # the second job is writing its first epoch
            second = Path(json.loads((sweep_dir(workdir) / "jobs" / "0001.json").read_text())["run_dir"])
            deadline = time.time() + 60
            while not (second / "checkpoints" / "last.ckpt").exists() and time.time() < deadline:
                time.sleep(0.01)
            p.send_signal(signal.SIGKILL)
            break
    p.wait(timeout=60)
    assert trainings == 2 and p.returncode == -signal.SIGKILL
    directory = sweep_dir(workdir)
    records = {json.loads(f.read_text())["num"]: json.loads(f.read_text()) for f in (directory / "jobs").glob("*.json")}
    first = Path(records[0]["run_dir"]) / "checkpoints" / "last.ckpt"
    before = sha(first)

    partial = summarize(directory)  # a partial sweep summarises too, and says what is missing
    assert partial.returncode == 1, partial.stdout + partial.stderr
    statuses = [row["status"] for row in csv.DictReader(open(directory / "summary.csv"))]
    assert statuses == ["finished", "incomplete", "not started", "not started"]

    r = in_process("train.py", *SWEEP, cwd=workdir)  # (what the rerun resumes from is on disk)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert r.stdout.count("Run already complete") == 1  # job 0: not retrained
    assert sha(first) == before
    assert len(re.findall(r"^Resuming .* \(epoch [12] done\)", r.stdout, re.M)) == 1  # job 1 from its checkpoint
    assert r.stdout.count("Training sine") == 2  # jobs 2 and 3, once each

    rows = list(csv.DictReader(open(directory / "summary.csv")))
    assert [row["status"] for row in rows] == ["finished"] * 4
    finals = {}
    for row in rows:
        ckpt = torch.load(Path(row["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)
        assert [h["epoch"] for h in ckpt["history"]] == [0, 1, 2] and ckpt["run"]["finished"]
        final = ckpt["history"][-1]
        finals[row["job"]] = final
        for key, value in row.items():  # every number in the CSV is the job's own final metric
            if key in final and key not in ("epoch", "global_step"):
                assert float(value) == final[key], (row["job"], key)
    # the per-group mean +- std in the Markdown table: seeds 0 and 1 of lr 0.001 are jobs 0 and 2
    m, s = mean_std([finals["0"]["val/r2"], finals["2"]["val/r2"]])
    md = (directory / "summary.md").read_text()
    assert f"{m:.4g} +- {s:.4g}" in md and "4 of 4 jobs finished" in md
    for lr in ("0.001", "0.002"):  # one group per learning rate, its two seeds averaged
        assert re.search(rf"^\| .*task\.lr={lr} .*\| 2 \| 0,1 \|", md, re.M), md
    assert "val/r2" in md.splitlines()[6]  # the primary metric is the first column
    assert (directory / "summary.png").read_bytes()[:4] == b"\x89PNG"
    again = summarize(directory)
    assert again.returncode == 0 and (directory / "summary.md").read_text() == md


def test_a_failing_job_does_not_stop_the_sweep_and_wandb_groups_the_jobs(workdir):
    quick = [o for o in SINE if not o.startswith("logger=")]  # wandb, offline: the default logger
    r = run_train("-m", "task.lr=-1.0,0.001", *quick, "trainer.max_epochs=1", cwd=workdir)
    assert r.returncode == 1  # the sweep says something failed ...
    assert r.stdout.count("Training sine") == 1  # ... after running the other job
    directory = sweep_dir(workdir)
    rows = list(csv.DictReader(open(directory / "summary.csv")))
    assert [row["status"] for row in rows] == ["failed", "finished"]
    assert "Invalid learning rate" in rows[0]["error"] and "Not finished: job 0" in r.stdout
    run = Path(rows[1]["run_dir"])
    assert yaml.safe_load((run / "run.yaml").read_text())["logger"]["group"] == directory.name
    assert list((run / "wandb").glob("offline-run-*"))  # offline: nothing left the machine


def test_arc_ablation_preset_plans_five_baselines_times_three_seeds():
    from hydra import compose, initialize_config_dir

    from experiments.cli import CONF_DIR
    from experiments.config_schema import register
    from experiments.sweep import experiment_order, plan, sweep_id

    register()
    experiments = ["exp_neg1_decoder_only", "exp0_encoder_decoder", "exp1_grid2d_pe", "exp2_perminv", "exp3_champion"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        full = compose("train", overrides=["sweep=arc_ablation"], return_hydra_config=True)
        quick = compose(
            "train", overrides=["sweep=arc_ablation", "hydra.sweeper.params.seed=0"], return_hydra_config=True
        )
    jobs = plan(full)
    assert sorted((j[0], j[1]) for j in jobs) == sorted(
        (f"experiment={e}", f"seed={s}") for e in experiments for s in range(3)
    )
    assert full.hydra.mode.name == "MULTIRUN" and sweep_id(full) == "arc_ablation"
    assert len(plan(quick)) == 5 and sweep_id(quick) == "arc_ablation,seed=0"  # its own sweep directory
    # the comparison steps, each adding one component: the order the preset lists its experiments
    assert full.sweep_chain is None and experiment_order(jobs) == experiments


def test_arc_ablation_cpu_preset_plans_ten_jobs_on_arc_small():
    from hydra import compose, initialize_config_dir

    from experiments.cli import CONF_DIR
    from experiments.config_schema import register
    from experiments.sweep import experiment_order, plan

    register()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["sweep=arc_ablation_cpu"], return_hydra_config=True)
        job = compose("train", overrides=plan(cfg)[0])
    jobs = plan(cfg)
    assert len(jobs) == 10 and all("data=arc_small" in j for j in jobs)
    assert sorted({j[0] for j in jobs}) == sorted(f"experiment={e}" for e in experiment_order(jobs))
    assert job.data.max_tasks is None and job.data.max_side == 10 and job.trainer.max_epochs == 80


def test_optuna_sweep_returns_each_jobs_monitor_as_its_objective(workdir):
    fast = [o for o in FAST if not o.startswith("experiment=")]  # the preset chooses its experiment
    r = in_process(
        "train.py", "sweep=ternary_optuna", "hydra.sweeper.n_trials=2", *fast, "trainer.max_epochs=1", cwd=workdir
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    best = yaml.safe_load((workdir / "outputs" / "optimization_results.yaml").read_text())
    rows = list(csv.DictReader(open(sweep_dir(workdir) / "summary.csv")))
    assert len(rows) == 2 and all(row["status"] == "finished" for row in rows)
    finals = [
        torch.load(Path(row["run_dir"]) / "checkpoints" / "last.ckpt", weights_only=True)["history"][-1]["val/ce"]
        for row in rows
    ]
    assert best["best_value"] == pytest.approx(min(finals), rel=1e-12)  # val/ce, minimised


def test_submitit_local_launcher_runs_jobs_in_their_own_processes(workdir):
    r = run_train(
        "-m", "hydra/launcher=submitit_local", "seed=3", *SINE, "trainer.max_epochs=1", cwd=workdir, timeout=600
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (row,) = csv.DictReader(open(sweep_dir(workdir) / "summary.csv"))
    assert row["status"] == "finished" and Path(row["run_dir"]).name == "seed=3,trainer.max_epochs=1"
    assert list((workdir / "outputs" / ".submitit").glob("*/*_log.out"))  # the job's own process and log


def test_slurm_launcher_config_composes():
    r = subprocess.run(
        [
            sys.executable,
            str(ROOT / "train.py"),
            "experiment=ternary_v5_5",
            "hydra/launcher=slurm",
            "--cfg",
            "hydra",
            "-p",
            "hydra.launcher",
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert r.returncode == 0, r.stderr
    launcher = yaml.safe_load(r.stdout.replace("# @package hydra.launcher", ""))
    assert launcher["_target_"].endswith("SlurmLauncher") and launcher["max_num_timeout"] == 3


def test_sigterm_stops_the_whole_sweep_after_saving(workdir):
    p = start_train(*SWEEP, cwd=workdir)
    for line in p.stdout:
        if line.startswith("epoch 1/3"):  # the first job is training
            p.send_signal(signal.SIGTERM)
            break
    out = p.stdout.read()
    assert p.wait(timeout=120) == 143, out
    assert "the sweep stops" in out and "Training" not in out  # no later job started
    jobs = sorted((sweep_dir(workdir) / "jobs").glob("*.json"))
    assert [json.loads(j.read_text())["status"] for j in jobs] == ["preempted"]
    assert (Path(json.loads(jobs[0].read_text())["run_dir"]) / "checkpoints" / "last.ckpt").exists()


def test_the_objective_of_a_monitor_the_family_does_not_judge_follows_the_given_mode(tmp_path):
    """checkpoint.monitor=a metric the family lists in neither direction, with its mode: training keeps it, so
    the sweep's objective reads it too (a run that never finished: nan), instead of failing on the direction."""
    from omegaconf import OmegaConf

    from experiments.sweep import objective

    cfg = OmegaConf.create(
        {"task": {"_target_": "examples.sine.task.SineTask"}, "checkpoint": {"monitor": "val/spread", "mode": "max"}}
    )
    assert math.isnan(objective(cfg, tmp_path))
