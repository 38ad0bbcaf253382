"""verify.py: a real run passes every stage; each stage fails for the reason it exists; bad input is
exit 2 with one line and nothing written. The program is run as a user runs it; the stages' failures are
checked on the same StoredRun verify.py builds, in this process (a failure is a stage's verdict, not a
process's behaviour: one of them goes through the program too)."""

import json
import shutil
import zipfile

import pytest
import torch

from conftest import SINE, SINE_CONF, in_process, run_program
from experiments.checkpoint.io import save_checkpoint
from experiments.stages.checkpoint_stages import CHECKPOINT_STAGES
from experiments.stages.registry import run_stages
from experiments.stored_run import StoredRun
from experiments.untrusted import package_config_folders, registry

ALL = [
    "loadable",
    "integrity",
    "restorable",
    "predicts",
    "frozen_identical",
    "progress",
    "weights_updated",
    "history_consistent",
    "resume_exact",
    "metrics",
]
CONF = SINE[:2]  # the family's config folder: its one step to verification


def run_verify(*args, cwd):
    return run_program("verify.py", *CONF, *args, cwd=cwd)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("verify")
    r = in_process("train.py", *SINE, "trainer.max_epochs=6", "checkpoint.every_n_epochs=2", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (root / "outputs" / "sine").iterdir()
    return run


@pytest.fixture
def copy_run(run_dir, tmp_path):
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst, ignore=shutil.ignore_patterns("verification"))
    return dst


def stage(target, name: str):
    """One stage's result on the input as verify.py reads it."""
    stored = StoredRun(target, registry([*package_config_folders(), str(SINE_CONF)]))
    (result,) = run_stages([name], stored, CHECKPOINT_STAGES, stop_on_failure=False)
    return result


def stages(report) -> dict:
    return {s["name"]: s for s in json.loads(report.read_text())["stages"]}


def test_run_directory_passes_every_stage_and_writes_the_report(copy_run, tmp_path):
    r = run_verify(f"ckpt={copy_run}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    report_path = copy_run / "checkpoints" / "verification" / "epoch=0006.json"
    rep = json.loads(report_path.read_text())
    assert rep["passed"] and [s["name"] for s in rep["stages"]] == ALL
    by_name = {s["name"]: s for s in rep["stages"]}
    assert by_name["frozen_identical"]["status"] == "skip"  # no frozen parts
    assert all(s["status"] == "pass" for s in rep["stages"] if s["name"] != "frozen_identical"), [
        (s["name"], s["details"]) for s in rep["stages"]
    ]
    ck = rep["checkpoint"]
    assert ck["epoch"] == 6 and ck["bytes"] == (copy_run / "checkpoints" / "epoch=0006.ckpt").stat().st_size
    assert ck["sha256"] == (copy_run / "checkpoints" / "epoch=0006.ckpt.sha256").read_text().split()[0]
    assert {"global_step", "config_hash", "framework_version", "git_commit"} <= set(ck)
    metrics = by_name["metrics"]["metrics"]
    assert metrics["val/r2"]["clearly_better"] is True and metrics["val/r2"]["untrained_control"] < 0.5
    assert report_path.with_suffix(".md").read_text().startswith("# Verification of epoch=0006.ckpt: PASSED")
    assert "| weights_updated | pass |" in report_path.with_suffix(".md").read_text()
    assert "largest \\|change\\|" in report_path.with_suffix(".md").read_text(), "a '|' in a detail keeps the row"
    assert "trained" in r.stdout and "untrained" in r.stdout


def test_single_checkpoint_runs_the_single_checkpoint_stages(copy_run, tmp_path):
    r = run_verify(f"ckpt={copy_run / 'checkpoints' / 'epoch=0004.ckpt'}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    names = list(stages(copy_run / "checkpoints" / "verification" / "epoch=0004.json"))
    assert names == ["loadable", "integrity", "restorable", "predicts", "frozen_identical", "metrics"]


def rewrite(path, change, keep_hash=True):
    ckpt = torch.load(path, weights_only=True)
    change(ckpt)
    if keep_hash:
        save_checkpoint(ckpt, path)
    else:
        torch.save(ckpt, path)


def test_a_failed_stage_is_exit_1_with_the_report(copy_run, tmp_path):
    """A file changed after saving: through the program, a failure is exit 1, one line, and a full report."""

    def nudge(c):
        c["state_dict"]["model.net.0.bias"][0] += 1e-3

    rewrite(copy_run / "checkpoints" / "epoch=0004.ckpt", nudge, keep_hash=False)
    r = run_verify(f"ckpt={copy_run}", cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    s = stages(copy_run / "checkpoints" / "verification" / "epoch=0006.json")["integrity"]
    assert s["status"] == "fail" and "epoch=0004.ckpt" in s["details"] and "changed after saving" in s["details"]
    assert "FAILED in" in r.stdout and "fail integrity" in r.stdout


def test_weights_equal_to_the_previous_checkpoint_fail_weights_updated(copy_run):
    ck = copy_run / "checkpoints"
    before = torch.load(ck / "epoch=0002.ckpt", weights_only=True)["state_dict"]
    rewrite(ck / "epoch=0004.ckpt", lambda c: c.update(state_dict=before))
    s = stage(copy_run, "weights_updated")
    assert s.status == "fail" and "equal those of epoch=0002.ckpt" in s.details


def test_history_beyond_the_last_checkpoint_fails_history_consistent(copy_run):
    ck = copy_run / "checkpoints"
    for name in ("last.ckpt", "epoch=0006.ckpt", *[p.name for p in ck.glob("best-*.ckpt")]):

        def extra_epoch(c):
            c["history"].append(dict(c["history"][-1], epoch=c["epoch"] + 1))

        rewrite(ck / name, extra_epoch)
    s = stage(copy_run, "history_consistent")
    assert s.status == "fail"
    assert "history ends at epoch 7 but no checkpoint holds that epoch (checkpoint epochs: [2, 4, 6])" in s.details


def test_wrong_architecture_fails_restorable_naming_keys(copy_run):
    def shrink(c):
        c["state_dict"]["model.net.4.weight"] = torch.zeros(1, 32)
        del c["state_dict"]["model.net.4.bias"]

    rewrite(copy_run / "checkpoints" / "epoch=0004.ckpt", shrink)
    s = stage(copy_run, "restorable")
    assert "model.net.4.bias" in s.details and "(1, 32) vs (1, 64)" in s.details


def test_a_step_that_does_not_reproduce_fails_resume_exact(copy_run):
    def nudge(c):
        c["state_dict"]["model.net.0.bias"][0] += 1e-3

    rewrite(copy_run / "checkpoints" / "epoch=0006.ckpt", nudge)
    s = stage(copy_run, "resume_exact")
    assert s.status == "fail" and "does not reproduce epoch=0006.ckpt" in s.details


def test_a_metric_that_gets_worse_fails_progress(copy_run):
    ck = copy_run / "checkpoints"
    for name in [p.name for p in ck.glob("*.ckpt")]:

        def worse(c):
            for row in c["history"]:
                if row["epoch"] == 5:
                    row["val/r2"] = -1e6

        rewrite(ck / name, worse)
    s = stage(copy_run, "progress")
    assert s.status == "fail" and "did not improve" in s.details and "mode max" in s.details


def test_untrained_weights_fail_metrics(copy_run):
    from examples.sine.model import MLP

    torch.manual_seed(0)
    state = {f"model.{k}": v for k, v in MLP().state_dict().items()}
    rewrite(copy_run / "checkpoints" / "epoch=0006.ckpt", lambda c: c.update(state_dict=state))
    s = stage(copy_run / "checkpoints" / "epoch=0006.ckpt", "metrics")
    assert s.status == "fail" and "not clearly better than the untrained control" in s.details
    assert s.metrics["val/r2"]["clearly_better"] is False  # every figure is still shown beside its control


def test_nan_weights_fail_predicts(copy_run):
    def poison(c):
        c["state_dict"]["model.net.4.weight"][0, 0] = float("nan")

    rewrite(copy_run / "checkpoints" / "epoch=0006.ckpt", poison)
    s = stage(copy_run / "checkpoints" / "epoch=0006.ckpt", "predicts")
    assert s.status == "fail" and "prediction holds NaN or Inf" in s.details


class Payload:
    def __init__(self, target):
        self.target = target

    def __reduce__(self):
        return (open, (self.target, "w"))


def bad_inputs(tmp_path, run_dir):
    data = (run_dir / "checkpoints" / "epoch=0006.ckpt").read_bytes()
    (tmp_path / "empty").mkdir()
    (tmp_path / "truncated.ckpt").write_bytes(data[: len(data) // 3])
    (tmp_path / "text.ckpt").write_text("not a checkpoint")
    with zipfile.ZipFile(tmp_path / "zip.ckpt", "w") as z:  # a zip archive, not torch's (no version record)
        z.writestr("zip/data.pkl", b"not a pickle")
    torch.save({"weights": torch.zeros(3)}, tmp_path / "foreign.ckpt")
    torch.save({"state_dict": {}, "x": Payload(str(tmp_path / "pwned"))}, tmp_path / "evil.ckpt")
    ckpt = torch.load(run_dir / "checkpoints" / "epoch=0006.ckpt", weights_only=True)
    ckpt["config"]["model"]["_target_"] = "examples.sine.gone.Model"
    torch.save(ckpt, tmp_path / "unknown_family.ckpt")
    ckpt["config"]["model"] = {"_target_": "examples.sine.model.MLP", "width_of_layers": 64}
    torch.save(ckpt, tmp_path / "stale_config.ckpt")


@pytest.mark.parametrize(
    "name, message",
    [
        ("missing.ckpt", "does not exist"),
        ("empty", "no checkpoint"),
        ("truncated.ckpt", "not a readable checkpoint"),
        ("text.ckpt", "not a readable checkpoint"),
        (
            "zip.ckpt",
            'not a readable checkpoint (truncated or not a torch file): Expected hasRecord("version") to be true, '
            "but got false.",
        ),  # (less torch's request for a better message)
        ("foreign.ckpt", "not a checkpoint of this framework"),
        ("evil.ckpt", "holds a pickled object (io.open); refusing to unpickle"),
        ("unknown_family.ckpt", "model._target_='examples.sine.gone.Model' is not a target that a registered"),
        ("stale_config.ckpt", "no longer matches the code: model.width_of_layers is not a parameter"),
    ],
)
def test_bad_input_is_exit_2_one_line_nothing_written(run_dir, tmp_path, name, message):
    bad_inputs(tmp_path, run_dir)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    r = run_verify(f"ckpt={tmp_path / name}", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert "Could this error message be improved" not in lines[0]
    assert "Traceback" not in r.stdout + r.stderr
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing may be written"
    assert not (tmp_path / "pwned").exists()


def test_missing_required_key_fails_loadable_as_unusable_input(copy_run, tmp_path):
    rewrite(copy_run / "checkpoints" / "epoch=0004.ckpt", lambda c: c.pop("rng"))
    r = in_process("verify.py", *CONF, f"ckpt={copy_run}", cwd=tmp_path)
    assert r.returncode == 2 and "epoch=0004.ckpt lacks required key(s) ['rng']" in r.stderr
    assert not (copy_run / "checkpoints" / "verification").exists()


def test_a_replay_failure_names_the_commit_that_wrote_the_checkpoint():
    from experiments.checkpoint.policy import git_commit
    from experiments.stages.checkpoint_stages import _other_code

    assert "written by commit 0123abc" in _other_code({"framework": {"git_commit": "0123abc"}})
    assert _other_code({"framework": {"git_commit": git_commit().split("+")[0]}}) == ""
