"""A trained run in Python: `from experiments import load_run`.

    run = load_run("outputs/exp3_champion/default")        # a run directory (its last.ckpt) or a checkpoint file
    run.model, run.task, run.config                        # the nn.Module, its task (eval mode), the stored config
    records = run.predict("my_tasks/")                     # what predict.py predicts for input=my_tasks/, as records

The checkpoint is read exactly as verify.py, eval.py and predict.py read it (stored_run.StoredRun: a torch zip
archive within bounds, `weights_only=True`, its config building only what the config folders register), so a
crafted checkpoint is refused here too, with a UserError naming what is wrong. `config_dir`: a family of
one's own, the folder train.py was given with --config-dir. `settings`: the task's evaluation settings (as
`task.KEY=VALUE` of eval.py and predict.py, e.g. `{"eval_augmentations": 8}`).
"""

from dataclasses import dataclass
from pathlib import Path

from experiments.errors import UserError


@dataclass
class Run:
    checkpoint: Path  # the checkpoint file loaded
    config: dict  # its stored config, checked (moved classes under their current names)
    task: object  # the family's ExperimentTask with the checkpoint's weights, in eval mode, on `device`
    device: str
    _stored: object

    @property
    def model(self):
        """The family's model: a plain nn.Module (`task.model`)."""
        return self.task.model

    def datamodule(self, input=None):
        """The family's data module reading `input` for prediction (the run's own data module, its checks)."""
        from experiments.predict import input_path, prediction_datamodule

        return prediction_datamodule(self._stored, self.task, input_path(input))

    def predict(self, input=None) -> list[dict]:
        """A record per input of `input` (a path, as predict.py's `input=`), as predict.py computes them; nothing
        is written (`task.prediction_files(records, folder, datamodule)` writes predict.py's files)."""
        from experiments.predict import refuse_without_prediction

        refuse_without_prediction(self._stored)
        return self.task.predictions(self.datamodule(input))


def load_run(path, device: str = "cpu", settings: dict | None = None, config_dir=None) -> Run:
    """The run of `path` (a run directory, its checkpoints/ folder, or a checkpoint file), its weights loaded
    into the model its stored config builds, on `device`, in eval mode."""
    from experiments.stored_run import StoredRun, checkpoint_of
    from experiments.untrusted import package_config_folders, registry

    dirs = [config_dir] if isinstance(config_dir, (str, Path)) else list(config_dir or [])
    missing = [str(d) for d in dirs if not Path(d).is_dir()]
    if missing:
        raise UserError(
            f"config_dir {missing[0]} is not a folder; give the family's conf/ folder, as train.py "
            f"was given it with --config-dir"
        )
    checkpoint = checkpoint_of(Path(path))
    try:
        stored = StoredRun(checkpoint, registry([*package_config_folders(), *map(str, dirs)]), device=device)
    except UserError as e:  # the programs' advice, as it is given in Python
        raise UserError(str(e).replace("--config-dir PATH", "load_run(PATH, config_dir=ITS_CONF_FOLDER)")) from None
    if settings:
        stored.use_settings(dict(settings))
    return Run(checkpoint, stored.config, stored.loaded(checkpoint), device, stored)
