"""The worked fourth family in examples/sine, outside src/experiments, through the real programs: it
trains, passes verify.py beside an untrained control and evaluates after its one documented step. (Being the
smallest family, it is also the one the framework's own tests train: resume after SIGKILL in test_resume.py,
sweeps and their summaries in test_sweep.py.)"""

import json
import shutil
import subprocess

import pytest
import torch

from conftest import ROOT, one_error_line, run_program, run_train
from experiments.checkpoint.io import save_checkpoint

pytestmark = pytest.mark.slow  # the worked example trained, killed and resumed as processes

CONF = ["--config-dir", str(ROOT / "examples" / "sine" / "conf")]
ARGS = [*CONF, "experiment=sine", "logger=none", "trainer.enable_progress_bar=false"]


def final(run_dir):
    return torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = tmp_path_factory.mktemp("sine")
    r = run_train(*ARGS, cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    return root, root / "outputs" / "sine" / "default", r


def test_example_trains_to_a_fit(trained):
    root, run, r = trained
    assert "Training sine (4,353 parameters)" in r.stdout
    ckpt = final(run)
    assert ckpt["run"]["finished"] and ckpt["epoch"] == 29
    assert ckpt["history"][-1]["val/r2"] > 0.9 > ckpt["history"][0]["val/r2"]
    # no monitor in its config: the family's primary metric picked the best checkpoint, higher is better
    best = max(ckpt["history"], key=lambda row: row["val/r2"])
    assert (run / "checkpoints" / f"best-epoch={best['epoch'] + 1:04d}.ckpt").exists()


def test_a_run_ends_with_what_it_achieved(trained):
    root, run, r = trained
    history = final(run)["history"]
    best = max(history, key=lambda row: row["val/r2"])
    assert "Done: sine, 30 epochs, " in r.stdout
    assert (
        f"val/r2: final {history[-1]['val/r2']:.4g} (epoch 30), best {best['val/r2']:.4g} (epoch {best['epoch'] + 1})"
    ) in r.stdout


def on_a_terminal(args: list[str], cwd) -> tuple[int, str]:
    """train.py with its output on a pseudo-terminal, as a person at a console sees it."""
    import fcntl
    import os
    import pty
    import struct
    import termios

    from conftest import env, train_cmd

    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 120, 0, 0))  # a terminal of 30 x 120
    proc = subprocess.Popen(train_cmd(*args), cwd=cwd, env=env(), stdout=follower, stderr=follower)
    os.close(follower)
    import select
    import time

    chunks, deadline = [], time.monotonic() + 300
    while time.monotonic() < deadline:
        if not select.select([leader], [], [], 5)[0]:
            continue
        try:
            chunk = os.read(leader, 65536)
        except OSError:  # the terminal closed: the program has ended
            break
        if not chunk:
            break
        chunks.append(chunk)
    else:
        proc.kill()
    os.close(leader)
    return proc.wait(timeout=300), b"".join(chunks).decode(errors="replace")


def test_the_console_carries_no_noise(tmp_path):
    """On a terminal, with the progress bar and the default logger (wandb, offline): no logger version on the
    bar, no library warning that tells the user nothing."""
    code, out = on_a_terminal([*CONF, "experiment=sine", "trainer.max_epochs=2"], tmp_path)
    assert code == 0, out
    assert "it/s" in out  # the bar was drawn
    assert "Epoch 2/2" in out and "Epoch 0" not in out  # the bar counts epochs as every other line does
    assert "v_num" not in out and "anonymous setting" not in out and "logging interval" not in out


def test_example_passes_verify_beside_an_untrained_control(trained):
    """Its one documented step: verify.py gets the same --config-dir as train.py (a checkpoint's config may
    only build what a registered config folder builds)."""
    root, run, _ = trained
    r = run_program("verify.py", *CONF, f"ckpt={run}", cwd=root, process=True)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((run / "checkpoints" / "verification" / "epoch=0030.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["resume_exact"]["status"] == "pass" and stages["progress"]["status"] == "pass"
    r2 = stages["metrics"]["metrics"]["val/r2"]
    assert r2["clearly_better"] and r2["trained"] > 0.9 and r2["untrained_control"] < 0.5


def test_example_evaluates_after_its_one_step_and_is_refused_without_it(trained):
    root, run, _ = trained
    r = run_program("eval.py", *CONF, f"ckpt={run}", "data.noise=0.0", cwd=root, process=True)
    assert r.returncode == 0, r.stdout + r.stderr
    result = json.loads((run / "eval" / "data.noise=0.0" / "last" / "metrics.json").read_text())
    assert result["metrics"]["val/r2"] > 0.9
    without = run_program("verify.py", f"ckpt={run}", cwd=root, process=True)
    assert without.returncode == 2
    line = one_error_line(without)
    assert "model._target_='examples.sine.model" in line and "--config-dir PATH" in line, line


def test_a_family_package_that_is_not_importable_is_named(trained, tmp_path):
    """Its config folder given, its package not on the Python path: the line says so, not "changed"."""
    root, run, _ = trained
    conf = tmp_path / "conf"
    shutil.copytree(ROOT / "examples" / "sine" / "conf", conf)
    for f in conf.rglob("*.yaml"):
        f.write_text(f.read_text().replace("examples.sine.", "elsewhere_sine."))
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    for key in ("model", "data", "task"):
        ckpt["config"][key]["_target_"] = ckpt["config"][key]["_target_"].replace("examples.sine.", "elsewhere_sine.")
    save_checkpoint(ckpt, tmp_path / "moved.ckpt")
    r = run_program(
        "verify.py", "--config-dir", str(conf), f"ckpt={tmp_path / 'moved.ckpt'}", cwd=tmp_path, process=True
    )
    assert r.returncode == 2
    line = one_error_line(r)
    assert "no package 'elsewhere_sine' on the Python path" in line and "no longer matches" not in line, line
