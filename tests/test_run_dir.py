"""Run identity: the same command finds the same directory; it resumes, reports completion, or refuses."""

import torch

from conftest import SINE, in_process, run_name

ARGS = [*SINE, "trainer.max_epochs=2"]


def run_dir(root):
    dirs = list((root / "outputs" / "sine").iterdir())
    assert len(dirs) == 1, dirs
    return dirs[0]


def test_two_epochs_then_same_command_trains_nothing(workdir):
    first = in_process("train.py", *ARGS, cwd=workdir)
    assert first.returncode == 0, first.stdout + first.stderr
    rd = run_dir(workdir)
    assert rd.name == run_name(ARGS) == "trainer.max_epochs=2"
    ckpts = sorted(p.name for p in (rd / "checkpoints").glob("*.ckpt"))
    assert ckpts == ["best-epoch=0002.ckpt", "epoch=0002.ckpt", "last.ckpt"]
    ckpt = torch.load(rd / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["config"]["trainer"]["max_epochs"] == 2 and ckpt["config"]["experiment"] == "sine"
    assert [row["epoch"] for row in ckpt["history"]] == [0, 1]
    mtimes = {p: p.stat().st_mtime_ns for p in (rd / "checkpoints").iterdir()}

    again = in_process("train.py", *ARGS, cwd=workdir)  # (it trains nothing)
    assert again.returncode == 0
    assert "Run already complete (epoch 2)" in again.stdout
    assert "Training" not in again.stdout and "preflight" not in again.stdout
    assert {p: p.stat().st_mtime_ns for p in (rd / "checkpoints").iterdir()} == mtimes

    # Keys outside the run's identity (logger, outputs root) find the same run.
    same = in_process("train.py", *[a for a in ARGS if not a.startswith("logger=")], "logger=csv", cwd=workdir)
    assert same.returncode == 0 and "Run already complete" in same.stdout


def test_changed_config_is_refused_with_the_difference(workdir):
    assert in_process("train.py", *ARGS, cwd=workdir).returncode == 0
    rd = run_dir(workdir)
    # Same directory, different result-defining config: edit what the run stored, as a changed
    # preset file would look.
    stored = (rd / "run.yaml").read_text()
    (rd / "run.yaml").write_text(stored.replace("lr: 0.003", "lr: 0.01"))
    files = lambda: {p: p.stat().st_mtime_ns for p in rd.rglob("*") if p.name != ".lock"}  # noqa: E731
    before = files()  # (.lock: every start takes the lock and writes its PID there before deciding)
    r = in_process("train.py", *ARGS, cwd=workdir)
    assert r.returncode == 2
    assert "task.lr: 0.01 -> 0.003" in r.stderr and "resume=never" in r.stderr
    assert files() == before, "a refused run must change nothing"

    fresh = in_process("train.py", *ARGS, "resume=never", cwd=workdir)
    assert fresh.returncode == 0, fresh.stderr
    assert "moved to" in fresh.stdout
    old = list((rd / "superseded").glob("*/checkpoints/last.ckpt"))
    assert len(old) == 1, "the earlier run is kept, not deleted"
    assert (rd / "checkpoints" / "last.ckpt").exists()


def test_preflight_only_trains_nothing(workdir):
    r = in_process("train.py", *ARGS, "preflight_only=true", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "preflight pass optimizer_step" in r.stdout and "not training" in r.stdout
    assert not (workdir / "outputs").exists(), "no run directory is left behind"
