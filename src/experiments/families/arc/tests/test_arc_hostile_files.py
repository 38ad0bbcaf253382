"""A folder of ARC task files is untrusted (docs/SECURITY.md): a task of 300,000 pairs (10.5 MB, gigabytes
at the model) or a FIFO named `t.json` is refused in one line naming the file (a UserError; exit 2 through
the programs), before a grid is made of it or anything waits on it."""

import json

import pytest

from conftest import fifo_feeding, in_process, one_error_line
from experiments.families.arc import data as arc_data
from experiments.families.arc.data import MAX_PAIRS, ArcDataModule
from experiments.family import UserError

PAIR = {"input": [[7]], "output": [[8]]}
TASK = {"train": [PAIR, PAIR], "test": [PAIR]}
CONTENT = "CRAFTED-CONTENT-1234"  # what a FIFO gives whatever opens it: never quoted in a refusal


def refusal(folder) -> str:
    """The one line reading `folder` through the data module is refused with."""
    with pytest.raises(UserError) as e:
        ArcDataModule(folder=str(folder), max_tasks=None, max_side=None)
    message = str(e.value)
    assert isinstance(e.value, ValueError), "the programs report a data module's ValueError as data: ... (exit 2)"
    assert "\n" not in message and CONTENT not in message and "[[7]]" not in message and "input" not in message
    return message


@pytest.fixture
def no_grids_of_t(monkeypatch):
    """Fails the test when a grid is made of t.json's pairs: its refusal must come before."""
    grid_of = arc_data.grid_of

    def made(value, where: str):
        assert "t.json" not in where, "a grid was made before the refusal"
        return grid_of(value, where)

    monkeypatch.setattr(arc_data, "grid_of", made)


@pytest.mark.parametrize("split, pairs", [("train", MAX_PAIRS + 1), ("test", 300_000)])
def test_a_task_of_too_many_pairs_is_refused_before_its_grids_are_made(tmp_path, no_grids_of_t, split, pairs):
    (tmp_path / "a.json").write_text(json.dumps(TASK))
    many = "[" + ",".join([json.dumps(PAIR)] * pairs) + "]"  # 300,000 pairs: 10.5 MB, under read_text's bound
    (tmp_path / "t.json").write_text(json.dumps({**TASK, split: None}).replace("null", many))
    assert refusal(tmp_path) == (
        f"{tmp_path / 't.json'}: '{split}' holds {pairs:,} pairs, more than {MAX_PAIRS}; "
        f"an ARC task has at most about 10 demonstrations and a few test pairs"
    )


def test_a_task_of_as_many_pairs_as_the_bound_is_read(tmp_path):
    (tmp_path / "t.json").write_text(json.dumps({"train": [PAIR] * MAX_PAIRS, "test": [PAIR] * MAX_PAIRS}))
    data = ArcDataModule(folder=str(tmp_path), max_tasks=None, max_side=None)
    assert len(data.eval_examples) == MAX_PAIRS


def fifo(path):
    return fifo_feeding(path, CONTENT.encode())  # (the shared one: conftest.py)


def test_a_fifo_named_as_a_task_is_refused_before_it_is_opened(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(TASK))
    with fifo(tmp_path / "t.json") as path:
        assert refusal(tmp_path) == f"{path} is a FIFO, not a file: refusing to open it"


def test_a_folder_or_a_link_to_nothing_named_as_a_task_is_refused(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps(TASK))
    (tmp_path / "t.json").mkdir()
    assert refusal(tmp_path) == f"{tmp_path / 't.json'} is a folder, not a file: refusing to open it"
    (tmp_path / "t.json").rmdir()
    (tmp_path / "t.json").symlink_to(tmp_path / "gone.json")
    assert refusal(tmp_path) == f"{tmp_path / 't.json'}: cannot be read (No such file or directory)"


def test_the_programs_refuse_a_task_of_too_many_pairs_in_one_line(tmp_path):
    (data := tmp_path / "tasks").mkdir()
    (data / "t.json").write_text(json.dumps({**TASK, "test": [PAIR] * 1000}))
    r = in_process("train.py", "experiment=exp0_encoder_decoder", "logger=none", f"data.folder={data}", cwd=tmp_path)
    assert r.returncode == 2
    assert one_error_line(r).startswith(f"error: data: {data / 't.json'}: 'test' holds 1,000 pairs, more than 100;")
    assert not (tmp_path / "outputs").exists()
