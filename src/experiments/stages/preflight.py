"""Preflight stages: run by train.py before any training, in seconds, on real batches."""

import copy
import itertools
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from experiments.errors import StageFailure, UserError
from experiments.stages.config_check import check_config
from experiments.stages.registry import StageResult, run_stages


@dataclass
class PreflightContext:
    cfg: Any
    task: Any = None
    datamodule: Any = None
    batches: int = 3
    experiment: str | None = None  # the preset's name: its row of the frozen-checkpoint compatibility matrix
    resume_from: Path | None = None  # the checkpoint a resumed run continues from
    _batches: list | None = field(default=None, repr=False)

    def real_batches(self) -> list:
        """The first `batches` training batches, read once and shared by every stage."""
        if self._batches is None:
            self._batches = list(itertools.islice(iter(self.datamodule.train_dataloader()), self.batches))
        if not self._batches:
            raise StageFailure("the training data loader yields no batch")
        return self._batches


def _loss(task, batch, batch_idx: int) -> torch.Tensor:
    """A task's `training_loss(batch, batch_idx)`: the scalar its training step minimises, which must also
    count the batch's training figures (`add_training_terms`): else train/loss would read 0."""
    counted = task._epoch_count
    out = task.training_loss(batch, batch_idx)
    if task._epoch_count == counted:
        raise StageFailure(
            f"{type(task).__name__}.training_loss did not call add_training_terms(...): the epoch's "
            f"train/loss would read 0 (docs/FAMILIES.md)"
        )
    loss = out["loss"] if isinstance(out, dict) else out
    if not isinstance(loss, torch.Tensor) or loss.ndim != 0:
        raise StageFailure(f"training_loss must return a scalar loss tensor, got {type(loss).__name__}")
    return loss


def config_stage(ctx) -> StageResult:
    checked = check_config(ctx.cfg)
    return StageResult(name="config", details=f"{checked} config nodes match their targets' signatures")


def forward_backward(ctx) -> StageResult:
    """One real batch through forward, loss and backward, on a copy of the task."""
    task = copy.deepcopy(ctx.task).train()
    batch = ctx.real_batches()[0]
    loss = _loss(task, batch, 0)
    if not torch.isfinite(loss):
        raise StageFailure(f"the loss of a real batch is {loss.item()}")
    loss.backward()
    return StageResult(
        name="forward_backward",
        details=f"loss {loss.item():.4g} on a batch of real data",
        metrics={"loss": loss.item()},
    )


def gradients(ctx) -> StageResult:
    """Every trainable parameter gets a finite gradient on every batch, non-zero on at least one."""
    task = copy.deepcopy(ctx.task).train()
    params = {n: p for n, p in task.named_parameters() if p.requires_grad}
    if not params:
        raise StageFailure("the model has no trainable parameter")
    nonzero = set()
    batches = ctx.real_batches()
    for i, batch in enumerate(batches):
        task.zero_grad(set_to_none=True)
        _loss(task, batch, i).backward()
        for n, p in params.items():
            if p.grad is None:
                continue
            if not torch.isfinite(p.grad).all():
                raise StageFailure(f"parameter {n} has a non-finite gradient on real batch {i}")
            if p.grad.abs().sum() > 0:
                nonzero.add(n)
    never = sorted(set(params) - nonzero)
    if never:
        shown = ", ".join(never[:5]) + (f" and {len(never) - 5} more" if len(never) > 5 else "")
        raise StageFailure(
            f"{len(never)} trainable parameter(s) got no gradient in {len(batches)} real batches: {shown}"
        )
    return StageResult(
        name="gradients", details=f"{len(params)} trainable tensors, all with finite, non-zero gradients"
    )


def finite(ctx) -> StageResult:
    """No NaN or Inf in parameters, buffers, or the outputs of a real batch."""
    for n, t in itertools.chain(ctx.task.named_parameters(), ctx.task.named_buffers()):
        if t.is_floating_point() and not torch.isfinite(t).all():
            raise StageFailure(f"{n} holds NaN or Inf")
    with torch.no_grad():
        loss = _loss(copy.deepcopy(ctx.task), ctx.real_batches()[0], 0)
    if not torch.isfinite(loss):
        raise StageFailure(f"loss on a real batch is {loss.item()}")
    return StageResult(name="finite", details="parameters, buffers and loss are finite")


def optimizer_step(ctx) -> StageResult:
    """One real optimizer step on a copy: every trainable parameter moves, every frozen one stays
    bit-identical (a frozen tensor left in the optimizer would drift through weight decay)."""
    task = copy.deepcopy(ctx.task).train()
    opt = task.configure_optimizers()
    opt = opt["optimizer"] if isinstance(opt, dict) else opt
    opt = opt[0] if isinstance(opt, (list, tuple)) else opt
    before = {n: p.detach().clone() for n, p in task.named_parameters()}
    opt.zero_grad(set_to_none=True)
    _loss(task, ctx.real_batches()[0], 0).backward()
    opt.step()
    frozen = [n for n, p in task.named_parameters() if not p.requires_grad]
    moved_frozen = [n for n in frozen if not torch.equal(before[n], dict(task.named_parameters())[n])]
    if moved_frozen:
        raise StageFailure(f"frozen parameter(s) changed after one optimizer step: {', '.join(moved_frozen[:5])}")
    stuck = [n for n, p in task.named_parameters() if p.requires_grad and torch.equal(before[n], p)]
    if stuck:
        raise StageFailure(
            f"trainable parameter(s) did not change after one optimizer step (not in the "
            f"optimizer, or lr 0?): {', '.join(stuck[:5])}"
        )
    return StageResult(
        name="optimizer_step",
        details=f"{len(before) - len(frozen)} trainable tensors moved, {len(frozen)} frozen stayed",
    )


def frozen_checkpoint(ctx) -> StageResult:
    """Tasks built on frozen parts (`frozen_parts`): find, check and load them (checkpoint/frozen.py). Must
    run before the stages that train a copy of the task. A source that cannot be used is bad input."""
    from omegaconf import OmegaConf

    from experiments.checkpoint.frozen import load_frozen_parts

    node = ctx.cfg.get("frozen_checkpoint")
    if node is None:
        return StageResult(name="frozen_checkpoint", status="skip", details="this experiment has no frozen parts")
    node = OmegaConf.to_container(node, resolve=True)
    account = load_frozen_parts(
        ctx.task, node, ctx.experiment, Path(ctx.cfg.paths.outputs), ctx.resume_from, judge=family_checks(ctx)
    )
    return StageResult(name="frozen_checkpoint", details=account, metrics={"source": dict(ctx.task.frozen_source)})


def family_checks(ctx):
    """How `frozen_checkpoint.path=auto` judges a candidate: the family's own preflight stages (e.g. the
    coverage of the frozen path), run on a copy of the task holding the candidate's parts.
    Returns judge(path, parts) -> None, or why the candidate is not usable."""
    names = list(type(ctx.task).preflight_stages)

    def judge(path: Path, parts: dict) -> str | None:
        task = copy.deepcopy(ctx.task)
        task.load_state_dict({**task.state_dict(), **parts}, strict=True)
        task.frozen_source = {"path": str(path), "allow_random": False}
        for name in names:
            try:
                (result,) = run_stages([name], replace(ctx, task=task), type(task).preflight_stages)
            except UserError as e:  # e.g. the coverage of untrained parts: bad input
                return f"{name}: {e}"
            if result.status == "fail":
                return f"{name}: {result.details}"
        return None

    return judge


# What train.py runs before training, by the names `validation.preflight` lists (in its order); a family
# adds its own through its task's `preflight_stages`.
PREFLIGHT_STAGES = {
    "config": config_stage,
    "frozen_checkpoint": frozen_checkpoint,
    "forward_backward": forward_backward,
    "gradients": gradients,
    "finite": finite,
    "optimizer_step": optimizer_step,
}


def stages_for(task) -> dict:
    """The framework's preflight stages and the task's family's own."""
    return {**PREFLIGHT_STAGES, **type(task).preflight_stages}


def stage_order(listed: list[str], task) -> list[str]:
    """The stages to run: `validation.preflight` as listed, with the family's own stages that it does not
    name inserted right after the framework's loading stages (`config`, `frozen_checkpoint`), since they
    check what was loaded and come before anything trains."""
    own = [name for name in type(task).preflight_stages if name not in listed]
    loading = [i for i, name in enumerate(listed) if name in ("config", "frozen_checkpoint")]
    at = loading[-1] + 1 if loading else 0
    return [*listed[:at], *own, *listed[at:]]
