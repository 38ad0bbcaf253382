"""Console entry points. Hydra composes the config; user mistakes become one line and exit status 2."""

import os
import re
import sys
from pathlib import Path

CONF_DIR = Path(__file__).resolve().parent / "conf"  # inside the package: installed copies have it too


def _one_line(e: BaseException) -> str:
    text = str(e)
    cause = e.__cause__
    if cause is not None and str(cause) and str(cause) not in text:
        text = f"{text} {cause}"
    text = text.replace("Set the environment variable HYDRA_FULL_ERROR=1 for a complete stack trace.", "")
    text = text.split("Config search path:")[0]  # Hydra's list of folders: `--info searchpath` shows it
    return " ".join(text.split())


def _misspelled_option(message: str) -> str | None:
    """For "Could not find 'experiment/exp3_champoin' Available options in 'experiment': ...": the line that
    names the option it most resembles."""
    import difflib

    found = re.search(r"Could not find '([\w/]+)/([^']+)'\s+Available options in '[\w/]+':\s*(.*)$", message)
    if not found:
        return None
    group, given, options = found.group(1), found.group(2), found.group(3).split()
    close = difflib.get_close_matches(given, options, n=1)
    hint = f"did you mean {group}={close[0]}? " if close else ""
    return f"{group}={given} is not one of the {group} options: {hint}(available: {' '.join(options)})"


def _causes(e: BaseException):
    """An exception and those it was raised from or during, innermost last."""
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        yield e
        e = e.__cause__ or e.__context__


def quote_path_values(arg: str) -> str:
    """`key=value` where value itself holds '=' (our run directories and checkpoint names do:
    `.../seed=1,trainer.max_epochs=40/checkpoints/epoch=0004.ckpt`) is no valid Hydra override; such a
    value can only be a literal, so pass it quoted, commas included."""
    key, sep, value = arg.partition("=")
    if arg.startswith("-") or not sep or "=" not in value or value[:1] in "'\"":
        return arg
    quote = '"' if "'" in value else "'"
    return f"{key}={quote}{value}{quote}"


def _check_conf_dir(config_name: str) -> None:
    if not (CONF_DIR / f"{config_name}.yaml").exists():
        print(
            f"error: config folder {CONF_DIR} not found: this installation is incomplete; reinstall the "
            f"project (pip install .)",
            file=sys.stderr,
        )
        sys.exit(2)


def _run(job, config_name: str, recorded_codes=lambda: []) -> None:
    """Compose `config_name` with Hydra and run `job(cfg) -> (Outcome, value)` once, or once per job of
    a multirun; exit with the worst job's status (`recorded_codes()` when the jobs ran in other
    processes). Composition errors become one line and exit 2."""
    _check_conf_dir(config_name)
    from experiments import help

    if help.asked(sys.argv[1:]):  # Hydra's own help lists every folder of the search path: ours says what to type
        help.print_help(config_name)
        sys.exit(0)
    sys.argv = sys.argv[:1] + [quote_path_values(a) for a in sys.argv[1:]]
    # Let composition errors reach us instead of Hydra's multi-line report, so each is one line.
    os.environ["HYDRA_FULL_ERROR"] = "1"
    import hydra
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from experiments.config_schema import register

    register()
    quiet_libraries()
    outcomes = []  # Hydra returns nothing from a run: each job's outcome is kept here

    started = []  # whether Hydra got as far as a job: what fails before is its setup (the run directory)

    @hydra.main(config_path=str(CONF_DIR), config_name=config_name, version_base="1.3")
    def main(cfg):
        started.append(True)
        outcome, value = job(cfg)
        outcomes.append(outcome)
        return value

    try:
        main()
    except (HydraException, OmegaConfBaseException) as e:
        from experiments.errors import UserError

        refused = next((c for c in _causes(e) if isinstance(c, UserError)), None)  # our resolvers' (config_schema)
        message = _one_line(e)
        line = (
            str(refused)
            if refused
            else (
                _misspelled_key(message, config_name)
                or _misspelled_option(message)
                or _misspelled_top_level(message, config_name)
                or message
            )
        )
        print(f"error: {line}", file=sys.stderr)
        sys.exit(2)
    except OSError as e:
        if started:
            raise
        print(
            f"error: cannot create {e.filename or 'the run directory'}: {e.strerror or e}; choose a folder this "
            f"user can write: paths.outputs=DIR",
            file=sys.stderr,
        )
        sys.exit(2)
    except KeyboardInterrupt:  # Ctrl-C outside training (which saves and stops by itself: stop.py)
        print(
            "\ninterrupted (Ctrl-C); every file written so far is whole (each is renamed into place once "
            "complete); rerun the same command to do the rest",
            file=sys.stderr,
            flush=True,
        )
        sys.exit(130)
    codes = [o.code for o in outcomes] or recorded_codes()
    sys.exit(max(codes) if codes else 0)


def _misspelled_top_level(message: str, config_name: str) -> str | None:
    """For a top-level key or group the program does not have (`sed=1`, `experimnt=NAME`, also behind a
    `+` that Hydra's own hint suggests): the line naming the one it most resembles."""
    import difflib

    from experiments.config_keys import meant, refusal
    from experiments.help import defaults_and_keys

    groups, keys = defaults_and_keys(CONF_DIR / f"{config_name}.yaml")
    known = groups + [name for name, _, _ in keys]
    given = [a.split("=", 1) for a in sys.argv[1:] if "=" in a and not a.startswith("-")]
    given = [(k.lstrip("+~"), v) for k, v in given if "." not in k and k.lstrip("+~") not in known + ["hydra"]]
    missing = re.search(r"Could not override '(\w+)'|You must specify '(\w+)'", message)
    if not missing:
        return None
    if missing.group(1):  # Hydra named the key it could not place: that one, not another unknown argument
        given = [(k, v) for k, v in given if k == missing.group(1)]
    paths = _nested_keys(config_name) if given else []
    for key, value in given:
        nested = meant(key, paths)  # an exact `task.lr` for `lr` before a look-alike group (`tags`: task)
        if nested and nested.rsplit(".", 1)[-1] == key:
            return f"{key} is not a key or group of {config_name}.py: did you mean {nested}={value}?"
        close = difflib.get_close_matches(key, known, n=1)
        if close:
            return (
                f"{key} is not a key or group of {config_name}.py: did you mean {close[0]}={value}? (--help lists them)"
            )
        if missing.group(1):  # Hydra's advice (`+key=`) would add a key that nothing reads
            return refusal(key, value, paths, f"{config_name}.py")
    return None


def _nested_keys(config_name: str) -> list[str]:
    """Every dotted key of the config as the command's group choices compose it ([] if it does not compose)."""
    from experiments.config_keys import dotted_keys

    try:
        return dotted_keys(_composed_without_overrides(config_name))
    except Exception:  # the suggestion is a courtesy: without it the user still gets a line
        return []


def _misspelled_key(message: str, config_name: str) -> str | None:
    """For "Could not override 'trainer.max_epoch'" (an override of a key the config lacks), the line
    that names the key it most resembles: the keys of its parent node, and the parameters of the
    parent's `_target_`. None when nothing is close."""
    import difflib
    import inspect

    found = re.search(r"Could not override '([\w.]+)'", message)
    if not found or "." not in found.group(1):
        return None
    key = found.group(1)
    parent, _, leaf = key.rpartition(".")
    try:
        node = _composed_without_overrides(config_name).get(parent)
        names = set(node) if isinstance(node, dict) else set()
        if isinstance(node, dict) and "_target_" in node:
            from hydra.utils import get_method

            names |= set(inspect.signature(get_method(node["_target_"])).parameters)
    except Exception:  # the suggestion is a courtesy: without it the user still gets Hydra's line
        return None
    close = difflib.get_close_matches(leaf, sorted(n for n in names if not n.startswith("_")), n=1)
    if not close:
        return None
    value = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith(key + "=")), "...")
    if close[0] == leaf:  # a parameter of the target that the config does not set: Hydra adds it with +
        return f"{key} is not in the config's {parent}, though {parent} takes it: add it with +{key}={value}"
    return f"{key} is not a key of {parent}: did you mean {parent}.{close[0]}={value}?"


def _composed_without_overrides(config_name: str) -> dict:
    """The config as the command's group choices compose it (e.g. experiment=..., trainer=...), without
    its other overrides; top-level nodes as plain dicts, unresolved."""
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    from experiments.help import defaults_and_keys

    groups = defaults_and_keys(CONF_DIR / f"{config_name}.yaml")[0]
    choices = [a for a in sys.argv[1:] if re.fullmatch(r"[\w/]+=[\w./-]+", a) and a.split("=")[0] in groups]
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name, overrides=choices)
    return {k: OmegaConf.to_container(v, resolve=False) if OmegaConf.is_config(v) else v for k, v in cfg.items()}


def _in_multirun() -> bool:
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    return HydraConfig.get().mode == RunMode.MULTIRUN


COMMAND = list(sys.argv[1:])  # as the user typed it (eval.py takes its data arguments out of sys.argv); each
# program's main sets it again, for a caller that imported this module before


def crash_line(e: BaseException) -> str:
    """A crash as one line: the command, the error and where it was raised (verify.py and eval.py run a
    family's code on a checkpoint; `traceback=true` shows the whole traceback instead)."""
    import traceback

    from experiments.errors import first_line

    cause = e.__cause__ if type(e).__name__ == "InstantiationException" and e.__cause__ else e
    frames = traceback.extract_tb(cause.__traceback__)
    where = f", raised at {Path(frames[-1].filename).name}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
    first = first_line(cause)
    program = Path(sys.argv[0]).name
    return (
        f"error: {program} {' '.join(COMMAND)}: {type(cause).__name__}: {first}{where}. Rerun with "
        f"traceback=true to see the whole traceback"
    )


def _outcome(program, cfg, one_line_crash: bool = False):
    """Run a program on a composed config. A user's mistake is one line and exit 2; a crash shows its
    traceback and exits 1 (one line where `one_line_crash`, unless `traceback=true`), but in a multirun
    it is reported and the other jobs go on."""
    from experiments.errors import (
        EXIT_FAILED,
        EXIT_USER,
        Outcome,
        UserError,
        first_line,
        write_failure,
        write_failure_line,
    )

    try:
        return program(cfg)
    except UserError as e:  # caught inside the job, so that a multirun goes on with the other jobs
        print(f"error: {e}", file=sys.stderr, flush=True)
        return Outcome(EXIT_USER, str(e))
    except Exception as e:
        failed = write_failure(e)
        if failed is not None:  # a full or broken disk: one line, exit 1, whatever was writing
            print(write_failure_line(failed), file=sys.stderr, flush=True)
            return Outcome(EXIT_FAILED, str(failed))
        if one_line_crash and not cfg.get("traceback"):
            print(crash_line(e), file=sys.stderr, flush=True)
            return Outcome(EXIT_FAILED, crash_line(e).removeprefix("error: "))
        if not _in_multirun():
            raise  # a single run's crash shows its traceback, exit 1
        import traceback

        traceback.print_exc()
        first = first_line(e)
        return Outcome(EXIT_FAILED, f"crashed: {type(e).__name__}: {first}")


def train_job(cfg):
    """One training job: the training program between the two records of a sweep's job, and in a
    multirun the value an Optuna sweep optimises."""
    from hydra.core.hydra_config import HydraConfig

    from experiments.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PREEMPTED
    from experiments.stop import preemption_saves

    # A Slurm job's warning signal stops the fit with a checkpoint: taken over before the slow imports, so
    # that it finds the job here rather than in submitit's handler, which would exit wherever the job is
    with preemption_saves() as preemption:
        from experiments import sweep
        from experiments.train import train

        def recorded_training(c):
            sweep.record_job("running")
            return train(c)

        outcome = recorded(_outcome(recorded_training, cfg), cfg)
    _remove_empty_run_dir()  # a refusal, preflight_only, a failed preflight: Hydra's run directory, still empty
    if preemption is not None and outcome.code == EXIT_PREEMPTED:  # one job of a sweep on Slurm: the others go on
        return requeued(preemption), float("nan")
    if not _in_multirun():
        return outcome, None
    if outcome.code in (EXIT_PREEMPTED, EXIT_INTERRUPTED) or outcome.stop:  # a rerun resumes this job (or the next)
        print(
            f"{'SIGTERM' if outcome.code == EXIT_PREEMPTED else 'Ctrl-C'}: the sweep stops; rerun the same "
            f"command to resume it.",
            flush=True,
        )
        raise SystemExit(outcome.code or EXIT_INTERRUPTED)
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    return outcome, sweep.objective(cfg, run_dir) if outcome.code == EXIT_OK else float("nan")


def requeued(preemption):
    """The end of a job submitit started that a cluster's warning (or a SIGTERM) stopped with its state saved.
    After the warning, submitit's handler requeues the job and exits the process, or says why not (it timed
    out `max_num_timeout` times): then the job's record says so and its outcome is returned. After a SIGTERM,
    Slurm itself requeues or ends the job: the process exits. Rerunning the sweep command resumes a job Slurm
    did not requeue."""
    from experiments import sweep
    from experiments.errors import EXIT_PREEMPTED, Outcome

    if not preemption.received:
        raise SystemExit(EXIT_PREEMPTED)
    try:
        preemption.requeue_job()  # exits the process once the job is requeued
    except Exception as e:  # submitit's UncompletedJobError: not requeued
        why = str(e).strip().removeprefix("Job not requeued because: ").rstrip(".")
        error = f"{why} (hydra.launcher.max_num_timeout); rerun the sweep command to resume it from its last checkpoint"
        print(f"error: {error}", file=sys.stderr, flush=True)
        sweep.record_job("timed out", EXIT_PREEMPTED, error)
        return Outcome(EXIT_PREEMPTED, error)
    raise SystemExit(EXIT_PREEMPTED)  # (submitit's handler exits itself)


def recorded(outcome, cfg):
    """A job's outcome once its end is in the sweep's record: a record that cannot be written (a full disk)
    fails the job; an extra DDP process reports success whatever happened (rank 0 reports the failure: a
    non-zero exit would make Lightning's watcher in rank 0 kill it, and with it the rest of a sweep)."""
    from experiments import sweep
    from experiments.errors import EXIT_INTERRUPTED, EXIT_OK, EXIT_PREEMPTED, Outcome
    from experiments.ranks import process_rank

    status = {EXIT_OK: "finished", EXIT_PREEMPTED: "preempted", EXIT_INTERRUPTED: "interrupted"}.get(
        outcome.code, "failed"
    )
    unrecorded = _outcome(lambda c: sweep.record_job(status, outcome.code, outcome.error), cfg)
    if unrecorded is not None:
        outcome = Outcome(max(outcome.code, unrecorded.code), outcome.error or unrecorded.error, outcome.stop)
    if outcome.code and process_rank():
        outcome.code = EXIT_OK
    return outcome


def verify_job(cfg):
    from experiments.verify import verify

    return _outcome(verify, cfg, one_line_crash=True), None


def eval_job(cfg, data_args: list[str], task_args: list[str] = ()):
    from experiments.eval import evaluate

    return _outcome(lambda c: evaluate(c, data_args, task_args), cfg, one_line_crash=True), None


def predict_job(cfg, task_args: list[str]):
    from experiments.predict import predict

    return _outcome(lambda c: predict(c, task_args), cfg, one_line_crash=True), None


def _remove_empty_run_dir() -> None:
    """Hydra creates the run directory before the job starts; a job that wrote nothing there (refused at once,
    preflight_only, a failed preflight) leaves none behind (a folder is removed only when empty)."""
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
    # An epoch shorter than log_every_n_steps: the epoch's figures are logged at its end all the same.
    warnings.filterwarnings("ignore", message=r".*smaller than the logging interval.*")
    # DDP: the tasks sum their epoch figures over processes themselves (epoch_sampler.totals_over_ranks)
    warnings.filterwarnings("ignore", message=r".*when logging on epoch level in distributed setting.*")
    # Lightning's hint to start with srun: noise outside a Slurm job; inside one, once (Lightning gives it from
    # each place that looks for Slurm)
    warnings.filterwarnings(
        "ignore" if "SLURM_JOB_ID" not in os.environ else "once",
        message=r"The `srun` command is available on your system but is not used",
    )


def _sweep_codes() -> list[int]:
    """Jobs that ran in launcher processes (submitit) left their exit status in the sweep's records."""
    from experiments.sweep import recorded_exit_codes

    return recorded_exit_codes()


def train_main() -> None:
    COMMAND[:] = sys.argv[1:]
    _run(train_job, "train", _sweep_codes)


def verify_main() -> None:
    COMMAND[:] = sys.argv[1:]
    _run(verify_job, "verify")


def eval_main() -> None:
    """The data arguments (`data=GROUP`, `data.KEY=VALUE`) choose data for the checkpoint's family, and the
    task arguments (`task.KEY=VALUE`) how its task evaluates, which only the checkpoint knows: they are
    taken out here and composed by the evaluation program."""
    from experiments import help

    COMMAND[:] = sys.argv[1:]
    if help.asked(sys.argv[1:]):  # answered before the evaluation program (and torch) is imported
        _run(None, "eval")
    from experiments.eval import is_data_arg, is_task_arg

    data_args = [a for a in sys.argv[1:] if is_data_arg(a)]
    task_args = [a for a in sys.argv[1:] if is_task_arg(a)]
    sys.argv = [a for a in sys.argv if a not in data_args and a not in task_args]
    _run(lambda cfg: eval_job(cfg, data_args, task_args), "eval")


def predict_main() -> None:
    """The task arguments (`task.KEY=VALUE`: how the checkpoint's task predicts, which only the checkpoint
    knows) are taken out here and applied by the prediction program."""
    from experiments import help

    COMMAND[:] = sys.argv[1:]
    if help.asked(sys.argv[1:]):
        _run(None, "predict")
    from experiments.eval import is_task_arg

    task_args = [a for a in sys.argv[1:] if is_task_arg(a)]
    sys.argv = [a for a in sys.argv if a not in task_args]
    _run(lambda cfg: predict_job(cfg, task_args), "predict")
