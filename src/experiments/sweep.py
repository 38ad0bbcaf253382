"""Multirun sweeps that resume and summarise themselves.

Each job of a sweep lands in the same run directory as the same single run would (conf/hydra/default.yaml),
so rerunning a sweep command resumes unfinished jobs and skips finished ones. The sweep's own directory,
`<paths.outputs>/sweeps/<sweep id>`, holds:
- `plan.json`: the jobs' overrides (grid sweeps), written at the start;
- `jobs/<num>.json`: each job's record (overrides, experiment, run directory, status, exit code, error),
  written by the job itself at its start and end, so a crashed or killed sweep leaves an honest trace;
- `summary.csv`, `summary.md`, `summary.png`: each job's final metrics and mean +- std over seeds per
  group of jobs that differ only in their seed;
- `comparisons.csv`, `comparisons.png` (and a table in `summary.md`): paired, per-output comparisons of
  each step of the sweep's chain (`sweep_chain`, else consecutive groups), for families that write
  per-output records (comparisons.py).
`scripts/summarize.py SWEEP_DIR` rebuilds them any time. `eval.py ckpt=SWEEP_DIR [data...] [task...]` evaluates
every finished job's last checkpoint and writes the same files for those evaluations into
`eval/<evaluation>/` of the sweep directory (`--eval <evaluation>` of summarize.py rebuilds them).
The sweep id is `sweep_name` when set, else the sweep's overrides (minus those outside a run's identity).

This module owns the sweep's state: the callback opens the sweep in the launching process, and its jobs
(in that process or in launcher processes, which inherit the environment) find it through
`current_directory()` / `current_id()`; nothing else reads the variables that carry it.
"""

import contextlib
import json
import math
import os
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback

from experiments import comparisons
from experiments import run_dir as rd
from experiments.atomic import atomic_savefig, atomic_write_bytes, atomic_write_csv
from experiments.errors import EXIT_FAILED, EXIT_USER, UserError, write_failure, write_failure_line
from experiments.ranks import process_rank
from experiments.untrusted import current_registry, program_registry, read_text

_ENV_DIR, _ENV_ID = "EXPERIMENTS_SWEEP_DIR", "EXPERIMENTS_SWEEP_ID"
SKIP = ("epoch", "global_step")  # and every time/ figure: how long, not how well


def open_sweep(directory: Path, sid: str) -> None:
    """Make this sweep the current one for this process and every job it starts."""
    os.environ[_ENV_DIR], os.environ[_ENV_ID] = str(directory), sid


def current_directory() -> Path | None:
    """The directory of the sweep this process belongs to (None outside a sweep)."""
    directory = os.environ.get(_ENV_DIR)
    return Path(directory) if directory else None


def current_id() -> str | None:
    """The id of the sweep this process belongs to (the wandb group of its jobs; None outside a sweep)."""
    return os.environ.get(_ENV_ID) or None


def _identity_overrides(overrides, exclude) -> list[str]:
    return sorted(o for o in overrides if o.split("=", 1)[0].lstrip("+~") not in exclude)


def _group_exclude(exclude_keys) -> list[str]:
    """Keys that do not tell groups apart: those outside a run's identity (the experiment is in it, though
    Hydra's list holds it because it names a folder), and the seed."""
    return sorted((set(exclude_keys) - {"experiment"}) | {"seed"})


def sweep_id(config) -> str:
    """`sweep_name` (a sweep preset's), then the command's overrides that change results, including
    overrides of the preset's sweeper params: `arc_ablation`, `arc_ablation,seed=0`, `experiment=a,b,seed=0,1`."""
    exclude = set(config.hydra.job.config.override_dirname.exclude_keys) - {"experiment"}
    prefix = "hydra.sweeper.params."
    overrides = [o[len(prefix) :] for o in config.hydra.overrides.hydra if o.startswith(prefix)]
    overrides += list(config.hydra.overrides.task)
    parts = ([str(config.sweep_name)] if config.get("sweep_name") else []) + _identity_overrides(overrides, exclude)
    return rd.run_id(",".join(parts))


def plan(config) -> list[list[str]] | None:
    """The grid the basic sweeper will run (None for other sweepers, e.g. Optuna, whose jobs are decided
    as they go)."""
    if "BasicSweeper" not in str(config.hydra.sweeper.get("_target_", "")):
        return None
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    params = config.hydra.sweeper.get("params") or {}
    args = [f"{k}={v}" for k, v in params.items()] + list(config.hydra.overrides.task)
    return BasicSweeper.split_arguments(OverridesParser.create().parse_overrides(args), None)[0]


def experiment_order(grid: list[list[str]]) -> list[str] | None:
    """The sweep's experiments in the order its command lists them (the chain its paired comparisons
    follow when `sweep_chain` does not give one); None for a sweep of one experiment."""
    found = [o.split("=", 1)[1] for job in grid for o in job if o.split("=", 1)[0].lstrip("+") == "experiment"]
    order = list(dict.fromkeys(found))
    return order if len(order) > 1 else None


@contextlib.contextmanager
def stops_on_write_failure():
    """Hydra turns a callback's exception into a warning and goes on: a sweep without its plan, or ending
    without its summary, would exit as its jobs did. A full or failing disk here ends the sweep with one
    line and exit 1 instead (SystemExit passes Hydra's callback guard)."""
    try:
        yield
    except Exception as e:
        failed = write_failure(e)
        if failed is None:
            raise
        print(write_failure_line(failed), file=sys.stderr, flush=True)
        raise SystemExit(EXIT_FAILED)


class SweepSummary(Callback):
    """Hydra callback: opens the sweep directory at the start of a multirun and writes the summary at
    its end."""

    def on_multirun_start(self, config, **kwargs) -> None:
        with stops_on_write_failure():
            self.open(config)

    def on_multirun_end(self, config, **kwargs) -> None:
        with stops_on_write_failure():
            self.close(program_registry(config.hydra))

    @staticmethod
    def open(config) -> None:
        sid = sweep_id(config)
        try:
            root = Path(rd.outputs_root(config.paths.outputs))
            directory = root / "sweeps" / sid
            rd.refuse_links_out(directory, root)  # its records are written there: data, as a run directory is
        except UserError as e:  # before anything is created; SystemExit passes Hydra's callback guard
            print(f"error: {e}", file=sys.stderr, flush=True)
            raise SystemExit(EXIT_USER)
        (directory / "jobs").mkdir(parents=True, exist_ok=True)
        grid = plan(config)
        if grid is not None:
            chain = list(config.get("sweep_chain") or []) or experiment_order(grid)
            exclude = _group_exclude(config.hydra.job.config.override_dirname.exclude_keys)
            atomic_write_bytes(
                directory / "plan.json",
                (
                    json.dumps({"sweep_id": sid, "jobs": grid, "chain": chain, "group_exclude": exclude}, indent=1)
                    + "\n"
                ).encode(),
            )
        open_sweep(directory, sid)
        print(f"Sweep directory: {directory}", flush=True)

    @staticmethod
    def close(registry) -> None:
        directory = current_directory()
        if directory is None or not directory.is_dir():
            return
        summary = write_summary(directory, registry)
        print(summary["text"], flush=True)


def record_job(status: str, exit_code: int | None = None, error: str | None = None) -> None:
    """A job of a multirun writes its own record into the sweep directory (no-op outside a sweep)."""
    directory = current_directory()
    if directory is None or process_rank():
        return  # outside a sweep, or an extra DDP process of a job
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    hc = HydraConfig.get()
    if hc.mode != RunMode.MULTIRUN:
        return
    exclude = _group_exclude(hc.job.config.override_dirname.exclude_keys)
    record = {
        "num": int(hc.job.num),
        "overrides": list(hc.overrides.task),
        "group": " ".join(_identity_overrides(hc.overrides.task, exclude)),
        "experiment": hc.runtime.choices.get("experiment"),
        "run_dir": str(hc.runtime.output_dir),
        "status": status,
        "exit_code": exit_code,
        "error": error,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    write_record(directory, record)


def write_record(directory: Path, record: dict) -> None:
    atomic_write_bytes(directory / "jobs" / f"{record['num']:04d}.json", (json.dumps(record, indent=1) + "\n").encode())


def note_lost_job(num: int, why: str) -> None:
    """The launching process's word on a job that ended without its own end record (a Slurm job killed or
    cancelled): its record keeps the status it had and gains `why`; a job that never started gets a record."""
    directory = current_directory()
    if directory is None:
        return
    path = directory / "jobs" / f"{num:04d}.json"
    record = read_record(path) if path.exists() else {"num": num, "status": "not started"}
    if record is None or record.get("status") in ("finished", "failed", "timed out"):
        return  # the job's own end says more
    record.update(error=why, exit_code=record.get("exit_code") or EXIT_FAILED)
    write_record(directory, record)


def recorded_exit_codes() -> list[int]:
    """Exit statuses of the current sweep's jobs from their records (jobs run in launcher processes)."""
    directory = current_directory()
    if directory is None:
        return []
    records = [r for r in map(read_record, sorted((directory / "jobs").glob("*.json"))) if r]
    return [0 if r.get("status") == "finished" else (r.get("exit_code") or 1) for r in records]


def objective(cfg, run_dir: Path) -> float:
    """What an Optuna sweep minimises or maximises: a finished job's final value of its monitor
    (checkpoint.monitor, else the task's primary metric; nan when it has none)."""
    from hydra.utils import get_class

    from experiments.checkpoint.io import load_checkpoint

    last = rd.last_checkpoint(run_dir)
    monitor, _ = get_class(cfg.task._target_).monitor_of(cfg.get("checkpoint"))
    if not monitor or not last.exists():
        return float("nan")
    history = load_checkpoint(last).get("history") or [{}]
    return float(history[-1].get(monitor, float("nan")))


# ---- the summary (also scripts/summarize.py) ----
def _final_row(run_dir: Path) -> tuple[dict | None, dict]:
    """(last history row, run flags) of a job's last checkpoint; (None, {}) when it has none."""
    from experiments.checkpoint.io import load_checkpoint
    from experiments.errors import UserError

    last = rd.last_checkpoint(run_dir)
    if not last.exists():
        return None, {}
    try:
        ckpt = load_checkpoint(last)
    except UserError:
        return None, {}
    history, run, config = ckpt.get("history"), ckpt.get("run"), ckpt.get("config")
    final = history[-1] if isinstance(history, list) and history else None
    if not (isinstance(final, dict) and type(final.get("epoch")) is int):  # not a history this framework writes
        final = None
    return final, dict(run if isinstance(run, dict) else {}, config=config if isinstance(config, dict) else {})


def _task_class(task_target, registry):
    """The task class a job's config names, imported only when a registered config folder places it at
    `task` (a job's checkpoint is data: untrusted.py); None otherwise or when it cannot be imported."""
    if not isinstance(task_target, str):
        return None
    task_target = registry.renamed.get(task_target, task_target)
    if task_target not in registry.allowed("task"):
        return None
    from hydra.utils import get_class

    try:
        return get_class(task_target)
    except (ImportError, ValueError):
        return None


def _judged(cls) -> list[str]:
    """The metrics a family is judged on (primary first), from its task class."""
    if cls is None:
        return []
    keys = [cls.primary_metric, *cls.higher_is_better, *cls.lower_is_better]
    return list(dict.fromkeys(k for k in keys if k))


def _strings(value) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


MAX_RECORD_BYTES = 2 << 20  # plan.json of 10,000 jobs is about 1 MB; a job's record a few hundred bytes
MAX_PLAN_JOBS = 10_000


def read_json(path: Path):
    """A sweep's JSON file as data: a regular file within MAX_RECORD_BYTES (UserError), nesting that the
    parser can take (ValueError otherwise)."""
    try:
        return json.loads(read_text(path, MAX_RECORD_BYTES))
    except RecursionError:
        raise ValueError(f"{path} nests too deeply")


def read_plan(directory: Path) -> dict:
    """plan.json of a grid sweep ({} for sweeps decided as they go, e.g. Optuna, and for a file that is not
    a plan: a sweep's files are data, read with bounds and checked field by field; a plan of more than
    MAX_PLAN_JOBS jobs is not one this framework writes)."""
    path = Path(directory) / "plan.json"
    try:
        plan = read_json(path) if path.exists() or path.is_symlink() else {}
    except (OSError, ValueError, UserError):
        return {}
    if not isinstance(plan, dict) or isinstance(plan.get("jobs"), list) and len(plan["jobs"]) > MAX_PLAN_JOBS:
        return {}
    return {
        "jobs": [j for j in plan.get("jobs") or [] if _strings(j)] if isinstance(plan.get("jobs"), list) else [],
        "group_exclude": plan["group_exclude"] if _strings(plan.get("group_exclude")) else ["seed"],
        "chain": plan["chain"] if _strings(plan.get("chain")) else None,
    }


RECORD_FIELDS = {
    "num": int,
    "overrides": list,
    "experiment": str,
    "run_dir": str,
    "status": str,
    "error": str,
    "group": str,
    "exit_code": int,
}


def read_record(path: Path) -> dict | None:
    """A job's record, its fields of the expected types only (None when it is not a record)."""
    try:
        raw = read_json(path)
    except (OSError, ValueError, UserError):
        return None
    if not isinstance(raw, dict) or type(raw.get("num")) is not int:
        return None
    record = {k: v for k, v in raw.items() if k in RECORD_FIELDS and isinstance(v, RECORD_FIELDS[k])}
    if "overrides" in record and not _strings(record["overrides"]):
        del record["overrides"]
    return record


def is_sweep_dir(path: Path) -> bool:
    """A sweep's directory holds its jobs' records in jobs/."""
    return (Path(path) / "jobs").is_dir()


def outputs_root_of(directory: Path) -> Path:
    """The outputs root of a sweep directory, `<outputs>/sweeps/<id>`: the only place its jobs' run
    directories may be, for what is written into them."""
    resolved = Path(directory).resolve()
    if resolved.parent.name != "sweeps":
        raise UserError(
            f"{directory} is not in a sweeps/ folder: a sweep's directory is <outputs>/sweeps/<sweep id>, "
            f"and only run directories under that <outputs> are evaluated"
        )
    return resolved.parent.parent


def outside(run_dir: Path, root: Path) -> str:
    """Why a job's run directory (from its record: data) is not one to write into; "" when it is."""
    if Path(run_dir).resolve().is_relative_to(root):
        return ""
    return (
        f"its run directory {run_dir} is outside the sweep's outputs root {root} (a job record is data; "
        f"a link to elsewhere counts as outside)"
    )


def _number(value) -> float | None:
    """A figure read from a file (data): an int or float that fits a float, else None."""
    if type(value) not in (int, float):
        return None
    try:
        return float(value)
    except OverflowError:
        return None


def evaluated(run_dir: Path, evaluation: str) -> tuple[dict | None, Path]:
    """(figures, folder) of eval.py's evaluation `evaluation` of a run's last checkpoint: its metrics.json's
    numbers, or None when the folder holds none of the checkpoint as it is now (another checkpoint since,
    or a file that is not eval.py's record: it is data, read with bounds and checked)."""
    from experiments.checkpoint.io import sha256_file

    folder = Path(run_dir) / rd.EVAL / evaluation / Path(rd.LAST).stem
    last = rd.last_checkpoint(Path(run_dir))
    try:
        record = read_json(folder / "metrics.json")
        ours = (
            isinstance(record, dict)
            and isinstance(record.get("checkpoint"), dict)
            and isinstance(record.get("metrics"), dict)
            and record["checkpoint"].get("sha256") == sha256_file(last)
        )
    except (OSError, ValueError, UserError):
        return None, folder
    if not ours:
        return None, folder
    return record["metrics"], folder


def _status(record: dict, run: dict) -> str:
    status = record.get("status", "not started")
    if status == "running":  # the job's process died without its end record
        return "incomplete"
    if status == "finished" and not run.get("finished"):
        return "incomplete"
    return status


def _evaluation_of(
    run_dir: str | None, status: str, evaluation: str, root: Path
) -> tuple[dict | None, str | None, str, str]:
    """(figures, folder of its per-output records, status, why not) of a job under eval.py's evaluation
    `evaluation`: a finished job that lacks it, or whose run directory is outside the outputs root, is
    `not evaluated`."""
    if status != "finished":
        return None, None, status, ""
    if why := outside(Path(run_dir), root):
        return None, None, "not evaluated", why
    figures, folder = evaluated(Path(run_dir), evaluation)
    if figures is None:
        return None, None, "not evaluated", f"no metrics.json of its last checkpoint in {folder}"
    return figures, str(folder), status, ""


def collect(directory: Path, registry, evaluation: str | None = None, errors: dict | None = None) -> list[dict]:
    """One row per job: planned (plan.json) and recorded (jobs/*.json), with final metrics: the training's
    own, or those of eval.py's evaluation `evaluation` of the job's last checkpoint (`errors`: why eval.py
    could not evaluate a job, by job number)."""
    directory = Path(directory)
    root = outputs_root_of(directory) if evaluation else None
    records = {r["num"]: r for r in map(read_record, sorted((directory / "jobs").glob("*.json"))) if r}
    plan_data = read_plan(directory)
    planned, exclude = plan_data.get("jobs", []), set(plan_data.get("group_exclude", ["seed"]))
    rows = []
    for num in sorted(set(range(len(planned))) | set(records)):
        rec = records.get(num, {})
        overrides = rec.get("overrides") or (planned[num] if num < len(planned) else [])
        row = {
            "job": num,
            "overrides": " ".join(overrides),
            "experiment": rec.get("experiment"),
            "seed": next((o.split("=", 1)[1] for o in overrides if o.split("=", 1)[0] == "seed"), "0"),
            "run_dir": rec.get("run_dir"),
            "error": rec.get("error") or "",
        }
        final, run = _final_row(Path(rec["run_dir"])) if rec.get("run_dir") else (None, {})
        status = _status(rec, run)
        row["epochs"] = final["epoch"] + 1 if final else 0
        row["results_dir"] = rec.get("run_dir")  # where the job's per-output records are
        if evaluation:
            final, row["results_dir"], status, why = _evaluation_of(rec.get("run_dir"), status, evaluation, root)
            row["error"] = (errors or {}).get(num) or why if status == "not evaluated" else row["error"]
        row["status"] = status
        row["metrics"] = {
            k: n
            for k, v in (final or {}).items()
            if isinstance(k, str) and k not in SKIP and not k.startswith("time/") and (n := _number(v)) is not None
        }
        row["task_class"] = _task_class(((run.get("config") or {}).get("task") or {}).get("_target_"), registry)
        row["judged"] = _judged(row["task_class"])
        row["group"] = rec.get("group") or " ".join(_identity_overrides(overrides, exclude)) or "(defaults)"
        rows.append(row)
    return rows


def mean_std(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (n - 1); std is nan for a single value."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else float("nan")
    return mean, std


def aggregate(rows: list[dict]) -> list[dict]:
    """Per group (jobs equal but for the seed): n finished jobs, mean and std of each metric."""
    groups: dict[str, list[dict]] = {}
    for r in rows:
        if r["status"] == "finished":
            groups.setdefault(r["group"], []).append(r)
    out = []
    for name, members in groups.items():
        keys = sorted(set.intersection(*(set(m["metrics"]) for m in members)))
        stats = {k: mean_std([m["metrics"][k] for m in members]) for k in keys}
        out.append(
            {
                "group": name,
                "n": len(members),
                "seeds": [m["seed"] for m in members],
                "stats": stats,
                "judged": members[0]["judged"],
                "experiment": members[0]["experiment"],
                "run_dirs": [m["results_dir"] for m in members],
                "task_class": members[0]["task_class"],
            }
        )
    return out


def _fmt(v: float) -> str:
    return "n/a" if v != v else f"{v:.4g}"


def write_summary(directory: Path, registry=None, evaluation: str | None = None, errors: dict | None = None) -> dict:
    """summary.csv, summary.md, summary.png (and comparisons.csv/.png) of a sweep directory, or of eval.py's
    evaluation `evaluation` of its jobs (into eval/<evaluation>/ there; `errors`: why eval.py could not
    evaluate a job); returns the rows, the groups, the comparisons and the text printed at a sweep's end."""
    directory = Path(directory)
    if evaluation is not None and (Path(evaluation).name != evaluation or evaluation in ("", ".", "..")):
        raise UserError(
            f"{evaluation!r} is not an evaluation's folder name under <run dir>/{rd.EVAL}/ "
            f"(e.g. data.tasks_from=evaluation)"
        )
    out = directory / rd.EVAL / evaluation if evaluation else directory
    rows = collect(directory, registry or current_registry(), evaluation, errors)
    if evaluation:
        rd.refuse_links_out(out, directory)
        out.mkdir(parents=True, exist_ok=True)
    groups = aggregate(rows)
    write_summary_csv(rows, out / "summary.csv")
    shown = list(dict.fromkeys(k for g in groups for k in g["judged"] if k in g["stats"]))  # every one, primary first
    finished = f"{sum(r['status'] == 'finished' for r in rows)} of {len(rows)} jobs " + (
        "evaluated." if evaluation else "finished."
    )
    table = group_tables(groups, shown)
    paired = _paired_comparisons(directory, groups, out)
    title = f"# Sweep {directory.name}" + (
        f": eval.py's evaluation {evaluation} of each job's last checkpoint" if evaluation else ""
    )
    lines = [
        title,
        "",
        finished,
        "",
        "## Mean +- std over seeds (sample std; n/a for one seed)",
        "",
        *table,
        "",
        "## Jobs",
        "",
        *job_table(rows, shown),
    ]
    if paired:
        lines += [
            "",
            "## Paired comparisons (per held-out output; comparisons.csv, comparisons.png)",
            "",
            *comparisons.markdown(paired),
        ]
    atomic_write_bytes(out / "summary.md", ("\n".join(lines) + "\n").encode())
    if groups and shown:
        _bar_chart(groups, shown[0], out / "summary.png")
    return {
        "rows": rows,
        "groups": groups,
        "comparisons": paired,
        "text": summary_text(out, finished, table, rows, paired, "Not evaluated" if evaluation else "Not finished"),
    }


def write_summary_csv(rows: list[dict], path: Path) -> None:
    """One line per job, every final metric."""
    metric_keys = sorted({k for r in rows for k in r["metrics"]})
    columns = ["job", "experiment", "seed", "status", "epochs", "overrides", "run_dir", "error"]
    atomic_write_csv(
        [{**{c: r[c] for c in columns}, **{k: r["metrics"].get(k, "") for k in metric_keys}} for r in rows],
        path,
        [*columns, *metric_keys],
    )


METRICS_PER_TABLE = 7  # a wider table wraps in a terminal: the metrics after these go to a further table


def group_tables(groups: list[dict], shown: list[str]) -> list[str]:
    """Markdown: the group table for every shown metric, METRICS_PER_TABLE metrics a table."""
    chunks = [shown[i : i + METRICS_PER_TABLE] for i in range(0, len(shown), METRICS_PER_TABLE)] or [[]]
    return [line for i, chunk in enumerate(chunks) for line in [*([""] if i else []), *group_table(groups, chunk)]]


def group_table(groups: list[dict], shown: list[str]) -> list[str]:
    """Markdown: per group, n, seeds and mean +- std of the shown metrics."""
    lines = ["| " + " | ".join(["group", "n", "seeds", *shown]) + " |", "|" + " --- |" * (3 + len(shown))]
    for g in groups:
        cells = [f"{_fmt(g['stats'][k][0])} +- {_fmt(g['stats'][k][1])}" if k in g["stats"] else "" for k in shown]
        lines.append("| " + " | ".join([g["group"], str(g["n"]), ",".join(g["seeds"]), *cells]) + " |")
    return lines


def job_table(rows: list[dict], shown: list[str]) -> list[str]:
    lines = [
        "| " + " | ".join(["job", "overrides", "status", "epochs", *shown, "error"]) + " |",
        "|" + " --- |" * (5 + len(shown)),
    ]
    for r in rows:
        cells = [_fmt(r["metrics"][k]) if k in r["metrics"] else "" for k in shown]
        lines.append(
            "| "
            + " | ".join(
                [str(r["job"]), r["overrides"], r["status"], str(r["epochs"]), *cells, r["error"].replace("|", "/")]
            )
            + " |"
        )
    return lines


def summary_text(
    directory: Path,
    finished: str,
    table: list[str],
    rows: list[dict],
    paired: list[dict],
    missing: str = "Not finished",
) -> str:
    """What a sweep prints at its end: where the summary is, the group table, what did not finish (or was
    not evaluated)."""
    text = f"Sweep summary: {directory}/summary.md (.csv, .png); {finished}\n" + "\n".join(table)
    failed = [r for r in rows if r["status"] != "finished"]
    if failed:
        text += f"\n{missing}: " + "; ".join(
            f"job {r['job']} ({r['overrides']}): {r['status']}" + (f": {r['error']}" if r["error"] else "")
            for r in failed
        )
    if paired:
        text += "\nPaired comparisons:\n" + "\n".join(comparisons.markdown(paired))
    return text


def _paired_comparisons(directory: Path, groups: list[dict], out: Path) -> list[dict]:
    """comparisons.csv and .png (into `out`) for the sweep's chain (plan.json), when its family writes
    per-output records."""
    task_cls = next((g["task_class"] for g in groups if g["task_class"] is not None), None)
    chain = read_plan(directory).get("chain")
    rows = comparisons.comparisons(groups, chain, task_cls) if task_cls is not None else []
    if rows:
        comparisons.write_csv(rows, out / "comparisons.csv")
        comparisons.draw(
            rows,
            out / "comparisons.png",
            directory.name if out == directory else f"{directory.name}, {out.name}",
            set(task_cls.higher_is_better),
        )
    return rows


def _bar_chart(groups: list[dict], metric: str, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [g["group"].replace("experiment=", "").replace(" ", "\n") + f"\n(n={g['n']})" for g in groups]
    means = [g["stats"].get(metric, (float("nan"),))[0] for g in groups]
    stds = [0.0 if (s := g["stats"].get(metric, (0, 0))[1]) != s else s for g in groups]
    fig, ax = plt.subplots(figsize=(max(6, 1.6 * len(groups)), 4.8))
    bars = ax.bar(range(len(groups)), means, yerr=stds, capsize=5, color="tab:blue", alpha=0.8)
    ax.bar_label(bars, labels=[f"{m:.3g}" for m in means], fontsize=8, padding=2)
    ax.set_xticks(range(len(groups)))
    ax.set_xticklabels(names, fontsize=7, rotation=25, ha="right")
    ax.set_ylabel(f"{metric} (mean +- std over seeds)")
    ax.set_title(f"{path.parent.name}: final {metric}", fontsize=9)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
