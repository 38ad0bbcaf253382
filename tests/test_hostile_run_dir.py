"""A run directory is data too (docs/SECURITY.md): what an attacker plants in a copy of a real run cannot make
a rerun of the same command, verify.py or eval.py write outside it, hang, or take gigabytes. Every plant is
refused in one `error:` line, exit 2, with everything outside unchanged. Runs whose danger is memory run with
the address space capped at 1 GiB above what the test process holds; every run is stopped past 60 s."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import SINE, in_process, one_error_line
from experiments.checkpoint.io import save_checkpoint

pytestmark = pytest.mark.slow  # links, FIFOs and crafted checkpoints planted in real runs, each program run on them

ARGS = [*SINE, "trainer.max_epochs=2", "checkpoint.every_n_epochs=1"]
HEADROOM = 2**30  # a rerun, verify.py or init_from in a process that has imported torch takes far less; every plant
# below took 2.5-5.5 GB before it was refused
SECONDS = 60


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory) -> Path:
    """A finished run of the example family with a checkpoint every epoch (2), shared read-only."""
    root = tmp_path_factory.mktemp("sine_run")
    r = in_process("train.py", *ARGS, cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (root / "outputs" / "sine").iterdir()
    return run


@pytest.fixture
def plant(sine_run, tmp_path):
    """(working folder, a copy of the run inside its outputs, a folder outside it holding marker.txt)."""
    cwd = tmp_path / "work"
    run = cwd / "outputs" / "sine" / sine_run.name
    shutil.copytree(sine_run, run, symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "marker.txt").write_text("untouched\n")
    return cwd, run, outside


def files_of(folder: Path) -> dict:
    """Every path below `folder` with its bytes (None for a folder): what must not change."""
    return {str(p.relative_to(folder)): None if p.is_dir() else p.read_bytes() for p in sorted(folder.rglob("*"))}


def killed_after_epoch_1(run: Path) -> None:
    """The run as a kill after its first epoch leaves it: only epoch 1's checkpoint (a rerun resumes and
    writes train.log, .hydra/ and checkpoints)."""
    for p in (run / "checkpoints").iterdir():
        if p.is_file() and not p.name.startswith("epoch=0001.ckpt"):
            p.unlink()


def rewritten(path: Path, change) -> None:
    """A checkpoint changed by `change(ckpt)` and saved with a matching sidecar, as an attacker can."""
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    save_checkpoint(ckpt, path)


def only_last(run: Path) -> Path:
    """A run whose only state is last.ckpt (no run.yaml): a rerun reads its config from the checkpoint."""
    (run / "run.yaml").unlink()
    for p in (run / "checkpoints").iterdir():
        if p.is_file() and not p.name.startswith("last.ckpt"):
            p.unlink()
    return run / "checkpoints" / "last.ckpt"


def program(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python NAME ARGS` inside the test process, stopped past SECONDS."""
    return in_process(name, *args, cwd=cwd, timeout=SECONDS)


def bounded(name: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """`python NAME ARGS` inside the test process with its address space capped at what it holds now plus
    HEADROOM, stopped past SECONDS: a program that inflated what it read fails with a MemoryError (exit 1,
    a traceback) instead of refusing it (exit 2). (In the test process: a process start costs ~10 s.)"""
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    status = Path("/proc/self/status").read_text()
    held = int(status.split("VmSize:")[1].split()[0]) * 1024
    resource.setrlimit(resource.RLIMIT_AS, (held + HEADROOM, hard))
    try:
        return program(name, *args, cwd=cwd)
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))


def refused(r: subprocess.CompletedProcess, *words: str) -> str:
    """The one error line of a refusal (exit 2), which says each of `words` outside the paths it names (the
    test's folders are named after the test)."""
    line = one_error_line(r)
    assert r.returncode == 2, r.stdout + r.stderr
    said = re.sub(r"/tmp/\S*/(work|outside)/", "<tmp>/", line)
    for word in words:
        assert word in said, line
    return line


# ---- writes outside the run directory ----
def test_a_lock_linked_outside_is_refused_and_its_target_untouched(plant):
    cwd, run, outside = plant
    (run / ".lock").unlink(missing_ok=True)
    os.symlink(outside / "marker.txt", run / ".lock")
    refused(program("train.py", *ARGS, cwd=cwd), ".lock", "link")
    (run / ".lock").unlink()
    os.symlink(outside / "new.txt", run / ".lock")  # a link to a file that does not exist yet
    refused(program("train.py", *ARGS, cwd=cwd), ".lock", "link")
    assert files_of(outside) == {"marker.txt": b"untouched\n"}


@pytest.mark.parametrize("kind", ["fifo", "folder"])
def test_a_lock_that_is_a_fifo_or_a_folder_is_refused_in_one_line(plant, kind):
    cwd, run, _ = plant
    (run / ".lock").unlink(missing_ok=True)
    os.mkfifo(run / ".lock") if kind == "fifo" else (run / ".lock").mkdir()
    refused(program("train.py", *ARGS, cwd=cwd), ".lock", {"fifo": "FIFO", "folder": "folder"}[kind])


def test_a_train_log_linked_outside_gets_nothing_appended(plant):
    cwd, run, outside = plant
    killed_after_epoch_1(run)
    (run / "train.log").unlink()
    os.symlink(outside / "marker.txt", run / "train.log")
    refused(program("train.py", *ARGS, cwd=cwd), "train.log is a link")
    assert files_of(outside) == {"marker.txt": b"untouched\n"}


@pytest.mark.parametrize("folder", [".hydra", "checkpoints"])
def test_a_folder_of_the_run_linked_outside_is_not_written(plant, folder):
    cwd, run, outside = plant
    killed_after_epoch_1(run)
    shutil.move(run / folder, outside / folder)
    os.symlink(outside / folder, run / folder)
    before = files_of(outside)
    refused(program("train.py", *ARGS, cwd=cwd), f"{folder} is a link")
    assert files_of(outside) == before


def test_damaged_checkpoints_are_not_moved_through_a_link(plant):
    cwd, run, outside = plant
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # torn: a resume would move it to checkpoints/damaged/
    os.symlink(outside, run / "checkpoints" / "damaged")
    refused(program("train.py", *ARGS, cwd=cwd), "damaged is a link")
    assert files_of(outside) == {"marker.txt": b"untouched\n"}


def test_resume_never_does_not_move_the_run_through_a_link(plant):
    cwd, run, outside = plant
    os.symlink(outside, run / "superseded")
    before = files_of(run)
    refused(program("train.py", *ARGS, "resume=never", cwd=cwd), "superseded is a link")
    assert files_of(outside) == {"marker.txt": b"untouched\n"}
    assert files_of(run) == before


def test_a_run_yaml_linked_outside_is_refused_without_printing_its_target(plant):
    cwd, run, outside = plant
    (outside / "secret.yaml").write_text("token: s3cret-value\n")
    (run / "run.yaml").unlink()
    os.symlink(outside / "secret.yaml", run / "run.yaml")
    r = program("train.py", *ARGS, cwd=cwd)
    refused(r, "run.yaml")
    assert "s3cret" not in r.stdout + r.stderr


def test_verify_writes_no_report_through_a_linked_checkpoint_folder(plant):
    cwd, run, outside = plant
    shutil.move(run / "checkpoints", outside / "checkpoints")
    os.symlink(outside / "checkpoints", run / "checkpoints")
    before = files_of(outside)
    refused(program("verify.py", *SINE[:2], f"ckpt={run}", "stages=[loadable,integrity]", cwd=cwd), "outside")
    assert files_of(outside) == before


def test_verify_replays_without_the_stored_profiler_or_its_paths(plant):
    """A stored config may name the registered SimpleProfiler with a folder outside: the replay builds its
    trainer from the framework's own settings, so nothing is created there."""
    cwd, run, outside = plant
    profiler = {
        "_target_": "lightning.pytorch.profilers.SimpleProfiler",
        "dirpath": str(outside / "profiled"),
        "filename": "profile",
    }
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        rewritten(ckpt, lambda c: c["config"]["trainer"].update(profiler=profiler))
    r = program("verify.py", *SINE[:2], f"ckpt={run}", "stages=[resume_exact]", cwd=cwd)
    assert r.returncode == 0 and "bit-identical" in r.stdout, r.stdout + r.stderr
    assert files_of(outside) == {"marker.txt": b"untouched\n"}


def test_verify_replays_no_more_epochs_than_the_history_shows(plant):
    cwd, run, _ = plant
    for ckpt in (run / "checkpoints").glob("*.ckpt"):
        if torch.load(ckpt, weights_only=True)["epoch"] == 1:
            rewritten(ckpt, lambda c: c.update(epoch=999_999))
    r = program("verify.py", *SINE[:2], f"ckpt={run}", "stages=[resume_exact]", cwd=cwd)
    assert r.returncode == 1 and "its history does not show epochs 2-1000000" in r.stdout, r.stdout + r.stderr


# ---- files that would block ----
@pytest.mark.parametrize("name", ["run.yaml", "train.log"])
def test_a_fifo_in_the_run_directory_is_refused_not_waited_on(plant, name):
    cwd, run, _ = plant
    (run / name).unlink()
    os.mkfifo(run / name)
    refused(program("train.py", *ARGS, cwd=cwd), name, "FIFO")


def test_a_verification_report_that_is_a_fifo_is_refused(plant):
    cwd, run, _ = plant
    (run / "checkpoints" / "verification").mkdir()
    os.mkfifo(run / "checkpoints" / "verification" / "epoch=0002.json")
    refused(program("verify.py", *SINE[:2], f"ckpt={run}", "stages=[loadable]", cwd=cwd), "FIFO")


def test_frozen_auto_skips_a_run_yaml_that_is_a_fifo(tmp_path):
    """`frozen_checkpoint.path=auto` reads every run.yaml under the outputs: one that is a FIFO is passed
    over (opening it for reading would wait for a writer forever)."""
    import signal

    from experiments.checkpoint.frozen import find_candidates

    (tmp_path / "x" / "run").mkdir(parents=True)
    os.mkfifo(tmp_path / "x" / "run" / "run.yaml")
    before = signal.signal(signal.SIGALRM, lambda *_: pytest.fail(f"still waiting on the FIFO after {SECONDS} s"))
    signal.alarm(SECONDS)
    try:
        assert find_candidates(tmp_path, ["x"]) == []
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, before)


# ---- small files that would take gigabytes ----
def alias_bomb(levels: int = 9) -> str:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, levels)]
    return "\n".join(lines) + "\n"


def shared_references(depth: int = 40):
    node = [0]
    for _ in range(depth):
        node = [node, node]  # 2**40 values reachable from a few hundred bytes of pickle
    return node


def test_a_run_yaml_alias_bomb_is_refused_within_memory(plant):
    cwd, run, _ = plant
    (run / "run.yaml").write_text(alias_bomb())
    refused(bounded("train.py", *ARGS, cwd=cwd), "run.yaml", "an alias (*name)")


@pytest.mark.parametrize("key", ["config", "history"])
def test_a_checkpoint_of_shared_references_is_refused_within_memory(plant, key):
    cwd, run, _ = plant
    last = only_last(run)
    if key == "config":
        rewritten(last, lambda c: c["config"].update(x=shared_references()))
    else:
        row = {f"m{i}": float(i) for i in range(500)}
        rewritten(last, lambda c: c.update(history=[row] * 200_000))
    refused(bounded("train.py", *ARGS, cwd=cwd), "last.ckpt", "values")


def test_init_from_a_checkpoint_of_shared_references_is_refused_and_leaves_no_run(plant):
    cwd, run, _ = plant
    last = run / "checkpoints" / "last.ckpt"
    rewritten(last, lambda c: c["config"].update(x=shared_references()))
    refused(bounded("train.py", *SINE, "trainer.max_epochs=3", f"init_from={last}", cwd=cwd), "values")
    assert sorted(p.name for p in (cwd / "outputs" / "sine").iterdir()) == [run.name]


def test_a_deeply_nested_config_is_refused_in_one_line(plant):
    cwd, run, _ = plant
    nested = []
    for _ in range(5_000):  # deeper than any recursive walk of it could go (Python's limit: 1,000 frames)
        nested = [nested]
    last = run / "checkpoints" / "last.ckpt"
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # for the pickler; the loader reads it without recursion
    try:
        rewritten(last, lambda c: c["config"].update(x=nested))
    finally:
        sys.setrecursionlimit(limit)
    refused(program("train.py", *SINE, "trainer.max_epochs=3", f"init_from={last}", cwd=cwd), "levels")
    refused(program("verify.py", *SINE[:2], f"ckpt={last}", cwd=cwd), "levels")


def test_an_expanded_tensor_is_refused_before_it_is_made_contiguous(plant):
    """A view of one float expanded to 2**29 stores 4 bytes and declares 2 GiB."""
    cwd, run, _ = plant
    last = only_last(run)

    rewritten(last, lambda c: c["optimizer_states"][0]["state"].update({0: {"exp_avg": torch.zeros(1).expand(2**29)}}))
    refused(bounded("verify.py", *SINE[:2], f"ckpt={last}", cwd=cwd), "declare")
    refused(bounded("train.py", *ARGS, cwd=cwd), "declare")


# ---- values refused in one line, exit 2 ----
def test_a_seed_that_is_not_an_integer_is_refused(plant):
    cwd, run, _ = plant
    last = run / "checkpoints" / "last.ckpt"
    rewritten(last, lambda c: c["config"].update(seed=float("nan")))
    refused(program("verify.py", *SINE[:2], f"ckpt={last}", cwd=cwd), "seed")


def test_a_huge_integer_is_named_as_what_it_is_not_as_a_pickled_object(plant):
    cwd, run, _ = plant
    last = run / "checkpoints" / "last.ckpt"
    rewritten(last, lambda c: c["config"].update(x=10**5000))
    line = refused(program("verify.py", *SINE[:2], f"ckpt={last}", cwd=cwd), "safe loading does not read")
    assert "pickled object" not in line


# ---- a sweep's files ----
def test_a_sweep_plan_that_is_huge_or_a_fifo_is_not_a_plan(tmp_path):
    import json

    from experiments.sweep import MAX_PLAN_JOBS, read_plan, read_record

    (tmp_path / "plan.json").write_text(json.dumps({"jobs": [["seed=0"]] * (MAX_PLAN_JOBS + 1)}))
    assert read_plan(tmp_path) == {}
    (tmp_path / "plan.json").write_text("[" * 100_000)  # nesting the parser cannot take
    assert read_plan(tmp_path) == {}
    (tmp_path / "plan.json").write_text(" " * (3 << 20) + "{}")  # past the bound of a plan's bytes
    assert read_plan(tmp_path) == {}
    (tmp_path / "plan.json").unlink()
    os.mkfifo(tmp_path / "plan.json")
    os.mkfifo(tmp_path / "0000.json")
    assert read_plan(tmp_path) == {} and read_record(tmp_path / "0000.json") is None


# ---- no link but wandb's own; what else a start reads or writes ----
def test_a_link_that_stays_inside_the_run_is_refused_too(plant):
    """A link may lead into a folder that nothing checks again and on from there (checkpoints -> an earlier
    run's folder whose damaged/ leads outside): no link is the run's own, but wandb's."""
    cwd, run, outside = plant
    last = run / "checkpoints" / "last.ckpt"
    last.write_bytes(last.read_bytes()[:1000])  # torn: a resume would move it to checkpoints/damaged/
    shutil.move(run / "checkpoints", run / "superseded" / "t" / "c")
    os.symlink(outside, run / "superseded" / "t" / "c" / "damaged")
    os.symlink(run / "superseded" / "t" / "c", run / "checkpoints")
    refused(program("train.py", *ARGS, cwd=cwd), "is a link")
    assert files_of(outside) == {"marker.txt": b"untouched\n"}


def test_wandbs_own_links_do_not_stop_a_rerun(plant):
    """wandb links its newest run and logs in wandb/ (relative) and each start's core log to its cache."""
    cwd, run, outside = plant
    start = run / "wandb" / "offline-run-20260101_000000-0123456789abcdef"
    (start / "logs").mkdir(parents=True)
    (start / "logs" / "debug.log").write_text("")
    os.symlink(start.name, run / "wandb" / "latest-run")
    os.symlink(f"{start.name}/logs/debug.log", run / "wandb" / "debug.log")
    os.symlink(outside / "core-debug.log", start / "logs" / "debug-core.log")
    r = program("train.py", *ARGS, cwd=cwd)
    assert r.returncode == 0 and "Run already complete" in r.stdout, r.stdout + r.stderr
    os.symlink(outside / "x", start / "logs" / "other.log")  # any other link in there is refused
    refused(program("train.py", *ARGS, cwd=cwd), "other.log is a link")


def test_a_loop_of_links_is_refused_in_one_line(plant):
    cwd, run, _ = plant
    os.symlink("loop", run / "loop")
    refused(program("train.py", *ARGS, cwd=cwd), "loop is a link")
    refused(program("verify.py", *SINE[:2], f"ckpt={run / 'loop' / 'x.ckpt'}", cwd=cwd), "loop")


def test_the_lock_and_the_log_are_never_opened_through_a_link_or_a_second_name(tmp_path):
    """Behind the walk: `.lock` and `train.log` are opened with O_NOFOLLOW, and refused when they have
    another name (a hard link: writing them would write it)."""
    from experiments.console import open_for_append
    from experiments.errors import UserError
    from experiments.run_dir import open_lock

    target = tmp_path / "target.txt"
    target.write_text("untouched\n")
    for opener in (open_lock, open_for_append):
        os.symlink(target, tmp_path / "linked")
        with pytest.raises(UserError, match="is a link"):
            opener(tmp_path / "linked")
        os.link(target, tmp_path / "second")
        with pytest.raises(UserError, match="has 2 names"):
            opener(tmp_path / "second")
        for p in ("linked", "second"):
            (tmp_path / p).unlink()
    assert target.read_text() == "untouched\n"


def test_a_replay_longer_than_max_replay_epochs_is_skipped_with_the_reason(plant):
    cwd, run, _ = plant
    r = program("verify.py", *SINE[:2], f"ckpt={run}", "stages=[resume_exact]", "max_replay_epochs=0", cwd=cwd)
    assert r.returncode == 0 and "1 epoch(s) apart, more than max_replay_epochs=0" in r.stdout, r.stdout + r.stderr


def test_a_sweep_directory_linked_outside_gets_no_record(plant):
    cwd, _, outside = plant
    args = ["-m", *SINE, "trainer.max_epochs=1", "sweep_name=planted", "seed=0"]
    assert program("train.py", *args, cwd=cwd).returncode == 0
    (sweep,) = (cwd / "outputs" / "sweeps").iterdir()
    shutil.rmtree(sweep / "jobs")
    os.symlink(outside, sweep / "jobs")
    refused(program("train.py", *args, cwd=cwd), "jobs is a link")
    assert files_of(outside) == {"marker.txt": b"untouched\n"}


@pytest.mark.parametrize("change", [{"run": []}, {"history": [1]}, {"epoch": "1"}])
def test_a_checkpoint_of_the_wrong_shape_is_not_resumed_from(plant, change):
    cwd, run, _ = plant
    rewritten(only_last(run), lambda c: c.update(change))
    refused(program("train.py", *ARGS, cwd=cwd), "not a checkpoint of this framework")


def test_a_run_directory_that_resolves_outside_the_outputs_is_refused(tmp_path):
    """An experiment's folder under the outputs made a link to another place: the run is refused and the
    folder Hydra made for it there is removed again."""
    outside = tmp_path / "outside"
    outside.mkdir()
    (tmp_path / "outputs").mkdir()
    os.symlink(outside, tmp_path / "outputs" / "sine")
    refused(program("train.py", *ARGS, cwd=tmp_path), "leads outside")
    assert list(outside.iterdir()) == []
