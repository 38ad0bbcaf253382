"""Each preflight stage fails for the reason it exists; train.py stops before any training."""

import pytest
import torch
from omegaconf import OmegaConf

from conftest import SINE, in_process
from experiments.errors import UserError
from experiments.families.ternary.data import TernaryOpsDataModule
from experiments.families.ternary.task import TernaryVAETask
from experiments.families.ternary.vae_v5_5 import DualVAE
from experiments.stages.config_check import check_config
from experiments.stages.preflight import PREFLIGHT_STAGES, PreflightContext
from experiments.stages.registry import run_stages


def ctx(task=None):
    dm = TernaryOpsDataModule(batch_size=64, seed=0)
    return PreflightContext(cfg=None, task=task or TernaryVAETask(DualVAE()), datamodule=dm, batches=2)


def status(name, c):
    (result,) = run_stages([name], c, PREFLIGHT_STAGES)
    return result


def test_healthy_model_passes_every_stage():
    results = run_stages(["forward_backward", "gradients", "finite", "optimizer_step"], ctx(), PREFLIGHT_STAGES)
    assert [r.status for r in results] == ["pass"] * 4


def test_nan_parameter_fails_finite():
    task = TernaryVAETask(DualVAE())
    with torch.no_grad():
        task.model.decoder_b.out.weight[0, 0] = float("nan")
    r = status("finite", ctx(task))
    assert r.status == "fail" and "model.decoder_b.out.weight" in r.details


def test_unused_parameter_fails_gradients():
    task = TernaryVAETask(DualVAE())
    task.model.orphan = torch.nn.Linear(3, 3)  # never used in forward: no gradient
    r = status("gradients", ctx(task))
    assert r.status == "fail" and "model.orphan.weight" in r.details


def test_infinite_gradient_fails_gradients():
    class Spiky(TernaryVAETask):
        def training_loss(self, batch, batch_idx):  # finite loss, but d sqrt(x)/dx at 0 is inf
            return super().training_loss(batch, batch_idx) + torch.sqrt(self.model.spike)

    task = Spiky(DualVAE())
    task.model.spike = torch.nn.Parameter(torch.zeros(()))
    r = status("gradients", ctx(task))
    assert r.status == "fail" and "model.spike has a non-finite gradient" in r.details


def test_frozen_parameter_that_moves_fails_optimizer_step():
    class LeakyFreeze(TernaryVAETask):
        def training_loss(self, batch, batch_idx):  # an EMA-style write into a frozen tensor
            with torch.no_grad():
                self.model.encoder_a.mu.weight.mul_(0.99)
            return super().training_loss(batch, batch_idx)

    task = LeakyFreeze(DualVAE())
    for p in task.model.encoder_a.parameters():
        p.requires_grad_(False)
    r = status("optimizer_step", ctx(task))
    assert r.status == "fail" and "frozen parameter(s) changed" in r.details and "encoder_a" in r.details


def test_correct_freeze_passes_optimizer_step():
    task = TernaryVAETask(DualVAE())
    for p in task.model.encoder_a.parameters():
        p.requires_grad_(False)
    assert status("optimizer_step", ctx(task)).status == "pass"


def test_config_check_names_the_key():
    cfg = OmegaConf.create({"model": {"_target_": "experiments.families.ternary.vae_v5_5.DualVAE", "latent_dim": "x"}})
    with pytest.raises(UserError, match=r"model.latent_dim='x' has type str, expected int"):
        check_config(cfg)
    cfg = OmegaConf.create({"model": {"_target_": "experiments.models.no_such.Model"}})
    with pytest.raises(UserError, match="cannot import"):
        check_config(cfg)


def test_train_stops_before_training_when_preflight_fails(workdir):
    r = in_process("train.py", *SINE, "task.lr=0.0", cwd=workdir)  # nothing would ever move
    assert r.returncode == 1
    assert "error: preflight stage 'optimizer_step' failed" in r.stdout
    assert "Nothing was trained" in r.stdout and "Traceback" not in r.stdout + r.stderr
    assert not (workdir / "outputs").exists(), "no run directory is left behind"
