"""Loggers as the programs configure them (conf/logger/)."""

import hashlib
import inspect
import os
import re
import urllib.parse
from pathlib import Path

from lightning.pytorch.loggers import MLFlowLogger as LightningMLFlowLogger
from lightning.pytorch.loggers import TensorBoardLogger as LightningTensorBoardLogger
from lightning.pytorch.loggers import WandbLogger as LightningWandbLogger
from lightning.pytorch.utilities.rank_zero import rank_zero_only

from experiments.atomic import atomic_write_bytes
from experiments.console import is_terminal
from experiments.errors import UserError


def rgb_pixels(path):
    """A PNG the run wrote, as an (H, W, 3) array of floats in [0, 1] (alpha dropped), as loggers take images."""
    import matplotlib.image

    return matplotlib.image.imread(str(path))[..., :3]


def at_spelled_out(metrics: dict) -> dict:
    """Figures named with `@` (`arc/exact_output@2`), which TensorBoard tags and MLflow keys do not allow, as
    `_at` (`arc/exact_output_at2`)."""
    return {key.replace("@", "_at"): value for key, value in metrics.items()}


def stable_id(run_dir: str) -> str:
    """16 hex characters, a function of the run directory's absolute path alone."""
    return hashlib.sha256(os.path.abspath(run_dir).encode()).hexdigest()[:16]


class WandbLogger(LightningWandbLogger):
    """Lightning's WandbLogger with what a run directory implies: unless given, the run's id is derived
    from its directory (so every start of one run directory, resumes included, continues one wandb run)
    and its name is the directory's `<experiment>/<overrides>`. Less the `anonymous` setting Lightning
    always passes to `wandb.init`: wandb >= 0.19 warns on every run that it has no effect. Quiet (the run's
    closing summary says where its files are and how to upload every start of it) and without colour codes
    when the console is not a terminal."""

    def __init__(self, *args, **kwargs):
        bound = inspect.signature(LightningWandbLogger.__init__).bind(None, *args, **kwargs).arguments
        run_dir = bound.get("save_dir")
        if run_dir:
            kwargs["id"] = kwargs.get("id") or stable_id(run_dir)
            kwargs["name"] = kwargs.get("name") or f"{Path(run_dir).parent.name}/{Path(run_dir).name}"
        if "settings" not in kwargs:
            import wandb

            kwargs["settings"] = wandb.Settings(quiet=True, show_colors=is_terminal())
        super().__init__(*args, **kwargs)
        self._wandb_init.pop("anonymous", None)

    def finalize(self, status: str) -> None:
        """Lightning's, then the wandb run finished here, while the run's console (and train.log) still
        listens, instead of at the process's exit."""
        super().finalize(status)
        # ("finished": Lightning's SLURM requeue handler, mid-training: the run goes on in the next job)
        if status in ("success", "failed") and self._experiment is not None and hasattr(self._experiment, "finish"):
            self._experiment.finish(exit_code=0 if status == "success" else 1)


# The config check (stages/config_check.py) reads a target's signature: keep Lightning's, key for key.
WandbLogger.__init__.__signature__ = inspect.signature(LightningWandbLogger.__init__)


class TensorBoardLogger(LightningTensorBoardLogger):
    """Lightning's TensorBoardLogger (event files under `<run dir>/tensorboard/`, written through
    tensorboardX), able to take the run's pictures as wandb's logger does (`log_image`, which
    callbacks.LoggerReport calls for every PNG the run writes). A figure named with `@` (not allowed in a
    TensorBoard tag) is filed with `_at` instead (`arc/exact_output_at2`), and the `epoch` figure once a step
    (the training and the validation figures of an epoch both carry it, at the same step)."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        metrics = at_spelled_out(metrics)
        if "epoch" in metrics:
            if getattr(self, "_epoch_logged", None) == (step, metrics["epoch"]):
                del metrics["epoch"]
            else:
                self._epoch_logged = (step, metrics["epoch"])
        if metrics:
            super().log_metrics(metrics, step)

    def log_image(self, key: str, images: list, step: int | None = None) -> None:
        for path in images:
            self.experiment.add_image(key, rgb_pixels(path), global_step=step, dataformats="HWC")


RUN_DIR_TAG = "experiments.run_dir_id"  # an MLflow run's tag: stable_id of the run directory it records
MLFLOW_RUN_FILE = "mlflow_run.txt"  # in the run directory: the id of its MLflow run


class MLFlowLogger(LightningMLFlowLogger):
    """Lightning's MLFlowLogger with what a run directory implies. The store is local, under the run directory
    (`<run dir>/mlruns`, MLflow's file store: no server, no database; MLflow 3 keeps it in maintenance mode
    and refuses it unless MLFLOW_ALLOW_FILE_STORE is set, which this logger sets for a file store), unless
    `tracking_uri` names another (`sqlite:///...`, a server). One MLflow run per run directory: its id is kept
    in `<run dir>/mlflow_run.txt`, so every start continues it (its status back to RUNNING) and a run moved
    aside by resume=never takes its MLflow run with it; the run is named `<experiment>/<overrides>` and
    tagged with the directory's id. Figures named with `@` (not allowed in an MLflow key) are logged with
    `_at` (`arc/exact_output_at2`); the composed config goes in as parameters (values cut to 250 characters,
    MLflow's limit as Lightning keeps it) and whole as the artifact `config.yaml`; pictures as MLflow images
    with their step."""

    needs = {"mlflow": "pip install -e '.[mlflow]' (or pip install mlflow-skinny)"}  # checked by the config stage

    def __init__(self, *args, **kwargs):
        bound = inspect.signature(LightningMLFlowLogger.__init__).bind(None, *args, **kwargs).arguments
        run_dir = bound.get("save_dir")
        if run_dir and not bound.get("tracking_uri"):
            kwargs["tracking_uri"] = f"file:{Path(run_dir).resolve() / 'mlruns'}"
        if str(kwargs.get("tracking_uri") or "").startswith("file:"):
            os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"  # (read by MLflow when the client opens the store)
        self._id_file = Path(run_dir) / MLFLOW_RUN_FILE if run_dir else None
        # the run directory's own store: data like the rest of it, whose meta.yaml files name artifact folders
        self._own_store = Path(run_dir).resolve() / "mlruns" if run_dir and not bound.get("tracking_uri") else None
        if run_dir:
            kwargs["run_name"] = kwargs.get("run_name") or f"{Path(run_dir).parent.name}/{Path(run_dir).name}"
            kwargs["tags"] = {**(kwargs.get("tags") or {}), RUN_DIR_TAG: stable_id(run_dir)}
        super().__init__(*args, **kwargs)

    @property
    def experiment(self):
        """The client, with this run directory's MLflow run found (or, at its first start, created and its id
        written down)."""
        first = rank_zero_only.rank == 0 and not self._initialized and self._run_id is None
        if first and self._id_file is not None:
            self._run_id = self._earlier_run()
            if self._run_id is not None:
                self._mlflow_client.update_run(self._run_id, status="RUNNING")
        client = super().experiment
        if first and self._own_store is not None:
            self._refuse_artifacts_outside(client)
        if first and self._id_file is not None and self._earlier_id() != self._run_id:
            atomic_write_bytes(self._id_file, f"{self._run_id}\n".encode())
        return client

    def _refuse_artifacts_outside(self, client) -> None:
        """The run's artifacts (config.yaml, pictures) go where its store says: in the run directory's own
        store, only inside it (a planted experiment or run can name any folder)."""
        uri = client.get_run(self._run_id).info.artifact_uri or ""
        where = Path(urllib.parse.urlparse(uri).path) if uri.startswith("file:") else None
        if where is None or not where.resolve().is_relative_to(self._own_store):
            raise UserError(
                f"{self._own_store}: MLflow run {self._run_id} keeps its artifacts at {uri}, outside "
                f"that store: refusing to log there; rerun with resume=never to start a new run"
            )

    def _earlier_id(self) -> str | None:
        """The id a start before this one wrote, if it reads as an MLflow run id (the file is data)."""
        if not self._id_file.is_file():
            return None
        with open(self._id_file, "rb") as f:
            text = f.read(100).decode("ascii", "replace").strip()
        return text if re.fullmatch(r"[0-9a-f]{32}", text) else None

    def _earlier_run(self) -> str | None:
        """This run directory's MLflow run, if a start before this one made it and the store still holds it;
        otherwise None, with the experiment found or made here (not by Lightning, which warns that it was not
        found)."""
        import mlflow
        from mlflow.exceptions import MlflowException

        mlflow.set_tracking_uri(self._tracking_uri)
        earlier = self._earlier_id()
        if earlier is not None:
            try:
                return self._mlflow_client.get_run(earlier).info.run_id
            except MlflowException:  # another store than the one it was made in: a new run there
                pass
        found = self._mlflow_client.get_experiment_by_name(self._experiment_name)
        if found is None or found.lifecycle_stage == "deleted":
            self._experiment_id = self._mlflow_client.create_experiment(
                self._experiment_name, artifact_location=self._artifact_location
            )
        else:
            self._experiment_id = found.experiment_id
        return None

    @rank_zero_only
    def log_hyperparams(self, params) -> None:
        """The config as parameters, those already in the run (an earlier start's) left as they are: MLflow
        refuses to change a parameter, and a resumed run's result-defining config is its first start's; and
        the whole config as `config.yaml`."""
        from lightning.fabric.utilities.logger import _convert_params, _flatten_dict

        flat = _flatten_dict(_convert_params(params))
        logged = self.experiment.get_run(self.run_id).data.params
        new = {key: value for key, value in flat.items() if key not in logged}
        if new:
            super().log_hyperparams(new)
        if isinstance(params, dict):
            self.experiment.log_dict(self.run_id, params, "config.yaml")

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        super().log_metrics(at_spelled_out(metrics), step)

    @rank_zero_only
    def log_image(self, key: str, images: list, step: int | None = None) -> None:
        for path in images:
            self.experiment.log_image(
                self.run_id,
                (rgb_pixels(path) * 255).round().astype("uint8"),
                key=re.sub(r"[^A-Za-z0-9_\-./ ]", "_", key),
                step=step or 0,
            )


MLFlowLogger.__init__.__signature__ = inspect.signature(LightningMLFlowLogger.__init__)
