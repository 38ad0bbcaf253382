"""The training program: config -> run directory decision -> build -> preflight -> fit -> report."""

import contextlib
import os
import signal
import sys
import time
from pathlib import Path

import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import get_class
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from experiments import run_dir as rd
from experiments.assemble import build, build_trainer, ddp_children_as_this_job, plain_config
from experiments.callbacks import format_figure
from experiments.checkpoint.init_from import initialise
from experiments.checkpoint.io import finish_interrupted_pairs
from experiments.cli import COMMAND
from experiments.console import logged_to
from experiments.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_PREEMPTED,
    Outcome,
    RunStopped,
    UserError,
    write_failure,
)
from experiments.ranks import process_rank
from experiments.stages.preflight import PREFLIGHT_STAGES, PreflightContext, stage_order, stages_for
from experiments.stages.registry import run_stages
from experiments.stop import PREEMPTION, ctrl_c_stops
from experiments.untrusted import program_registry, with_current_targets


def fail(message: str) -> Outcome:
    print(f"error: {message}", flush=True)
    return Outcome(EXIT_FAILED, message)


def print_stages(results) -> None:
    for r in results:
        details = "(the error below)" if r.status == "fail" else r.details
        print(f"preflight {r.status:4s} {r.name:16s} {r.seconds:6.2f}s  {details}", flush=True)


def config_or_refuse(cfg: DictConfig) -> list:
    """The `config` stage, before anything is built: a mistake there is the user's (exit 2)."""
    refuse_unread_keys(cfg)
    refuse_missing_accelerator(cfg)
    results = run_stages(["config"], PreflightContext(cfg), PREFLIGHT_STAGES)
    if results[-1].status == "fail":
        raise UserError(results[-1].details)
    return results


def refuse_unread_keys(cfg: DictConfig) -> None:
    """A top-level key nothing reads (`+lr=0.01`: Hydra's advice for `lr=0.01`) would be ignored: refused."""
    import dataclasses

    from experiments.config_keys import dotted_keys, refusal, unread
    from experiments.config_schema import TrainSchema

    keys = unread(cfg, {f.name for f in dataclasses.fields(TrainSchema)})
    if keys:
        given = [o.split("=", 1) for o in HydraConfig.get().overrides.task if "=" in o]
        value = next((v for k, v in given if k.lstrip("+~") == keys[0]), "...")
        raise UserError(refusal(keys[0], value, dotted_keys(OmegaConf.to_container(cfg, resolve=False)), "train.py"))


def refuse_missing_accelerator(cfg: DictConfig) -> None:
    """`trainer=gpu` where torch sees no GPU: refused before the preflight runs (Lightning would refuse it only
    when the Trainer is built, after the preflight stages have passed)."""
    from lightning.pytorch.accelerators import CUDAAccelerator, MPSAccelerator

    accelerator = str((cfg.get("trainer") or {}).get("accelerator", "auto"))
    available = {
        "gpu": CUDAAccelerator.is_available() or MPSAccelerator.is_available(),
        "cuda": CUDAAccelerator.is_available(),
        "mps": MPSAccelerator.is_available(),
    }.get(accelerator, True)
    if not available:
        raise UserError(
            f"trainer.accelerator={accelerator}, but torch {torch.__version__} finds no such device on "
            f"this machine (CUDA: {torch.version.cuda or 'not built in'}): use trainer=cpu, or run where "
            f"one is"
        )


def decide_run(cfg: DictConfig, run_dir: Path, config: dict, child: bool) -> rd.Decision:
    """Fresh, resume or finished, after moving an earlier run aside on resume=never."""
    if cfg.resume == "never" and not cfg.preflight_only and not child:
        moved = rd.supersede(run_dir)
        if moved:
            print(f"resume=never: the earlier run in {run_dir} was moved to {moved}", flush=True)
    ignore = list(HydraConfig.get().job.config.override_dirname.exclude_keys)
    return rd.decide(run_dir, config, ignore, comparable(program_registry().renamed, get_class(cfg.task._target_)))


def comparable(renamed: dict, task_class):
    """A stored or new config as a run's identity reads it: moved classes under their current names, and the
    checkpoint's monitor and mode as they take effect (null means the family's own: the same run)."""

    def same(config):
        config = with_current_targets(config, renamed)
        checkpoint = config.get("checkpoint") if isinstance(config, dict) else None
        if not isinstance(checkpoint, dict) or not hasattr(task_class, "monitor"):
            return config
        try:
            monitor, mode = task_class.monitor_of(checkpoint)
        except UserError:
            return config
        return {**config, "checkpoint": {**checkpoint, "monitor": monitor, "mode": mode}}

    return same


def preflight(cfg: DictConfig, task, datamodule, experiment: str, decision: rd.Decision, results: list) -> list:
    """The remaining preflight stages on real batches; returns every stage's result, printed."""
    names = [s for s in stage_order(list(cfg.validation.preflight), task) if s != "config"]
    ctx = PreflightContext(
        cfg, task, datamodule, batches=cfg.validation.batches, experiment=experiment, resume_from=decision.ckpt_path
    )
    try:
        results = results + run_stages(names, ctx, stages_for(task))
    except UserError as e:  # a stage refused its input (e.g. the frozen parts' source): exit 2
        print_stages(results)
        raise UserError(f"{e}. Nothing was trained.")
    print_stages(results)
    return results


def announce(run_dir: Path, experiment: str, model, decision: rd.Decision) -> None:
    if decision.action == "resume":
        where = (
            f"saved in epoch {rd.epoch_number(decision.epoch)} at step {decision.step}"
            if decision.mid_epoch
            else f"epoch {rd.epoch_number(decision.epoch)} done"
        )
        print(f"Resuming {run_dir} from {decision.ckpt_path} ({where})", flush=True)
        return
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sizes = f"{n_params:,} parameters" + (f", {n_trainable:,} trainable" if n_trainable != n_params else "")
    print(f"Training {experiment} ({sizes}) in {run_dir}", flush=True)


@contextlib.contextmanager
def process_state_restored():
    """What a fit leaves in this process is put back, so that the next job of an in-process sweep starts
    clean: the DDP process group (whose peers have exited), the environment Lightning's launcher sets
    (LOCAL_RANK, WORLD_SIZE, MASTER_PORT...: the next job would take them for an external launcher and
    wait for peers forever), and torch's thread count (the launcher lowers it)."""
    env_before, threads_before = dict(os.environ), torch.get_num_threads()
    try:
        yield
    finally:
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS"):
            if key not in env_before:
                os.environ.pop(key, None)
            else:
                os.environ[key] = env_before[key]
        torch.set_num_threads(threads_before)


def fit(cfg: DictConfig, trainer, policy, task, datamodule, decision: rd.Decision) -> Outcome:
    """Trainer.fit, with a preemption (SIGTERM), Ctrl-C, a failed write or a deliberate stop turned into
    its exit status and one line."""
    ckpt_path = str(decision.ckpt_path) if decision.ckpt_path else None
    try:
        with process_state_restored(), ddp_children_as_this_job(cfg), ctrl_c_stops(policy.stop, trainer):
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    except SIGTERMException:
        if policy.stop.requested:
            print(
                f"interrupted {stopped_where(trainer, policy)}; saved {policy.last_path}; rerun the same command "
                f"to resume.",
                flush=True,
            )
            return Outcome(EXIT_INTERRUPTED)
        if PREEMPTION.received:
            name = signal.Signals(PREEMPTION.signal).name
            print(
                f"{name}: saved {policy.last_path} {stopped_where(trainer, policy)}; requeueing the job, which "
                f"resumes from it.",
                flush=True,
            )
            return Outcome(EXIT_PREEMPTED)
        print(
            f"SIGTERM: saved {policy.last_path} {stopped_where(trainer, policy)}; rerun the same command to resume.",
            flush=True,
        )
        return Outcome(EXIT_PREEMPTED)
    except RunStopped as e:
        return fail(f"{e}. {last_good(policy)}")
    except Exception as e:
        failed = write_failure(e)  # ours, or a logger's file on a full disk
        if failed is None:
            raise
        return fail(
            f"{failed}; training stopped. {last_good(policy)}; every earlier checkpoint is as it was. Free "
            f"space (or fix the disk) and rerun the same command to resume"
        )
    if policy.stop.requested:  # pressed as the last epoch ended: nothing was left to stop
        print("Ctrl-C came as the last epoch ended: the run is complete.", flush=True)
    return Outcome(EXIT_OK, stop=policy.stop.requested)


def stopped_where(trainer, policy) -> str:
    """Where a stop left the run (run_dir.stop_point, as the rerun's "Resuming" line says it)."""
    epoch, mid_epoch = rd.stop_point(policy.history, trainer.current_epoch, trainer.global_step)
    if mid_epoch:
        return f"in epoch {rd.epoch_number(epoch)} at step {trainer.global_step}"
    return f"after epoch {rd.epoch_number(epoch)} (step {trainer.global_step})"


def last_good(policy) -> str:
    if not policy.last_path.exists():
        return "no checkpoint was written"
    from experiments.checkpoint.io import load_checkpoint

    try:
        epoch = load_checkpoint(policy.last_path)["epoch"]
    except UserError:  # the disk fails reads too: the next start checks every checkpoint
        return f"{policy.last_path} could not be read back (the next start resumes from the newest intact checkpoint)"
    return f"last good checkpoint: {policy.last_path} (epoch {rd.epoch_number(epoch)})"


def counted(n: int, noun: str) -> str:
    """`1 epoch`, `2 epochs`."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes // 60}h{minutes % 60:02d}m" if minutes >= 60 else f"{minutes}m{secs:02d}s"


def summary(experiment: str, history: list[dict], task, seconds: float) -> list[str]:
    """What the run achieved, in epochs as the console counts them (1 = the first)."""
    trained = sum(row.get("time/epoch_s", 0.0) for row in history)
    lines = [
        f"Done: {experiment}, {counted(len(history), 'epoch')}, {duration(trained)} of training "
        f"({duration(seconds)} wall for this start)"
    ]
    cls = type(task)
    metric = cls.primary_metric
    scored = [row for row in history if metric in row]
    if scored:
        pick = max if metric in cls.higher_is_better else min
        best = pick(scored, key=lambda row: row[metric])
        lines.append(
            f"{metric}: final {format_figure(metric, scored[-1], cls)} (epoch {rd.epoch_number(scored[-1]['epoch'])}), "
            f"best {format_figure(metric, best, cls)} (epoch {rd.epoch_number(best['epoch'])})"
        )
    evaluated = [row for row in history if any(k in row for k in cls.summary_keys if not k.startswith("train/"))]
    if evaluated:
        row = evaluated[-1]
        shown = [k for k in cls.summary_keys if k in row and not k.startswith("train/")]
        figures = [f"{k} {format_figure(k, row, cls)}" for k in shown]
        lines.append(f"last evaluation (epoch {rd.epoch_number(row['epoch'])}): " + " | ".join(figures))
    return lines


def report(run_dir: Path, policy, lines: list[str]) -> None:
    """The closing summary: what the run achieved, and every file it wrote."""
    print("\n".join(lines), flush=True)
    print(f"Run directory: {run_dir}\n  holds: {', '.join(rd.contents(run_dir))}", flush=True)
    print(
        f"last checkpoint: {policy.last_path}"
        if policy.last_path.exists()
        else "no checkpoint written (trainer.fast_dev_run: a trial of the code, nothing to resume)",
        flush=True,
    )
    if policy.best_path:
        print(f"best checkpoint ({policy.monitor}={policy.best[0]['score']:.6g}): {policy.best_path}", flush=True)
    if (run_dir / "wandb").is_dir():  # every start of the run is a folder of its own: upload them all
        print(f"wandb (offline): upload with `wandb sync {run_dir}/wandb/offline-run-*`", flush=True)
    if (run_dir / "tensorboard").is_dir():
        print(f"TensorBoard: `tensorboard --logdir {run_dir}/tensorboard`", flush=True)
    if (run_dir / "mlruns").is_dir():
        print(f"MLflow: `mlflow ui --backend-store-uri {run_dir}/mlruns`", flush=True)


def train(cfg: DictConfig) -> Outcome:
    child = process_rank() != 0  # an extra DDP process: rank 0 speaks and owns the run directory
    if child:
        sys.stdout = open(os.devnull, "w")
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    results = config_or_refuse(cfg)
    if child:  # rank 0 holds the run's lock for all its processes
        return train_run(cfg, run_dir, results, child)
    # the run directory is data too: a link planted in it would take a write, an append or a move outside
    rd.refuse_links_out(run_dir, cfg.paths.outputs, below=False)
    rd.refuse_links_out(run_dir, run_dir)
    with rd.held(run_dir):
        checkpoints = rd.checkpoint_dir(run_dir)
        for name in finish_interrupted_pairs(checkpoints) if checkpoints.is_dir() else ():
            print(f"completed the write of {name} that a kill cut between its two renames", flush=True)
        removed = rd.remove_stale_temporaries(run_dir, shared=rd.readers_write_here)
        if removed:
            print(f"removed {removed} temporary file(s) left by writes an earlier start did not finish", flush=True)
        return train_run(cfg, run_dir, results, child)


def train_run(cfg: DictConfig, run_dir: Path, results: list, child: bool) -> Outcome:
    """The run, once its directory is this process's to write: decided, then started (rank 0 keeping the
    console's lines in train.log)."""
    experiment = HydraConfig.get().runtime.choices.get("experiment")
    config = {**plain_config(cfg), "experiment": experiment}
    decision = decide_run(cfg, run_dir, config, child)
    if decision.action == "finished" and not cfg.preflight_only:
        print(
            f"Run already complete (epoch {rd.epoch_number(decision.epoch)}): {run_dir}\n"
            f"last checkpoint: {decision.ckpt_path}\nNothing to train; rerun with resume=never to train it again.",
            flush=True,
        )
        return Outcome(EXIT_OK)
    if child:
        return started(cfg, run_dir, results, child, experiment, config, decision)
    with logged_to(rd.train_log(run_dir), " ".join(["python train.py", *COMMAND])) as log:
        return started(cfg, run_dir, results, child, experiment, config, decision, log.keep)


def started(
    cfg: DictConfig,
    run_dir: Path,
    results: list,
    child: bool,
    experiment: str,
    config: dict,
    decision: rd.Decision,
    under_way=lambda: None,
) -> Outcome:
    datamodule, model, task = build(cfg)
    if cfg.get("init_from") and decision.action == "fresh":  # a resume has its own weights
        print(
            initialise(task, str(cfg.init_from), bool(cfg.init_strict), cfg.task._target_, program_registry().renamed),
            flush=True,
        )
    datamodule.prepare_data()
    datamodule.setup("fit")
    failed = [r for r in preflight(cfg, task, datamodule, experiment, decision, results) if r.status == "fail"]
    if failed:
        return fail(f"preflight stage '{failed[0].name}' failed: {failed[0].details}. Nothing was trained.")
    if cfg.preflight_only:
        print("preflight_only=true: all preflight stages passed; not training.", flush=True)
        return Outcome(EXIT_OK)

    trainer, policy = build_trainer(cfg, run_dir, config, task)  # may refuse the checkpoint settings: before run.yaml
    if not child:
        rd.write_run_config(run_dir, config)
        rd.write_start_record(run_dir, config, list(HydraConfig.get().overrides.task))
        under_way()  # train.log from here on (with what was printed before): the run has a record
    announce(run_dir, experiment, model, decision)
    began = time.perf_counter()
    outcome = fit(cfg, trainer, policy, task, datamodule, decision)
    if outcome.code == EXIT_OK:
        report(run_dir, policy, summary(experiment, policy.history, task, time.perf_counter() - began))
    return outcome
