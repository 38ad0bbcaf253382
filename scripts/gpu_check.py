"""The GPU checks as one prepared command, for the day a GPU machine is lent (for about 15 minutes in all).

    PYTHONPATH=src python scripts/gpu_check.py --out DIR                 # on the GPU: the public sizes
    python scripts/gpu_check.py --out DIR --device cpu                   # here: the same parts at tiny sizes

Parts, in priority order (docs/GPU.md says why each, and how to bring the packages the GPU machine lacks):
  families  trainer=gpu for a short run (2 epochs) of ternary_v5_5, exp3_champion, magvit, magvit_v2,
            then verify.py on each: exit codes, the precision the run trained in, verify's stages
  resume    exp3_champion with trainer.deterministic=true stopped by SIGTERM inside an epoch and rerun,
            against the same run never stopped: bit-identical or the largest difference
  arc       the champion at the public size on data=arc_full: training tokens/s against the throughput
            benchmark's hand-written loop, peak memory; eval.py's time for the 419 held-out outputs x 8 views
  ttt       test-time training on ARC-AGI-1 evaluation tasks: seconds a task, the ARC Prize score
  video     MAGVIT at 16x64x64 and MAGVIT-v2 at 17x64x64: training steps/s, peak memory
  ddp       trainer=ddp on one device starts and finishes

Each command runs as a subprocess with the time left to its part (`--budget` seconds in all, shared out by
LIMITS), so one that hangs costs its part, not the others. Writes DIR/figures.json (rewritten after every
part: a run cut short still leaves what it measured) and DIR/log.txt (each command, its exit code, its
seconds and its output's tail). Exit 0 when every part finished, 1 otherwise.

`--fit OVERRIDE...` (used by the parts, in their subprocess): one training through train.py's code path in
this process, then one JSON line of steps, seconds and peak GPU memory.
"""

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))  # the checkout's package, installed or not (the GPU machine's is not)
ARC_SCRIPTS = ROOT / "src" / "experiments" / "families" / "arc" / "scripts"
LIMITS = {"families": 150, "resume": 60, "arc": 150, "ttt": 45, "video": 45, "ddp": 30}  # seconds, on an H100
PUBLIC = ["model.d_model=160", "model.decoder_layers=3", "model.d_ff=640"]
QUIET = ["logger=none", "trainer.enable_progress_bar=false"]

# What differs between the GPU and the CPU path: the trainer and the sizes.
SIZES = {
    "cuda": {
        "trainer": ["trainer=gpu"],
        "family": {"ternary_v5_5": [], "exp3_champion": [], "magvit": [], "magvit_v2": []},  # their CPU sizes
        "resume": ["data=arc_small", "trainer.max_epochs=4"],
        "arc": ["data=arc_full", "data.batch_size=8", *PUBLIC],
        "arc_bench": ["--epochs=1", "--repeats=1"],
        "ttt": ["data.split=subset", "data.max_tasks=20", "data.max_side=null", "task.ttt.steps=32"],
        "magvit": ["data.frames=16", "data.size=64", "data.train_clips=64"],
        "magvit_v2": ["data.frames=17", "data.size=64", "data.train_clips=64"],
        "ddp": ["trainer=ddp", "trainer.accelerator=gpu", "trainer.devices=1"],
    },
    "cpu": {
        "trainer": ["trainer=cpu"],
        "family": {
            "ternary_v5_5": ["data.batch_size=2048", "task.coverage_samples=2000"],
            "exp3_champion": ["data=arc_tiny", "data.batch_size=4"],
            "magvit": ["data.size=8", "data.frames=4", "data.train_clips=8", "data.val_clips=4", "data.batch_size=4"],
            "magvit_v2": [
                "data.size=8",
                "data.frames=5",
                "data.train_clips=8",
                "data.val_clips=4",
                "data.batch_size=4",
            ],
        },
        "resume": ["data=arc_tiny", "data.batch_size=2", "trainer.max_epochs=3"],
        "arc": ["data=arc_tiny", "data.batch_size=4", "model.d_model=32", "model.d_ff=64"],
        "arc_bench": ["--epochs=1", "--repeats=1"],
        "ttt": ["data.max_tasks=2", "task.ttt.steps=2"],
        "magvit": ["data.frames=4", "data.size=16", "data.train_clips=8", "data.val_clips=4", "data.batch_size=4"],
        "magvit_v2": ["data.frames=5", "data.size=16", "data.train_clips=8", "data.val_clips=4", "data.batch_size=4"],
        "ddp": ["trainer=ddp", "trainer.devices=1"],
    },
}


class Deadline(Exception):
    """A part's time ran out."""


class Skipped(Exception):
    """A part that cannot run (what it needs is missing)."""


class Check:
    """The shared state of one gpu_check run: where it writes, its sizes, its log and its figures."""

    def __init__(self, out: Path, device: str, launch=None):
        self.out, self.device, self.sizes = out, device, SIZES[device]
        self.launch = launch or subprocess_run  # tests/test_gpu_check.py runs the programs in its own process
        self.work = out / "work"
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = open(out / "log.txt", "a", buffering=1)
        self.figures = {
            "device": device_name(device),
            "torch": torch_version(),
            "started": now(),
            "parts": earlier_parts(out / "figures.json"),
        }
        self.part_end = 0.0
        self.arc_run: Path | None = None  # the arc part's public-size run, which the ttt part fine-tunes

    def run(self, *args: str, env: dict | None = None, stop_when=None) -> tuple[int, str]:
        """One command, cut at its part's deadline (then Deadline); (exit code, output). `stop_when`: SIGTERM
        the command once it returns True (a run stopped mid-epoch)."""
        left = self.part_end - time.monotonic()
        if left <= 1:
            raise Deadline()
        self.log.write(f"\n$ {' '.join([sys.executable, *args])}\n")
        t0 = time.monotonic()
        launch = self.launch if stop_when is None else subprocess_run
        code, output = launch(list(args), self.work, {**os.environ, **(env or {})}, left, stop_when)
        if code is None:
            self.log.write(f"[killed at its part's time limit after {time.monotonic() - t0:.0f} s]\n{tail(output)}\n")
            raise Deadline()
        self.log.write(f"[exit {code} after {time.monotonic() - t0:.1f} s]\n{tail(output)}\n")
        return code, output

    def train(self, experiment: str, *overrides: str, **kwargs) -> tuple[int, str, Path | None]:
        rc, output = self.run(
            str(ROOT / "train.py"), f"experiment={experiment}", *self.sizes["trainer"], *QUIET, *overrides, **kwargs
        )
        found = run_dir(output)
        return rc, output, found and self.work / found

    def save(self) -> None:
        (self.out / "figures.json").write_text(json.dumps(self.figures, indent=2) + "\n")


def subprocess_run(args: list[str], cwd: Path, env: dict, timeout: float, stop_when=None) -> tuple[int | None, str]:
    """`python ARGS` in its own process group: (exit code, stdout and stderr), the code None when it ran past
    `timeout` (then the whole group is killed). `stop_when`: SIGTERM it once that returns True."""
    t0 = time.monotonic()
    with tempfile.TemporaryFile("w+") as out:  # a file, not a pipe: a talkative command never blocks on it
        proc = subprocess.Popen(
            [sys.executable, *args],
            cwd=cwd,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        if stop_when is not None:
            while not stop_when() and proc.poll() is None and time.monotonic() - t0 < timeout:
                time.sleep(0.05)
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=max(1.0, timeout - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            code = None
        out.seek(0)
        return code, out.read()


def earlier_parts(path: Path) -> dict:
    """The parts an earlier call into the same folder measured (a part rerun with --parts replaces its own)."""
    if not path.is_file() or path.stat().st_size > 1 << 20:
        return {}
    try:
        parts = json.loads(path.read_text()).get("parts", {})
    except (ValueError, AttributeError):
        return {}
    return parts if isinstance(parts, dict) else {}


def tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.splitlines()[-lines:])


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S%z")


def device_name(device: str) -> str:
    import torch

    return torch.cuda.get_device_name(0) if device == "cuda" else f"CPU, {os.cpu_count()} cores"


def torch_version() -> str:
    import torch

    return torch.__version__


def run_dir(output: str) -> Path | None:
    """The run directory train.py names in its output ('Run directory: PATH'), relative to the work folder."""
    found = re.findall(r"^Run directory: (\S+)", output, re.M)
    return Path(found[-1]) if found else None


def figure(name: str, output: str) -> float | None:
    """`name=<number>` from a benchmark's output."""
    found = re.findall(rf"\b{re.escape(name)}=([-0-9.eE+]+)", output)
    return float(found[-1]) if found else None


def stored(run: Path) -> dict:
    """A run's last checkpoint, read as every program reads one (bounded, weights only)."""
    from experiments.checkpoint.io import load_checkpoint

    return load_checkpoint(run / "checkpoints" / "last.ckpt")


def verify_stages(check: Check, run: Path) -> dict:
    rc, _ = check.run(str(ROOT / "verify.py"), f"ckpt={run}")
    reports = sorted((run / "checkpoints" / "verification").glob("*.json"))
    stages = json.loads(reports[-1].read_text())["stages"] if reports else []
    return {"verify_rc": rc, "stages": {s["name"]: s["status"] for s in stages}}


# ---- the parts ----


def families(check: Check) -> dict:
    result = {}
    for experiment, sizes in check.sizes["family"].items():
        t0 = time.monotonic()
        rc, output, run = check.train(experiment, "trainer.max_epochs=2", "checkpoint.every_n_epochs=1", *sizes)
        entry = result[experiment] = {"train_rc": rc, "train_s": round(time.monotonic() - t0, 1)}
        if rc == 0 and run is not None:
            entry["precision"] = stored(run)["config"]["trainer"]["precision"]
            entry.update(verify_stages(check, run))
        check.save()
    return result


def resume(check: Check) -> dict:
    """The same run twice: once to its end, once SIGTERMed just after its first checkpoint (inside its second
    epoch) and rerun; the two final states compared tensor by tensor."""
    args = ["exp3_champion", "+trainer.deterministic=true", "checkpoint.last_every_n_epochs=1", *check.sizes["resume"]]
    env = {"CUBLAS_WORKSPACE_CONFIG": ":4096:8"}  # what torch's deterministic cuBLAS asks for
    runs = {side: check.work / "resume" / side for side in ("reference", "stopped")}
    rc, _, reference = check.train(*args, f"paths.outputs={runs['reference']}", env=env)
    if rc != 0 or reference is None:
        return {"reference_rc": rc}
    # SIGTERM half an epoch after the first checkpoint appears (the reference's epochs timed it): inside the
    # second epoch, not in the first one's closing work, however slow the machine is
    epoch_s = sorted(row["time/epoch_s"] for row in stored(reference)["history"])[0]
    seen_at = None

    def mid_second_epoch() -> bool:
        nonlocal seen_at
        if seen_at is None and any(runs["stopped"].glob("*/*/checkpoints/last.ckpt")):
            seen_at = time.monotonic()
        return seen_at is not None and time.monotonic() - seen_at >= epoch_s / 2

    stop_rc, _, _ = check.train(*args, f"paths.outputs={runs['stopped']}", env=env, stop_when=mid_second_epoch)
    (stopped,) = [p.parents[1] for p in runs["stopped"].glob("*/*/checkpoints/last.ckpt")]
    at = stored(stopped)
    rerun_rc, _, _ = check.train(*args, f"paths.outputs={runs['stopped']}", env=env)
    result = {
        "stop_rc": stop_rc,
        "stopped_at_step": at["global_step"],
        "stopped_in_epoch": at["epoch"] + 1,
        "stopped_mid_epoch": bool(at["run"].get("preempted")),
        "rerun_rc": rerun_rc,
    }
    if rerun_rc == 0:
        result.update(compared(stored(reference), stored(stopped)))
    return result


def compared(a: dict, b: dict) -> dict:
    """Weights and optimizer state of two checkpoints: bit-identical, or the largest difference."""
    import torch

    pairs = [(a["state_dict"][k], b["state_dict"][k]) for k in a["state_dict"]]
    for sa, sb in zip(a["optimizer_states"], b["optimizer_states"]):
        pairs += [
            (sa["state"][i][k], sb["state"][i][k])
            for i in sa["state"]
            for k in sa["state"][i]
            if isinstance(sa["state"][i][k], torch.Tensor)
        ]
    largest = max(float((x.double() - y.double()).abs().max()) if x.numel() else 0.0 for x, y in pairs)
    return {"bit_identical": all(torch.equal(x, y) for x, y in pairs), "largest_difference": largest}


def arc(check: Check) -> dict:
    """The champion trained for one epoch at the public size, then eval.py on its 419 held-out outputs with 8
    views (the ttt part fine-tunes the same run); last, training throughput against the hand-written loop."""
    result = {}
    rc, _, run = check.train(
        "exp3_champion",
        *check.sizes["arc"],
        "trainer.max_epochs=1",
        "task.eval_augmentations=1",
        f"paths.outputs={check.work / 'arc'}",
    )
    result["train_rc"] = rc
    if rc == 0 and run is not None:
        check.arc_run = run
        t0 = time.monotonic()
        rc, _ = check.run(str(ROOT / "eval.py"), f"ckpt={run}", "task.eval_augmentations=8")
        result.update(
            eval_rc=rc, eval_s=round(time.monotonic() - t0, 1), eval_outputs=outputs_in(newest(run, "per_output.csv"))
        )
    check.figures["parts"]["arc"].update(result)
    check.save()
    sizes = [*check.sizes["trainer"], *check.sizes["arc"]]
    rc, output = check.run(str(ARC_SCRIPTS / "bench_arc_throughput.py"), *check.sizes["arc_bench"], *sizes)
    speeds = re.search(r"ours=([\d,]+) tokens/s hand=([\d,]+) tokens/s", output)
    result.update(
        bench_rc=rc, ratio_vs_hand_written=figure("ratio", output), peak_memory_gib=figure("peak_memory_gib", output)
    )
    if speeds:
        result["tokens_per_s"], result["hand_written_tokens_per_s"] = (int(g.replace(",", "")) for g in speeds.groups())
    return result


def newest(run: Path, name: str) -> Path | None:
    found = sorted((run / "eval").glob(f"**/{name}"), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def outputs_in(per_output: Path | None) -> int | None:
    return None if per_output is None else len(per_output.read_text().splitlines()) - 1


def ttt(check: Check) -> dict:
    """eval.py with test-time training on ARC-AGI-1 evaluation tasks, scored by the independent scorer."""
    earlier = sorted((check.work / "arc").glob("*/*/checkpoints/last.ckpt"))  # an earlier call's (--parts ttt)
    run = check.arc_run or (earlier[-1].parents[1] if earlier else None)
    if run is None:
        raise Skipped("no run to fine-tune: the arc part trains it")
    chosen = dict(a.split("=", 1) for a in check.sizes["ttt"] if a.startswith("data."))
    rc, _ = check.run(str(ROOT / "eval.py"), f"ckpt={run}", "data.tasks_from=evaluation", *check.sizes["ttt"])
    metrics = newest(run, "metrics.json")
    result = {"eval_rc": rc}
    if rc == 0 and metrics is not None:
        figures = json.loads(metrics.read_text())["metrics"]
        result["ttt_s_per_task"] = figures.get("time/ttt_s_per_task")
        # the tasks eval.py chose, chosen again by the scorer
        side = chosen.get("data.max_side", stored(run)["config"]["data"].get("max_side"))
        count, side = chosen["data.max_tasks"], 0 if side in (None, "null") else side
        rc, output = check.run(
            str(ARC_SCRIPTS / "score_submission.py"),
            str(metrics.parent / "submission.json"),
            "--tasks-from=evaluation",
            f"--max-tasks={count}",
            f"--max-side={side}",
        )
        result.update({k: figure(k, output) for k in ("prize_score", "solved", "outputs", "missing")})
    return result


def video(check: Check) -> dict:
    """Training steps/s and peak memory of each video model at its seed's clip size."""
    result = {}
    for experiment in ("magvit", "magvit_v2"):
        rc, output = check.run(
            str(Path(__file__)),
            "--fit",
            f"experiment={experiment}",
            *check.sizes["trainer"],
            *check.sizes[experiment],
            "trainer.max_epochs=1",
        )
        lines = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
        result[experiment] = {"rc": rc, **(lines[-1] if lines else {})}
        check.save()
    return result


def ddp(check: Check) -> dict:
    rc, _, run = check.train(
        "ternary_v5_5", "trainer.max_epochs=2", *check.sizes["ddp"], *check.sizes["family"]["ternary_v5_5"]
    )
    return {"rc": rc, "finished": bool(run and stored(run)["run"]["finished"])}


PARTS = {"families": families, "resume": resume, "arc": arc, "ttt": ttt, "video": video, "ddp": ddp}


def fit(overrides: list[str]) -> None:
    """One training through train.py's code path in this process; prints its steps, seconds and peak memory."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import tempfile

    import torch
    from bench_train_overhead import ours
    from hydra import compose, initialize_config_dir

    from experiments.cli import CONF_DIR, quiet_libraries
    from experiments.config_schema import register

    register()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                *overrides,
                "+trainer.limit_val_batches=0",
                "checkpoint.save_top_k=0",
                f"paths.outputs={tmp}",
                *QUIET,
            ],
        )
        steps, seconds, _ = ours(cfg, Path(tmp) / "run")
    peak = torch.cuda.max_memory_allocated() / 2**30 if torch.cuda.is_available() else None
    print(
        json.dumps(
            {
                "steps": steps,
                "seconds": round(seconds, 3),
                "steps_per_s": round(steps / seconds, 3),
                "peak_memory_gib": peak and round(peak, 3),
            }
        )
    )


def main(argv: list[str] | None = None, launch=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="folder for figures.json, log.txt and the runs")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda")
    parser.add_argument("--budget", type=float, default=470, help="seconds for all the parts together")
    parser.add_argument("--parts", default=",".join(LIMITS), help="comma-separated, in the order given")
    parser.add_argument("--fit", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.fit is not None:
        return fit(args.fit) or 0
    if args.out is None:
        parser.error("--out DIR is required")
    parts = [p for p in args.parts.split(",") if p]
    unknown = [p for p in parts if p not in LIMITS]
    if unknown:
        parser.error(f"unknown part(s) {', '.join(unknown)}; the parts: {', '.join(LIMITS)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            print("error: no CUDA device here; the same parts at tiny sizes on the CPU: --device cpu", file=sys.stderr)
            return 2
    check = Check(args.out, args.device, launch)
    scale = args.budget / sum(LIMITS[p] for p in parts)
    for name in parts:
        t0 = time.monotonic()
        check.part_end = t0 + LIMITS[name] * scale
        entry = check.figures["parts"][name] = {"status": "running"}
        check.save()
        try:
            entry.update(PARTS[name](check))
            entry["status"] = "done"
        except Deadline:
            entry["status"] = f"stopped at its limit ({LIMITS[name] * scale:.0f} s)"
        except Skipped as e:
            entry["status"] = f"skipped: {e}"
        except Exception as e:  # a part that breaks must not take the later parts with it
            entry.update(status="failed", error=f"{type(e).__name__}: {e}")
        entry["seconds"] = round(time.monotonic() - t0, 1)
        check.save()
        print(f"{name}: {entry['status']} in {entry['seconds']} s", flush=True)
    check.figures["finished"] = now()
    check.save()
    return 0 if all(check.figures["parts"][name]["status"] == "done" for name in parts) else 1


if __name__ == "__main__":
    sys.exit(main())
