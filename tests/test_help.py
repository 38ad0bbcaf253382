"""`--help` of each program: what it does, the commands to type, the groups it takes (no internal ones) and
its keys; verify.py's stages. Printed without importing torch or Lightning."""

import subprocess
import sys

import pytest

from conftest import ROOT, env
from experiments.stages.checkpoint_stages import CHECKPOINT_STAGES


def help_of(program: str, *args: str) -> str:
    r = subprocess.run(
        [sys.executable, str(ROOT / program), *args, "--help"], capture_output=True, text=True, env=env(), timeout=60
    )
    assert r.returncode == 0 and not r.stderr, r.stderr
    return r.stdout


def groups(text: str) -> dict[str, list[str]]:
    lines = text.split("Groups (choose one option: GROUP=OPTION):\n")[1].split("\n\n")[0].splitlines()
    return {line.split()[0]: line.split()[1:] for line in lines}


def test_train_help_describes_the_program_its_groups_and_keys():
    text = help_of("train.py")
    assert text.startswith("train.py: Train a model") and "Common commands:" in text
    assert "cli is powered by Hydra" not in text
    found = groups(text)
    assert {"experiment", "data", "model", "task", "trainer", "logger", "sweep", "debug", "callbacks"} <= set(found)
    assert "exp3_champion" in found["experiment"] and "arc_small" in found["data"]
    assert found["debug"] == ["anomaly", "fast_dev_run", "limit", "overfit", "profiler"]
    assert found["callbacks"] == ["early_stopping", "model_summary"]
    assert "shared" not in found and "hydra" not in found  # internal: a family's shared pieces, Hydra's own
    assert "  resume " in text and "auto: resume or report a finished run" in text


def test_help_lists_a_family_given_with_config_dir():
    text = help_of("train.py", "--config-dir", str(ROOT / "examples" / "sine" / "conf"))
    assert "sine" in groups(text)["experiment"]


def test_verify_help_lists_its_stages_not_trains_groups():
    text = help_of("verify.py")
    assert text.startswith("verify.py: Verify a checkpoint")
    assert "Groups (" not in text and "experiment " not in text
    stages = text.split("Stages (")[1]
    for name in CHECKPOINT_STAGES:
        assert f"\n  {name} " in stages, name
    assert "bit for bit" in stages


@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_eval_help(flag):
    r = subprocess.run(
        [sys.executable, str(ROOT / "eval.py"), flag], capture_output=True, text=True, env=env(), timeout=60
    )
    assert r.returncode == 0 and r.stdout.startswith("eval.py: Evaluate a checkpoint")
    assert "data=GROUP" in r.stdout and "arc_small" in r.stdout and "task.KEY=VALUE" in r.stdout
