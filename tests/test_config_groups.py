"""Every option of every config group composes and passes the signature check."""

import pytest
from hydra import compose, initialize_config_dir

from experiments.cli import CONF_DIR
from experiments.config_schema import register
from experiments.stages.config_check import check_config

register()


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "debug", "ddp"])
@pytest.mark.parametrize("logger", ["wandb", "csv", "none"])
def test_group_options_compose_and_check(trainer, logger):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=["experiment=ternary_v5_5", f"trainer={trainer}", f"logger={logger}"])
    assert check_config(cfg) == (6 if logger != "none" else 5)
    assert cfg.trainer.accelerator == ("gpu" if trainer == "gpu" else "cpu")
    assert cfg.trainer.max_epochs == (2 if trainer == "debug" else 20), "the preset must not undo trainer=debug"
    if trainer == "gpu":  # resolved on the machine that runs it
        assert cfg.trainer.precision in ("bf16-mixed", "16-mixed")
    if trainer == "ddp":
        assert cfg.trainer.strategy == "ddp" and cfg.trainer.devices == 2
    if logger == "wandb":
        assert cfg.logger.offline is True, "wandb must stay offline unless the user says otherwise"


def test_gpu_precision_is_bf16_only_where_the_gpu_has_it(monkeypatch):
    import torch

    from experiments.config_schema import gpu_precision

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: not including_emulation)
    assert gpu_precision() == "bf16-mixed"
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda including_emulation=True: including_emulation)
    assert gpu_precision() == "16-mixed"  # emulated bf16 (e.g. V100) is not used
