"""ARC data contracts: formats, tokens, augmentation, leakage, scoring."""

import re
from pathlib import Path

import numpy as np
import pytest
import torch

from experiments.families.arc import format as af
from experiments.families.arc import metrics as am
from experiments.families.arc.data import FORMATS, ArcDataModule, collate


@pytest.fixture(scope="module")
def dm():
    return ArcDataModule(max_tasks=4, max_side=6, dihedral=True, colours=True)


def test_special_tokens_are_distinct_and_sep_is_not_pad():
    assert af.SEP != af.PAD
    assert len({af.PAD, af.EOL, af.EOS, af.SEP, af.BOS}) == 5 and min(af.PAD, af.EOL, af.EOS, af.SEP, af.BOS) > 9


def test_grid_round_trips_and_carries_its_shape():
    grid = np.array([[1, 2, 3], [4, 5, 6]])
    tokens, rows, cols = af.grid_tokens(grid)
    assert tokens.tolist() == [1, 2, 3, af.EOL, 4, 5, 6, af.EOL, af.EOS]
    assert rows.tolist() == [0, 0, 0, 0, 1, 1, 1, 1, 2] and cols.tolist() == [0, 1, 2, 3, 0, 1, 2, 3, 0]
    assert (af.tokens_to_grid(tokens) == grid).all()
    # positions are recoverable from the tokens alone, as a decoder must
    r, c = af.positions_of(tokens)
    assert r.tolist() == rows.tolist() and c.tolist() == cols.tolist()
    assert af.tokens_to_grid([1, 2, af.EOL, 3, af.EOL, af.EOS]) is None  # ragged rows
    assert af.tokens_to_grid([1, 2, af.EOL]) is None  # no EOS


def test_decoder_only_format_puts_loss_on_output_tokens_only(dm):
    ex = dm.train_examples[0]
    batch = collate([ex], "decoder_only")
    src, _, _ = af.grid_tokens(ex.query[0])
    out, _, _ = af.grid_tokens(ex.query[1])
    tokens, targets = batch["tokens"][0], batch["targets"][0]
    assert tokens[len(src)].item() == af.SEP
    assert (targets[: len(src)] == af.PAD).all(), "no loss on the input or on SEP"
    assert (targets != af.PAD).sum().item() == len(out)
    assert targets[targets != af.PAD].tolist() == out.tolist()


def test_encoder_decoder_format_shifts_the_target(dm):
    ex = dm.train_examples[1]
    batch = collate([ex], "encoder_decoder")
    out, _, _ = af.grid_tokens(ex.query[1])
    assert batch["tgt_in"][0, 0].item() == af.BOS
    assert batch["tgt_in"][0, 1 : len(out)].tolist() == out[:-1].tolist()
    assert batch["targets"][0, : len(out)].tolist() == out.tolist()
    assert batch["src"][0, : len(af.grid_tokens(ex.query[0])[0])].tolist() == af.grid_tokens(ex.query[0])[0].tolist()


def context_grids(batch: dict, b: int) -> list[np.ndarray]:
    """The four context grids (pair 0 in, out, pair 1 in, out) of example b, rebuilt from its cell sequence."""
    cells, rows, cols, which = (batch[k][b] for k in ("context", "context_rows", "context_cols", "context_which"))
    real = cells != af.PAD
    grids = []
    for k in range(4):
        at = real & (which == k)
        grid = np.full((int(rows[at].max()) + 1, int(cols[at].max()) + 1), -1)
        grid[rows[at].numpy(), cols[at].numpy()] = cells[at].numpy()
        grids.append(grid)
    return grids


def test_champion_context_holds_two_pairs_and_never_the_query(dm):
    batch = collate(dm.train_examples + dm.eval_examples, "champion")
    for b, ex in enumerate(dm.train_examples + dm.eval_examples):
        real = batch["context"][b] != af.PAD
        assert real.sum() == sum(g.size for pair in ex.context for g in pair), "a context cell is missing"
        assert not real[int(real.sum()) :].any(), "padding only after the cells"
        grids = context_grids(batch, b)
        assert all(
            g.shape == want.shape and (g == want).all()
            for g, want in zip(grids, [g for pair in ex.context for g in pair])
        ), "the cells do not rebuild the context grids"
        for ci, co in ex.context:
            same = (
                ci.shape == ex.query[0].shape
                and (ci == ex.query[0]).all()
                and co.shape == ex.query[1].shape
                and (co == ex.query[1]).all()
            )
            assert not same, f"{ex.task_id}: the query is one of its own context pairs"


def test_no_context_query_leak_on_every_batch_of_an_epoch():
    dm = ArcDataModule(format="champion", max_tasks=18, max_side=10, dihedral=True, colours=True)
    dm.train_sampler.set_epoch(0)
    seen = 0
    for batch in dm.train_dataloader():
        src = batch["src"]
        for b in range(src.shape[0]):
            query = af.tokens_to_grid(src[b][src[b] != af.PAD].tolist())
            grids = context_grids(batch, b)
            assert all(g.size > 0 and (g >= 0).all() for g in grids), "every context grid is whole"
            for inp in grids[0::2]:
                assert not (query.shape == inp.shape and (inp == query).all()), "query in its context"
            seen += 1
    assert seen == len(dm.train_examples)


def test_every_example_is_used_nothing_cut(dm):
    assert "0 examples cut" in dm.describe()
    # the pairs of a task given with its test inputs are its demonstrations (on evaluation tasks too: never
    # "training pairs", nor "to train on": eval.py and predict.py train on nothing but with test-time training)
    assert re.search(r" \d+ demonstration pairs?, \d+ held-out test outputs?;", dm.describe())
    for fmt in FORMATS:
        dm.format = fmt
        dm.train_sampler.set_epoch(0)
        assert sum(next(iter(b.values())).shape[0] for b in dm.train_dataloader()) == len(dm.train_examples)
    dm.format = "encoder_decoder"


def test_augmentation_round_trips_every_task_exactly(dm):
    rng = np.random.default_rng(0)
    for ex in dm.train_examples + dm.eval_examples:
        for _ in range(8):
            aug = af.Augmentation.random(rng)
            for g in (ex.query[0], ex.query[1], *[x for pair in ex.context for x in pair]):
                t = aug(g)
                assert (t == 0).sum() == (g == 0).sum(), "colour 0 is kept"
                back = aug.invert(t)
                assert back.shape == g.shape and (back == g).all()
    g = np.arange(6).reshape(2, 3)  # the 8 transforms are distinct on an asymmetric grid
    assert len({af.dihedral(g, k).tobytes() + bytes(af.dihedral(g, k).shape) for k in range(8)}) == 8


def test_scoring_wrong_shape_is_wrong_and_pass_at_2():
    target = np.array([[1, 2], [3, 4]])
    padded = np.array([[1, 2, 0], [3, 4, 0]])  # right cells, wrong shape
    assert not am.exact(padded, target)
    assert am.cell_accuracy(padded, target) == 0.0  # right cells inside a wrong shape earn nothing
    assert am.cell_accuracy(np.array([[1, 2], [3, 0]]), target) == 0.75
    results = [
        {"task": "a", "index": 0, "attempts": [padded, target], "target": target},
        {"task": "a", "index": 1, "attempts": [target, None], "target": target},
        {"task": "b", "index": 0, "attempts": [None, None], "target": target},
    ]
    s = am.score(results)
    assert s["arc/exact_output@1"] == pytest.approx(1 / 3) and s["arc/exact_output@2"] == pytest.approx(2 / 3)
    assert s["arc/exact_task@1"] == 0.0 and s["arc/exact_task@2"] == 0.5
    assert s["arc/right_shape"] == pytest.approx(1 / 3)


def test_exact_match_scores_the_attempts_as_submitted(tmp_path):
    """A lone candidate is repeated as attempt 2 (the 1x1 placeholder would be a free guess, right whenever
    the true output is [[0]]); no grid at all: both attempts the placeholder, scored as a scorer of the file
    scores it. The figures equal what submission.json gives, output by output."""
    import json

    from experiments.families.arc.task import write_submission

    zero, eight = np.array([[0]]), np.array([[8]])
    results = [
        {"task": "a", "index": 0, "attempts": [eight, None], "target": zero},
        {"task": "a", "index": 1, "attempts": [None, None], "target": zero},
        {"task": "b", "index": 0, "attempts": [None, None], "target": eight},
    ]
    assert [[g.tolist() for g in am.submitted(r["attempts"])] for r in results] == [
        [[[8]], [[8]]],
        [[[0]], [[0]]],
        [[[0]], [[0]]],
    ]
    rows = [am.output_record(r) for r in results]
    assert [(r["exact@1"], r["exact@2"], r["right_shape"], r["cell_accuracy"]) for r in rows] == [
        (0, 0, 1, 0.0),
        (1, 1, 0, 0.0),
        (0, 0, 0, 0.0),
    ]  # shape and cells: of the model's own grid (none)
    write_submission(results, tmp_path / "submission.json")
    written = json.loads((tmp_path / "submission.json").read_text())
    by_file = [int(any(a == r["target"].tolist() for a in written[r["task"]][r["index"]].values())) for r in results]
    assert by_file == [r["exact@2"] for r in rows]


def test_attempts_are_ranked_by_votes():
    a, b = np.array([[1]]), np.array([[2]])
    assert [g.tolist() for g in am.rank_attempts([b, a, a, None, b, a])] == [[[1]], [[2]]]
    assert am.rank_attempts([None, None])[0] is None


def test_order_and_augmentation_are_a_function_of_seed_and_epoch():
    one = ArcDataModule(max_tasks=4, max_side=6)
    two = ArcDataModule(max_tasks=4, max_side=6)
    for dm in (one, two):
        dm.train_sampler.set_epoch(3)
    for x, y in zip(one.train_dataloader(), two.train_dataloader()):
        assert all(torch.equal(x[k], y[k]) for k in x)


def test_augmentation_round_trips_every_arc_agi_1_task():
    from experiments.families.arc.data import load_tasks

    rng = np.random.default_rng(1)
    training, evaluation = load_tasks("arcagi")
    assert (len(training), len(evaluation)) == (400, 400)
    for task in list(training) + list(evaluation):
        grids = [np.asarray(g) for pair in list(task.train) + list(task.test) for g in pair]
        for k in range(8):
            aug = af.Augmentation(k, np.concatenate([[0], 1 + rng.permutation(9)]))
            for g in grids:
                assert (aug.invert(aug(g)) == g).all(), task.id


def test_arc_small_is_every_training_task_that_fits_10x10():
    from omegaconf import OmegaConf

    from experiments.families import arc

    conf = Path(arc.__file__).parent / "conf" / "data" / "arc_small.yaml"
    cfg = {k: v for k, v in OmegaConf.load(conf).items() if k != "defaults"}
    dm = ArcDataModule(**cfg)
    assert len({e.task_id for e in dm.eval_examples}) == 178
    assert (len(dm.train_examples), len(dm.eval_examples)) == (587, 190)
    assert all(max(g.shape) <= 10 for e in dm.train_examples + dm.eval_examples for g in e.query)


def test_per_output_record_of_one_result():
    target = np.array([[1, 2], [3, 4]])
    row = am.output_record(
        {
            "task": "t",
            "index": 1,
            "attempts": [np.array([[1, 2], [3, 0]]), target],
            "target": target,
            "nll_bits": 0.5,
            "tokens": 7,
        }
    )
    assert row == {
        "task": "t",
        "index": 1,
        "exact@1": 0,
        "exact@2": 1,
        "right_shape": 1,
        "cell_accuracy": 0.75,
        "nll_bits": 0.5,
        "tokens": 7,
    }
    s = am.score(
        [
            {"task": "t", "index": 0, "attempts": [target, None], "target": target, "nll_bits": 1.5},
            {"task": "t", "index": 1, "attempts": [None, None], "target": target, "nll_bits": 0.5},
        ]
    )
    assert s["arc/test_nll"] == 1.0  # the mean over outputs of each output's bits per token


def test_arc_agi_2_is_selectable():
    dm = ArcDataModule(version="arcagi2", max_tasks=2, max_side=8)
    assert dm.train_examples and dm.eval_examples


def test_a_subset_of_evaluation_tasks_holds_none_the_default_set_trains_on():
    from experiments.families.arc.data import load_tasks

    training, evaluation = load_tasks("arcagi")
    dm = ArcDataModule(tasks_from="evaluation", max_tasks=18, max_side=10)
    chosen = {e.task_id for e in dm.eval_examples}
    assert len(chosen) == 18 and chosen <= {t.id for t in evaluation} and not chosen & {t.id for t in training}
    assert chosen.isdisjoint({e.task_id for e in ArcDataModule(max_tasks=18, max_side=10).train_examples})
    assert "selected from 400 evaluation tasks" in dm.describe()


def test_evaluation_batches_hold_every_output_once_in_order_of_input_length():
    from experiments.families.arc.data import tokens_of

    dm = ArcDataModule(format="champion", max_tasks=18, max_side=10, eval_batch_size=4)
    batches = list(dm.val_dataloader())
    assert [len(b) for b in batches[:-1]] == [4] * (len(batches) - 1)
    flat = [ex for b in batches for ex in b]
    assert sorted((ex.task_id, ex.index) for ex in flat) == sorted((ex.task_id, ex.index) for ex in dm.eval_examples)
    lengths = [tokens_of(ex, "champion", output=False) for ex in flat]
    assert lengths == sorted(lengths) and lengths[0] < lengths[-1]


def test_prediction_pages_show_each_tasks_demonstrations_above_its_outputs():
    from experiments.families.arc.pictures import DEMOS, panel_rows

    grid = lambda v: np.full((2, 2), v)  # noqa: E731
    rows = [
        {
            "task": "t",
            "index": i,
            "input": grid(1),
            "target": grid(2),
            "attempts": [grid(2), None],
            "demos": [(grid(k), grid(k + 1)) for k in range(DEMOS + 1)],
        }
        for i in range(2)
    ]
    lines = panel_rows(rows)
    assert len(lines) == 3  # the task's demonstrations once, then its two outputs
    assert [label for label, _ in lines[0]][:2] == [
        f"t demonstration 1 (of {DEMOS + 1}): input",
        "t demonstration 1: output",
    ]
    assert len(lines[0]) == 2 * DEMOS and (lines[0][1][1] == 1).all()
    assert [label for label, _ in lines[1]] == [
        "t #0: input",
        "true output 2x2",
        "attempt 1: right",
        "attempt 2: no grid",
    ]
