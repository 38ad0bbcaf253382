"""The homeostasis controller of v5.11 partial freeze on a scripted coverage sequence, alone and as the
Lightning callback acting on a real task."""

from types import SimpleNamespace

import pytest
import torch

from experiments.errors import RunStopped
from experiments.families.ternary.homeostasis import CoverageGuard, Homeostasis, HomeostasisController
from experiments.families.ternary.hyperbolic import HyperbolicTernaryTask
from experiments.families.ternary.vae_v5_11 import HyperbolicTernaryVAE

# epoch: 0-3 warm-up (no decision even at full coverage); 4 unfreeze (warm-up over, frozen since the
# start); 5 freeze (below 0.995); 6-7 hysteresis holds it frozen although coverage is back; 8 unfreeze;
# 9 stays unfrozen at 0.999; 10 freeze again.
COVERAGE = [1.0, 0.90, 1.0, 1.0, 1.0, 0.99, 1.0, 1.0, 1.0, 0.999, 0.98]
EXPECTED = {4: "unfreeze", 5: "freeze", 8: "unfreeze", 10: "freeze"}


def test_controller_follows_the_script():
    c = HomeostasisController(freeze_below=0.995, unfreeze_at=0.995, warmup_epochs=5, hysteresis=3)
    actions = {e: a for e, cov in enumerate(COVERAGE) if (a := c.update(e, cov))}
    assert actions == EXPECTED
    assert [d["epoch"] for d in c.decisions] == [4, 5, 8, 10] and c.frozen


def test_controller_state_round_trips():
    c = HomeostasisController()
    for e, cov in enumerate(COVERAGE[:6]):
        c.update(e, cov)
    d = HomeostasisController()
    d.load_state_dict(c.state_dict())
    rest = list(enumerate(COVERAGE))[6:]
    assert [c.update(e, v) for e, v in rest] == [d.update(e, v) for e, v in rest]


def stub_trainer(epoch: int):
    return SimpleNamespace(
        sanity_checking=False, current_epoch=epoch, logger=None, global_step=epoch * 10, progress_bar_callback=None
    )


def test_callback_freezes_and_unfreezes_encoder_a_of_a_real_task(capsys):
    task = HyperbolicTernaryTask(HyperbolicTernaryVAE(), encoder_b_lr_scale=0.1, encoder_a_lr_scale=0.05)
    cb = Homeostasis(freeze_below=0.995, unfreeze_at=0.995, warmup_epochs=5, hysteresis=3)
    cb.setup(None, task, "fit")
    cb.on_train_start(None, task)
    encoder_a = [p for n, p in task.model.encoder_a.named_parameters() if not n.startswith("logvar.")]
    assert not any(p.requires_grad for p in encoder_a)
    trainable_by_epoch = []
    for epoch, cov in enumerate(COVERAGE):
        task.epoch_metrics = {"coverage/recon_a": cov}
        cb.on_validation_end(stub_trainer(epoch), task)
        trainable_by_epoch.append(all(p.requires_grad for p in encoder_a))
        assert task.epoch_metrics["homeostasis/encoder_a_frozen"] == float(not trainable_by_epoch[-1])
    assert trainable_by_epoch == [False] * 4 + [True] + [False] * 3 + [True, True, False]
    assert "unfroze encoder A" in capsys.readouterr().out
    assert "encoder_a" in task.ever_trained and "encoder_a" not in task.always_frozen()
    assert task.always_frozen() == ["decoder_a"]  # encoder B trains from the start
    # the optimizer holds encoder A at 0.05 x lr, so unfreezing it really trains it
    groups = task.configure_optimizers().param_groups
    assert [g["lr"] for g in groups] == pytest.approx([1e-3, 1e-4, 5e-5])


def test_callback_refuses_a_task_without_encoder_a_in_the_optimizer():
    from experiments.errors import UserError

    with pytest.raises(UserError, match="encoder_a_lr_scale"):
        Homeostasis().setup(None, HyperbolicTernaryTask(HyperbolicTernaryVAE()), "fit")


def test_callback_refuses_ddp():
    from experiments.errors import UserError

    task = HyperbolicTernaryTask(HyperbolicTernaryVAE(), encoder_b_lr_scale=0.1, encoder_a_lr_scale=0.05)
    with pytest.raises(UserError, match="cannot run under DDP"):
        Homeostasis().setup(SimpleNamespace(world_size=2), task, "fit")


def test_a_frozen_encoder_does_not_move_under_adamw_weight_decay():
    torch.manual_seed(0)
    task = HyperbolicTernaryTask(
        HyperbolicTernaryVAE(), weight_decay=0.1, encoder_b_lr_scale=0.1, encoder_a_lr_scale=0.05
    )
    opt = task.configure_optimizers()
    before = {k: v.clone() for k, v in task.model.encoder_a.state_dict().items()}
    x = torch.randint(-1, 2, (64, 9)).float()
    for _ in range(3):
        opt.zero_grad()
        task.compute_loss(x)[0].backward()
        opt.step()
    assert all(torch.equal(before[k], v) for k, v in task.model.encoder_a.state_dict().items())


def test_coverage_guard_warns_or_stops(capsys):
    task = SimpleNamespace(epoch_metrics={"coverage/recon_a": 0.5})
    CoverageGuard(threshold=0.95, stop=False).on_validation_end(stub_trainer(3), task)
    assert "warning: coverage/recon_a fell to 50.00% at epoch 4, below 95%" in capsys.readouterr().out
    with pytest.raises(RunStopped, match="fell to 50.00%"):
        CoverageGuard(threshold=0.95, stop=True).on_validation_end(stub_trainer(3), task)
    task.epoch_metrics["coverage/recon_a"] = 0.96
    CoverageGuard(threshold=0.95, stop=True).on_validation_end(stub_trainer(3), task)  # no stop above it


def test_encoder_a_refrozen_after_training_stops_moving_despite_adam_state():
    torch.manual_seed(0)
    task = HyperbolicTernaryTask(
        HyperbolicTernaryVAE(), weight_decay=0.1, encoder_b_lr_scale=0.1, encoder_a_lr_scale=0.05, ce_weight=1.0
    )
    opt = task.configure_optimizers()
    x = torch.randint(-1, 2, (64, 9)).float()

    def step():
        opt.zero_grad()
        task.compute_loss(x)[0].backward()
        opt.step()

    task.unfreeze_encoder_a()
    before_training = {k: v.clone() for k, v in task.model.encoder_a.state_dict().items()}
    step()
    step()
    trained = {k: v.clone() for k, v in task.model.encoder_a.state_dict().items()}
    assert any(not torch.equal(before_training[k], trained[k]) for k in trained)  # it did train
    assert any(opt.state[p] for p in task.model.encoder_a.parameters())  # and has AdamW moments
    task.set_trainable("encoder_a", False)
    step()
    step()
    assert all(torch.equal(trained[k], v) for k, v in task.model.encoder_a.state_dict().items())
