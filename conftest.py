import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent  # the checkout
# Small and quick, but the real programs: 77 steps an epoch instead of 308.
# The smallest family (examples/sine, a user's family outside the package): what the framework's own tests run.
SINE_CONF = ROOT / "examples" / "sine" / "conf"
SINE = ["--config-dir", str(SINE_CONF), "experiment=sine", "logger=none", "trainer.enable_progress_bar=false"]
FAST = [
    "experiment=ternary_v5_5",
    "logger=none",
    "data.batch_size=256",
    "task.coverage_samples=2000",
    "trainer.enable_progress_bar=false",
]


def run_name(args, exclude=("experiment", "logger", "trainer.enable_progress_bar")) -> str:
    """The run directory name Hydra gives a command's overrides (the sorted ones that change the result)."""
    from experiments.run_dir import run_id

    return run_id(",".join(sorted(a for a in args if "=" in a and a.split("=")[0] not in exclude)))


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    # one thread a process: two test workers share two cores (a resumed run is compared with runs of the
    # same setting, so exactness is unaffected)
    e.update(
        WANDB_MODE="offline",
        WANDB_SILENT="true",
        PYTHONUNBUFFERED="1",
        OMP_NUM_THREADS="1",
        PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), e.get("PYTHONPATH")) if p),
    )  # examples/, as from the root
    return e


def options_first(args) -> list[str]:
    """Hydra's options (`--config-dir DIR`, `-m`, ...) before the overrides, wherever a test put them."""
    args, options, overrides = list(args), [], []
    while args:
        arg = args.pop(0)
        if arg in ("--config-dir", "-cd", "--cfg", "-c", "--package", "-p"):
            options += [arg, args.pop(0)]
        elif arg.startswith("-"):
            options.append(arg)
        else:
            overrides.append(arg)
    return options + overrides


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *options_first(overrides)]


def run_train(
    *overrides: str, cwd: Path, timeout: float = 300, extra_env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        train_cmd(*overrides),
        cwd=cwd,
        env={**env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def start_train(*overrides: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(
        train_cmd(*overrides), cwd=cwd, env=env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path


def run_program(
    program: str, *args: str, cwd: Path, extra_env: dict | None = None, timeout: float = 300, process: bool = False
) -> subprocess.CompletedProcess:
    """verify.py or eval.py as a user runs it: inside the test process (`in_process`), or in a process of its
    own with `process=True` or an environment of its own (what is about imports needs one: a family's
    package off the Python path, a module that must not be imported)."""
    if not (process or extra_env):
        return in_process(program, *args, cwd=cwd)  # (its own time limit: runs inside take longer than 300 s at times)
    return subprocess.run(
        [sys.executable, str(ROOT / program), *options_first(args)],
        cwd=cwd,
        env={**env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class InProcessTimeout(BaseException):
    """Raised in a program run by `in_process` that ran past its time: a BaseException, so that no
    `except Exception` of the program's own swallows it."""


def in_process(program: str, *args: str, cwd: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    """`python PROGRAM ARGS` run inside the test process: the same script and code path, its exit status,
    stdout and stderr returned as subprocess.run would, on one thread as a test's process has it, without a
    process start (about 10 s on the CI machine, mostly importing Lightning, torch._dynamo and torchmetrics).
    For what a test reads from a program's result: a refusal, a run a test then inspects (a fixture's
    trained run, a run's files), verify.py and eval.py. Behaviour that is about processes (signals, kills,
    locks, several processes, the console of a real process) or about imports (a family's package, a module
    that must not be imported) keeps real processes. Past `timeout` seconds (SIGALRM, as subprocess.run's
    timeout would) the program is stopped and the test fails, rather than hang its worker."""
    import contextlib
    import io
    import logging
    import random
    import runpy
    import signal
    import traceback
    import warnings

    import numpy as np
    import torch
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    # what the program changes in this process, put back after it: Hydra configures logging (the root
    # logger's handlers and level), the scripts put src/ on sys.path, a run seeds the random generators
    root = logging.getLogger()
    saved = (
        sys.argv,
        os.getcwd(),
        dict(os.environ),
        sys.path[:],
        root.handlers[:],
        root.level,
        random.getstate(),
        np.random.get_state(),
        torch.get_rng_state(),
        torch.get_num_threads(),
        warnings.filters[:],
        {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM, signal.SIGALRM)},
    )
    fresh = env()  # (read before the environment is replaced)
    out, err, code = io.StringIO(), io.StringIO(), 0
    sys.argv = [str(ROOT / program), *options_first(args)]
    try:
        os.chdir(cwd)
        os.environ.clear()
        os.environ.update(fresh)
        torch.set_num_threads(1)  # OMP_NUM_THREADS=1, as env() gives a test's processes
        signal.signal(
            signal.SIGALRM,
            lambda *_: _raise(
                InProcessTimeout(f"{program} {' '.join(args)} ran past {timeout:g} s inside the test process")
            ),
        )
        signal.setitimer(signal.ITIMER_REAL, timeout)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                runpy.run_path(sys.argv[0], run_name="__main__")
            except InProcessTimeout:
                raise
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
            except KeyboardInterrupt:  # the person running the tests
                raise
            except BaseException:  # as the interpreter would: the traceback on stderr, exit 1
                traceback.print_exc()
                code = 1
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        sys.argv, cwd_before, environ, sys.path[:], root.handlers[:], level = saved[:6]
        os.chdir(cwd_before)
        os.environ.clear()
        os.environ.update(environ)
        root.setLevel(level)
        random.setstate(saved[6])
        np.random.set_state(saved[7])
        torch.set_rng_state(saved[8])
        torch.set_num_threads(saved[9])
        warnings.filters[:] = saved[10]
        for number, handler in saved[11].items():  # a stopped run leaves SIGINT ignored, as a process would
            signal.signal(number, handler)
        GlobalHydra.instance().clear()
        HydraConfig.instance().cfg = None
    return subprocess.CompletedProcess([program, *args], code, out.getvalue(), err.getvalue())


def _raise(e: BaseException):
    raise e


def one_error_line(r: subprocess.CompletedProcess) -> str:
    """The one stderr line a refusal prints (and nothing else: no traceback, no Hydra header)."""
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    return lines[0]


@pytest.fixture(scope="session")
def ternary_run(tmp_path_factory) -> Path:
    """A real v5.5 run (6 epochs, checkpoints every 2), shared read-only: copy it before changing it."""
    root = tmp_path_factory.mktemp("ternary_run")
    # trained inside the test process: what the tests read is the run it leaves, not how a process ran it
    r = in_process(
        "train.py",
        *FAST,
        "trainer.max_epochs=6",
        "checkpoint.every_n_epochs=2",
        "task.coverage_samples=19683",
        cwd=root,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (root / "outputs" / "ternary_v5_5").iterdir()
    return run


def pytest_configure(config):
    if os.environ.get("PYTEST_XDIST_WORKER"):  # a test worker beside another: one core each
        import torch

        torch.set_num_threads(1)


def assert_identical(a, b):
    """Two checkpoints of one run, bit for bit: weights, optimizer state, step, history (times aside)."""
    import torch

    assert a["state_dict"].keys() == b["state_dict"].keys()
    for k in a["state_dict"]:
        assert torch.equal(a["state_dict"][k], b["state_dict"][k]), f"weights differ at {k}"
    for sa, sb in zip(a["optimizer_states"][0]["state"].values(), b["optimizer_states"][0]["state"].values()):
        for k in sa:
            assert torch.equal(torch.as_tensor(sa[k]), torch.as_tensor(sb[k])), f"optimizer state {k} differs"
    assert a["global_step"] == b["global_step"]
    strip = lambda h: [{k: v for k, v in row.items() if not k.startswith("time/")} for row in h]  # noqa: E731
    assert strip(a["history"]) == strip(b["history"])


def wait_for(path, proc, timeout=120):
    t0 = time.time()
    while not path.exists():
        assert proc.poll() is None, proc.stdout.read()
        assert time.time() - t0 < timeout, "no checkpoint appeared"
        time.sleep(0.05)


def killed_then_rerun(args, run: Path, cwd: Path, delay: float) -> subprocess.CompletedProcess:
    """Start a run, SIGKILL it `delay` seconds after its first last.ckpt (inside a later epoch, unfinished),
    then run the same command again to its end (inside the test process: what it resumes from is on disk);
    returns the rerun (it must say it resumes)."""
    import signal

    import torch

    proc = start_train(*args, cwd=cwd)
    wait_for(run / "checkpoints" / "last.ckpt", proc)
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    partial = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert not partial["run"]["finished"], "the kill came too late to test anything"
    again = in_process("train.py", *args, cwd=cwd)  # the rerun reads what the killed process left
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Resuming" in again.stdout
    return again


@contextlib.contextmanager
def fifo_feeding(path, content: bytes):
    """A FIFO at `path` that gives `content` to whatever opens it, so that a reader that opened it goes on
    (and fails its test) rather than hang it; released at the end whether or not anything opened it."""
    import threading

    os.mkfifo(path)

    def feed():
        with contextlib.suppress(BrokenPipeError), open(path, "wb") as f:  # waits for a reader
            f.write(content)

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    try:
        yield path
    finally:
        reader = os.open(path, os.O_RDONLY | os.O_NONBLOCK)  # lets the writer's open() return
        writer.join()
        os.close(reader)


def pytest_collection_modifyitems(config, items):
    """The Slurm tests first: they mostly wait on the cluster (requeues, its 30-second time checks), so they
    run beside the other worker's work instead of after it."""
    items.sort(key=lambda item: item.path.name != "test_slurm.py")  # a stable sort: the rest keep their order
