import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
# Small and quick, but the real programs: 77 steps an epoch instead of 308.
FAST = ["logger=none", "data.batch_size=256", "task.coverage_samples=2000", "trainer.enable_progress_bar=false"]


def env() -> dict:
    e = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}
    e.update(WANDB_MODE="offline", WANDB_SILENT="true", PYTHONUNBUFFERED="1")
    return e


def train_cmd(*overrides: str) -> list[str]:
    return [sys.executable, str(ROOT / "train.py"), *overrides]


def run_train(*overrides: str, cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run(train_cmd(*overrides), cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)


def start_train(*overrides: str, cwd: Path) -> subprocess.Popen:
    return subprocess.Popen(train_cmd(*overrides), cwd=cwd, env=env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


@pytest.fixture
def workdir(tmp_path) -> Path:
    return tmp_path
