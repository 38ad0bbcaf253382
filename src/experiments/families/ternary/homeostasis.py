"""Coverage watch for the hyperbolic Ternary VAE variants: the homeostasis controller of v5.11 partial
freeze, and a guard that warns (or stops the run) when coverage collapses.

Both read `coverage/recon_a` (decoder A on encoder A's mean, all 19,683 operations) from the task's
epoch_metrics at `on_validation_end`, after the task has computed it and before the checkpoint policy
writes the epoch, so that every decision lands in that epoch's history row and checkpoint.
"""

from dataclasses import dataclass, field

from lightning.pytorch.callbacks import Callback

from experiments.family import RunStopped, UserError, console_print, epoch_number


@dataclass
class HomeostasisController:
    """Freeze encoder A when coverage falls below `freeze_below`; unfreeze it when coverage is at least
    `unfreeze_at` and it has stayed frozen `hysteresis` epochs. No decision before `warmup_epochs`
    epochs have finished (A stays frozen through warm-up). Freezing never waits: coverage comes first."""

    freeze_below: float = 0.995
    unfreeze_at: float = 0.995
    warmup_epochs: int = 5
    hysteresis: int = 3
    frozen: bool = True
    last_change: int = -1  # epoch of the last decision (-1: the start, frozen)
    decisions: list = field(default_factory=list)

    def update(self, epoch: int, coverage: float) -> str | None:
        """Feed one finished epoch's coverage; returns 'freeze', 'unfreeze' or None."""
        action = None
        if epoch + 1 < self.warmup_epochs:
            return None
        if not self.frozen and coverage < self.freeze_below:
            action = "freeze"
        elif self.frozen and coverage >= self.unfreeze_at and epoch - self.last_change >= self.hysteresis:
            action = "unfreeze"
        if action:
            self.frozen, self.last_change = action == "freeze", epoch
            self.decisions.append({"epoch": epoch, "action": action, "coverage": float(coverage)})
        return action

    def state_dict(self) -> dict:
        return {"frozen": self.frozen, "last_change": self.last_change, "decisions": [dict(d) for d in self.decisions]}

    def load_state_dict(self, state: dict) -> None:
        self.frozen, self.last_change = bool(state["frozen"]), int(state["last_change"])
        self.decisions = [dict(d) for d in state["decisions"]]


class Homeostasis(Callback):
    """Applies HomeostasisController's decisions to encoder A, prints and logs each one, and records
    `homeostasis/encoder_a_frozen` in every epoch's metrics. Its state travels in the checkpoint, so a
    resumed run continues with the same freeze state and history of decisions."""

    replayed = True  # it changes what is trained: verify.py's replay (resume_exact) builds it from the stored values

    def __init__(
        self,
        freeze_below: float = 0.995,
        unfreeze_at: float = 0.995,
        warmup_epochs: int = 5,
        hysteresis: int = 3,
        metric: str = "coverage/recon_a",
    ):
        self.controller = HomeostasisController(freeze_below, unfreeze_at, warmup_epochs, hysteresis)
        self.metric = metric

    @property
    def state_key(self) -> str:
        return "Homeostasis"

    def state_dict(self) -> dict:
        return self.controller.state_dict()

    def load_state_dict(self, state: dict) -> None:
        self.controller.load_state_dict(state)

    def setup(self, trainer, pl_module, stage: str) -> None:
        if trainer is not None and trainer.world_size > 1:
            # DDP syncs gradients only of tensors that required them when the model was wrapped: an
            # encoder unfrozen later would train apart on every process.
            raise UserError(
                "callbacks.homeostasis cannot run under DDP (trainer=ddp): use one process per run, "
                "or remove the homeostasis callback"
            )
        if getattr(pl_module, "encoder_a_lr_scale", None) is None:
            raise UserError(
                "callbacks.homeostasis needs encoder A in the optimizer: set task.encoder_a_lr_scale "
                "(e.g. 0.05), or remove the homeostasis callback"
            )

    def apply(self, pl_module) -> None:
        if self.controller.frozen:
            pl_module.set_trainable("encoder_a", False)
        else:
            pl_module.unfreeze_encoder_a()

    def on_train_start(self, trainer, pl_module) -> None:
        self.apply(pl_module)  # a resumed run picks up where the checkpoint left the controller

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.metric not in pl_module.epoch_metrics:
            return
        coverage = pl_module.epoch_metrics[self.metric]
        action = self.controller.update(trainer.current_epoch, coverage)
        if action:
            self.apply(pl_module)
            verb = "froze" if action == "freeze" else "unfroze"
            console_print(
                trainer,
                f"homeostasis: epoch {epoch_number(trainer.current_epoch)}: {self.metric} {coverage:.2%} -> "
                f"{verb} encoder A",
            )
        pl_module.epoch_metrics["homeostasis/encoder_a_frozen"] = float(self.controller.frozen)
        if trainer.logger:
            trainer.logger.log_metrics(
                {"homeostasis/encoder_a_frozen": float(self.controller.frozen)}, step=trainer.global_step
            )


class CoverageGuard(Callback):
    """Warn when coverage falls below `threshold`; with `stop=true`, stop the run before the epoch is
    written, so the last checkpoint on disk is the last good one."""

    def __init__(self, threshold: float = 0.95, stop: bool = False, metric: str = "coverage/recon_a"):
        self.threshold, self.stop, self.metric = threshold, stop, metric

    def on_validation_end(self, trainer, pl_module) -> None:
        if trainer.sanity_checking or self.metric not in pl_module.epoch_metrics:
            return
        coverage = pl_module.epoch_metrics[self.metric]
        if coverage >= self.threshold:
            return
        epoch = epoch_number(trainer.current_epoch)
        line = f"{self.metric} fell to {coverage:.2%} at epoch {epoch}, below {self.threshold:.0%}"
        if self.stop:
            raise RunStopped(f"{line}; stopped (callbacks.coverage_guard.stop=true)")
        console_print(trainer, f"warning: {line} (callbacks.coverage_guard.stop=true would stop the run)")
