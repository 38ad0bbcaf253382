"""The verification program: read checkpoints safely, rebuild from their own config, run the stages,
print a table, write a report next to the checkpoint.

Exit status: 0 every stage passed (or was skipped with a reason), 1 a stage failed, 2 unusable input.
"""
import datetime
import hashlib
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch
from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

from experiments import run_dir as rd
from experiments.checkpoint import io as checkpoint_io
from experiments.checkpoint.io import atomic_write_bytes, load_checkpoint, remove_temporaries, sha256_file
from experiments.errors import EXIT_FAILED, EXIT_OK, Outcome, StageFailure, UserError
from experiments.stages.checkpoint_stages import CHECKPOINT_STAGES
from experiments.stages.config_check import check_config
from experiments.stages.registry import run_stages
from experiments.untrusted import Registry, check_stored_config, program_registry, read_text

SINGLE = ["loadable", "integrity", "restorable", "predicts", "frozen_identical", "metrics"]
SERIES = ["progress", "weights_updated", "history_consistent", "resume_exact"]
SCHEMA = "experiments.verify/1"


class VerifyContext:
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
            check_stored_config(c["config"], registry, str(p))
        self.series = self._series()
        self.primary = target if target.is_file() else (self.series[-1] if self.series else files[-1])
        self.config = self.ckpts[self.primary]["config"]
        self._check_family()
        self._trained, self._sha = {}, {}

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

    def datamodule(self, node: dict | None = None):
        """The data module of the checkpoint's config (or of `node`, eval.py's data), ready to validate; data it
        refuses (an empty folder, an unknown task id) is bad input."""
        from experiments.assemble import built

        dm = built(node or self.config["data"], "data", seed=self.config["seed"])
        dm.prepare_data()
        dm.setup("validate")
        return dm

    def fresh_task(self):
        """An untrained model of the checkpoint's architecture, initialised as its run began (same seed).
        Only the `metrics` stage's labelled control and structural checks use it."""
        import lightning as L

        L.seed_everything(self.config["seed"], verbose=False)
        return instantiate(self.config["task"], model=instantiate(self.config["model"]))

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
            state, note = self.ckpts[self.primary]["state_dict"], "frozen parts from this checkpoint (source file gone or changed)"
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
            shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in set(own) & set(state)
                      if state[k].shape != own[k].shape]
            if missing or unexpected or shapes:
                raise StageFailure(f"{path.name} does not fit {self.config['model']['_target_']}: "
                                   f"missing {missing[:5]}, unexpected {unexpected[:5]}, shape (file vs model) {shapes[:5]}")
            task.load_state_dict(state, strict=True)
            self._trained[path] = task.to(self.device).eval()
        return self._trained[path]

    def monitor(self) -> tuple[str, str]:
        """The metric the run's checkpoint policy followed: its config's, else the task's primary metric."""
        ck = self.config.get("checkpoint", {})
        return self.task_class.monitor(ck.get("monitor"), ck.get("mode"))

    def row(self, path: Path) -> dict:
        epoch = self.ckpts[path]["epoch"]
        return next((r for r in self.ckpts[path]["history"] if r["epoch"] == epoch), {})


def config_hash(config: dict) -> str:
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()


def report(ctx: VerifyContext, results, seconds: float) -> dict:
    c = ctx.ckpts[ctx.primary]
    return {
        "schema": SCHEMA,
        "input": str(ctx.target),
        "checkpoint": {
            "path": str(ctx.primary), "sha256": ctx.sha256(ctx.primary), "bytes": ctx.primary.stat().st_size,
            "epoch": rd.epoch_number(c["epoch"]), "global_step": c["global_step"], "config_hash": config_hash(c["config"]),
            "experiment": c["config"].get("experiment"), "framework_version": c["framework"].get("version"),
            "git_commit": c["framework"].get("git_commit"),
        },
        "series": [str(p) for p in ctx.series] if ctx.target.is_dir() else [],
        "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "stages": [asdict(r) for r in results],
        "passed": all(r.status != "fail" for r in results),
    }


def markdown(rep: dict) -> str:
    ck = rep["checkpoint"]
    lines = [f"# Verification of {Path(ck['path']).name}: {'PASSED' if rep['passed'] else 'FAILED'}", "",
             f"- checkpoint: `{ck['path']}` (epoch {ck['epoch']}, step {ck['global_step']}, {ck['bytes']:,} bytes)",
             f"- sha256: `{ck['sha256']}`", f"- config hash: `{ck['config_hash']}`",
             f"- framework {ck['framework_version']}, commit `{ck['git_commit']}`; verified {rep['time']}", "",
             "| stage | status | seconds | details |", "| --- | --- | --- | --- |"]
    cell = lambda text: str(text).replace("|", "\\|")  # noqa: E731  (a detail such as "largest |change|")
    lines += [f"| {s['name']} | {s['status']} | {s['seconds']:.2f} | {cell(s['details'])} |" for s in rep["stages"]]
    for s in rep["stages"]:
        if s["name"] == "metrics" and s["metrics"]:
            lines += ["", "| metric | trained | untrained control | clearly better |", "| --- | --- | --- | --- |"]
            for name, m in s["metrics"].items():
                verdict = {True: "yes", False: "**no: proves nothing**"}.get(m.get("clearly_better"), "not judged")
                lines.append(f"| {name} | {m['trained']:.6g} | {m['untrained_control']:.6g} | {verdict} |")
    return "\n".join(lines) + "\n"


def fuller_stages(path: Path, rep: dict) -> set:
    """The stages an earlier report of the same checkpoint (same sha256) has and `rep` lacks."""
    try:
        old = json.loads(read_text(path))
        if old["checkpoint"]["sha256"] != rep["checkpoint"]["sha256"]:
            return set()
        known = {s["name"] for s in old["stages"]} & set(CHECKPOINT_STAGES)  # a report is data: only real stages
        return known - {s["name"] for s in rep["stages"]}
    except (OSError, ValueError, UserError, KeyError, TypeError):  # none, or unreadable: nothing to keep
        return set()


def print_table(results) -> None:
    for r in results:
        print(f"{r.status:4s} {r.name:18s} {r.seconds:6.2f}s  {r.details}", flush=True)
        if r.name == "metrics":
            for name, m in r.metrics.items():
                verdict = {True: "", False: "  <- not clearly better than untrained: proves nothing"}.get(
                    m.get("clearly_better"), "  (not judged)")
                print(f"       {name:24s} trained {m['trained']:10.6g}   untrained {m['untrained_control']:10.6g}{verdict}")


def verify(cfg) -> Outcome:
    if not cfg.ckpt:
        raise UserError("give a checkpoint or run directory: python verify.py ckpt=PATH")
    t0 = time.perf_counter()
    torch.set_grad_enabled(True)
    checkpoint_io.MAX_INFLATION = cfg.max_inflation
    ctx = VerifyContext(Path(str(cfg.ckpt)), program_registry(), device=cfg.device)
    stages = list(cfg.stages) if cfg.stages else (SINGLE if ctx.target.is_file() else SINGLE[:-1] + SERIES + ["metrics"])
    results = run_stages(stages, ctx, CHECKPOINT_STAGES, stop_on_failure=False)
    if results and results[0].name == "loadable" and results[0].status == "fail":
        raise UserError(results[0].details)
    rep = report(ctx, results, time.perf_counter() - t0)
    print_table(results)
    out = Path(str(cfg.report)) if cfg.report else rd.verification_report(ctx.primary)
    if not cfg.report:
        rd.refuse_links_out(out.parent, ctx.primary.parent)
    kept = set() if cfg.report else fuller_stages(out, rep)
    if kept:  # a partial verify never replaces a fuller report of the same file
        print(f"kept {out}: it reports stages this run did not ({', '.join(sorted(kept))})", flush=True)
        out = out.with_name(f"{out.stem}.partial.json")
    # temporaries of verify.py runs killed while writing these reports
    remove_temporaries(out.parent, writers_gone_only=True, of=[out.name, out.with_suffix(".md").name])
    atomic_write_bytes(out, (json.dumps(rep, indent=2, default=str) + "\n").encode())
    atomic_write_bytes(out.with_suffix(".md"), markdown(rep).encode())
    print(f"{'PASSED' if rep['passed'] else 'FAILED'} in {rep['seconds']:.1f}s; report: {out} (and .md)", flush=True)
    if rep["passed"]:
        return Outcome(EXIT_OK)
    failed = [r for r in results if r.status == "fail"]
    return Outcome(EXIT_FAILED, f"stage {failed[0].name} failed: {failed[0].details}")
