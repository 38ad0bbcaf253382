"""The family contract, checked before training with one line each (task_contract.py, docs/FAMILIES.md):
a missing method, a loss that was never counted, a data module that takes no seed; what is derived instead
of restated (a monitor's direction, a family's own preflight stages); evaluation owned by the contract
(training's validation, verify.py and eval.py share evaluation_step and figures)."""

import pytest
import torch
from omegaconf import OmegaConf

from experiments.errors import StageFailure, UserError
from experiments.family import ExperimentTask
from experiments.stages.config_check import check_config
from experiments.stages.preflight import _loss, stage_order


class Curve(ExperimentTask):
    primary_metric = "val/r2"
    higher_is_better = ("val/r2",)
    lower_is_better = ("val/mse",)

    def __init__(self, counts: bool = True):
        super().__init__()
        self.model, self.counts = torch.nn.Linear(1, 1), counts

    def training_loss(self, batch, batch_idx):
        loss = self.model(batch).pow(2).mean()
        if self.counts:
            self.add_training_terms(loss)
        return loss

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def evaluation_step(self, batch, epoch):
        return self.model(batch).squeeze(1)

    def figures(self, parts, epoch):
        return {"val/mse": torch.cat(parts).pow(2).mean().item()}

    def check_outputs(self, batch):
        return [("y", self.model(batch), (len(batch), 1))]


def test_a_task_missing_a_method_is_named():
    class Half(ExperimentTask):
        def training_loss(self, batch, batch_idx):
            return torch.zeros(())

    assert Half.contract_gaps() == ["configure_optimizers", "evaluation_step", "figures", "check_outputs"]
    assert Curve.contract_gaps() == []
    with pytest.raises(NotImplementedError, match="Half must implement evaluation_step"):
        Half().evaluation_step(None, 0)


def test_a_loss_that_is_never_counted_stops_before_training():
    with pytest.raises(StageFailure, match="did not call add_training_terms"):
        _loss(Curve(counts=False), torch.ones(4, 1), 0)  # the preflight
    with pytest.raises(UserError, match="did not call add_training_terms"):
        Curve(counts=False).training_step(torch.ones(4, 1), 0)  # and every step
    assert _loss(Curve(), torch.ones(4, 1), 0).ndim == 0


class NoSeed:
    """A data module that cannot follow the run's seed."""

    def __init__(self, batch_size: int = 8):
        pass


def test_a_data_module_must_take_the_seed():
    with pytest.raises(UserError, match=r"takes no seed= argument, which the framework passes it"):
        check_config(OmegaConf.create({"data": {"_target_": f"{__name__}.NoSeed"}}))


def test_a_monitors_direction_is_the_familys_unless_given():
    assert Curve.monitor() == ("val/r2", "max")  # the primary metric, in its own direction
    assert Curve.monitor(None, "max") == ("val/r2", "max")  # a mode that agrees with the family's
    with pytest.raises(UserError, match="checkpoint.mode=min contradicts Curve: higher is better for val/r2"):
        Curve.monitor(None, "min")  # it would keep the worst checkpoint as the best
    with pytest.raises(UserError, match="checkpoint.mode must be 'min' or 'max'"):
        Curve.monitor("val/r2", "sideways")
    assert Curve.monitor("val/mse") == ("val/mse", "min")  # derived for a named monitor too
    assert Curve.monitor("val/r2", "min") == ("val/r2", "min")  # given: as given
    with pytest.raises(UserError, match="give checkpoint.mode=min or checkpoint.mode=max"):
        Curve.monitor("val/other")


def test_a_familys_own_stages_come_after_the_loading_ones():
    class Frozen(Curve):
        preflight_stages = {"frozen_coverage": lambda ctx: None}

    listed = ["config", "frozen_checkpoint", "forward_backward", "gradients"]
    assert stage_order(listed, Frozen()) == [
        "config",
        "frozen_checkpoint",
        "frozen_coverage",
        "forward_backward",
        "gradients",
    ]
    assert stage_order(["config", "forward_backward"], Frozen()) == ["config", "frozen_coverage", "forward_backward"]
    assert stage_order(["frozen_coverage", "config"], Frozen()) == ["frozen_coverage", "config"]  # named: as listed
    assert stage_order(listed, Curve()) == listed


class Batches:
    def __init__(self, *batches):
        self.batches = batches

    def val_dataloader(self):
        return list(self.batches)


def test_evaluate_and_evaluate_to_run_the_familys_evaluation(tmp_path):
    task, data = Curve(), Batches(torch.ones(3, 1), torch.zeros(2, 1))
    written = []
    task.evaluation_files = lambda parts, figures, folder, epoch, during_training, datamodule: written.append(
        (len(parts), figures, folder, epoch, during_training, datamodule)
    )
    expected = torch.cat([task.model(torch.ones(3, 1)), task.model(torch.zeros(2, 1))]).pow(2).mean().item()
    assert task.evaluate(data, 4) == {"val/mse": pytest.approx(expected)}
    assert written == [], "evaluate writes nothing"
    figures = task.evaluate_to(data, 4, tmp_path)
    assert written == [(2, figures, tmp_path, 4, False, data)]
    assert task.training, "evaluation leaves the task in the mode it found it"
