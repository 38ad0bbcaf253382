"""Paired comparisons: the statistics against hand-computed cases, and a real 2-preset x 2-seed ARC sweep
whose comparisons.csv holds what its runs' per_output.csv files give; verify.py reports arc/test_nll
beside the untrained control's."""

import csv
import json
import math

import numpy as np
import pytest

from conftest import in_process, one_error_line, run_program
from experiments.comparisons import compare, mcnemar_exact, task_bootstrap_interval, verdict


# ---- statistics, by hand ----
def test_interval_of_two_tasks_spans_both_and_the_mean_is_over_outputs():
    # task a: three outputs, each 1 better; task b: one output, no change. Mean over the 4 outputs: 0.75
    # (not 0.5, the mean of the task means). Resamples of 2 tasks: (a, a) -> 1, (b, b) -> 0, (a, b) -> 0.75,
    # with probability 1/4, 1/4, 1/2: the 2.5th and 97.5th percentiles are 0 and 1.
    row = compare(
        {("a", 0): 0, ("a", 1): 0, ("a", 2): 0, ("b", 0): 0},
        {("a", 0): 1, ("a", 1): 1, ("a", 2): 1, ("b", 0): 0},
        higher_is_better=True,
        binary=False,
    )
    assert row["mean_diff"] == 0.75 and (row["ci_low"], row["ci_high"]) == (0.0, 1.0)
    assert row["n_outputs"] == 4 and row["p_value"] is None and row["verdict"] == "not supported"


def test_interval_of_three_tasks_where_one_carries_the_gain():
    # differences 0, 0, 3 (one output per task). A resample's mean is k, the number of draws of the third
    # task: P(k=0) = 8/27 > 2.5%, P(k <= 2) = 26/27 < 97.5%: the interval is [0, 3] although the mean is 1.
    low, high = task_bootstrap_interval(np.array([0.0, 0.0, 3.0]), np.array(["x", "y", "z"]))
    assert (low, high) == (0.0, 3.0)


def test_interval_when_every_task_agrees_is_that_value_and_one_task_has_none():
    low, high = task_bootstrap_interval(np.array([0.25, 0.25, 0.25, 0.25]), np.array(["a", "a", "b", "c"]))
    assert (low, high) == (0.25, 0.25)
    assert all(math.isnan(v) for v in task_bootstrap_interval(np.array([1.0, 2.0]), np.array(["a", "a"])))


def test_interval_resamples_tasks_not_outputs():
    # 20 tasks, each with 10 outputs that all move together: +1 in 12 tasks, -1 in 8. Resampling outputs
    # would treat 200 outputs as independent and give an interval about sqrt(10) times narrower.
    tasks = np.repeat(np.arange(20), 10).astype(str)
    diffs = np.repeat(np.array([1.0] * 12 + [-1.0] * 8), 10)
    low, high = task_bootstrap_interval(diffs, tasks)
    half_width_if_tasks = 1.96 * np.std(np.array([1.0] * 12 + [-1.0] * 8)) / np.sqrt(20)  # 0.429
    assert low < 0.2 - 0.8 * half_width_if_tasks and high > 0.2 + 0.8 * half_width_if_tasks
    assert low < 0 < high  # 12 of 20 tasks better is no evidence


def test_mcnemar_exact_p_value_of_a_two_by_two_table():
    # 8 outputs right only under the variant, 2 only under the baseline, 5 right under both, 5 under neither:
    # p = 2 * P(X <= 2), X ~ Binomial(10, 1/2) = 2 * (1 + 10 + 45) / 1024 = 0.109375
    baseline = np.array([0] * 8 + [1] * 2 + [1] * 5 + [0] * 5)
    variant = np.array([1] * 8 + [0] * 2 + [1] * 5 + [0] * 5)
    assert mcnemar_exact(baseline, variant) == pytest.approx(0.109375, abs=1e-12)
    assert mcnemar_exact(variant, baseline) == pytest.approx(0.109375, abs=1e-12)
    assert mcnemar_exact(np.array([1, 0]), np.array([1, 0])) == 1.0  # no discordant output
    assert mcnemar_exact(np.zeros(6), np.ones(6)) == pytest.approx(2 / 64, abs=1e-12)


def test_each_verdict():
    assert verdict(0.01, 0.2, higher_is_better=True) == "helps"
    assert verdict(-0.2, -0.01, higher_is_better=True) == "hurts"
    assert verdict(-0.2, -0.01, higher_is_better=False) == "helps"  # e.g. bits per token went down
    assert verdict(0.01, 0.2, higher_is_better=False) == "hurts"
    assert verdict(-0.01, 0.2, higher_is_better=True) == "not supported"
    assert verdict(0.0, 0.2, higher_is_better=True) == "not supported"  # touching 0 does not exclude it
    assert verdict(float("nan"), float("nan"), higher_is_better=True) == "not supported"


def test_binary_metric_gets_a_p_value():
    base = {("a", 0): 0, ("b", 0): 1, ("c", 0): 0}
    row = compare(base, {("a", 0): 1, ("b", 0): 1, ("c", 0): 1}, higher_is_better=True, binary=True)
    assert row["p_value"] == pytest.approx(0.5) and row["mean_diff"] == pytest.approx(2 / 3)


# ---- a real sweep ----
def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def seed_mean(runs: list[list[dict]], column: str) -> dict:
    """{(task, index): the column's mean over the runs}, computed here from the files, not by comparisons.py"""
    return {(x["task"], x["index"]): np.mean([float(run[i][column]) for run in runs]) for i, x in enumerate(runs[0])}


@pytest.fixture(scope="module")
def arc_sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("arc_sweep")
    r = in_process(
        "train.py",
        "-m",
        "experiment=exp0_encoder_decoder,exp3_champion",
        "seed=0,1",
        "data=arc_tiny",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=8",
        "validation.preflight=[config]",
        cwd=root,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (directory,) = (root / "outputs" / "sweeps").iterdir()
    return root, directory, r.stdout


@pytest.mark.slow  # a real run trained for it
def test_sweep_writes_per_output_records_and_comparisons_that_match_them(arc_sweep):
    import torch

    root, directory, stdout = arc_sweep
    jobs = [json.loads(p.read_text()) for p in sorted((directory / "jobs").glob("*.json"))]
    assert len(jobs) == 4
    per_output = {}
    for job in jobs:
        run_dir = root / job["run_dir"]  # relative to the sweep's working directory, or absolute
        rows = read_rows(f"{run_dir}/per_output.csv")
        assert list(rows[0]) == [
            "task",
            "index",
            "exact@1",
            "exact@2",
            "right_shape",
            "cell_accuracy",
            "nll_bits",
            "tokens",
            "views",
            "ranking",
            "ttt_steps",
            "candidates",
        ]
        assert len(rows) == 5  # arc_tiny: 5 held-out outputs
        final = torch.load(f"{run_dir}/checkpoints/last.ckpt", weights_only=True)["history"][-1]
        assert np.mean([float(x["nll_bits"]) for x in rows]) == pytest.approx(final["arc/test_nll"], rel=1e-9)
        assert np.mean([float(x["cell_accuracy"]) for x in rows]) == pytest.approx(final["arc/cell_accuracy"], rel=1e-9)
        per_output.setdefault(job["experiment"], []).append(rows)

    table = read_rows(directory / "comparisons.csv")
    assert [c for c in table[0]] == [
        "metric",
        "baseline",
        "variant",
        "mean_diff",
        "ci_low",
        "ci_high",
        "n_outputs",
        "n_seeds",
        "p_value",
        "verdict",
    ]
    group = "data=arc_tiny experiment={} trainer.max_epochs=8".format
    assert [(r["metric"], r["baseline"], r["variant"]) for r in table] == [
        (m, group("exp0_encoder_decoder"), group("exp3_champion"))  # no chain declared: the sweep's order
        for m in ("arc/exact_output@2", "arc/cell_accuracy", "arc/test_nll")
    ]  # exact@2 first: the question asked
    for r, column in zip(table, ("exact@2", "cell_accuracy", "nll_bits")):
        base, var = (seed_mean(per_output[e], column) for e in ("exp0_encoder_decoder", "exp3_champion"))
        assert float(r["mean_diff"]) == pytest.approx(np.mean([var[k] - base[k] for k in base]), rel=1e-12, abs=1e-15)
        assert float(r["ci_low"]) <= float(r["mean_diff"]) <= float(r["ci_high"])
        assert r["n_outputs"] == "5" and r["n_seeds"] == "2"
        assert (r["p_value"] != "") == (column == "exact@2")
        assert r["verdict"] in ("helps", "hurts", "not supported")
    assert (directory / "comparisons.png").stat().st_size > 5000
    summary = (directory / "summary.md").read_text()
    assert "## Paired comparisons" in summary and "| arc/test_nll | exp0_encoder_decoder | exp3_champion |" in summary
    assert "Paired comparisons:" in stdout
    # every metric ARC is judged on has its mean +- std, 7 to a table (test_nll and train_exact come 8th and 9th)
    means = summary.split("## Mean +- std")[1].split("## Jobs")[0]
    headers = [line for line in means.splitlines() if line.startswith("| group | n | seeds |")]
    assert [len(h.split("|")) - 5 for h in headers] == [7, 2], headers
    from experiments.families.arc.task import ArcLightningTask

    judged = {ArcLightningTask.primary_metric, *ArcLightningTask.higher_is_better, *ArcLightningTask.lower_is_better}
    judged.discard("arc/ttt_train_exact")  # only with test-time training, which these presets do not use
    assert {cell.strip() for h in headers for cell in h.split("|")[4:-1]} == judged
    assert headers[1] in stdout and {"arc/test_nll", "arc/train_exact"} <= set(headers[1].replace(" ", "").split("|"))


@pytest.mark.slow  # a real run trained for it
def test_verify_reports_test_nll_beside_the_untrained_control(arc_sweep, tmp_path):
    root, directory, _ = arc_sweep
    job = json.loads((directory / "jobs" / "0003.json").read_text())
    r = run_program("verify.py", f"ckpt={root / job['run_dir']}", "stages=[metrics]", cwd=root)
    assert "arc/test_nll" in r.stdout, r.stdout + r.stderr
    (report,) = (root / job["run_dir"] / "checkpoints" / "verification").glob("*.json")
    metrics = {s["name"]: s for s in json.loads(report.read_text())["stages"]}["metrics"]["metrics"]
    nll = metrics["arc/test_nll"]
    assert nll["untrained_control"] > nll["trained"] and "clearly_better" in nll  # judged, lower is better
    # an untrained model spreads its probability: near log2(15) = 3.9 bits per token
    assert 2.5 < nll["untrained_control"] < 6


def test_nll_bits_by_hand():
    import torch

    from experiments.families.arc.metrics import nll_bits

    probs = torch.tensor([0.5, 0.25, 0.25])
    logits = probs.log().expand(2, 3, 3).clone()
    targets = torch.tensor([[0, 1, 2], [1, 9, 9]])  # 9: padding, not counted
    bits, tokens = nll_bits(logits, targets, pad=9)
    assert tokens.tolist() == [3, 1]
    assert bits.tolist() == pytest.approx([(1 + 2 + 2) / 3, 2.0], abs=1e-6)
    uniform, _ = nll_bits(torch.zeros(1, 4, 15), torch.tensor([[3, 0, 14, 7]]), pad=-100)
    assert uniform.item() == pytest.approx(math.log2(15), abs=1e-6)


# ---- eval.py over a sweep: each job's last checkpoint, then the same summary of those evaluations ----
EVALUATION = "task.eval_augmentations=2"


def jobs_of(directory):
    return [json.loads(p.read_text()) for p in sorted((directory / "jobs").glob("*.json"))]


@pytest.mark.slow  # a real run trained for it
def test_eval_of_a_sweep_evaluates_each_job_compares_them_and_resumes(arc_sweep):
    root, directory, _ = arc_sweep
    r = run_program("eval.py", f"ckpt={directory}", EVALUATION, cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert [line.split(" (")[0] for line in r.stdout.splitlines() if line.startswith("[")] == [
        f"[{n}/4] job {n - 1}" for n in range(1, 5)
    ]
    out = directory / "eval" / EVALUATION
    per_output, metrics = {}, {}
    for job in jobs_of(directory):
        folder = root / job["run_dir"] / "eval" / EVALUATION / "last"
        rows = read_rows(folder / "per_output.csv")
        assert len(rows) == 5 and {x["views"] for x in rows} == {"2"}  # the evaluation's setting, not the run's
        per_output.setdefault(job["experiment"], []).append(rows)
        metrics[str(job["num"])] = json.loads((folder / "metrics.json").read_text())["metrics"]
    summary = read_rows(out / "summary.csv")
    assert len(summary) == 4
    for row in summary:  # each job's figures are its evaluation's, not its training's
        assert row["status"] == "finished"
        assert float(row["arc/exact_output@2"]) == metrics[row["job"]]["arc/exact_output@2"]
        assert float(row["arc/test_nll"]) == pytest.approx(metrics[row["job"]]["arc/test_nll"], rel=1e-12)
    table = read_rows(out / "comparisons.csv")
    assert [r["metric"] for r in table] == ["arc/exact_output@2", "arc/cell_accuracy", "arc/test_nll"]
    for r, column in zip(table, ("exact@2", "cell_accuracy", "nll_bits")):
        base, var = (seed_mean(per_output[e], column) for e in ("exp0_encoder_decoder", "exp3_champion"))
        assert float(r["mean_diff"]) == pytest.approx(np.mean([var[k] - base[k] for k in base]), rel=1e-12, abs=1e-15)
    assert f"Sweep {directory.name}: eval.py's evaluation {EVALUATION}" in (out / "summary.md").read_text()
    assert (out / "comparisons.png").stat().st_size > 5000

    # rerun: evaluations of the checkpoints as they are now are kept; one whose record names another
    # checkpoint (its sha256) is evaluated again, to the same figures
    stale = root / jobs_of(directory)[2]["run_dir"] / "eval" / EVALUATION / "last" / "metrics.json"
    record = json.loads(stale.read_text())
    record["checkpoint"]["sha256"] = "0" * 64
    stale.write_text(json.dumps(record))
    kept = {
        n: (root / j["run_dir"] / "eval" / EVALUATION / "last" / "metrics.json").read_bytes()
        for n, j in enumerate(jobs_of(directory))
        if n != 2
    }
    before = (out / "comparisons.csv").read_text()
    r = run_program("eval.py", f"ckpt={directory}", EVALUATION, cwd=root)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    lines = [line for line in r.stdout.splitlines() if line.startswith("[")]
    assert [line.endswith(", kept") for line in lines] == [True, True, False, True]
    for n, content in kept.items():
        assert (
            root / jobs_of(directory)[n]["run_dir"] / "eval" / EVALUATION / "last" / "metrics.json"
        ).read_bytes() == content
    assert json.loads(stale.read_text())["metrics"] == metrics["2"]
    assert (out / "comparisons.csv").read_text() == before
    # summarize.py rebuilds the same summary; a misspelt evaluation is refused, naming those there are
    (out / "comparisons.csv").unlink()
    r = in_process("scripts/summarize.py", str(directory), f"--eval={EVALUATION}", cwd=root)
    assert r.returncode == 0 and (out / "comparisons.csv").read_text() == before, r.stdout + r.stderr
    r = in_process("scripts/summarize.py", str(directory), "--eval=task.eval_augmentatons=2", cwd=root)
    assert r.returncode == 2 and one_error_line(r) == (
        f"error: no job of {directory} has an evaluation task.eval_augmentatons=2 (<run dir>/eval/"
        f"task.eval_augmentatons=2); there are: {EVALUATION}"
    )
    assert not (directory / "eval" / "task.eval_augmentatons=2").exists()


@pytest.mark.slow  # a real run trained for it
def test_eval_of_a_sweep_does_not_write_where_a_crafted_job_record_points(arc_sweep, tmp_path):
    import shutil

    root, directory, _ = arc_sweep
    crafted = root / "outputs" / "sweeps" / "crafted"
    shutil.copytree(directory, crafted, ignore=shutil.ignore_patterns("eval"))
    elsewhere = tmp_path / "elsewhere"  # a finished run, but outside the sweep's outputs root
    shutil.copytree(root / jobs_of(directory)[0]["run_dir"], elsewhere, ignore=shutil.ignore_patterns("eval"))
    record = json.loads((crafted / "jobs" / "0000.json").read_text())
    record["run_dir"] = str(elsewhere)
    (crafted / "jobs" / "0000.json").write_text(json.dumps(record))
    r = run_program("eval.py", f"ckpt={crafted}", "task.eval_augmentations=3", cwd=root)
    assert r.returncode == 2
    why = f"its run directory {elsewhere} is outside the sweep's outputs root"
    assert one_error_line(r).startswith(f"error: 1 of 4 jobs not evaluated: job 0: {why}")
    assert not (elsewhere / "eval").exists()
    assert r.stdout.count("Done in") == 3
    rows = read_rows(crafted / "eval" / "task.eval_augmentations=3" / "summary.csv")
    assert [(x["status"], x["error"].startswith(why)) for x in rows] == [("not evaluated", True)] + [
        ("finished", False)
    ] * 3
    # an evaluation's files are data: a figure too large for a float and a damaged row are left out, no traceback
    job1 = root / jobs_of(crafted)[1]["run_dir"] / "eval" / "task.eval_augmentations=3" / "last"
    record = json.loads((job1 / "metrics.json").read_text())
    record["metrics"]["arc/test_nll"] = 10**400  # a JSON integer; float() of it overflows
    (job1 / "metrics.json").write_text(json.dumps(record))
    with open(job1 / "per_output.csv", "a") as f:
        f.write("x,not a number,1,1,1,1,1,1,1,poe,0,1\n")
    r = in_process("scripts/summarize.py", str(crafted), "--eval=task.eval_augmentations=3", cwd=root)
    assert r.returncode == 1 and "Traceback" not in r.stdout + r.stderr, r.stdout + r.stderr  # job 0: not evaluated
    row = read_rows(crafted / "eval" / "task.eval_augmentations=3" / "summary.csv")[1]
    assert row["status"] == "finished" and row["arc/test_nll"] == "" and row["arc/exact_output@2"] != ""
    # a sweep directory that is not <outputs>/sweeps/<id> has no outputs root to bound its jobs: refused
    moved = tmp_path / "moved"
    shutil.copytree(crafted, moved, ignore=shutil.ignore_patterns("eval"))
    r = run_program("eval.py", f"ckpt={moved}", "task.eval_augmentations=3", cwd=root)
    assert r.returncode == 2 and one_error_line(r).startswith(f"error: {moved} is not in a sweeps/ folder")
    r = run_program("eval.py", f"ckpt={crafted}", "out=somewhere", cwd=root)
    assert r.returncode == 2 and "out= cannot be given with a sweep directory" in r.stderr
