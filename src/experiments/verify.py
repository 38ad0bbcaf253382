"""The verification program: read checkpoints safely, rebuild from their own config, run the stages,
print a table, write a report next to the checkpoint.

Exit status: 0 every stage passed (or was skipped with a reason), 1 a stage failed, 2 unusable input.
"""

import datetime
import json
import time
from dataclasses import asdict
from pathlib import Path

import torch

from experiments import run_dir as rd
from experiments.atomic import atomic_write_bytes, remove_temporaries
from experiments.checkpoint import io as checkpoint_io
from experiments.errors import EXIT_FAILED, EXIT_OK, Outcome, UserError
from experiments.stages.checkpoint_stages import CHECKPOINT_STAGES
from experiments.stages.registry import run_stages
from experiments.stored_run import StoredRun, config_hash
from experiments.untrusted import program_registry, read_text

SINGLE = ["loadable", "integrity", "restorable", "predicts", "frozen_identical", "metrics"]
SERIES = ["progress", "weights_updated", "history_consistent", "resume_exact"]
SCHEMA = "experiments.verify/1"


def report(ctx: StoredRun, results, seconds: float) -> dict:
    c = ctx.ckpts[ctx.primary]
    return {
        "schema": SCHEMA,
        "input": str(ctx.target),
        "checkpoint": {
            "path": str(ctx.primary),
            "sha256": ctx.sha256(ctx.primary),
            "bytes": ctx.primary.stat().st_size,
            "epoch": rd.epoch_number(c["epoch"]),
            "global_step": c["global_step"],
            "config_hash": config_hash(c["config"]),
            "experiment": c["config"].get("experiment"),
            "framework_version": c["framework"].get("version"),
            "git_commit": c["framework"].get("git_commit"),
        },
        "series": [str(p) for p in ctx.series] if ctx.target.is_dir() else [],
        "time": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 3),
        "stages": [asdict(r) for r in results],
        "passed": all(r.status != "fail" for r in results),
    }


def markdown(rep: dict) -> str:
    ck = rep["checkpoint"]
    lines = [
        f"# Verification of {Path(ck['path']).name}: {'PASSED' if rep['passed'] else 'FAILED'}",
        "",
        f"- checkpoint: `{ck['path']}` (epoch {ck['epoch']}, step {ck['global_step']}, {ck['bytes']:,} bytes)",
        f"- sha256: `{ck['sha256']}`",
        f"- config hash: `{ck['config_hash']}`",
        f"- framework {ck['framework_version']}, commit `{ck['git_commit']}`; verified {rep['time']}",
        "",
        "| stage | status | seconds | details |",
        "| --- | --- | --- | --- |",
    ]
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
    except (OSError, ValueError, UserError, KeyError, TypeError, RecursionError):  # none, or unreadable
        return set()


def print_table(results) -> None:
    for r in results:
        print(f"{r.status:4s} {r.name:18s} {r.seconds:6.2f}s  {r.details}", flush=True)
        if r.name == "metrics":
            for name, m in r.metrics.items():
                verdict = {True: "", False: "  <- not clearly better than untrained: proves nothing"}.get(
                    m.get("clearly_better"), "  (not judged)"
                )
                trained, untrained = m["trained"], m["untrained_control"]
                print(f"       {name:24s} trained {trained:10.6g}   untrained {untrained:10.6g}{verdict}")


def verify(cfg) -> Outcome:
    if not cfg.ckpt:
        raise UserError("give a checkpoint or run directory: python verify.py ckpt=PATH")
    t0 = time.perf_counter()
    torch.set_grad_enabled(True)
    checkpoint_io.MAX_INFLATION = cfg.max_inflation
    ctx = StoredRun(Path(str(cfg.ckpt)), program_registry(), device=cfg.device)
    ctx.max_replay_epochs = cfg.max_replay_epochs
    stages = (
        list(cfg.stages) if cfg.stages else (SINGLE if ctx.target.is_file() else SINGLE[:-1] + SERIES + ["metrics"])
    )
    results = run_stages(stages, ctx, CHECKPOINT_STAGES, stop_on_failure=False)
    if results and results[0].name == "loadable" and results[0].status == "fail":
        raise UserError(results[0].details)
    rep = report(ctx, results, time.perf_counter() - t0)
    print_table(results)
    out = Path(str(cfg.report)) if cfg.report else rd.verification_report(ctx.primary)
    if not cfg.report:
        rd.refuse_links_out(
            out.parent, rd.run_of(ctx.primary)
        )  # the run's, not its checkpoint folder: that may be the link
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
