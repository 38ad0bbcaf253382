"""The SLURM launcher (`hydra/launcher=slurm`): hydra-submitit-launcher's, submitting each job of a sweep as
a task of one Slurm job array, and waiting for them as a sweep needs.

hydra-submitit-launcher waits with submitit's `job.results()`, which learns a job's end from `sacct`. On a
cluster without an accounting database (slurmdbd) a job killed without writing its result is never seen to
end, and the sweep waits forever; with one, the first such job raises out of the sweep, and no summary is
written. Here each job is waited for by its result file and `squeue`: a job that left the queue without a
result (cancelled, killed, its node lost, timed out too often) is reported in one line, its record in the
sweep directory says so, and the others are waited for; the sweep's summary follows and its exit status
says a job did not finish. A job Slurm requeues (preemption, `scontrol requeue`, a time limit with
`max_num_timeout` left) stays in the queue and is waited for as before.

Hydra imports every plugin module of every application: this one defines nothing without
hydra-submitit-launcher (the `sweep` extra) and imports the framework only when a job is lost.
"""

import subprocess
import sys
import time
from pathlib import Path

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

try:
    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher as SubmititSlurmLauncher
except ImportError:  # without the `sweep` extra: no SLURM launcher (Hydra says so when one is asked for)
    SubmititSlurmLauncher = None

POLL_S = 1.0
GRACE_S = 10.0  # a result file written as the job left the queue may reach a shared filesystem later


class SlurmLauncher(SubmititSlurmLauncher or object):  # (a plain class without the extra: no plugin)
    def launch(self, job_overrides, initial_job_idx: int) -> list[JobReturn]:
        import submitit

        params = dict(self.params)
        executor = submitit.AutoExecutor(
            folder=params.pop("submitit_folder"), cluster="slurm", slurm_max_num_timeout=params.pop("max_num_timeout")
        )
        shared = set(OmegaConf.structured(BaseQueueConf).keys())  # the others are Slurm's: slurm_<name>
        executor.update_parameters(**{k if k in shared else f"slurm_{k}": v for k, v in params.items()})
        Path(str(self.config.hydra.sweep.dir)).mkdir(parents=True, exist_ok=True)
        numbers = [initial_job_idx + i for i in range(len(job_overrides))]
        arguments = [
            (list(o), "hydra.sweep.dir", n, f"job_id_for_{n}", Singleton.get_state())
            for n, o in zip(numbers, job_overrides)
        ]
        jobs = executor.map_array(self, *zip(*arguments))
        print(
            f"Submitted {len(jobs)} Slurm job(s) ({jobs[0].job_id.split('_')[0]}); each job's log: "
            f"{Path(jobs[0].paths.folder).parent}/<job id>/<job id>_0_log.out",
            flush=True,
        )
        return waited(jobs, numbers, [list(o) for o in job_overrides])

    def __call__(self, *args, **kwargs):
        from experiments.cli import quiet_libraries  # in the job's process, as in a local one

        quiet_libraries()
        return super().__call__(*args, **kwargs)


def waited(jobs: list, numbers: list[int], overrides: list[list[str]]) -> list[JobReturn]:
    """Each job's return once it has one, or once it has been out of the queue for GRACE_S without one (then
    a completed return of nan: the sweep's record of the job says how it ended). One `squeue` a second for
    all the jobs still waited for."""
    returns, gone_since = {}, {}
    while len(returns) < len(jobs):
        waiting = [i for i in range(len(jobs)) if i not in returns]
        in_queue = queued([jobs[i].job_id for i in waiting])
        for i in waiting:
            job = jobs[i]
            if all(job.task(t).paths.result_pickle.exists() for t in range(job.num_tasks)):  # (DDP: a task a process)
                returns[i] = result_of(job, numbers[i], overrides[i])
            elif in_queue is None or job.job_id in in_queue:
                gone_since.pop(i, None)
            elif time.monotonic() - gone_since.setdefault(i, time.monotonic()) > GRACE_S:
                returns[i] = lost(job, numbers[i], overrides[i])
        if len(returns) < len(jobs):
            time.sleep(POLL_S)
    return [returns[i] for i in range(len(jobs))]


def result_of(job, num: int, overrides: list[str]) -> JobReturn:
    try:
        return job.results()[0]
    except Exception as e:  # raised outside the program's own handling (train_job catches the rest)
        return lost(job, num, overrides, f"ended with {type(e).__name__}: {' '.join(str(e).split())[:300]}")


def queued(job_ids: list[str]) -> set[str] | None:
    """Which of the jobs Slurm still has (pending, running, completing, requeued); None when `squeue`
    fails (the controller unreachable for a moment: no job is taken for lost)."""
    try:
        found = subprocess.run(
            ["squeue", "-h", "-r", "-j", ",".join(job_ids), "-o", "%i"], capture_output=True, text=True, timeout=60
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if found.returncode:
        return set() if "Invalid job id" in found.stderr else None
    return set(found.stdout.split())


def lost(job, num: int, overrides: list[str], how: str = "left the queue without a result") -> JobReturn:
    """A job that ended without the program's own end: one line, and its record in the sweep says so."""
    from experiments import sweep

    why = (
        f"Slurm job {job.job_id} {how} (cancelled, killed, its node lost, or timed out); its log: "
        f"{job.paths.stdout}; rerunning the sweep command resumes it from its last checkpoint"
    )
    print(f"job {num} ({' '.join(overrides)}): {why}", file=sys.stderr, flush=True)
    sweep.note_lost_job(num, why)
    ret = JobReturn(overrides=overrides, status=JobStatus.COMPLETED)
    ret.return_value = float("nan")
    return ret
