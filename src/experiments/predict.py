"""The prediction program: a trained run on new inputs whose answers nobody has.

`python predict.py ckpt=RUN input=PATH [task.KEY=VALUE ...] [out=DIR] [device=cpu]`. The checkpoint is read
as verify.py and eval.py read it (data, never code: stored_run.StoredRun); its family's task says which
data config reads `input` (`prediction_data`: the run's own data module, so the input gets the checks its
data gets), predicts each batch of it (`prediction_step`) and writes its files (`prediction_files`) into
`<run directory>/predict/<input identity>/<checkpoint name>/`, with `prediction.json` (which checkpoint,
which input, which settings, what was written). `task.KEY=VALUE`: how the task predicts, as for eval.py
(ARC: its views, ranking, test-time training). A family whose task does not predict is refused in one line.

`experiments.load_run` (api.py) gives the same predictions in Python: both go through `prediction_data`
and `ExperimentTask.predictions`.

Exit status: 0 done, 2 unusable input (checkpoint, input, a family that does not predict), 1 a family's code
crashed.
"""

import datetime
import hashlib
import json
import time
from pathlib import Path

from omegaconf import OmegaConf

from experiments import run_dir as rd
from experiments.atomic import atomic_write_bytes
from experiments.checkpoint import io as checkpoint_io
from experiments.console import with_progress
from experiments.errors import EXIT_OK, Outcome, UserError
from experiments.stages.config_check import check_config
from experiments.stored_run import StoredRun, checkpoint_of
from experiments.untrusted import program_registry

SCHEMA = "experiments.predict/1"


def predict(cfg, task_args: list[str] = ()) -> Outcome:
    if not cfg.ckpt:
        raise UserError("give a checkpoint or run directory: python predict.py ckpt=PATH input=PATH")
    checkpoint_io.MAX_INFLATION = cfg.max_inflation
    checkpoint = checkpoint_of(Path(str(cfg.ckpt)))
    t0 = time.perf_counter()
    stored = StoredRun(checkpoint, program_registry(), device=cfg.device)
    refuse_without_prediction(stored)
    if task_args:
        stored.settings_of_task(list(task_args))
    task = stored.loaded(checkpoint)
    source = input_path(cfg.input)
    datamodule = prediction_datamodule(stored, task, source)
    folder = (
        Path(str(cfg.out))
        if cfg.out
        else (rd.run_of(checkpoint) / rd.PREDICT / input_identity(source, task_args) / checkpoint.stem)
    )
    if not cfg.out:
        rd.refuse_links_out(folder, rd.run_of(checkpoint))
    rd.remove_stale_temporaries(folder)  # of predict.py runs killed while writing here
    described = getattr(datamodule, "describe", lambda: "")()
    print(
        f"Predicting with {checkpoint} (epoch {rd.epoch_number(stored.ckpts[checkpoint]['epoch'])}) on "
        f"{source if source else 'its default input'}" + (f": {described}" if described else ""),
        flush=True,
    )
    with_progress(datamodule, "predict_dataloader", "predicting")
    records = task.predictions(datamodule)
    task.prediction_files(records, folder, datamodule)
    seconds = time.perf_counter() - t0
    files = sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file() and p.name != "prediction.json")
    record = {
        "schema": SCHEMA,
        "checkpoint": {
            "path": str(checkpoint),
            "sha256": stored.sha256(checkpoint),
            "epoch": rd.epoch_number(stored.ckpts[checkpoint]["epoch"]),
            "experiment": stored.config.get("experiment"),
        },
        "input": {"path": str(source) if source else None, "resolved": str(source.resolve()) if source else None},
        "task": {"arguments": list(task_args), "settings": stored.task_settings},
        "predictions": len(records),
        "files": files,
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
    }
    atomic_write_bytes(folder / "prediction.json", (json.dumps(record, indent=2, default=str) + "\n").encode())
    print(
        f"{len(records):,} prediction{'s' * (len(records) != 1)} in {seconds:.1f}s; {folder}: {listing(files)}, "
        f"prediction.json",
        flush=True,
    )
    return Outcome(EXIT_OK)


def refuse_without_prediction(stored: StoredRun) -> None:
    """A family whose task does not implement the prediction methods: one line (before any weight loads)."""
    gaps = stored.task_class.prediction_gaps()
    if len(gaps) == 3:
        raise UserError(
            f"{stored.config['task']['_target_']} does not predict: its task implements no "
            f"prediction_step (a family opts in with prediction_data, prediction_step and "
            f"prediction_files: docs/FAMILIES.md, 'Predicting'); eval.py evaluates it on data with answers"
        )
    if gaps:
        raise UserError(
            f"{stored.config['task']['_target_']} implements only part of prediction: "
            f"{', '.join(gaps)} missing (docs/FAMILIES.md, 'Predicting')"
        )


def input_path(value) -> Path | None:
    """`input=PATH` as given (None when not given: the family's default input, if it has one)."""
    if value is None or str(value) == "":
        return None
    path = Path(str(value))
    if not path.exists():
        raise UserError(f"input={value} does not exist; give a file or folder of inputs")
    return path


def prediction_datamodule(stored: StoredRun, task, source: Path | None):
    """The family's data module reading `source` for prediction: its data config (`prediction_data`) must be
    the run's own data module's, checked against its signature like every node, then built with the run's
    seed; the inputs it refuses are bad input."""
    own = stored.config["data"]
    node = task.prediction_data(dict(own), source)
    if not isinstance(node, dict) or node.get("_target_") != own["_target_"]:
        raise UserError(
            f"{type(task).__name__}.prediction_data gave data for "
            f"{node.get('_target_') if isinstance(node, dict) else node}, not the run's own "
            f"{own['_target_']}"
        )
    check_config(OmegaConf.create({"data": node}))
    return stored.datamodule(node, stage="predict")


def input_identity(source: Path | None, task_args: list[str]) -> str:
    """The folder of one input's predictions: its name and a short hash of where it is and the settings, so
    that two inputs of one name (or one input under other settings) never share a folder."""
    if source is None and not task_args:
        return "default"
    key = json.dumps([str(source.resolve()) if source else None, sorted(task_args)])
    return rd.run_id(f"{source.name if source else 'default'}-{hashlib.sha256(key.encode()).hexdigest()[:8]}")


def listing(files: list[str]) -> str:
    """The files written, a folder's as one entry: `submission.json, reconstructions/ (56 files)`."""
    tops: dict[str, int] = {}
    for f in files:
        top, sep, _ = f.partition("/")
        tops[top + sep] = tops.get(top + sep, 0) + 1
    return ", ".join(t if not t.endswith("/") else f"{t} ({n} file{'s' * (n != 1)})" for t, n in tops.items())
