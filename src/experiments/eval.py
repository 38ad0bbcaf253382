"""The evaluation program: one checkpoint on any data of its family.

`python eval.py ckpt=PATH [data=GROUP] [data.KEY=VALUE ...] [task.KEY=VALUE ...]`. The checkpoint is read with
`weights_only=True` and rebuilt from its own config (verify.py's reader). The data:
- no `data=GROUP`: the run's own data config, with the `data.KEY=VALUE` overrides applied;
- `data=GROUP`: the data config train.py would compose for the run's experiment with that group and
  those overrides (so what the preset fixes for its model, e.g. ARC's token format, still holds).
`task.KEY=VALUE`: how the task evaluates (ARC: its views, ranking, test-time training), merged into its
stored config. The task writes what it evaluates (`ExperimentTask.evaluate_to`) into
`<run directory>/eval/<data identity>/<checkpoint name>/`, with `metrics.json`.

`ckpt=SWEEP_DIR` (`<outputs>/sweeps/<id>`): each finished job's last checkpoint in turn, the same arguments
for all; a job whose folder already holds this evaluation of its checkpoint as it is now is kept, so
rerunning the command resumes. Then the sweep's summary and paired comparisons of these evaluations go
into `<sweep>/eval/<evaluation>/` (sweep.write_summary).

Exit status: 0 done, 2 unusable input (a checkpoint or data that cannot be used as given), 1 a family's code
crashed. For a sweep: the worst of its jobs', after the others are evaluated and summarised; a job whose
training did not finish is not evaluated (the summary lists it) and does not change the status.
"""

import datetime
import json
import sys
import time
import traceback
from pathlib import Path

from hydra import compose
from hydra.errors import HydraException
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments import run_dir as rd
from experiments.atomic import atomic_write_bytes
from experiments.checkpoint import io as checkpoint_io
from experiments.console import with_progress
from experiments.errors import EXIT_FAILED, EXIT_OK, EXIT_USER, Outcome, UserError, first_line, write_failure
from experiments.stages.config_check import check_config
from experiments.stored_run import StoredRun, checkpoint_of, config_hash
from experiments.untrusted import Registry, check_experiment_name, program_registry

SCHEMA = "experiments.eval/1"


def _key(arg: str) -> str:
    return arg.split("=", 1)[0].lstrip("+~")


def is_data_arg(arg: str) -> bool:
    """`data=GROUP`, `data.KEY=VALUE` (also with Hydra's + or ~): what chooses the data to evaluate on."""
    return "=" in arg and (_key(arg) == "data" or _key(arg).startswith("data."))


def is_task_arg(arg: str) -> bool:
    """`task.KEY=VALUE`: an evaluation setting of the checkpoint's task."""
    return "=" in arg and _key(arg).startswith("task.")


def data_config(run_config: dict, data_args: list[str], registry: Registry, where: str) -> dict:
    """The data node to evaluate on (see the module's docstring), resolved: data of the checkpoint's own
    family (its run's data module), refused otherwise before any model runs."""
    chosen = [a for a in data_args if _key(a) == "data"]
    try:
        if chosen:
            if not run_config.get("experiment"):
                raise UserError(
                    "the checkpoint does not record its experiment, so data=GROUP cannot be composed "
                    "for it; give data.KEY=VALUE overrides of its own data instead"
                )
            experiment = check_experiment_name(run_config["experiment"], registry, where)
            composed = compose("train", overrides=[f"experiment={experiment}", *data_args])
            node = OmegaConf.to_container(composed.data, resolve=True)
        else:
            merged = OmegaConf.merge(
                {"data": run_config["data"]}, OmegaConf.from_dotlist([a.lstrip("+") for a in data_args])
            )
            node = OmegaConf.to_container(merged.data, resolve=True)
    except (HydraException, OmegaConfBaseException) as e:
        raise UserError(f"data: {' '.join(str(e).split('Config search path')[0].split())}")
    own = run_config["data"]["_target_"]
    if not isinstance(node, dict) or node.get("_target_") != own:
        given = node.get("_target_") if isinstance(node, dict) else node
        raise UserError(
            f"{' '.join(data_args)} is data for {given}, but this checkpoint was trained on {own} data: "
            f"eval.py evaluates a checkpoint on data of its own family (e.g. another task set or clip "
            f"folder of that data module)"
        )
    check_config(OmegaConf.create({"data": node}))
    return node


def data_identity(data_args: list[str]) -> str:
    """The folder name of an evaluation's data: its arguments as a run directory names overrides;
    `own` for the run's own data."""
    return rd.run_id(",".join(sorted(data_args))) if data_args else "own"


def output_folder(cfg, checkpoint: Path, data_args: list[str]) -> Path:
    if cfg.out:
        return Path(str(cfg.out))
    return rd.run_of(checkpoint) / rd.EVAL / data_identity(data_args) / checkpoint.stem


def is_sweep(target: Path) -> bool:
    from experiments.sweep import is_sweep_dir

    return is_sweep_dir(target) and not (target / rd.CHECKPOINTS).is_dir()


def evaluate(cfg, data_args: list[str], task_args: list[str] = ()) -> Outcome:
    if not cfg.ckpt:
        raise UserError(
            "give a checkpoint, run directory or sweep directory: python eval.py ckpt=PATH "
            "[data=GROUP] [data.KEY=VALUE]"
        )
    checkpoint_io.MAX_INFLATION = cfg.max_inflation
    target = Path(str(cfg.ckpt))
    if is_sweep(target):
        return evaluate_sweep(cfg, target, data_args, task_args)
    evaluate_checkpoint(cfg, checkpoint_of(target), data_args, task_args, program_registry())
    return Outcome(EXIT_OK)


def evaluate_sweep(cfg, directory: Path, data_args: list[str], task_args: list[str]) -> Outcome:
    """Every finished job of a sweep (see the module's docstring), then the summary of their evaluations. A job
    that cannot be evaluated (bad input: exit 2) or whose family's code crashes on it (exit 1, the worse)
    does not stop the others; the summary names why in its row."""
    from experiments import sweep

    if cfg.out:
        raise UserError(
            "out= cannot be given with a sweep directory: each job's evaluation goes into its own run "
            "directory and the summary into the sweep's eval/ folder"
        )
    registry = program_registry()
    evaluation = data_identity([*data_args, *task_args])
    root = sweep.outputs_root_of(directory)
    # jobs whose training finished: "finished" when this evaluation of their checkpoint is there, else "not evaluated"
    jobs = [r for r in sweep.collect(directory, registry, evaluation) if r["status"] in ("finished", "not evaluated")]
    if not jobs:
        raise UserError(
            f"{directory} has no finished job to evaluate (python scripts/summarize.py {directory} "
            f"tells each job's state)"
        )
    failed, code = {}, EXIT_OK
    for n, job in enumerate(jobs, 1):
        head = f"[{n}/{len(jobs)}] job {job['job']} ({job['overrides']})"
        run = Path(job["run_dir"])
        if job["status"] == "finished":
            print(f"{head}: already evaluated ({job['results_dir']}), kept", flush=True)
            continue
        if why := sweep.outside(run, root):  # a job record is data: it does not choose where we write
            failed[job["job"]], code = why, max(code, EXIT_USER)
            print(f"{head}: refused: {why}", flush=True)
            continue
        print(f"{head}:", flush=True)
        why, job_code = evaluate_job(cfg, rd.last_checkpoint(run), data_args, task_args, registry)
        if why:
            failed[job["job"]], code = why, max(code, job_code)
            print(f"{head}: not evaluated: {why}", flush=True)
    summary = sweep.write_summary(directory, registry, evaluation, failed)
    print(summary["text"], flush=True)
    if not failed:
        return Outcome(EXIT_OK)
    line = f"{len(failed)} of {len(jobs)} jobs not evaluated: " + "; ".join(f"job {j}: {w}" for j, w in failed.items())
    if code == EXIT_USER:
        raise UserError(line)
    print(f"error: {line}", file=sys.stderr, flush=True)
    return Outcome(code, line)


def evaluate_job(
    cfg, checkpoint: Path, data_args: list[str], task_args: list[str], registry: Registry
) -> tuple[str, int]:
    """One job of a sweep: ("", 0) when evaluated, else (why, exit status). A full disk stops them all."""
    try:
        evaluate_checkpoint(cfg, checkpoint, data_args, task_args, registry)
    except UserError as e:
        return str(e), EXIT_USER
    except Exception as e:
        if write_failure(e) is not None:
            raise
        if cfg.get("traceback"):
            traceback.print_exc()
        first = first_line(e)
        return f"crashed: {type(e).__name__}: {first}", EXIT_FAILED
    return "", EXIT_OK


def evaluate_checkpoint(cfg, checkpoint: Path, data_args: list[str], task_args: list[str], registry: Registry) -> None:
    t0 = time.perf_counter()
    stored = StoredRun(checkpoint, registry, device=cfg.device)  # read as data, its config proved to build only ours
    if task_args:
        stored.settings_of_task(list(task_args))
    task = stored.loaded(checkpoint)
    node = data_config(stored.config, data_args, registry, str(checkpoint))
    datamodule = stored.datamodule(node)
    folder = output_folder(cfg, checkpoint, [*data_args, *task_args])
    if not cfg.out:
        rd.refuse_links_out(folder, rd.run_of(checkpoint))
    rd.remove_stale_temporaries(folder)  # of eval.py runs killed while writing here (a running one's are kept)
    epoch = stored.ckpts[checkpoint]["epoch"]
    announce(checkpoint, epoch, node, [*data_args, *task_args], datamodule)
    with_progress(datamodule)
    metrics = task.evaluate_to(datamodule, epoch, folder)
    result = record(stored, checkpoint, node, data_args, metrics, time.perf_counter() - t0)
    result["task"] = {"arguments": list(task_args), "settings": stored.task_settings}
    atomic_write_bytes(folder / "metrics.json", (json.dumps(result, indent=2, default=str) + "\n").encode())
    print_metrics(metrics, task)
    files = sorted(p.name for p in folder.iterdir() if p.is_file())
    print(f"Done in {result['seconds']:.1f}s; {folder}: {', '.join(files)}", flush=True)


def announce(checkpoint: Path, epoch: int, node: dict, data_args: list[str], datamodule) -> None:
    described = getattr(datamodule, "describe", lambda: "")()
    print(
        f"Evaluating {checkpoint} (epoch {rd.epoch_number(epoch)}) on {node['_target_']}"
        + (f" {' '.join(data_args)}" if data_args else " (the run's own data)")
        + (f": {described}" if described else ""),
        flush=True,
    )


def record(
    stored: StoredRun, checkpoint: Path, node: dict, data_args: list[str], metrics: dict, seconds: float
) -> dict:
    """metrics.json: which checkpoint, which data, the figures (schema experiments.eval/1)."""
    ckpt = stored.ckpts[checkpoint]
    return {
        "schema": SCHEMA,
        "checkpoint": {
            "path": str(checkpoint),
            "sha256": stored.sha256(checkpoint),
            "epoch": rd.epoch_number(ckpt["epoch"]),
            "global_step": ckpt["global_step"],
            "experiment": stored.config.get("experiment"),
            "config_hash": config_hash(stored.config),
        },
        "data": {"arguments": data_args, "identity": data_identity(data_args), "config": node},
        "metrics": metrics,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
    }


def print_metrics(metrics: dict, task) -> None:
    from experiments.callbacks import format_figure  # (Lightning's callbacks: not imported by a refused evaluation)

    for name in metrics:
        print(
            f"  {name:28s} {format_figure(name, metrics, type(task), digits=6)}", flush=True
        )  # as the epoch line shows it
