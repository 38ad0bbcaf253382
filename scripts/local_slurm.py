"""A real one-node Slurm on this machine, for the tests and for trying `hydra/launcher=slurm` on a workstation.

    python scripts/local_slurm.py start /tmp/slurm    # prints: export SLURM_CONF=/tmp/slurm/slurm.conf
    python scripts/local_slurm.py stop /tmp/slurm

`start` installs Debian's packages (slurmctld, slurmd, slurm-client) when they are missing and this runs as
root, writes a config into the folder (the node's CPUs and memory read from this machine; no munge, no
accounting database, no systemd: `auth/none`), starts slurmctld and slurmd on two free ports with their
state, logs and PID files in that folder, and waits until the node is idle. `stop` cancels the cluster's
jobs, ends the two daemons it started (their process groups, from the folder) and any process left with
this cluster's config in its environment, and nothing else. Without root and without Slurm, `start` says
why in one line and exits 2 (the tests skip with that line).

Set for a test's pace, not a cluster's: a requeued job may start again after 6 s (`cred_expire=5`, 120 s by
default), the scheduler looks every second, and a job's processes get 2 s between SIGTERM and SIGKILL.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

PACKAGES = ("slurmctld", "slurmd", "slurm-client")
DAEMONS = ("slurmctld", "slurmd")
STARTED: dict = {}  # {pid: Popen} of the daemons this process started, reaped by `stop`


class Unavailable(Exception):
    """Slurm cannot be started here: the reason, one line."""


def missing() -> list[str]:
    return [
        name
        for name in ("slurmctld", "slurmd", "sbatch", "squeue", "scancel", "scontrol", "sinfo")
        if shutil.which(name) is None
    ]


def install() -> None:
    """Debian's Slurm packages, when a command is missing (as root only)."""
    if not missing():
        return
    if os.geteuid() != 0:
        raise Unavailable(
            f"Slurm is not installed ({', '.join(missing())} missing) and this is not root: "
            f"apt-get install {' '.join(PACKAGES)}"
        )
    quiet = {"capture_output": True, "text": True, "env": {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}}
    subprocess.run(["apt-get", "update", "-qq"], check=False, timeout=600, **quiet)
    done = subprocess.run(
        ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES], timeout=900, **quiet
    )
    if done.returncode or missing():
        raise Unavailable(f"apt-get install {' '.join(PACKAGES)} failed: {(done.stderr or done.stdout).strip()[-300:]}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config(folder: Path) -> str:
    cpus = os.cpu_count() or 1
    memory_mb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2**20
    user = "root" if os.geteuid() == 0 else os.environ.get("USER") or "root"
    return "\n".join(
        [
            "ClusterName=local",
            "SlurmctldHost=localhost",
            "AuthType=auth/none",
            "CredType=cred/none",
            "AuthInfo=cred_expire=5",  # a requeued job waits this long before it starts again (default 120 s)
            "MpiDefault=none",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            f"StateSaveLocation={folder / 'state'}",
            f"SlurmdSpoolDir={folder / 'spool'}",
            f"SlurmctldPidFile={folder / 'slurmctld.pid'}",
            f"SlurmdPidFile={folder / 'slurmd.pid'}",
            f"SlurmctldLogFile={folder / 'slurmctld.log'}",
            f"SlurmdLogFile={folder / 'slurmd.log'}",
            f"SlurmctldPort={free_port()}",
            f"SlurmdPort={free_port()}",
            "SchedulerType=sched/builtin",
            "SchedulerParameters=sched_interval=1",  # a requeued job starts when it may
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "ReturnToService=2",
            "KillWait=2",  # a single node starts no new job while one is still completing: keep that short
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            f"NodeName=localhost CPUs={cpus} RealMemory={max(memory_mb - 1024, 512)} State=UNKNOWN",
            "PartitionName=local Nodes=localhost Default=YES MaxTime=INFINITE State=UP",
            "",
        ]
    )


def environment(folder: Path) -> dict:
    return {**os.environ, "SLURM_CONF": str(Path(folder) / "slurm.conf")}


def start(folder: Path, timeout: float = 60) -> dict:
    """The cluster up, its config in `folder`; returns the environment its commands need (SLURM_CONF)."""
    folder = Path(folder).resolve()
    install()
    for sub in ("state", "spool"):
        (folder / sub).mkdir(parents=True, exist_ok=True)
    conf = folder / "slurm.conf"
    conf.write_text(config(folder))
    env = environment(folder)
    for name, extra in (("slurmctld", ["-i"]), ("slurmd", ["-N", "localhost"])):
        # in the foreground, each in a process group of its own: `stop` ends the group, children included
        with open(folder / f"{name}.out", "ab") as log:
            daemon = subprocess.Popen(
                [name, "-D", "-f", str(conf), *extra],
                env=env,
                stdout=log,
                stderr=log,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        STARTED[daemon.pid] = daemon
        (folder / f"{name}.group").write_text(f"{daemon.pid}\n")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = subprocess.run(["sinfo", "-h", "-o", "%t"], env=env, capture_output=True, text=True, timeout=30)
        if state.stdout.strip() == "idle":
            return env
        time.sleep(0.2)
    stop(folder)
    raise Unavailable(f"the node did not become idle within {timeout:g} s (logs in {folder})")


def stop(folder: Path, timeout: float = 30) -> None:
    """End the cluster `start` began in `folder`: its jobs cancelled (Slurm runs them in sessions of their
    own, outside the daemons' groups), then its daemons (their process groups, recorded there), SIGKILL after
    `timeout`, then any process still running with this cluster's config in its environment; nothing else."""
    folder = Path(folder).resolve()
    cancel_jobs(folder, timeout)
    for name in DAEMONS:
        group = recorded_group(folder, name)
        if group is None:
            continue
        for sig in (signal.SIGTERM, signal.SIGKILL):
            try:
                os.killpg(group, sig)
            except ProcessLookupError:
                break
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and running(group):
                time.sleep(0.1)
            if not running(group):
                break
        if group in STARTED:  # ours: reaped, not left a zombie
            STARTED.pop(group).wait(timeout)
        (folder / f"{name}.group").unlink(missing_ok=True)
    for pid in processes_of(folder):  # a job's process that outlived its cancelled job
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def cancel_jobs(folder: Path, timeout: float) -> None:
    """Cancel every job of the cluster configured in `folder`, and wait (at most `timeout`) for the queue
    to empty."""
    env = environment(folder)
    group = recorded_group(folder, "slurmctld")
    if group is None or not running(group):
        return
    quiet = {"env": env, "capture_output": True, "text": True, "timeout": 30}
    subprocess.run(["scancel", "--user", str(os.geteuid()), "--quiet"], **quiet)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        queue = subprocess.run(["squeue", "-h", "-o", "%i"], **quiet)
        if queue.returncode or not queue.stdout.strip():
            return
        time.sleep(0.2)


def recorded_group(folder: Path, name: str) -> int | None:
    """The process group `start` recorded for daemon `name` in `folder`, if any."""
    try:
        return int((Path(folder) / f"{name}.group").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def processes_of(folder: Path) -> list[int]:
    """PIDs of the processes (other than this one) whose environment names the cluster's config in `folder`:
    its daemons' and its jobs'."""
    mark = f"SLURM_CONF={Path(folder).resolve() / 'slurm.conf'}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if mark in environ.read_bytes().split(b"\0") and int(environ.parent.name) != os.getpid():
                found.append(int(environ.parent.name))
        except (OSError, ValueError):
            continue
    return [pid for pid in found if (stat_of(pid) or ["Z"])[0] != "Z"]


def stat_of(pid) -> list[str] | None:
    """The fields of /proc/PID/stat after the command's name (state first, then parent, group...); None when
    the process is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def running(group: int) -> bool:
    """Whether a process of the group is still running (zombies are not)."""
    for stat_file in Path("/proc").glob("[0-9]*/stat"):
        fields = stat_of(stat_file.parent.name)
        if fields and int(fields[2]) == group and fields[0] != "Z":
            return True
    return False


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in ("start", "stop"):
        print("usage: python scripts/local_slurm.py start|stop FOLDER", file=sys.stderr)
        return 2
    action, folder = argv
    if action == "stop":
        stop(Path(folder))
        return 0
    try:
        env = start(Path(folder))
    except Unavailable as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"export SLURM_CONF={env['SLURM_CONF']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
