"""scripts/gpu_check.py, the command prepared for the day a GPU is lent, through its CPU path: the same parts at
tiny sizes, so that it cannot rot before then. Its programs run inside the test process (conftest.in_process:
a process start costs about 10 s here), but for the run it stops with SIGTERM; the commands' own processes,
their time limits and the refusal without a GPU run as they would there."""

import json
import subprocess
import sys

import pytest

from conftest import ROOT, InProcessTimeout, env, in_process

pytestmark = pytest.mark.slow  # the GPU check's CPU path: every part run

CHECK = [sys.executable, str(ROOT / "scripts" / "gpu_check.py")]


def in_this_process(args, cwd, environ, timeout, stop_when=None):
    """gpu_check's launcher, through conftest.in_process (the environment is the test's own)."""
    try:
        r = in_process(args[0], *args[1:], cwd=cwd, timeout=timeout)
    except InProcessTimeout:
        return None, ""
    return r.returncode, r.stdout + r.stderr


def test_the_cpu_path_runs_every_part_and_writes_its_figures(tmp_path, monkeypatch):
    for key, value in env().items():  # the stopped run's process computes as the test process does: one thread
        monkeypatch.setenv(key, value)
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import gpu_check
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    code = gpu_check.main(["--device", "cpu", "--out", str(tmp_path), "--budget", "900"], launch=in_this_process)
    assert code == 0, (tmp_path / "log.txt").read_text()[-5000:]
    figures = json.loads((tmp_path / "figures.json").read_text())
    parts = figures["parts"]
    assert list(parts) == ["families", "resume", "arc", "ttt", "video", "ddp"]
    assert all(p["status"] == "done" for p in parts.values()), parts
    for name in ("ternary_v5_5", "exp3_champion", "magvit", "magvit_v2"):
        family = parts["families"][name]
        # verify.py ran its stages (a 2-epoch run need not beat its untrained control: exit 1 allowed)
        assert family["train_rc"] == 0 and family["verify_rc"] in (0, 1) and family["precision"] == "32-true", family
        assert family["stages"]["resume_exact"] == "pass" and family["stages"]["integrity"] == "pass", family
    resume = parts["resume"]
    assert resume["stop_rc"] == 143 and resume["stopped_mid_epoch"] and resume["rerun_rc"] == 0, resume
    assert resume["bit_identical"] and resume["largest_difference"] == 0.0, resume
    arc = parts["arc"]
    assert arc["bench_rc"] == arc["train_rc"] == arc["eval_rc"] == 0 and arc["tokens_per_s"] > 0, arc
    assert arc["eval_outputs"] == 5, "arc_tiny's held-out test outputs, each once"
    ttt = parts["ttt"]
    assert ttt["eval_rc"] == 0 and ttt["ttt_s_per_task"] > 0 and ttt["outputs"] == 2 and ttt["missing"] == 0, ttt
    assert all(parts["video"][m]["rc"] == 0 and parts["video"][m]["steps_per_s"] > 0 for m in ("magvit", "magvit_v2"))
    assert parts["ddp"] == {**parts["ddp"], "rc": 0, "finished": True}
    log = (tmp_path / "log.txt").read_text()
    assert log.count("\n$ ") >= 18 and "[exit 0 after" in log


def test_a_part_past_its_limit_is_stopped_and_the_figures_kept(tmp_path):
    r = subprocess.run(
        [*CHECK, "--device", "cpu", "--out", str(tmp_path), "--parts", "ddp", "--budget", "2"],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 1 and "ddp: stopped at its limit (2 s)" in r.stdout, r.stdout + r.stderr
    assert json.loads((tmp_path / "figures.json").read_text())["parts"]["ddp"]["status"] == "stopped at its limit (2 s)"
    assert "[killed at its part's time limit after 2 s]" in (tmp_path / "log.txt").read_text()
    # asked for the GPU on a machine without one: one line, exit 2, nothing run
    r = subprocess.run([*CHECK, "--out", str(tmp_path / "gpu")], env=env(), capture_output=True, text=True, timeout=120)
    assert (
        r.returncode == 2
        and r.stderr.strip() == "error: no CUDA device here; the same parts at tiny sizes on the CPU: --device cpu"
    ), r.stderr
    assert not (tmp_path / "gpu").exists()
