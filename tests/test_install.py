"""The project installed the way a user without the checkout has it: `pip install .` (not editable) into a
fresh virtual environment; the console scripts then train, verify and predict from any folder, with the config
tree from inside the package and the code's git commit recorded in every checkpoint."""

import subprocess
import sys
import sysconfig

import pytest
import torch

from conftest import ROOT, env

pytestmark = pytest.mark.slow  # a wheel built and installed into a fresh environment


def git_head() -> str:
    return subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """A fresh venv whose only project code is the built package (a wheel built from the checkout, as
    `pip install .` builds it); the dependencies are this environment's (one .pth line to its
    site-packages, where this environment's editable install is not active)."""
    venv = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    site = next(venv.glob("lib/python*/site-packages"))
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    r = subprocess.run(
        [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(ROOT)],
        env=env(),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    return venv


def test_installed_package_trains_and_verifies_outside_the_checkout(installed, tmp_path):
    python = installed / "bin" / "python"
    where = subprocess.run(
        [str(python), "-c", "import experiments; print(experiments.__file__)"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
    )
    assert str(installed) in where.stdout and str(ROOT) not in where.stdout, where.stdout + where.stderr
    r = subprocess.run(
        [
            str(installed / "bin" / "experiments-train"),
            "experiment=ternary_v5_5",
            "trainer.max_epochs=1",
            "logger=none",
            "data.batch_size=256",
            "task.coverage_samples=2000",
            "trainer.enable_progress_bar=false",
        ],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    run = next((tmp_path / "outputs" / "ternary_v5_5").iterdir())
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["run"]["finished"] and ckpt["framework"]["git_commit"].split("+")[0] == git_head()
    v = subprocess.run(
        [str(installed / "bin" / "experiments-verify"), f"ckpt={run}", "stages=[loadable,integrity,metrics]"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "loadable" in v.stdout and "integrity" in v.stdout, v.stdout + v.stderr
    (tmp_path / "ops.txt").write_text("0\n19682\n")
    p = subprocess.run(
        [str(installed / "bin" / "experiments-predict"), f"ckpt={run}", f"input={tmp_path / 'ops.txt'}"],
        cwd=tmp_path,
        env=env(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert p.returncode == 0 and "2 predictions in " in p.stdout, p.stdout + p.stderr
    assert len((next((run / "predict").iterdir()) / "last" / "latent.csv").read_text().splitlines()) == 3
