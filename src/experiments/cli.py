"""Console entry points. Hydra composes the config; user mistakes become one line and exit status 2."""
import os
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


def _one_line(e: BaseException) -> str:
    text = str(e)
    cause = e.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} {cause}"
    text = text.replace("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "")
    return " ".join(text.split())


def quote_path_values(arg: str) -> str:
    """`key=value` where value itself holds '=' (our run directories and checkpoint names do:
    `.../seed=1,trainer.max_epochs=40/checkpoints/epoch=0004.ckpt`) is no valid Hydra override; such a
    value can only be a literal, so pass it quoted, commas included."""
    key, sep, value = arg.partition("=")
    if arg.startswith("-") or not sep or "=" not in value or value[:1] in "'\"":
        return arg
    quote = '"' if "'" in value else "'"
    return f"{key}={quote}{value}{quote}"


def _run(task_fn, config_name: str) -> None:
    if not (CONF_DIR / f"{config_name}.yaml").exists():
        print(f"error: config folder {CONF_DIR} not found; install the project with 'pip install -e .' "
              f"from its checkout", file=sys.stderr)
        sys.exit(2)
    sys.argv = sys.argv[:1] + [quote_path_values(a) for a in sys.argv[1:]]
    # Let composition errors reach us instead of Hydra's multi-line report, so each is one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from experiments.config_schema import register
    from experiments.errors import UserError

    register()
    quiet_libraries()
    codes = []

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
    def main(cfg):
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        from experiments.ranks import process_rank
        from experiments.sweep import record_job

        record = record_job if config_name == "train" else (lambda *a, **k: None)
        record("running")
        error = None
        try:
            codes.append(task_fn(cfg))
            error = _last_error()
        except UserError as e:  # caught inside the job, so that a multirun goes on with the other jobs
            print(f"error: {e}", file=sys.stderr, flush=True)
            codes.append(2)
            error = str(e)
            if config_name == "train":
                _remove_empty_run_dir()
        except Exception as e:
            if HydraConfig.get().mode != RunMode.MULTIRUN:
                raise  # a single run's crash shows its traceback, exit 1
            import traceback

            traceback.print_exc()  # a sweep's crashed job: say why, and go on with the others
            codes.append(1)
            error = f"crashed: {type(e).__name__}: {str(e).strip().splitlines()[0] if str(e).strip() else ''}"
        code = codes[-1]
        status = {0: "finished", 143: "preempted"}.get(code, "failed")
        record(status, code, error)
        if code and process_rank():
            # An extra DDP process whose job failed the same way as rank 0 (which reports it): a non-zero
            # exit would make Lightning's watcher in rank 0 kill it, and with it the rest of a sweep.
            codes[-1] = 0
        if config_name == "train" and HydraConfig.get().mode == RunMode.MULTIRUN:
            if code == 143:  # preempted: the whole sweep stops here; rerunning it resumes this job first
                print("SIGTERM: the sweep stops; rerun the same command to resume it.", flush=True)
                raise SystemExit(143)
            return _objective(cfg) if code == 0 else float("nan")  # what an Optuna sweep minimises/maximises

    try:
        main()
    except (HydraException, OmegaConfBaseException) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    if not codes and config_name == "train":  # jobs ran in launcher processes (submitit): ask their records
        codes = _sweep_codes()
    sys.exit(max(codes) if codes else 0)


def _sweep_codes() -> list[int]:
    from experiments.sweep import ENV_DIR

    directory = os.environ.get(ENV_DIR)
    if not directory:
        return []
    import json

    records = [json.loads(p.read_text()) for p in sorted(Path(directory, "jobs").glob("*.json"))]
    return [0 if r.get("status") == "finished" else (r.get("exit_code") or 1) for r in records]


def _objective(cfg) -> float:
    """A finished job's final value of checkpoint.monitor (nan when it has none)."""
    from hydra.core.hydra_config import HydraConfig

    from experiments.checkpoint.io import load_checkpoint

    last = Path(HydraConfig.get().runtime.output_dir) / "checkpoints" / "last.ckpt"
    monitor = (cfg.get("checkpoint") or {}).get("monitor")
    if not monitor or not last.exists():
        return float("nan")
    history = load_checkpoint(last).get("history") or [{}]
    return float(history[-1].get(monitor, float("nan")))


def _last_error() -> str | None:
    """The error line the training program printed for a non-zero exit, if it did."""
    module = sys.modules.get("experiments.train")
    return getattr(module, "last_error", None) if module else None


def _remove_empty_run_dir() -> None:
    """Hydra creates the run directory before the job starts; a job refused at once leaves none behind."""
    from hydra.core.hydra_config import HydraConfig

    path = Path(HydraConfig.get().runtime.output_dir)
    for p in (path, path.parent, path.parent.parent):
        try:
            p.rmdir()  # only succeeds on an empty folder
        except OSError:
            break


def quiet_libraries() -> None:
    """Keep the console for what the run says: Lightning's tips and device banners go to WARNING."""
    import logging
    import warnings

    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\)")
    warnings.filterwarnings("ignore", message=r".*does not have many workers.*")
    # DDP: the tasks sum their epoch figures over processes themselves (data/epoch_sampler.totals_over_ranks)
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")


def train_main() -> None:
    def train(cfg):  # torch and Lightning load only once the config has composed
        from experiments.train import train as run

        return run(cfg)

    _run(train, "train")


def verify_main() -> None:
    def verify(cfg):
        from experiments.verify import verify as run

        return run(cfg)

    _run(verify, "verify")
