"""predict.py and `experiments.load_run` on the worked example (examples/sine, a family outside the package):
new inputs predicted through the real program, the same predictions in Python, Lightning's
`load_from_checkpoint`; a family that does not predict, and bad input, get one line, exit 2, nothing written.
(Each built-in family's predictions against its own evaluation: its tests/.)"""

import csv
import json
import shutil

import pytest
import torch

from conftest import ROOT, SINE, SINE_CONF, in_process, one_error_line

RUN = ["trainer.max_epochs=3"]


@pytest.fixture(scope="module")
def sine_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("sine_predict")
    r = in_process("train.py", *SINE, *RUN, cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (root / "outputs" / "sine").iterdir()
    return root, run


def predict(*args, cwd):
    return in_process("predict.py", "--config-dir", str(SINE_CONF), *args, cwd=cwd)


def mlp_of(run):
    """The checkpoint's weights in the family's model, loaded by hand (not through the code under test)."""
    from examples.sine.model import MLP

    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    model = MLP()
    model.load_state_dict({k.removeprefix("model."): v for k, v in state.items()})
    return model.eval()


def test_predict_writes_the_models_answers_and_load_run_gives_the_same(sine_run, tmp_path):
    root, run = sine_run
    (tmp_path / "xs.txt").write_text("0\n0.5, 1.0\n-2 3.25\n")
    r = predict(f"ckpt={run}", f"input={tmp_path / 'xs.txt'}", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    (out,) = (run / "predict").glob("xs.txt-*")
    out = out / "last"
    rows = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(open(out / "predictions.csv"))]
    assert [row["x"] for row in rows] == [0.0, 0.5, 1.0, -2.0, 3.25]
    with torch.no_grad():
        expected = mlp_of(run)(torch.tensor([row["x"] for row in rows])[:, None])[:, 0]
    assert [row["y"] for row in rows] == pytest.approx(expected.tolist(), rel=1e-6)  # (another thread count)
    record = json.loads((out / "prediction.json").read_text())
    assert record["predictions"] == 5 and record["files"] == ["predictions.csv"] and record["checkpoint"]["epoch"] == 3
    assert record["input"]["resolved"] == str((tmp_path / "xs.txt").resolve())
    assert "5 predictions in " in r.stdout and "predictions.csv, prediction.json" in r.stdout

    from experiments import load_run

    torch.set_num_threads(1)  # as predict.py ran above (in_process): float sums in the same order
    loaded = load_run(run, config_dir=SINE_CONF)
    assert not loaded.task.training and isinstance(loaded.model, torch.nn.Module) and loaded.device == "cpu"
    assert loaded.config["experiment"] == "sine" and loaded.checkpoint == run / "checkpoints" / "last.ckpt"
    assert loaded.predict(tmp_path / "xs.txt") == rows  # the same records, float for float
    assert len(loaded.predict()) == 512  # no input: the family's default (the validation grid)


def test_load_from_checkpoint_is_load_run(sine_run):
    from examples.sine.task import SineTask
    from experiments.errors import UserError
    from experiments.families.video.task import VideoTask

    _, run = sine_run
    task = SineTask.load_from_checkpoint(run / "checkpoints" / "last.ckpt")
    assert isinstance(task, SineTask) and not task.training
    expected = mlp_of(run).state_dict()
    assert all(torch.equal(task.model.state_dict()[k], expected[k]) for k in expected)
    with pytest.raises(UserError, match="load_run"):
        VideoTask.load_from_checkpoint(run / "checkpoints" / "last.ckpt")  # another family's run
    with pytest.raises(UserError, match=r"takes the path and map_location only .* load_run\(PATH"):
        SineTask.load_from_checkpoint(run / "checkpoints" / "last.ckpt", lr=0.1)


def test_a_family_that_does_not_predict_is_one_line(tmp_path, monkeypatch):
    """A family of one's own without the prediction methods (the sine task with them taken away, trained as
    such) keeps training and evaluating; predict.py and load_run(...).predict refuse it in one line."""
    conf = tmp_path / "conf"
    shutil.copytree(SINE_CONF, conf)
    (tmp_path / "quiet").mkdir()
    (tmp_path / "quiet" / "__init__.py").write_text("")
    (tmp_path / "quiet" / "task.py").write_text(
        "from examples.sine.task import SineTask\nfrom experiments.family import ExperimentTask\n\n\n"
        "class QuietTask(SineTask):  # predicts nothing: the contract's own (unimplemented) methods\n"
        "    prediction_data = ExperimentTask.prediction_data\n"
        "    prediction_step = ExperimentTask.prediction_step\n"
        "    prediction_files = ExperimentTask.prediction_files\n"
    )
    task_yaml = conf / "task" / "sine.yaml"
    task_yaml.write_text(task_yaml.read_text().replace("examples.sine.task.SineTask", "quiet.task.QuietTask"))
    monkeypatch.syspath_prepend(str(tmp_path))  # its package importable, as PYTHONPATH would make it
    r = in_process("train.py", "--config-dir", str(conf), *SINE[2:], "trainer.max_epochs=1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (tmp_path / "outputs" / "sine").iterdir()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "__pycache__" not in p.parts)
    r = in_process("predict.py", "--config-dir", str(conf), f"ckpt={run}", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r)
    assert "quiet.task.QuietTask does not predict: its task implements no prediction_step" in line, line
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "__pycache__" not in p.parts) == before
    e = in_process("eval.py", "--config-dir", str(conf), f"ckpt={run}", cwd=tmp_path)
    assert e.returncode == 0, e.stdout + e.stderr
    from experiments import load_run
    from experiments.errors import UserError

    loaded = load_run(run, config_dir=conf)
    with pytest.raises(UserError, match="quiet.task.QuietTask does not predict"):
        loaded.predict()


def test_a_family_predicting_in_part_is_named():
    from experiments.family import ExperimentTask

    class Half(ExperimentTask):
        def prediction_step(self, batch):
            return []

    assert Half.prediction_gaps() == ["prediction_data", "prediction_files"]
    assert ExperimentTask.prediction_gaps() == ["prediction_data", "prediction_step", "prediction_files"]


@pytest.mark.parametrize(
    "args, message",
    [
        (["input=nowhere.txt"], "input=nowhere.txt does not exist; give a file or folder of inputs"),
        (["ckpt=nowhere.ckpt"], "nowhere.ckpt does not exist"),
        (["input=bad.txt"], "data: bad.txt: 'x=1' is not a number; give x values separated by commas or spaces"),
        (["input=empty.txt"], "data: empty.txt: give at least one x value, every one finite"),
        (["task.lr=1"], "task.lr is not an evaluation setting of examples.sine.task.SineTask"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(sine_run, args, message):
    root, run = sine_run
    (root / "bad.txt").write_text("1 x=1\n")
    (root / "empty.txt").write_text("nan\n")
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    r = predict(*([] if args[0].startswith("ckpt=") else [f"ckpt={run}"]), *args, cwd=root)
    assert r.returncode == 2, r.stdout + r.stderr
    assert message in one_error_line(r)
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before


def test_predict_help():
    r = in_process("predict.py", "--help", cwd=ROOT)
    assert r.returncode == 0 and r.stdout.startswith("predict.py: Predict new inputs")
    assert "input" in r.stdout and "task.KEY=VALUE" in r.stdout


def test_an_input_that_is_a_fifo_or_too_large_is_one_line(sine_run, tmp_path):
    """input= is data: a FIFO named like an input file is refused before anything reads it (the feeder makes a
    reader that did open it go on, and fail here, rather than hang), a file past the reader's bound too."""
    from conftest import fifo_feeding

    root, run = sine_run
    before = sorted(p.relative_to(run) for p in run.rglob("*"))
    with fifo_feeding(tmp_path / "xs.txt", b"0.5\n"):
        r = predict(f"ckpt={run}", f"input={tmp_path / 'xs.txt'}", cwd=root)
    assert r.returncode == 2 and "is a FIFO" in one_error_line(r), r.stdout + r.stderr
    (tmp_path / "big.txt").write_text("0.5 " * 300_000)  # 1.2 MB: past the 1 MiB of x values
    r = predict(f"ckpt={run}", f"input={tmp_path / 'big.txt'}", cwd=root)
    assert r.returncode == 2 and "big.txt is larger than 1,048,576 bytes" in one_error_line(r), r.stdout + r.stderr
    assert sorted(p.relative_to(run) for p in run.rglob("*")) == before
