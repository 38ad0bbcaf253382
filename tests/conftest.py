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


def run_program(program: str, *args: str, cwd: Path, extra_env: dict | None = None,
                timeout: float = 300) -> subprocess.CompletedProcess:
    """verify.py or eval.py as a user runs it."""
    return subprocess.run([sys.executable, str(ROOT / program), *args], cwd=cwd, env={**env(), **(extra_env or {})},
                          capture_output=True, text=True, timeout=timeout)


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
    r = run_train(*FAST, "trainer.max_epochs=6", "checkpoint.every_n_epochs=2", "task.coverage_samples=19683",
                  cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (root / "outputs" / "ternary_v5_5").iterdir()
    return run
