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
        try:
            codes.append(task_fn(cfg))
        except UserError as e:  # caught inside the job, so that a multirun goes on with the other jobs
            print(f"error: {e}", file=sys.stderr, flush=True)
            codes.append(2)
            if config_name == "train":
                _remove_empty_run_dir()

    try:
        main()
    except (HydraException, OmegaConfBaseException) as e:
        print(f"error: {_one_line(e)}", file=sys.stderr)
        sys.exit(2)
    sys.exit(max(codes) if codes else 0)


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
