"""The training program: config -> run directory decision -> build -> preflight -> fit -> report."""
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf

from experiments import run_dir as rd
from experiments.callbacks import StepSeeding
from experiments.checkpoint.io import AtomicCheckpointIO
from experiments.errors import RunStopped, UserError
from experiments.stages.preflight import PreflightContext
from experiments.stages.registry import run_stages

EXIT_OK, EXIT_FAILED, EXIT_USER, EXIT_PREEMPTED = 0, 1, 2, 143


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
    """Lightning's bar for training only: validation is one short pass, summarised in the epoch line."""

    def init_validation_tqdm(self):
        return Tqdm(disable=True)  # disabled at construction, so it never draws


def build_trainer(cfg: DictConfig, run_dir: Path, config: dict):
    # _partial_: the run config holds _target_ nodes that must stay plain values, not be built
    policy = instantiate(cfg.checkpoint, _partial_=True)(dirpath=str(run_dir / rd.CHECKPOINTS), run_config=config)
    callbacks = [StepSeeding(cfg.seed), policy]
    callbacks += [instantiate(node) for node in (cfg.get("callbacks") or {}).values()]
    if cfg.trainer.get("enable_progress_bar", True):
        callbacks.append(TrainingBar(refresh_rate=cfg.progress_refresh_rate))
    logger = instantiate(cfg.logger, save_dir=str(run_dir)) if cfg.logger else False
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=logger, plugins=[AtomicCheckpointIO()],
                          default_root_dir=str(run_dir))
    return trainer, policy


def print_stages(results) -> None:
    for r in results:
        details = "(the error below)" if r.status == "fail" else r.details
        print(f"preflight {r.status:4s} {r.name:16s} {r.seconds:6.2f}s  {details}", flush=True)


def train(cfg: DictConfig) -> int:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    experiment = hydra_cfg.runtime.choices.get("experiment")
    ignore = list(hydra_cfg.job.config.override_dirname.exclude_keys)

    results = run_stages(["config"], PreflightContext(cfg))  # before anything is built
    if results[-1].status == "fail":
        raise UserError(results[-1].details)
    config = plain_config(cfg)
    config["experiment"] = experiment

    if cfg.resume == "never" and not cfg.preflight_only:
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
        print(f"error: preflight stage '{failed[0].name}' failed: {failed[0].details}. Nothing was trained.", flush=True)
        return EXIT_FAILED
    if cfg.preflight_only:
        print("preflight_only=true: all preflight stages passed; not training.", flush=True)
        return EXIT_OK

    trainer, policy = build_trainer(cfg, run_dir, config)  # may refuse the checkpoint settings: before run.yaml
    rd.write_run_config(run_dir, config)
    n_params = sum(p.numel() for p in model.parameters())
    n_trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    sizes = f"{n_params:,} parameters" + (f", {n_trainable:,} trainable" if n_trainable != n_params else "")
    if decision.action == "resume":
        print(f"Resuming {run_dir} from {decision.ckpt_path} (epoch {decision.epoch + 1} done)", flush=True)
    else:
        print(f"Training {experiment} ({sizes}) in {run_dir}", flush=True)
    try:
        trainer.fit(task, datamodule=datamodule, ckpt_path=str(decision.ckpt_path) if decision.ckpt_path else None,
                    weights_only=True)
    except SIGTERMException:
        print(f"SIGTERM: saved {policy.last_path} at step {trainer.global_step}; rerun the same command to resume.",
              flush=True)
        return EXIT_PREEMPTED
    except RunStopped as e:
        done = policy.history[-1]["epoch"] + 1 if policy.history else 0
        kept = f"last good checkpoint: {policy.last_path} (epoch {done})" if policy.last_path.exists() else "no checkpoint was written"
        print(f"error: {e}. {kept}", flush=True)
        return EXIT_FAILED
    print(f"Run directory: {run_dir}\nlast checkpoint: {policy.last_path}", flush=True)
    if policy.best_path:
        print(f"best checkpoint ({policy.monitor}={policy.best[0]['score']:.6g}): {policy.best_path}", flush=True)
    return EXIT_OK
