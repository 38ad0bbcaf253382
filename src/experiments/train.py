"""The training program: config -> run directory decision -> build -> preflight -> fit -> report."""
import os
import sys
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities.exceptions import MisconfigurationException, SIGTERMException
from omegaconf import DictConfig, OmegaConf

from experiments import run_dir as rd
from experiments.callbacks import StepSeeding
from experiments.checkpoint.io import AtomicCheckpointIO
from experiments.errors import RunStopped, UserError
from experiments.ranks import process_rank
from experiments.stages.preflight import PreflightContext
from experiments.stages.registry import run_stages

EXIT_OK, EXIT_FAILED, EXIT_USER, EXIT_PREEMPTED = 0, 1, 2, 143
last_error: str | None = None  # the error line of the last failed train(), for a sweep's job record


def fail(message: str) -> int:
    global last_error
    last_error = message
    print(f"error: {message}", flush=True)
    return EXIT_FAILED


def plain_config(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)


def build(cfg: DictConfig):
    """Instantiate data, model and task from the config (no trainer)."""
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    datamodule = instantiate(cfg.data, seed=cfg.seed)
    model = instantiate(cfg.model)
    task = instantiate(cfg.task, model=model)
    return datamodule, model, task


class TrainingBar(TQDMProgressBar):
    """Lightning's bar for training. Validation is usually one short pass, summarised in the epoch line; a
    task whose evaluation is long work (`long_validation = True`: ARC decodes every held-out output) gets
    a bar for it too."""

    def init_validation_tqdm(self):
        if getattr(self.trainer.lightning_module, "long_validation", False):
            return super().init_validation_tqdm()
        return Tqdm(disable=True)  # disabled at construction, so it never draws


def ddp_child_command(local_rank: int):
    """Lightning starts each extra DDP process by rerunning the command line; for a Hydra app it appends
    `hydra.run.dir=<run.dir>`. A job of a multirun would then rerun the whole sweep (`-m` and the sweep
    lists are on the command line) in a directory of its own. Instead: this job's overrides only, in
    this job's run directory, as a single run."""
    from hydra.utils import get_original_cwd

    hc = HydraConfig.get()
    command = [sys.executable, str(Path(__file__).resolve().parents[2] / "train.py"), *hc.overrides.task,
               f'hydra.run.dir="{hc.runtime.output_dir}"', f"hydra.job.name=train_ddp_process_{local_rank}",
               "hydra.output_subdir=null", "hydra.mode=RUN"]
    return command, get_original_cwd()


def build_trainer(cfg: DictConfig, run_dir: Path, config: dict):
    # _partial_: the run config holds _target_ nodes that must stay plain values, not be built
    policy = instantiate(cfg.checkpoint, _partial_=True)(dirpath=str(run_dir / rd.CHECKPOINTS), run_config=config)
    callbacks = [StepSeeding(cfg.seed), policy]
    callbacks += [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TrainingBar(refresh_rate=cfg.progress_refresh_rate))
    logger = instantiate(cfg.logger, save_dir=str(run_dir)) if cfg.logger else False
    if "ddp" in str(cfg.trainer.get("strategy", "")) and HydraConfig.initialized():
        from lightning.pytorch.strategies.launchers import subprocess_script

        subprocess_script._hydra_subprocess_cmd = ddp_child_command
    try:
        trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()],
                              default_root_dir=str(run_dir))
    except Exception as e:  # e.g. trainer=gpu on a machine without one (Hydra wraps Lightning's error)
        cause = e if isinstance(e, MisconfigurationException) else e.__cause__
        if not isinstance(cause, MisconfigurationException):
            raise
        raise UserError(f"trainer: {' '.join(str(cause).split())} (check trainer.accelerator/devices, or trainer=cpu)")
    return trainer, policy


def print_stages(results) -> None:
    for r in results:
        details = "(the error below)" if r.status == "fail" else r.details
        print(f"preflight {r.status:4s} {r.name:16s} {r.seconds:6.2f}s  {details}", flush=True)


def train(cfg: DictConfig) -> int:
    global last_error
    last_error = None
    child = process_rank() != 0  # an extra DDP process: rank 0 speaks and owns the run directory
    if child:
        sys.stdout = open(os.devnull, "w")
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    experiment = hydra_cfg.runtime.choices.get("experiment")
    ignore = list(hydra_cfg.job.config.override_dirname.exclude_keys)

    results = run_stages(["config"], PreflightContext(cfg))  # before anything is built
    if results[-1].status == "fail":
        raise UserError(results[-1].details)
    config = plain_config(cfg)
    config["experiment"] = experiment

    if cfg.resume == "never" and not cfg.preflight_only and not child:
        moved = rd.supersede(run_dir)
        if moved:
            print(f"resume=never: the earlier run in {run_dir} was moved to {moved}", flush=True)
    decision = rd.decide(run_dir, config, ignore)
    if decision.action == "finished" and not cfg.preflight_only:
        print(f"Run already complete (epoch {decision.epoch + 1}): {run_dir}\n"
              f"last checkpoint: {decision.ckpt_path}\nNothing to train; rerun with resume=never to train it again.",
              flush=True)
        return EXIT_OK

    datamodule, model, task = build(cfg)
    datamodule.prepare_data()
    datamodule.setup("fit")
    stages = [s for s in cfg.validation.preflight if s != "config"]
    results += run_stages(stages, PreflightContext(cfg, task, datamodule, batches=cfg.validation.batches,
                                                   experiment=experiment, resume_from=decision.ckpt_path))
    print_stages(results)
    failed = [r for r in results if r.status == "fail"]
    if failed:
        return fail(f"preflight stage '{failed[0].name}' failed: {failed[0].details}. Nothing was trained.")
    if cfg.preflight_only:
        print("preflight_only=true: all preflight stages passed; not training.", flush=True)
        return EXIT_OK

    trainer, policy = build_trainer(cfg, run_dir, config)  # may refuse the checkpoint settings: before run.yaml
    if not child:
        rd.write_run_config(run_dir, config)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sizes = f"{n_params:,} parameters" + (f", {n_trainable:,} trainable" if n_trainable != n_params else "")
    if decision.action == "resume":
        print(f"Resuming {run_dir} from {decision.ckpt_path} (epoch {decision.epoch + 1} done)", flush=True)
    else:
        print(f"Training {experiment} ({sizes}) in {run_dir}", flush=True)
    env_before, threads_before = dict(os.environ), torch.get_num_threads()
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(decision.ckpt_path) if decision.ckpt_path else None,
                    weights_only=True)
    except SIGTERMException:
        print(f"SIGTERM: saved {policy.last_path} at step {trainer.global_step}; rerun the same command to resume.",
              flush=True)
        return EXIT_PREEMPTED
    except RunStopped as e:
        if policy.last_path.exists():
            from experiments.checkpoint.io import load_checkpoint

            kept = f"last good checkpoint: {policy.last_path} (epoch {load_checkpoint(policy.last_path)['epoch'] + 1})"
        else:
            kept = "no checkpoint was written"
        return fail(f"{e}. {kept}")
    finally:
        # The next job of an in-process sweep starts its own DDP processes: Lightning reuses an
        # initialised process group, whose peers (this job's extra processes) have exited.
        import torch.distributed as dist

        if dist.is_available() and dist.is_initialized():
            dist.destroy_process_group()
        # Lightning's launcher leaves LOCAL_RANK, WORLD_SIZE, MASTER_PORT... in this process's
        # environment; the next job would take them for an external launcher and wait for peers forever.
        for key in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "OMP_NUM_THREADS"):
            if key not in env_before:
                os.environ.pop(key, None)
            else:
                os.environ[key] = env_before[key]
        torch.set_num_threads(threads_before)  # Lightning's DDP launcher lowers it for the next job too
    print(f"Run directory: {run_dir}\nlast checkpoint: {policy.last_path}", flush=True)
    if policy.best_path:
        print(f"best checkpoint ({policy.monitor}={policy.best[0]['score']:.6g}): {policy.best_path}", flush=True)
    return EXIT_OK
