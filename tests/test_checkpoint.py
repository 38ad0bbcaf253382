"""What a checkpoint holds, that it opens with weights_only=True, atomic writes, and safe loading."""

import errno
import hashlib
import os
import socket
import subprocess

import pytest
import torch

from conftest import SINE, in_process
from experiments import atomic
from experiments.checkpoint import io as ckpt_io
from experiments.checkpoint.io import load_checkpoint, save_checkpoint
from experiments.checkpoint.size import checkpoint_size_report
from experiments.errors import UserError, WriteFailed, write_failure


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    # a monitor that is not the primary metric (val/r2), its direction (lower is better) derived from the family
    r = in_process(
        "train.py",
        *SINE,
        "trainer.max_epochs=3",
        "checkpoint.every_n_epochs=2",
        "checkpoint.save_top_k=2",
        "checkpoint.monitor=val/mse",
        cwd=root,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (rd,) = (root / "outputs" / "sine").iterdir()
    return rd


def test_policy_writes_every_n_final_last_and_top_k(trained):
    names = sorted(p.name for p in (trained / "checkpoints").glob("*.ckpt"))
    # file names count epochs from 1: every 2 epochs -> epoch 2; the final epoch (3) always; top-2; last
    assert "epoch=0002.ckpt" in names and "epoch=0003.ckpt" in names and "last.ckpt" in names
    assert "epoch=0001.ckpt" not in names
    best = [n for n in names if n.startswith("best-")]
    assert len(best) == 2
    last = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    scores = {row["epoch"]: row["val/mse"] for row in last["history"]}
    top2 = sorted(scores, key=lambda e: scores[e])[:2]
    assert sorted(best) == sorted(f"best-epoch={e + 1:04d}.ckpt" for e in top2)  # history rows count from 0


def test_eval_on_the_runs_own_data_gives_its_last_validation_figures(trained, tmp_path):
    """eval.py without data arguments: the run's data, every figure equal to the final epoch's history row."""
    import json

    from conftest import run_program

    r = run_program("eval.py", *SINE[:2], f"ckpt={trained}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads((trained / "eval" / "own" / "last" / "metrics.json").read_text())
    final = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)["history"][-1]
    assert set(result["metrics"]) == {"val/mse", "val/r2"}
    assert result["metrics"] == {k: final[k] for k in result["metrics"]}
    assert result["checkpoint"]["epoch"] == 3 and result["data"]["identity"] == "own"


def test_checkpoint_contents_are_plain_and_complete(trained):
    ckpt = torch.load(trained / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["epoch"] == 2 and ckpt["run"] == {"finished": True, "preempted": False}
    assert ckpt["config"]["model"]["width"] == 64 and ckpt["config"]["seed"] == 0
    assert [row["epoch"] for row in ckpt["history"]] == [0, 1, 2]
    assert ckpt["history"][-1]["epoch"] == ckpt["epoch"], "the last checkpoint matches the last history entry"
    assert {"val/mse", "val/r2", "train/loss", "time/epoch_s"} <= set(ckpt["history"][-1])
    assert set(ckpt["rng"]) == {"python", "numpy", "torch"}
    assert ckpt["framework"]["name"] == "experiments" and ckpt["framework"]["git_commit"]
    assert ckpt["SineDataModule"]["train_sampler"] == {"seed": 0, "epoch": 2, "batches_done": 32}
    # the sidecar records the file's sha256
    digest = (trained / "checkpoints" / "last.ckpt.sha256").read_text().split()[0]
    assert digest == hashlib.sha256((trained / "checkpoints" / "last.ckpt").read_bytes()).hexdigest()


def test_checkpoint_size_is_near_parameters_plus_adam(trained):
    """Weights and two Adam moments, and little else (a family's model of real size: ratio <= 1.1 in its tests)."""
    report = checkpoint_size_report(trained / "checkpoints" / "last.ckpt")
    assert report["minimum_bytes"] >= report["parameters"] * 4 * 3  # fp32 weights + two Adam moments
    assert report["file_bytes"] - report["minimum_bytes"] < 64_000, report  # the rest: config, history, RNG


def test_write_is_atomic_when_killed_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_checkpoint({"step": torch.tensor(1)}, path)

    def die(*a):
        raise KeyboardInterrupt  # stands in for the process dying before the rename

    monkeypatch.setattr(atomic.os, "replace", die)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert load_checkpoint(path)["step"].item() == 1, "the previous checkpoint must survive intact"


def test_a_failed_sidecar_write_leaves_the_checkpoint_and_its_sidecar_as_they_were(tmp_path, monkeypatch):
    path = tmp_path / "last.ckpt"
    save_checkpoint({"step": torch.tensor(1)}, path)
    before = path.read_bytes(), ckpt_io.sidecar(path).read_bytes()
    write = ckpt_io.write_and_sync

    def full(tmp, data):  # the checkpoint's bytes fit; its sidecar's do not
        if ".sha256" in tmp.name:
            raise OSError(errno.ENOSPC, "No space left on device")
        write(tmp, data)

    monkeypatch.setattr(ckpt_io, "write_and_sync", full)
    with pytest.raises(WriteFailed, match=r"last.ckpt.sha256: No space left on device"):
        save_checkpoint({"step": torch.tensor(2)}, path)
    assert (path.read_bytes(), ckpt_io.sidecar(path).read_bytes()) == before, "neither file was replaced"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.ckpt.sha256"], "no temporary left"


def test_a_write_stopped_between_its_renames_is_completed_by_the_next_start(tmp_path, monkeypatch):
    """Ctrl-C (or an error) after the checkpoint's rename and before its sidecar's: the sidecar's temporary
    stays, and finish_interrupted_pairs (what train.py runs at a start) completes the pair with it."""
    path = tmp_path / "last.ckpt"
    save_checkpoint({"step": torch.tensor(1)}, path)
    replace, calls = atomic.os.replace, []

    def second_fails(src, dst):
        calls.append(dst)
        if len(calls) == 2:
            raise KeyboardInterrupt
        replace(src, dst)

    monkeypatch.setattr(atomic.os, "replace", second_fails)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint({"step": torch.tensor(2)}, path)
    monkeypatch.undo()
    assert ckpt_io.recorded_sha256(path) != ckpt_io.sha256_file(path), "the new checkpoint beside its old sidecar"
    assert ckpt_io.finish_interrupted_pairs(tmp_path) == ["last.ckpt"]
    assert ckpt_io.recorded_sha256(path) == ckpt_io.sha256_file(path)
    assert load_checkpoint(path)["step"].item() == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt", "last.ckpt.sha256"]


def test_crafted_temporaries_complete_nothing_else(tmp_path):
    """Names a run directory could hold: none crashes the start, overwrites a checkpoint or completes a pair
    whose temporary does not record the checkpoint's own sha256."""
    path = tmp_path / "last.ckpt"
    save_checkpoint({"step": torch.tensor(1)}, path)
    data, digest = path.read_bytes(), hashlib.sha256(path.read_bytes()).hexdigest()
    os.replace(ckpt_io.sidecar(path), tmp_path / "kept.sha256")
    ckpt_io.sidecar(path).write_text("0" * 64 + "  last.ckpt\n")  # a sidecar that no longer matches
    (tmp_path / "..sha256.tmp-1-h").write_text(digest)  # no name before .sha256
    (tmp_path / ".last.ckpt.tmp-2.sha256.tmp-3-h").write_text(digest)  # would name last.ckpt itself
    (tmp_path / ".last.ckpt.sha256.tmp-4-h").write_text("f" * 64)  # another file's sha256
    (tmp_path / ".last.ckpt.sha256.tmp-5-h").symlink_to(tmp_path / "kept.sha256")  # a link
    assert ckpt_io.finish_interrupted_pairs(tmp_path) == []
    assert path.read_bytes() == data and ckpt_io.recorded_sha256(path) == "0" * 64


def test_a_write_interrupted_by_ctrl_c_leaves_no_temporary_file(tmp_path, monkeypatch):
    def interrupted(tmp, data):
        tmp.write_bytes(data[:3])
        raise KeyboardInterrupt

    monkeypatch.setattr(atomic, "write_and_sync", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.atomic_write_bytes(tmp_path / "run.yaml", b"a: 1\n")
    assert list(tmp_path.iterdir()) == []


def test_only_temporaries_of_ended_writers_are_removed_where_several_programs_write(tmp_path):
    host = socket.gethostname()
    ended = subprocess.Popen(["true"])
    ended.wait()
    gone = tmp_path / f".metrics.json.tmp-{ended.pid}-{host}"
    alive = tmp_path / f".metrics.json.tmp-{os.getpid()}-{host}"
    elsewhere = tmp_path / f".metrics.json.tmp-{ended.pid}-another-{host}"
    for p in (gone, alive, elsewhere):
        p.write_bytes(b"half")
    assert atomic.remove_temporaries(tmp_path, writers_gone_only=True) == [gone]
    assert alive.exists() and elsewhere.exists()
    assert sorted(atomic.remove_temporaries(tmp_path)) == sorted([alive, elsewhere])  # the folder's one writer


@pytest.mark.parametrize(
    "error, said",
    [
        (
            OSError(errno.ENOSPC, "No space left on device", "/runs/x/events.out"),
            "could not write /runs/x/events.out: No space left on device",
        ),
        (OSError(errno.EROFS, "Read-only file system"), "could not write: Read-only file system"),
        (OSError(errno.ENOENT, "No such file or directory", "/x"), None),  # a bug's error keeps its traceback
        (ValueError("x"), None),
    ],
)
def test_disk_trouble_from_any_writer_becomes_a_write_failure(error, said):
    failed = write_failure(error)
    assert (None if failed is None else str(failed)) == said


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def test_pickled_payload_is_refused_and_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "x": Payload(str(marker))}, evil)
    assert not marker.exists()
    with pytest.raises(UserError, match="refusing to unpickle"):
        load_checkpoint(evil)
    assert not marker.exists()


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "not a readable checkpoint"),
        (b"hello, not a checkpoint", "not a readable checkpoint"),
    ],
)
def test_unreadable_files_are_user_errors(tmp_path, content, message):
    p = tmp_path / "bad.ckpt"
    p.write_bytes(content)
    with pytest.raises(UserError, match=message):
        load_checkpoint(p)


def test_truncated_checkpoint_is_a_user_error(trained, tmp_path):
    data = (trained / "checkpoints" / "last.ckpt").read_bytes()
    p = tmp_path / "truncated.ckpt"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(p)


def test_resume_refuses_a_pickled_last_checkpoint(tmp_path):
    marker = tmp_path / "pwned"
    first = in_process("train.py", *SINE, "trainer.max_epochs=1", cwd=tmp_path)
    assert first.returncode == 0 and "Done: sine, 1 epoch, " in first.stdout  # (a count of one in the singular)
    (rd,) = (tmp_path / "outputs" / "sine").iterdir()
    torch.save({"run": {"finished": False}, "x": Payload(str(marker))}, rd / "checkpoints" / "last.ckpt")
    r = in_process("train.py", *SINE, "trainer.max_epochs=1", cwd=tmp_path)
    assert r.returncode == 2 and "refusing to unpickle" in r.stderr and "no intact checkpoint" in r.stderr
    assert not marker.exists()
    assert list((rd / "checkpoints" / "damaged").glob("*/last.ckpt")), "moved aside, never deleted"
