"""eval.py: a checkpoint on other data than its run's, through the same command a user types. ARC on a
task set of its own (files in ARC's JSON format) checked by an independent scorer; bad input refused.
predict.py and load_run on the same tasks without their test outputs: the same attempts."""

import csv
import json
import subprocess

import pytest

from conftest import ROOT, in_process, one_error_line, run_program

pytestmark = pytest.mark.slow  # an ARC run trained, then evaluated on other task sets and scored

ARC_RUN = [
    "experiment=exp0_encoder_decoder",
    "data=arc_tiny",
    "data.batch_size=4",
    "data.dihedral=false",
    "data.colours=false",
    "trainer.max_epochs=60",
    "task.eval_every_n_epochs=60",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def run_eval(*args: str, cwd) -> subprocess.CompletedProcess:
    return run_program("eval.py", *args, cwd=cwd)


@pytest.fixture(scope="module")
def arc_run(tmp_path_factory):
    """exp0 trained on the 4 tiny tasks' demonstrations until it reproduces most of them."""
    root = tmp_path_factory.mktemp("arc_eval")
    r = in_process("train.py", *ARC_RUN, cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (root / "outputs" / "exp0_encoder_decoder").iterdir()
    return root, run


def task_set(folder):
    """A task set unlike the run's: each tiny task asked its own demonstrations (which the model learnt,
    so some answers are right) and one ARC-AGI-1 evaluation task it never saw, as ARC JSON files."""
    from experiments.families.arc.data import load_tasks, select

    training, evaluation = load_tasks("arcagi")
    grid = lambda g: [[int(c) for c in row] for row in g]  # noqa: E731
    pairs = lambda ps: [{"input": grid(i), "output": grid(o)} for i, o in ps]  # noqa: E731
    folder.mkdir()
    truths = {}
    for t in select(training, 4, 6):
        truths[t.id] = pairs(t.train)
        (folder / f"{t.id}.json").write_text(json.dumps({"train": pairs(t.train), "test": pairs(t.train)}))
    unseen = select(evaluation, 1, 6)[0]
    truths[unseen.id] = pairs(unseen.test)
    (folder / f"{unseen.id}.json").write_text(json.dumps({"train": pairs(unseen.train), "test": pairs(unseen.test)}))
    return truths


def run_scorer(submission, *args) -> dict:
    """scripts/score_submission.py's main on a submission file (in this process: the script reads files, it
    starts nothing): its last line's figures."""
    import contextlib
    import importlib.util
    import io

    spec = importlib.util.spec_from_file_location(
        "score_submission", ROOT / "src/experiments/families/arc/scripts/score_submission.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = script.main([str(submission), "--max-tasks", "0", "--max-side", "0", *map(str, args)])
    assert code == 0, out.getvalue()
    return {k: float(v) for k, v in (item.split("=") for item in out.getvalue().strip().splitlines()[-1].split())}


def independent_score(submission: dict, truths: dict) -> dict:
    """ARC Prize scoring from the files alone: an output is solved when either attempt equals it."""
    solved = {
        (task, i): [att[f"attempt_{k}"] == truth["output"] for k in (1, 2)]
        for task, tests in truths.items()
        for i, (att, truth) in enumerate(zip(submission[task], tests))
    }
    assert all(len(submission[t]) == len(truths[t]) for t in truths) and set(submission) == set(truths)
    return solved


def test_arc_on_another_task_set_writes_what_an_independent_scorer_reads_the_same(arc_run, tmp_path):
    root, run = arc_run
    truths = task_set(tmp_path / "tasks")
    r = run_eval(
        f"ckpt={run}", f"data.folder={tmp_path / 'tasks'}", "data.max_side=null", "data.max_tasks=null", cwd=root
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (out,) = (run / "eval").glob("data.folder=*")
    out = out / "last"
    result = json.loads((out / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "per_output.csv")))
    solved = independent_score(json.loads((out / "submission.json").read_text()), truths)
    assert len(rows) == len(solved) == sum(len(v) for v in truths.values())
    for row in rows:
        at1, either = solved[(row["task"], int(row["index"]))]
        assert (int(row["exact@1"]), int(row["exact@2"])) == (int(at1), int(at1 or either)), row
    metrics = result["metrics"]
    assert metrics["arc/exact_output@2"] == pytest.approx(sum(any(s) for s in solved.values()) / len(solved))
    assert metrics["arc/exact_output@1"] == pytest.approx(sum(s[0] for s in solved.values()) / len(solved))
    assert 0 < metrics["arc/exact_output@2"] < 1, "some right and some wrong, or the comparison proves little"
    # the family's own scorer of submission files: the same figures; a task left out of the file scores 0
    score = lambda path: run_scorer(path, "--folder", tmp_path / "tasks")  # noqa: E731
    figures = score(out / "submission.json")
    assert figures["prize_score"] == pytest.approx(metrics["arc/prize_score"], abs=1e-6)
    assert (figures["solved"], figures["outputs"], figures["missing"]) == (
        sum(any(s) for s in solved.values()),
        len(solved),
        0,
    )
    submission = json.loads((out / "submission.json").read_text())
    dropped = max(submission, key=lambda t: sum(any(solved[(t, i)]) for i in range(len(truths[t]))))
    share = sum(any(solved[(dropped, i)]) for i in range(len(truths[dropped]))) / len(truths[dropped])
    (tmp_path / "partial.json").write_text(json.dumps({t: v for t, v in submission.items() if t != dropped}))
    partial = score(tmp_path / "partial.json")
    assert partial["missing"] == 1 and share > 0
    assert partial["prize_score"] == pytest.approx(figures["prize_score"] - share / len(truths), abs=1e-6)
    assert result["checkpoint"]["epoch"] == 60 and result["data"]["config"]["format"] == "encoder_decoder"
    # every held-out output drawn: 8 per page
    pages = sorted(p.name for p in out.glob("predictions*.png"))
    assert len(pages) == -(-len(rows) // 8) and pages[0] == "predictions.png"


def without_outputs(folder, into):
    """The task files of `folder` with their test outputs taken out: what a submission is made for."""
    into.mkdir()
    for f in folder.glob("*.json"):
        task = json.loads(f.read_text())
        task["test"] = [{"input": pair["input"]} for pair in task["test"]]
        (into / f.name).write_text(json.dumps(task))
    return into


def test_predict_on_tasks_without_outputs_gives_evals_attempts(arc_run, tmp_path):
    """Prediction is evaluation without the scoring: the same views, ranking and test-time training (given on
    the command) give the same two attempts per test input, whether the outputs are in the files or not; the
    Python API gives them too."""
    root, run = arc_run
    truths = task_set(tmp_path / "tasks")
    blind = without_outputs(tmp_path / "tasks", tmp_path / "blind")
    settings = ["task.eval_augmentations=2", "task.ranking=poe", "task.ttt.steps=2"]
    e = run_eval(
        f"ckpt={run}",
        f"data.folder={tmp_path / 'tasks'}",
        "data.max_side=null",
        "data.max_tasks=null",
        *settings,
        f"out={tmp_path / 'evaluated'}",
        cwd=root,
    )
    assert e.returncode == 0, e.stdout + e.stderr
    expected = json.loads((tmp_path / "evaluated" / "submission.json").read_text())
    refused = run_eval(
        f"ckpt={run}", f"data.folder={blind}", cwd=root
    )  # eval.py needs the outputs: it says where to go
    assert refused.returncode == 2 and "python predict.py ckpt=RUN input=PATH" in one_error_line(refused)
    p = in_process("predict.py", f"ckpt={run}", f"input={blind}", *settings, cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    (out,) = (run / "predict").glob("blind-*")
    submission = json.loads((out / "last" / "submission.json").read_text())
    assert submission == expected and set(submission) == set(truths)
    assert sum(len(v) for v in submission.values()) == sum(len(v) for v in truths.values())
    pages = sorted(p.name for p in (out / "last").glob("predictions*.png"))
    assert pages[0] == "predictions.png" and len(pages) == -(-sum(len(v) for v in truths.values()) // 8)
    record = json.loads((out / "last" / "prediction.json").read_text())
    assert record["task"]["settings"] == {"eval_augmentations": 2, "ranking": "poe", "ttt": {"steps": 2}}
    assert "without an output" in p.stdout and "test-time training" not in p.stderr
    # one task file alone, and the Python API (the same settings): the same attempts
    one = sorted(blind.glob("*.json"))[0]
    p = in_process("predict.py", f"ckpt={run}", f"input={one}", *settings, cwd=root)
    assert p.returncode == 0, p.stdout + p.stderr
    (single,) = (run / "predict").glob(f"{one.name}-*")
    assert json.loads((single / "last" / "submission.json").read_text()) == {one.stem: expected[one.stem]}
    from experiments import load_run

    records = load_run(run, settings={"eval_augmentations": 2, "ranking": "poe", "ttt": {"steps": 2}}).predict(blind)
    by_output = {}
    for r in records:
        by_output.setdefault(r["task"], {})[r["index"]] = {
            f"attempt_{k + 1}": a.tolist() for k, a in enumerate(r["submitted"])
        }
    assert {t: [v[i] for i in sorted(v)] for t, v in by_output.items()} == expected
    assert all(r["target"] is None and r["views"] == 2 and r["ranking"] == "poe" for r in records)


def test_prediction_pages_sort_in_their_order(tmp_path):
    from experiments.families.arc.pictures import page_paths

    for pages in (1, 9, 12, 190):
        names = [p.name for p in page_paths(tmp_path, pages)]
        assert len(set(names)) == pages and sorted(names) == names and names[0] == "predictions.png"
    assert [p.name for p in page_paths(tmp_path, 12)][1:3] == ["predictions_02.png", "predictions_03.png"]


def test_data_group_keeps_what_the_preset_fixes_for_its_model(arc_run, tmp_path):
    """data=GROUP composes as train.py would for the run's experiment: the group's tasks, the preset's format;
    task.KEY=VALUE sets how the task evaluates (here with test-time training), in a folder of its own."""
    root, run = arc_run
    r = run_eval(
        f"ckpt={run / 'checkpoints' / 'last.ckpt'}",
        "data=arc_tiny",
        "data.max_tasks=2",
        "task.ttt.steps=2",
        "task.ranking=poe",
        cwd=root,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    out = run / "eval" / "data.max_tasks=2,data=arc_tiny,task.ranking=poe,task.ttt.steps=2" / "last"
    result = json.loads((out / "metrics.json").read_text())
    assert result["data"]["config"]["format"] == "encoder_decoder" and result["data"]["config"]["max_tasks"] == 2
    assert result["metrics"]["arc/tasks"] == 2.0 and result["task"]["arguments"] == [
        "task.ttt.steps=2",
        "task.ranking=poe",
    ]
    assert result["metrics"]["time/ttt_s_per_task"] > 0 and "arc/ttt_train_exact" in result["metrics"]
    assert {(row["ttt_steps"], row["ranking"]) for row in csv.DictReader(open(out / "per_output.csv"))} == {
        ("2", "poe")
    }
    assert "Evaluating" in r.stdout and "arc/cell_accuracy" in r.stdout


@pytest.mark.parametrize(
    "args, message",
    [
        (["ckpt=nowhere.ckpt"], "nowhere.ckpt does not exist"),
        (["data.task_ids=[nope]"], "unknown ARC task id(s) ['nope']"),
        (["data.max_task=2"], "data.max_task is not a parameter of experiments.families.arc.data.ArcDataModule"),
        (["data=no_such_group"], "Could not find 'data/no_such_group' Available options in 'data': arc arc_full"),
        (
            ["task._target_=os.system"],
            "task._target_ is not an evaluation setting of experiments.families.arc.task.ArcLightningTask",
        ),
        (
            ["task.format=decoder_only"],
            "task.format is not an evaluation setting of experiments.families.arc.task.ArcLightningTask: "
            "eval.py and predict.py may set task.eval_augmentations, task.ranking, task.ttt",
        ),
        (["task.rankng=poe"], "task.rankng is not an evaluation setting"),
        (
            ["task.ttt={_target_: os.system, command: id}"],
            "task.ttt._target_: eval.py and predict.py change how a checkpoint's task evaluates, never what it is",
        ),
        (["task.ttt[_target_]=os.getcwd"], "task.ttt._target_: eval.py and predict.py change how"),
        (["task.ttt.lr=${oc.env:HOME}"], "task.ttt.lr: holds an interpolation"),
        (["~task.ranking=vote"], "eval.py and predict.py set evaluation settings; they remove none"),
        (["task.ttt=5"], "task.ttt=5 has type int, expected dict | None"),
        (["task.ttt.step=3"], "task: ttt.step is not a test-time training setting"),
    ],
)
def test_unusable_input_is_one_line_and_exit_2(arc_run, args, message):
    root, run = arc_run
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    r = in_process("eval.py", *([f"ckpt={run}"] if not args[0].startswith("ckpt=") else []), *args, cwd=root)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], r.stderr
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before, "nothing written for refused input"


BAD_GRIDS = {  # a test input as a task file holds it -> what the line says
    "a cell out of range": ([[1, 10]], "holds the cell 10; ARC cells are integers 0-9"),
    "a 3-D grid": ([[[1]]], "holds the cell [1]; ARC cells are integers 0-9"),
    "a scalar": (3, "is not a grid (a non-empty list of non-empty rows of cells)"),
}


@pytest.mark.parametrize("case", list(BAD_GRIDS))
def test_a_bad_task_file_is_one_line_naming_it(arc_run, tmp_path, case):
    root, run = arc_run
    grid, message = BAD_GRIDS[case]
    good = [[1, 2], [3, 4]]
    (tmp_path / "tasks").mkdir()
    (tmp_path / "tasks" / "t.json").write_text(
        json.dumps({"train": [{"input": good, "output": good}] * 2, "test": [{"input": grid, "output": good}]})
    )
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    r = in_process("eval.py", f"ckpt={run}", f"data.folder={tmp_path / 'tasks'}", cwd=root)
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r)
    assert f"{tmp_path / 'tasks' / 't.json'}: test[0].input {message}" in line, line
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_every_kind_of_bad_grid_is_refused():
    from experiments.families.arc.data import grid_of

    for bad in ([[1, 2], [3]], [[]], [], [["1"]], [[1.5]], [[True]], [[-1]], [[None]], [[0] * 31], [[0]] * 31, "12"):
        with pytest.raises(ValueError, match="t.json: x"):
            grid_of(bad, "t.json: x")
    assert grid_of([[0, 9]], "x").tolist() == [[0, 9]]


def test_data_of_another_family_is_refused_before_the_model_runs(ternary_run, tmp_path):
    r = in_process("eval.py", f"ckpt={ternary_run}", "data=arc_tiny", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r)
    assert (
        "data=arc_tiny is data for experiments.families.arc.data.ArcDataModule, but this checkpoint was trained on "
        "experiments.families.ternary.data.TernaryOpsDataModule data" in line
    ), line
    assert not (ternary_run / "eval").exists()


def test_a_task_to_predict_is_read_as_data(tmp_path):
    """predict.py's task file: a test pair may lack its output, nothing else may (a demonstration without one
    is refused, named); a FIFO named like a task file is refused before anything reads it."""
    from conftest import fifo_feeding
    from experiments.families.arc.data import load_tasks

    good = [[1, 2], [3, 4]]
    (tmp_path / "t.json").write_text(
        json.dumps({"train": [{"input": good, "output": good}], "test": [{"input": good}]})
    )
    (task,), _ = load_tasks("arcagi", str(tmp_path / "t.json"), outputs_optional=True)
    assert task.test[0][1] is None
    with pytest.raises(ValueError, match="predicted, not evaluated: python predict.py"):
        load_tasks("arcagi", str(tmp_path / "t.json"))
    (tmp_path / "u.json").write_text(json.dumps({"train": [{"input": good}], "test": [{"input": good}]}))
    with pytest.raises(ValueError, match=r"u.json is not an ARC task with outputs .* KeyError 'output'"):
        load_tasks("arcagi", str(tmp_path / "u.json"), outputs_optional=True)
    with fifo_feeding(tmp_path / "f.json", b"{}"), pytest.raises(ValueError, match="is a FIFO"):
        load_tasks("arcagi", str(tmp_path / "f.json"), outputs_optional=True)
