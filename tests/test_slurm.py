"""Sweeps on a real one-node Slurm started for these tests (scripts/local_slurm.py: Debian's slurmctld and
slurmd, installed when missing as root), through `hydra/launcher=slurm` and real `sbatch`, signals sent by
Slurm itself (`scancel --signal`, `scontrol requeue`, a time limit): no mocks. Skipped, with the reason, only
where Slurm can be neither found nor installed (not root)."""

import csv
import importlib.util
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from conftest import ROOT, SINE, SINE_CONF, assert_identical, env, in_process, run_train, wait_for
from experiments.loggers import stable_id

# timeout_min above 10: submitit counts a warning signal as a time-out only past min(80%, limit - 10 min)
SLURM_JOB = [
    "hydra/launcher=slurm",
    "hydra.launcher.gpus_per_node=0",
    "hydra.launcher.cpus_per_task=1",
    "hydra.launcher.mem_gb=1",
    "hydra.launcher.timeout_min=60",
]
# 1,000 steps an epoch (about 2.5 s on one core), 2 epochs: a signal sent once epoch 1 is logged lands inside epoch 2
STEPS = 1000
LONG = [f"data.train_points={STEPS * 64}", "trainer.max_epochs=2", "checkpoint.every_n_epochs=1"]


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
    groups = [slurm.recorded_group(folder, name) for name in slurm.DAEMONS]
    yield {"SLURM_CONF": environment["SLURM_CONF"]}
    slurm.stop(folder)
    assert not any(slurm.running(group) for group in groups), "a Slurm daemon outlived the tests"
    assert not slurm.processes_of(folder), "a process of the cluster (a daemon's, a job's) outlived the tests"


def sweep_command(*overrides: str, logger: str = "none") -> list[str]:
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "--config-dir",
        str(SINE_CONF),
        "-m",
        *SLURM_JOB,
        "experiment=sine",
        f"logger={logger}",
        "trainer.enable_progress_bar=false",
        *overrides,
    ]


def sweep(*overrides: str, cwd: Path, cluster: dict, logger: str = "none") -> subprocess.CompletedProcess:
    return subprocess.run(
        sweep_command(*overrides, logger=logger),
        cwd=cwd,
        env={**env(), **cluster},
        capture_output=True,
        text=True,
        timeout=240,
    )


def start_sweep(*overrides: str, cwd: Path, cluster: dict, logger: str = "none", name: str = "sweep"):
    """The sweep command in the background, its console in `cwd/<name>.out`."""
    with open(cwd / f"{name}.out", "w") as out:
        return subprocess.Popen(
            sweep_command(*overrides, logger=logger),
            cwd=cwd,
            env={**env(), **cluster},
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


def finished(proc: subprocess.Popen, cwd: Path, name: str = "sweep", timeout: float = 240) -> tuple[int, str]:
    try:
        code = proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError(f"the sweep did not end within {timeout} s: {(cwd / f'{name}.out').read_text()[-3000:]}")
    return code, (cwd / f"{name}.out").read_text()


def job_log(cwd: Path, task: int = 0, timeout: float = 120) -> tuple[str, Path]:
    """(Slurm job id, its log) of a sweep's job, once Slurm has started it: `<array>_<task>`, or the job's own
    id for a sweep of one job (submitit submits an array of one as a plain job)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for folder in (cwd / "outputs" / ".submitit").glob("*"):
            log = folder / f"{folder.name}_0_log.out"
            if re.fullmatch(rf"\d+_{task}" + (r"|\d+" if task == 0 else ""), folder.name) and log.exists():
                return folder.name, log
        time.sleep(0.1)
    raise AssertionError(f"job {task} did not start within {timeout} s")


def when_logged(log: Path, text: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while text not in log.read_text():
        assert proc.poll() is None and time.monotonic() < deadline, f"no {text!r} in {log}: {log.read_text()[-3000:]}"
        time.sleep(0.05)


def job_logs(cwd: Path) -> dict[str, str]:
    """{Slurm job id: its log} of every job submitted from `cwd`."""
    return {
        d.name: (d / f"{d.name}_0_log.out").read_text()
        for d in (cwd / "outputs" / ".submitit").iterdir()
        if re.fullmatch(r"\d+(_\d+)?", d.name) and (d / f"{d.name}_0_log.out").exists()
    }


def last_array_logs(cwd: Path) -> list[str]:
    """The logs of the last job array's jobs, task by task."""
    folders = [d for d in (cwd / "outputs" / ".submitit").iterdir() if re.fullmatch(r"\d+_\d+", d.name)]
    array = max(int(d.name.split("_")[0]) for d in folders)
    mine = sorted((d for d in folders if d.name.startswith(f"{array}_")), key=lambda d: int(d.name.split("_")[1]))
    return [(d / f"{d.name}_0_log.out").read_text() for d in mine]


def slurm(cluster: dict, *command: str) -> None:
    subprocess.run(command, env={**env(), **cluster}, check=True, capture_output=True, timeout=60)


def run_dir(cwd: Path, *overrides: str) -> Path:
    return cwd / "outputs" / "sine" / ",".join(sorted(overrides))


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """LONG with seed 0, trained once in one start (no Slurm): what every interrupted job must end identical to."""
    cwd = tmp_path_factory.mktemp("reference")
    done = in_process("train.py", *SINE, *LONG, cwd=cwd)
    assert done.returncode == 0, done.stdout + done.stderr
    return torch.load(run_dir(cwd, *LONG) / "checkpoints" / "last.ckpt", weights_only=True)


def assert_same_run(saved: dict, reference: dict) -> None:
    """Bit for bit: weights, optimizer state, step, history, and the random generators' state."""
    assert_identical(saved, reference)
    assert saved["run"]["finished"]
    for generator in ("torch", "python"):
        assert torch.equal(torch.as_tensor(saved["rng"][generator]), torch.as_tensor(reference["rng"][generator]))


def stopped_in_epoch_2(saved_line: str, steps: int = STEPS) -> int:
    """The step a stop's line says it saved at, checked to be inside epoch 2 (of `steps` steps an epoch)."""
    step = int(re.search(r"in epoch 2 at step (\d+)", saved_line).group(1))
    assert steps < step < 2 * steps, saved_line
    return step


@pytest.mark.slow  # a real Slurm cluster: jobs submitted, signalled, requeued
def test_a_2x2_arc_sweep_runs_each_job_as_a_slurm_job_in_its_own_run_directory_with_paired_comparisons(
    cluster, tmp_path
):
    command = [
        sys.executable,
        str(ROOT / "train.py"),
        "-m",
        *SLURM_JOB,
        "experiment=exp0_encoder_decoder,exp3_champion",
        "seed=0,1",
        "data=arc_tiny",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=8",
        "validation.preflight=[config]",
    ]
    r = subprocess.run(command, cwd=tmp_path, env={**env(), **cluster}, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (directory,) = (tmp_path / "outputs" / "sweeps").iterdir()
    rows = list(csv.DictReader(open(directory / "summary.csv")))
    assert sorted(Path(row["run_dir"]).relative_to(tmp_path / "outputs").as_posix() for row in rows) == [
        f"{experiment}/data=arc_tiny,seed={seed},trainer.max_epochs=8"
        for experiment in ("exp0_encoder_decoder", "exp3_champion")
        for seed in (0, 1)
    ]
    assert all(row["status"] == "finished" and row["epochs"] == "8" for row in rows)
    # each job ran as a Slurm job of its own (submitit submits a job array): a folder per <array>_<task>, with
    # the job's log
    logs = job_logs(tmp_path)
    assert sorted(name.split("_")[1] for name in logs) == ["0", "1", "2", "3"], list(logs)
    assert all("Training exp" in log and "Done: exp" in log for log in logs.values())
    # the paired comparisons of the two presets, from the runs' per-output records
    (compared,) = {(row["baseline"], row["variant"]) for row in csv.DictReader(open(directory / "comparisons.csv"))}
    assert compared == tuple(
        f"data=arc_tiny experiment={e} trainer.max_epochs=8" for e in ("exp0_encoder_decoder", "exp3_champion")
    )
    assert "## Paired comparisons" in (directory / "summary.md").read_text() and "Paired comparisons:" in r.stdout


def test_without_root_and_without_slurm_the_reason_is_one_line(monkeypatch):
    """What the tests skip with, and what `local_slurm.py start` says (exit 2), where Slurm cannot be had."""
    slurm = local_slurm()
    monkeypatch.setattr(slurm.shutil, "which", lambda name: None)
    monkeypatch.setattr(slurm.os, "geteuid", lambda: 1000)
    with pytest.raises(slurm.Unavailable, match=r"^Slurm is not installed \(slurmctld, slurmd, .* this is not root"):
        slurm.install()


def stopped_once(
    *overrides: str, send: list[str], cwd: Path, cluster: dict, logger: str = "none"
) -> tuple[str, str, int]:
    """A sweep of one job of LONG, `send` (a Slurm command, the job's id appended) run once the job has
    logged epoch 1; (the job's id, its log, the step its stop's line says it saved at, inside epoch 2) once
    the sweep has ended with exit 0, after the job's second start."""
    proc = start_sweep(*overrides, cwd=cwd, cluster=cluster, logger=logger)
    job, log = job_log(cwd)
    when_logged(log, "epoch 1/2", proc)
    wait_for(run_dir(cwd, *(o for o in overrides if not o.startswith("hydra."))) / "checkpoints" / "last.ckpt", proc)
    time.sleep(0.3)  # epoch 1's checkpoint written and its end passed: epoch 2 under way (about 2.5 s long)
    slurm(cluster, *send, job)
    code, out = finished(proc, cwd)
    text = log.read_text()
    assert code == 0, out + text[-3000:]
    assert text.count("Starting with JobEnvironment") == 2, text[-3000:]
    (saved,) = [line for line in text.splitlines() if re.match(r"SIG(USR2|TERM): saved ", line)]
    steps = STEPS // 2 if "trainer=ddp" in overrides else STEPS  # DDP: each process trains on half the batches
    return job, text, stopped_in_epoch_2(saved, steps)


@pytest.mark.slow  # a real Slurm cluster: jobs submitted, signalled, requeued
def test_usr2_preemption_saves_mid_epoch_requeues_and_resumes_bit_identically(cluster, tmp_path, reference):
    """submitit's preemption signal, from Slurm: last.ckpt saved inside epoch 2, the job requeued by submitit
    (the same Slurm job, a second start), resumed in the same run directory, one wandb run across both starts."""
    job, text, step = stopped_once(
        *LONG, "seed=0", send=["scancel", "--signal=USR2"], cwd=tmp_path, cluster=cluster, logger="wandb"
    )
    assert "requeueing the job, which resumes from it" in text and f"Requeued job {job}" in text
    run = run_dir(tmp_path, *LONG, "seed=0")
    assert f"Resuming {run} from {run}/checkpoints/last.ckpt (saved in epoch 2 at step {step})" in text
    assert_same_run(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True), reference)
    starts = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(starts) == 2 and {f.name for f in starts} == {f"run-{stable_id(str(run))}.wandb"}, starts
    (row,) = csv.DictReader(open(next((tmp_path / "outputs" / "sweeps").iterdir()) / "summary.csv"))
    assert row["status"] == "finished" and row["epochs"] == "2"


@pytest.mark.slow  # a real Slurm cluster: jobs submitted, signalled, requeued
def test_scontrol_requeue_sigterm_saves_mid_epoch_and_resumes_bit_identically(cluster, tmp_path, reference):
    """`scontrol requeue`: SIGTERM (SIGKILL after KillWait, 2 s here), Slurm requeues the job itself; the
    SIGTERM save inside epoch 2, the resume from it, one MLflow run across both starts."""
    _, text, step = stopped_once(
        *LONG, "seed=0", send=["scontrol", "requeue"], cwd=tmp_path, cluster=cluster, logger="mlflow"
    )
    run = run_dir(tmp_path, *LONG, "seed=0")
    assert "SIGTERM: saved " in text
    assert f"(saved in epoch 2 at step {step})" in text
    assert_same_run(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True), reference)
    runs = [
        r
        for e in (run / "mlruns").iterdir()
        if e.is_dir() and e.name not in (".trash", "0")
        for r in e.iterdir()
        if r.is_dir()
    ]
    assert len(runs) == 1, runs


@pytest.mark.slow  # a real Slurm cluster: jobs submitted, signalled, requeued
def test_killed_jobs_are_reported_and_rerunning_the_sweep_resumes_them_and_skips_the_finished(
    cluster, tmp_path, reference
):
    """Two jobs killed in epoch 2: job 0 by the kernel with no warning (SIGKILL to its process, as the OOM
    killer does: nothing saved since epoch 1), job 1 by `scancel --signal=KILL` (which Slurm carries out as a
    cancel: SIGTERM, then SIGKILL after KillWait; the job saves on the SIGTERM). The sweep says in one line a
    job that left the queue without a result, writes its summary and exits non-zero; the same command again
    resumes each from its last checkpoint; a third time trains nothing."""
    proc = start_sweep(*LONG, "seed=0,1", cwd=tmp_path, cluster=cluster)
    (job0, log0), (job1, log1) = job_log(tmp_path, task=0), job_log(tmp_path, task=1)
    when_logged(log0, "epoch 1/2", proc)
    when_logged(log1, "epoch 1/2", proc)
    wait_for(run_dir(tmp_path, *LONG, "seed=0") / "checkpoints" / "last.ckpt", proc)  # epoch 1's, on disk
    os.kill(job_process(job0), signal.SIGKILL)
    slurm(cluster, "scancel", "--signal=KILL", job1)
    code, out = finished(proc, tmp_path)
    assert code == 143, out  # the worst job's: one was stopped by a signal, with its state saved
    lost = {int(line.split()[1]): line for line in out.splitlines() if re.match(r"job \d \(", line)}
    assert f"Slurm job {job0} left the queue without a result" in lost[0]
    assert "rerunning the sweep command resumes it" in lost[0] and set(lost) == {0, 1}
    directory = next((tmp_path / "outputs" / "sweeps").iterdir())
    rows = list(csv.DictReader(open(directory / "summary.csv")))
    assert [row["status"] for row in rows] == ["incomplete", "preempted"]
    assert rows[0]["error"].startswith(f"Slurm job {job0} left the queue without a result")
    assert rows[0]["error"] in lost[0]
    step = stopped_in_epoch_2(next(line for line in log1.read_text().splitlines() if line.startswith("SIGTERM: saved")))

    again = sweep(*LONG, "seed=0,1", cwd=tmp_path, cluster=cluster)
    first, second = last_array_logs(tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr + first + second
    run = run_dir(tmp_path, *LONG, "seed=0")
    assert f"Resuming {run} from {run}/checkpoints/last.ckpt (epoch 1 done)" in first
    assert f"(saved in epoch 2 at step {step})" in second
    assert_same_run(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True), reference)
    assert [row["status"] for row in csv.DictReader(open(directory / "summary.csv"))] == ["finished", "finished"]

    third = sweep(*LONG, "seed=0,1", cwd=tmp_path, cluster=cluster)
    assert third.returncode == 0, third.stdout + third.stderr
    assert all(
        "Run already complete (epoch 2)" in log and "Training sine" not in log and "Resuming" not in log
        for log in last_array_logs(tmp_path)
    )


def job_process(job: str) -> int:
    """The PID of the program a Slurm job (`<array>_<task>`) runs: the process whose environment says so."""
    array, task = job.split("_")
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            variables = dict(
                v.split("=", 1) for v in environ.read_bytes().decode(errors="replace").split("\0") if "=" in v
            )
            command = (environ.parent / "cmdline").read_bytes()
        except OSError:
            continue
        program = command.split(b"\0")  # the Python that srun started, not srun (whose arguments name it too)
        if (
            program[0].rsplit(b"/", 1)[-1] != b"srun"
            and b"submitit.core._submit" in program
            and variables.get("SLURM_ARRAY_JOB_ID") == array
            and variables.get("SLURM_ARRAY_TASK_ID") == task
        ):
            return int(environ.parent.name)
    raise AssertionError(f"no process of Slurm job {job}")


@pytest.mark.slow  # a real Slurm cluster: jobs submitted, signalled, requeued
def test_a_time_limit_requeues_up_to_max_num_timeout_then_the_record_says_so(cluster, tmp_path):
    """A one-minute time limit, its warning 10 s before the end (Slurm sends it up to 30 s early, at its
    30-second checks: 20 to 50 s after the start): the job saves at the step it had reached (held there until
    the warning comes: tests/slurm_callbacks.py) and submitit requeues it while `max_num_timeout` allows; the
    second start finishes the run. With `max_num_timeout=0` the first warning ends the job: saved, not
    requeued, its record says so in one line."""
    limit = [
        "hydra.launcher.timeout_min=1",
        "hydra.launcher.signal_delay_s=10",
        "+callbacks.wait._target_=tests.slurm_callbacks.WaitForWarning",
        "+callbacks.wait.step=40",
    ]
    once = start_sweep(
        *limit,
        "hydra.launcher.max_num_timeout=1",
        "seed=0",
        "trainer.max_epochs=3",
        cwd=tmp_path,
        cluster=cluster,
        name="once",
    )
    never = start_sweep(
        *limit,
        "hydra.launcher.max_num_timeout=0",
        "seed=1",
        "trainer.max_epochs=3",
        cwd=tmp_path,
        cluster=cluster,
        name="never",
    )
    code, out = finished(once, tmp_path, "once")
    (requeued,) = [log for log in job_logs(tmp_path).values() if "seed=0" in log]
    assert code == 0, out + requeued[-3000:]
    assert "SIGUSR2: Slurm is about to stop this job" in requeued and "this job is timed-out" in requeued
    assert re.search(r"SIGUSR2: saved \S+ in epoch 2 at step 40; requeueing", requeued), requeued[-3000:]
    assert "(0 remaining timeouts)" in requeued and "Done: sine, 3 epochs" in requeued
    assert requeued.count("Starting with JobEnvironment") == 2

    code, out = finished(never, tmp_path, "never")
    (ended,) = [log for log in job_logs(tmp_path).values() if "seed=1" in log]
    assert code == 143, out + ended[-3000:]
    assert re.search(r"SIGUSR2: saved \S+ in epoch 2 at step 40", ended)
    assert ended.count("Starting with JobEnvironment") == 1
    directory = next(d for d in (tmp_path / "outputs" / "sweeps").iterdir() if "seed=1" in d.name)
    (row,) = csv.DictReader(open(directory / "summary.csv"))
    assert row["status"] == "timed out"
    assert row["error"] == (
        "timed-out too many times (hydra.launcher.max_num_timeout); rerun the sweep command to "
        "resume it from its last checkpoint"
    )
    assert f"job 0 ({row['overrides']}): timed out: {row['error']}" in out.replace("Not finished: ", "")


@pytest.mark.slow  # a real Slurm cluster: jobs submitted, signalled, requeued
def test_a_job_failing_its_preflight_is_recorded_with_its_reason_and_the_others_finish(cluster, tmp_path):
    r = sweep("task.lr=0.0,0.003", cwd=tmp_path, cluster=cluster)
    assert r.returncode == 1, r.stdout + r.stderr  # the worst job's status (docs/training.md, exit status)
    directory = next((tmp_path / "outputs" / "sweeps").iterdir())
    failed, done = csv.DictReader(open(directory / "summary.csv"))
    assert failed["status"] == "failed" and done["status"] == "finished"
    assert failed["error"].startswith("preflight stage 'optimizer_step' failed")
    assert "Nothing was trained" in failed["error"]


@pytest.mark.slow  # a real Slurm cluster: jobs submitted, signalled, requeued
def test_two_sweeps_submitting_the_same_job_at_once_one_trains_and_the_other_says_so(cluster, tmp_path, reference):
    first = start_sweep(*LONG, "seed=0", cwd=tmp_path, cluster=cluster, name="first")
    second = start_sweep(*LONG, "seed=0", cwd=tmp_path, cluster=cluster, name="second")
    results = [finished(first, tmp_path, "first"), finished(second, tmp_path, "second")]
    logs = list(job_logs(tmp_path).values())
    run = run_dir(tmp_path, *LONG, "seed=0")
    assert len(logs) == 2 and sum("Done: sine, 2 epochs" in log for log in logs) == 1, logs
    assert sorted(code for code, _ in results) == [0, 2], results  # the refusal is the user's to resolve: exit 2
    (refused,) = [out for code, out in results if code == 2]
    assert f"failed: {run} is being trained by PID " in refused and "one process writes a run" in refused
    assert_same_run(torch.load(run / "checkpoints" / "last.ckpt", weights_only=True), reference)


@pytest.mark.slow  # a real Slurm cluster: jobs submitted, signalled, requeued
def test_ddp_inside_a_slurm_job_trains_and_resumes_bit_identically_after_a_preemption(cluster, tmp_path):
    """`tasks_per_node=2`: srun starts both DDP processes (gloo on CPU) and Lightning takes them. Both get the
    warning, each at its own moment; they agree to stop after the same batch, rank 0 saves every process's
    share of the epoch's sums, and the requeued job ends as the same DDP run never stopped (started by
    Lightning on this machine)."""
    ddp = ["trainer=ddp", *LONG]
    whole = tmp_path / "whole"
    whole.mkdir()
    done = run_train(*SINE, *ddp, cwd=whole, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    reference = torch.load(run_dir(whole, *ddp) / "checkpoints" / "last.ckpt", weights_only=True)

    _, text, step = stopped_once(
        *ddp,
        "seed=0",
        "hydra.launcher.tasks_per_node=2",
        send=["scancel", "--signal=USR2"],
        cwd=tmp_path,
        cluster=cluster,
    )
    assert "Initializing distributed: GLOBAL_RANK: 0, MEMBER: 1/2" in text
    assert f"(saved in epoch 2 at step {step})" in text
    assert_same_run(
        torch.load(run_dir(tmp_path, *ddp, "seed=0") / "checkpoints" / "last.ckpt", weights_only=True), reference
    )


def test_each_ddp_process_takes_its_own_share_of_a_mid_epoch_checkpoint_and_a_crafted_share_is_not_taken():
    """task_epoch_state.by_rank (written by every process together) is data: a process takes its own entry
    only when there is one per process and it holds a tensor; else rank 0 the top level, the others nothing."""
    from types import SimpleNamespace

    from experiments.epoch_sampler import epoch_state_for_this_rank

    def share(rank: int, state: dict, world: int = 2):
        module = SimpleNamespace(_trainer=SimpleNamespace(global_rank=rank, world_size=world))
        return epoch_state_for_this_rank(module, {"task_epoch_state": state})

    top = {"sums": torch.tensor([1.0]), "count": 3}
    mine = [{"sums": torch.tensor([1.0]), "count": 3}, {"sums": torch.tensor([2.0]), "count": 4}]
    assert share(1, {**top, "by_rank": mine}) is mine[1] and share(0, {**top, "by_rank": mine}) is mine[0]
    for crafted in (mine[:1], [mine[0], {"sums": "2.0", "count": 4}], [mine[0], "x"], "by rank"):
        assert share(1, {**top, "by_rank": crafted}) is None
    for crafted in (mine[:1], mine * 2, "by rank", [{"sums": [1.0]}, mine[1]]):
        assert share(0, {**top, "by_rank": crafted})["sums"] is top["sums"]
    assert share(0, {**top, "by_rank": mine}, world=1)["sums"] is top["sums"]  # resumed on one process
    assert share(0, "not a mapping") is None
