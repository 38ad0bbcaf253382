"""Checkpoint stages, run by verify.py on saved checkpoints (same registry as the preflight stages).

Single-checkpoint stages look at `ctx.primary`; series stages at `ctx.series` (one checkpoint per epoch,
in order). Every metric is computed on weights strictly loaded from a checkpoint; the untrained control
is built separately and always labelled as such.
"""

import contextlib
import copy
import io
import tempfile
from pathlib import Path

import torch

from experiments.checkpoint.io import recorded_sha256
from experiments.errors import StageFailure
from experiments.run_dir import epoch_number
from experiments.stages.registry import StageResult

REQUIRED_KEYS = (
    "state_dict",
    "optimizer_states",
    "epoch",
    "global_step",
    "config",
    "history",
    "rng",
    "framework",
    "run",
)
# A trained model must beat its untrained control by this much (absolute on [0, 1] metrics, relative on
# losses) before a metric counts as evidence of training.
CLEARLY_BETTER = 0.05


def _skip(name: str, reason: str) -> StageResult:
    return StageResult(name=name, status="skip", details=reason)


def loadable(ctx) -> StageResult:
    """Every checkpoint opened with weights_only=True (done while reading the input) and has the keys."""
    for path, ckpt in ctx.ckpts.items():
        missing = [k for k in REQUIRED_KEYS if k not in ckpt]
        if missing:
            raise StageFailure(f"{path.name} lacks required key(s) {missing}")
    return StageResult(
        name="loadable",
        details=f"{len(ctx.ckpts)} checkpoint(s) open with weights_only=True and hold {', '.join(REQUIRED_KEYS)}",
    )


def integrity(ctx) -> StageResult:
    """sha256 of each file equals the one its .sha256 sidecar recorded at save time."""
    checked, unrecorded = 0, []
    for path in ctx.ckpts:
        recorded = recorded_sha256(path)
        if recorded is None:
            unrecorded.append(path.name)
            continue
        actual = ctx.sha256(path)
        if recorded != actual:
            raise StageFailure(
                f"{path.name}: sha256 {actual[:16]}... differs from the {recorded[:16]}... "
                f"recorded when it was saved: the file changed after saving"
            )
        checked += 1
    if not checked:
        return _skip("integrity", "no recorded hash (.sha256 sidecar) to compare with")
    note = f"; no recorded hash for {', '.join(unrecorded)}" if unrecorded else ""
    return StageResult(name="integrity", details=f"{checked} file(s) match the sha256 recorded at save time{note}")


def restorable(ctx) -> StageResult:
    """Strict load_state_dict into the stored architecture; a mismatch names the keys."""
    for path in ctx.ckpts:
        ctx.trained(path)  # strict load; raises StageFailure naming the keys
    return StageResult(
        name="restorable",
        details=f"strict load_state_dict into {ctx.config['model']['_target_']} for {len(ctx.ckpts)} file(s)",
    )


def predicts(ctx) -> StageResult:
    """A forward pass on real data: outputs of the expected shapes, finite."""
    task, datamodule = ctx.trained(ctx.primary), ctx.datamodule()
    batch = next(iter(datamodule.val_dataloader()))  # the task moves it to its device
    shapes = []
    for name, out, expected in task.check_outputs(batch):
        if tuple(out.shape) != tuple(expected):
            raise StageFailure(f"output {name} has shape {tuple(out.shape)}, expected {tuple(expected)}")
        if not torch.isfinite(out).all():
            raise StageFailure(f"output {name} holds NaN or Inf on real data")
        shapes.append(f"{name} {tuple(out.shape)}")
    return StageResult(name="predicts", details="finite outputs on a real batch: " + ", ".join(shapes))


def frozen_identical(ctx) -> StageResult:
    """Tasks built on frozen parts: the parts frozen for the whole run are byte-identical to the
    source checkpoint's (per-part sha256 recorded at load time; tensor by tensor when the file is there)."""
    from experiments.checkpoint.frozen import parts_digest, source_parts
    from experiments.checkpoint.io import load_checkpoint, sha256_file

    frozen = ctx.ckpts[ctx.primary].get("frozen")
    if not frozen:
        return _skip("frozen_identical", "this model has no frozen parts")
    src, parts = frozen["source"], frozen["always_frozen"]
    if src.get("allow_random"):
        return _skip("frozen_identical", "frozen parts are RANDOM (trained with frozen_checkpoint.allow_random=true)")
    state = ctx.ckpts[ctx.primary]["state_dict"]
    changed = [p for p in parts if parts_digest(state, [p]) != src["part_digests"][p]]
    if changed:
        raise StageFailure(f"frozen part(s) {', '.join(changed)} differ from what was loaded from {src['path']}")
    path = Path(src["path"])
    if not path.is_file():
        note = f"source {path} is gone: compared with the sha256 recorded at load time only"
    else:
        source = source_parts(load_checkpoint(path)["state_dict"], parts)
        differ = [k for k, v in source.items() if not torch.equal(v, state[k])]
        if differ:
            raise StageFailure(f"{len(differ)} frozen tensor(s) differ from {path}, e.g. {differ[0]}")
        same_file = sha256_file(path) == src["sha256"]
        note = f"tensor by tensor against {path}" + (
            "" if same_file else " (the file changed since, these tensors did not)"
        )
    trained = [p for p in frozen["ever_trained"]]
    return StageResult(
        name="frozen_identical",
        details=f"{', '.join(parts)} byte-identical to the source ({note})"
        + (f"; trained on purpose: {', '.join(trained)}" if trained else ""),
        metrics={"source": src["path"], "always_frozen": parts, "ever_trained": trained},
    )


def progress(ctx) -> StageResult:
    """Checkpoint epochs strictly increase; the monitored metric improves from the first to the last."""
    if len(ctx.series) < 2:
        return _skip("progress", "needs at least two checkpoints of different epochs")
    epochs = [ctx.ckpts[p]["epoch"] for p in ctx.series]
    if any(b <= a for a, b in zip(epochs, epochs[1:])):
        raise StageFailure(f"checkpoint epochs are not strictly increasing: {[epoch_number(e) for e in epochs]}")
    monitor, mode = ctx.monitor()
    scored = [p for p in ctx.series if ctx.row(p).get(monitor) is not None]  # epochs that evaluated
    if len(scored) < 2:
        return _skip("progress", f"fewer than two checkpoints at epochs that measured {monitor!r}")
    first, last = ctx.row(scored[0])[monitor], ctx.row(scored[-1])[monitor]
    epochs = [epoch_number(ctx.ckpts[p]["epoch"]) for p in scored]
    improved = last < first if mode == "min" else last > first
    if not improved:
        raise StageFailure(
            f"{monitor} did not improve from epoch {epochs[0]} ({first:.6g}) to epoch "
            f"{epochs[-1]} ({last:.6g}), mode {mode}"
        )
    return StageResult(
        name="progress",
        details=f"epochs {epochs}; {monitor} {first:.6g} -> {last:.6g}",
        metrics={"epochs": epochs, f"{monitor}/first": first, f"{monitor}/last": last},
    )


def weights_updated(ctx) -> StageResult:
    """Parameters changed between consecutive checkpoints; frozen ones did not."""
    if len(ctx.series) < 2:
        return _skip("weights_updated", "needs at least two checkpoints of different epochs")
    recorded = ctx.ckpts[ctx.series[-1]].get("frozen")
    if recorded:  # parts frozen for the whole run (a homeostasis-unfrozen encoder may move)
        from experiments.checkpoint.frozen import source_parts

        frozen = set(source_parts(ctx.ckpts[ctx.series[-1]]["state_dict"], recorded["always_frozen"]))
    else:
        frozen = {n for n, p in ctx.fresh_task().named_parameters() if not p.requires_grad}
    diffs = {}
    for a, b in zip(ctx.series, ctx.series[1:]):
        sa, sb = ctx.ckpts[a]["state_dict"], ctx.ckpts[b]["state_dict"]
        comparable = [k for k in sa if k in sb and sa[k].shape == sb[k].shape]  # `restorable` reports the rest
        largest = max((sa[k].float() - sb[k].float()).abs().max().item() for k in comparable if k not in frozen)
        moved = [k for k in frozen if k in comparable and not torch.equal(sa[k], sb[k])]
        if moved:
            raise StageFailure(f"frozen parameter(s) changed between {a.name} and {b.name}: {', '.join(moved[:5])}")
        if largest == 0:
            raise StageFailure(f"the weights of {b.name} equal those of {a.name}: nothing was trained between them")
        diffs[f"{a.name}->{b.name}"] = largest
    return StageResult(
        name="weights_updated",
        metrics={"max_abs_diff": diffs},
        details="largest |change| per pair: "
        + ", ".join(f"{k} {v:.3g}" for k, v in diffs.items())
        + (f"; {len(frozen)} frozen tensors unchanged" if frozen else ""),
    )


def history_consistent(ctx) -> StageResult:
    """Each checkpoint's epoch ends its own history, and the histories agree row for row."""
    latest = max(ctx.ckpts, key=lambda p: (len(ctx.ckpts[p]["history"]), ctx.ckpts[p]["global_step"]))
    history = {row["epoch"]: row for row in ctx.ckpts[latest]["history"]}
    if not history:
        raise StageFailure(f"{latest.name} holds an empty history")
    last_epoch = max(history)
    saved_epochs = {c["epoch"] for p, c in ctx.ckpts.items() if not c["run"].get("preempted")}
    if last_epoch not in saved_epochs:
        raise StageFailure(
            f"the history ends at epoch {epoch_number(last_epoch)} but no checkpoint holds that "
            f"epoch (checkpoint epochs: {sorted(map(epoch_number, saved_epochs))})"
        )
    for path, ckpt in ctx.ckpts.items():
        own = ckpt["history"]
        if not ckpt["run"].get("preempted") and (not own or own[-1]["epoch"] != ckpt["epoch"]):
            raise StageFailure(
                f"{path.name} is at epoch {epoch_number(ckpt['epoch'])} but its history ends at "
                f"epoch {epoch_number(own[-1]['epoch']) if own else None}"
            )
        for row in own:
            if history.get(row["epoch"]) != row:
                raise StageFailure(
                    f"{path.name}: history row of epoch {epoch_number(row['epoch'])} differs from {latest.name}'s"
                )
    return StageResult(
        name="history_consistent",
        details=f"history ends at epoch {epoch_number(last_epoch)}, which has a checkpoint; "
        f"{len(ctx.ckpts)} file(s) agree with it row for row",
    )


def resume_exact(ctx) -> StageResult:
    """Resume from the checkpoint before the closest later one, train to it, compare bit for bit."""
    from omegaconf import OmegaConf

    from experiments.assemble import build, build_trainer

    if ctx.device != "cpu":
        return _skip("resume_exact", "bit-for-bit comparison is promised on CPU only")
    trainer_cfg = ctx.config.get("trainer") or {}
    if "ddp" in str(trainer_cfg.get("strategy", "")) and trainer_cfg.get("devices", 1) not in (1, "1"):
        return _skip(
            "resume_exact",
            f"a {trainer_cfg.get('devices')}-process DDP run is replayed by its own "
            f"processes: rerun its train.py command (tests/test_ddp.py checks DDP resume)",
        )
    pairs = [(a, b) for a, b in zip(ctx.series, ctx.series[1:])]
    if not pairs:
        return _skip("resume_exact", "no later checkpoint to resume towards")
    a, b = min(reversed(pairs), key=lambda ab: ctx.ckpts[ab[1]]["epoch"] - ctx.ckpts[ab[0]]["epoch"])
    target = ctx.ckpts[b]
    epochs = _replay_length(ctx.ckpts[a], target, b.name)
    if epochs > ctx.max_replay_epochs:
        return _skip(
            "resume_exact",
            f"the closest checkpoints, {a.name} and {b.name}, are {epochs} epoch(s) apart, more "
            f"than max_replay_epochs={ctx.max_replay_epochs} (verify.py max_replay_epochs=N "
            f"replays more)",
        )
    cfg = OmegaConf.create(replay_config(target["config"], target))
    with tempfile.TemporaryDirectory() as tmp, contextlib.redirect_stdout(io.StringIO()):
        datamodule, model, task = build(cfg)
        trainer, _ = build_trainer(cfg, Path(tmp), target["config"], task)
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(a), weights_only=True)
        resumed = task.state_dict()
    if trainer.global_step != target["global_step"]:
        raise StageFailure(
            f"resumed from {a.name} to step {trainer.global_step}, but {b.name} is at step {target['global_step']}"
        )
    differ = [k for k, v in target["state_dict"].items() if not torch.equal(v, resumed[k])]
    if differ:
        raise StageFailure(
            f"resuming {a.name} to epoch {epoch_number(target['epoch'])} does not reproduce {b.name}: "
            f"{len(differ)} tensor(s) differ, e.g. {differ[0]}{_other_code(target)}"
        )
    return StageResult(
        name="resume_exact",
        details=f"resumed {a.name} for {target['epoch'] - ctx.ckpts[a]['epoch']} epoch(s): bit-identical to {b.name}",
    )


# Of a stored trainer config, what shapes the weights a replay must reproduce; everything else (a profiler, its
# paths, plugins, devices, loggers) is the replay's own: one CPU process writing nothing outside its temporary folder.
REPLAYED_TRAINER_KEYS = (
    "precision",
    "gradient_clip_val",
    "gradient_clip_algorithm",
    "accumulate_grad_batches",
    "limit_train_batches",
    "limit_val_batches",
    "check_val_every_n_epoch",
    "val_check_interval",
    "num_sanity_val_steps",
    "deterministic",
    "benchmark",
    "log_every_n_steps",
    "max_steps",
    "overfit_batches",
    "reload_dataloaders_every_n_epochs",
)


def replay_config(config: dict, target: dict) -> dict:
    """The config a replay trains with: the stored run's model, data, task and seed; a trainer of this
    framework's own settings that stops at the target's epoch; no logger; of the stored callbacks
    only those whose class says they change what is trained (`replayed = True`, e.g. a schedule that
    freezes parts), built from their stored values."""
    from hydra.utils import get_class

    config = copy.deepcopy(config)
    config.pop("experiment", None)
    stored = config.get("trainer") or {}
    # Weights depend on the epoch only through schedules that are functions of the epoch; a schedule reading
    # max_epochs would need this stage to stop by other means.
    config["trainer"] = {
        "_target_": "lightning.pytorch.Trainer",
        "accelerator": "cpu",
        "devices": 1,
        "num_nodes": 1,
        "strategy": "auto",
        "enable_progress_bar": False,
        "enable_model_summary": False,
        **{k: stored[k] for k in REPLAYED_TRAINER_KEYS if k in stored},
        "max_epochs": target["epoch"] + 1,
    }
    config["logger"] = None
    callbacks = config.get("callbacks") or {}
    config["callbacks"] = {
        name: node
        for name, node in callbacks.items()
        if isinstance(node, dict) and getattr(get_class(node["_target_"]), "replayed", False)
    }
    return config


def _replay_length(start: dict, target: dict, name: str) -> int:
    """The epochs a replay from `start` to `target` trains, when the target's own history shows each of them
    ending, at steps that rise to its own (a file claiming an epoch its history does not show is refused)."""
    rows = {row.get("epoch"): row.get("global_step") for row in target["history"] if isinstance(row, dict)}
    wanted = range(start["epoch"] + 1, target["epoch"] + 1)
    steps = [rows.get(epoch) for epoch in wanted]
    if any(not isinstance(s, int) for s in steps) or steps != sorted(steps) or steps[-1:] != [target["global_step"]]:
        raise StageFailure(
            f"{name} is at epoch {epoch_number(target['epoch'])}, step {target['global_step']}, but its "
            f"history does not show epochs {epoch_number(wanted.start)}-{epoch_number(wanted.stop - 1)} "
            f"ending there: nothing to replay towards"
        )
    return len(wanted)


def _other_code(checkpoint: dict) -> str:
    """Why a replay may differ: the checkpoint was written by other code, which may round differently."""
    from experiments.checkpoint.policy import git_commit

    written, here = checkpoint.get("framework", {}).get("git_commit", "unknown"), git_commit()
    if written.split("+")[0] == here.split("+")[0]:
        return ""
    return (
        f"; it was written by commit {written} and this is {here}: replay it with the code that wrote it "
        f"(training code changed since may round differently)"
    )


def metrics(ctx) -> StageResult:
    """The family's metrics on the weights beside an untrained control of the same architecture and seed."""
    epoch = ctx.ckpts[ctx.primary]["epoch"]
    trained = ctx.trained(ctx.primary).evaluate(ctx.datamodule(), epoch)
    control_task, control_note = ctx.control_task()
    control = control_task.to(ctx.device).evaluate(ctx.datamodule(), epoch)
    task_cls = ctx.task_class
    higher, lower = task_cls.higher_is_better, task_cls.lower_is_better
    rows, flagged = {}, []
    for name, value in trained.items():
        row = {"trained": value, "untrained_control": control.get(name)}
        if name in higher or name in lower:
            gain = value - control[name] if name in higher else control[name] - value
            margin = CLEARLY_BETTER if name in higher else CLEARLY_BETTER * abs(control[name])
            row["clearly_better"] = gain >= margin
            if not row["clearly_better"]:
                flagged.append(name)
        rows[name] = row
    primary = task_cls.primary_metric
    details = f"{len(rows)} metrics beside an untrained control ({control_note}); " + (
        f"proves nothing (control as good): {', '.join(flagged)}" if flagged else "all judged metrics beat it"
    )
    if primary in flagged:  # a failure that still shows every figure beside its control
        return StageResult(
            name="metrics",
            status="fail",
            metrics=rows,
            details=f"primary metric {primary} = {trained[primary]:.4g} is not clearly better than the "
            f"untrained control's {control[primary]:.4g}",
        )
    return StageResult(name="metrics", details=details, metrics=rows)


# verify.py's stages, by the names `stages=[...]` takes; verify.py picks those that apply to a file or a run.
CHECKPOINT_STAGES = {
    "loadable": loadable,
    "integrity": integrity,
    "restorable": restorable,
    "predicts": predicts,
    "frozen_identical": frozen_identical,
    "progress": progress,
    "weights_updated": weights_updated,
    "history_consistent": history_consistent,
    "resume_exact": resume_exact,
    "metrics": metrics,
}
