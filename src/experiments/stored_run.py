"""A verify.py or eval.py input: the checkpoints of a file or a run directory, read as data (bounded,
`weights_only=True`, their stored configs proved to build only what the program's config folders register:
untrusted.py), and what the checkpoint stages and eval.py rebuild from them: the data module, the task
with trained weights, an untrained control of the same architecture and seed."""

import hashlib
import json
from pathlib import Path

from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException

from experiments import run_dir as rd
from experiments.checkpoint.io import load_checkpoint, not_ours, sha256_file
from experiments.errors import StageFailure, UserError
from experiments.stages.config_check import check_config
from experiments.untrusted import Registry, check_stored_config, excerpt


def checkpoint_of(target: Path) -> Path:
    """A checkpoint file, or a run directory's (or its checkpoint folder's) last checkpoint."""
    if target.is_dir():
        last = rd.last_checkpoint(rd.run_of(target))
        if not last.is_file():
            raise UserError(f"{target} holds no {rd.CHECKPOINTS}/{rd.LAST}; give a checkpoint file: ckpt=PATH.ckpt")
        return last
    if not target.exists():
        raise UserError(f"{target} does not exist; give a checkpoint file or a run directory")
    return target


def _refuse_instructions(value, key: str) -> None:
    """A command-line setting is a value: a mapping key starting with `_` (a Hydra instruction such as
    `_target_`) or an interpolation anywhere in it is refused."""
    if isinstance(value, dict):
        for k, v in value.items():
            if str(k).startswith("_"):
                raise UserError(
                    f"{key}.{k}: eval.py and predict.py change how a checkpoint's task evaluates, never what it is"
                )
            _refuse_instructions(v, f"{key}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            _refuse_instructions(v, f"{key}.{i}")
    elif isinstance(value, str) and "${" in value:
        raise UserError(f"{key}: holds an interpolation; give a plain value")


class StoredRun:
    """The checkpoints of a verify.py or eval.py input, read as data: opened with weights_only=True and their
    stored configs proved to build only what `registry` (the program's config folders) registers, before
    anything named in them is imported."""

    def __init__(self, target: Path, registry: Registry, device: str = "cpu"):
        self.target, self.device = target, device
        files = self._find(target)
        self.ckpts = {p: load_checkpoint(p) for p in files}  # UserError on anything unsafe or unreadable
        for p, c in self.ckpts.items():
            if not isinstance(c.get("config"), dict) or "epoch" not in c or "state_dict" not in c:
                raise UserError(f"{p} is not a checkpoint of this framework (no config, epoch or state_dict)")
            why = not_ours(c)
            if why:
                raise UserError(f"{p} is not a checkpoint of this framework: {why}")
            c["config"] = check_stored_config(c["config"], registry, str(p))  # moved classes under current names
        self.series = self._series()
        self.primary = target if target.is_file() else (self.series[-1] if self.series else files[-1])
        self.config = self.ckpts[self.primary]["config"]
        self._check_family()
        self._trained, self._sha = {}, {}
        self.task_settings: dict = {}  # eval.py's task.KEY=VALUE: how to evaluate (settings_of_task)
        self.max_replay_epochs = 50  # verify.py's max_replay_epochs: the longest replay resume_exact runs

    @staticmethod
    def _find(target: Path) -> list[Path]:
        if not target.exists():
            raise UserError(f"{target} does not exist; give a checkpoint file or a run directory")
        if target.is_file():
            return [target]
        files = rd.checkpoint_files(target)
        if not files:
            raise UserError(f"no checkpoint (*.ckpt) in {target}")
        return files

    def _series(self) -> list[Path]:
        """One file per finished epoch, in order; named epoch files first among hard-linked copies."""
        by_epoch = {}
        for p in sorted(self.ckpts, key=lambda p: (not p.name.startswith("epoch="), p.name)):
            c = self.ckpts[p]
            if not c.get("run", {}).get("preempted"):
                by_epoch.setdefault(c["epoch"], p)
        return [by_epoch[e] for e in sorted(by_epoch)]

    def _check_family(self) -> None:
        seed = self.config.get("seed")
        if isinstance(seed, bool) or not isinstance(seed, int):  # as train.py's schema has it
            raise UserError(f"{self.primary}: its config's seed is {excerpt(seed)}, not an integer")
        for key in ("model", "data", "task"):
            node = self.config.get(key)
            if not isinstance(node, dict) or "_target_" not in node:
                raise UserError(f"{self.primary}: its config has no {key}._target_; unknown family")
        try:
            check_config(OmegaConf.create({k: v for k, v in self.config.items() if k in ("model", "data", "task")}))
        except UserError as e:
            if str(e).startswith("cannot import"):  # its family's code is not where Python looks
                raise UserError(f"{self.primary}: {e}")
            raise UserError(f"{self.primary}: its stored config no longer matches the code: {e}")
        from experiments.task_contract import ExperimentTask  # Lightning: imported once the input is known to be data

        self.task_class = get_class(self.config["task"]["_target_"])
        if not issubclass(self.task_class, ExperimentTask):
            raise UserError(f"{self.primary}: its task {self.config['task']['_target_']} is not an ExperimentTask")

    # ---- helpers for the stages ----
    def sha256(self, path: Path) -> str:
        if path not in self._sha:
            self._sha[path] = sha256_file(path)
        return self._sha[path]

    def datamodule(self, node: dict | None = None, stage: str = "validate"):
        """The data module of the checkpoint's config (or of `node`, eval.py's or predict.py's data), ready to
        validate (or predict); data it refuses (an empty folder, an unknown task id) is bad input."""
        from experiments.assemble import built

        dm = built(node or self.config["data"], "data", seed=self.config["seed"])
        dm.prepare_data()
        dm.setup(stage)
        return dm

    def fresh_task(self):
        """An untrained model of the checkpoint's architecture, initialised as its run began (same seed).
        Only the `metrics` stage's labelled control and structural checks use it."""
        import lightning as L

        from experiments.assemble import built

        L.seed_everything(self.config["seed"], verbose=False)
        node = OmegaConf.merge(self.config["task"], self.task_settings) if self.task_settings else self.config["task"]
        task = built(node, "task", model=instantiate(self.config["model"]))
        task.evaluation_precision = self.precision()  # evaluated as the run's validation was
        return task

    def precision(self) -> str | None:
        """The run's trainer.precision (its validation's), as a string; None when not recorded."""
        trainer = self.config.get("trainer")
        value = trainer.get("precision") if isinstance(trainer, dict) else None
        return None if value is None else str(value)

    def settings_of_task(self, args: list[str]) -> None:
        """eval.py's and predict.py's `task.KEY=VALUE` arguments: evaluation settings of the task, merged into
        its stored config for the tasks built from now on (`use_settings`)."""
        plain = [a[1:] if a.startswith("+") else a for a in args]
        try:
            if any(a.startswith("~") for a in plain):
                raise UserError(f"{plain[0]}: eval.py and predict.py set evaluation settings; they remove none")
            settings = OmegaConf.to_container(OmegaConf.from_dotlist([a.split(".", 1)[1] for a in plain]))
        except OmegaConfBaseException as e:
            raise UserError(f"task: {' '.join(str(e).split())}")
        self.use_settings(settings)

    def use_settings(self, settings: dict) -> None:
        """Evaluation settings of the task ({key: value}; `load_run(..., settings=)` gives them so). Only the
        keys the task class lists in `evaluation_settings` (how it evaluates, never what it is), with plain
        values: no `_` key at any depth, no interpolation."""
        allowed = tuple(getattr(self.task_class, "evaluation_settings", ()))
        if not isinstance(settings, dict):
            raise UserError(
                f"task settings must be a mapping of {', '.join(allowed) or 'none'}, got {excerpt(settings)}"
            )
        for key, value in settings.items():
            if key not in allowed:
                raise UserError(
                    f"task.{key} is not an evaluation setting of {self.config['task']['_target_']}: "
                    f"eval.py and predict.py may set {', '.join(f'task.{k}' for k in allowed) or 'none of its task'}"
                )
            _refuse_instructions(value, f"task.{key}")
        node = OmegaConf.merge(self.config["task"], settings)
        check_config(OmegaConf.create({"task": OmegaConf.to_container(node)}))
        self.task_settings = settings
        self._trained = {}  # tasks built before were built without them

    def control_task(self):
        """The untrained control of the `metrics` stage. For variants built on frozen parts, those parts
        are as the run loaded them (from the recorded source file when it is still there and unchanged,
        else the checkpoint's own) and only what the run trained is re-initialised. Returns (task, note)."""
        task = self.fresh_task()
        frozen = self.ckpts[self.primary].get("frozen")
        if not frozen:
            return task, "fresh initialisation, same architecture and seed"
        from experiments.checkpoint.frozen import source_parts

        src = frozen["source"]
        if src.get("allow_random"):
            return task, "random frozen parts, as the run had them (allow_random=true)"
        path = Path(src.get("path") or "")
        if path.is_file() and sha256_file(path) == src.get("sha256"):
            state, note = load_checkpoint(path)["state_dict"], f"frozen parts from the run's source {path}"
        else:
            state, note = (
                self.ckpts[self.primary]["state_dict"],
                "frozen parts from this checkpoint (source file gone or changed)",
            )
        task.load_state_dict({**task.state_dict(), **source_parts(state, task.frozen_parts)}, strict=True)
        return task, note + "; the trained parts re-initialised"

    def trained(self, path: Path):
        """The task with the checkpoint's weights, loaded strictly; a mismatch names every key."""
        if path not in self._trained:
            task = self.fresh_task()
            state = self.ckpts[path]["state_dict"]
            own = task.state_dict()
            missing = sorted(set(own) - set(state))
            unexpected = sorted(set(state) - set(own))
            shapes = [
                f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
                for k in set(own) & set(state)
                if state[k].shape != own[k].shape
            ]
            if missing or unexpected or shapes:
                raise StageFailure(
                    f"{path.name} does not fit {self.config['model']['_target_']}: "
                    f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape (file vs model) {shapes[:5]}"
                )
            task.load_state_dict(state, strict=True)
            self._trained[path] = task.to(self.device).eval()
        return self._trained[path]

    def loaded(self, path: Path):
        """`trained(path)` for a program that uses the weights (eval.py, predict.py, load_run): weights that do
        not fit the model its config builds are bad input, not a failed stage."""
        try:
            return self.trained(path)
        except StageFailure as e:
            raise UserError(str(e))

    def monitor(self) -> tuple[str, str]:
        """The metric the run's checkpoint policy followed: its config's, else the task's primary metric."""
        return self.task_class.monitor_of(self.config.get("checkpoint"))

    def row(self, path: Path) -> dict:
        epoch = self.ckpts[path]["epoch"]
        return next((r for r in self.ckpts[path]["history"] if r["epoch"] == epoch), {})


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()
