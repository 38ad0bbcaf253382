"""Test-time training, product-of-experts ranking, the demonstrations' fit and ARC Prize scoring, in the
test process on the tiny task set (the programs run them in test_arc_presets.py and test_arc_resume.py)."""

import numpy as np
import pytest
import torch
from test_arc_decoding import trained

from experiments.families.arc import format as af
from experiments.families.arc import metrics as am
from experiments.families.arc.data import Example
from experiments.families.arc.task import ArcLightningTask
from experiments.families.arc.test_time import TestTimeTraining

TTT = {"steps": 8, "lr": 3e-3, "batch_size": 4}


@pytest.fixture(scope="module")
def champion():
    """The champion trained 30 epochs on the tiny tasks' demonstrations, and their held-out outputs."""
    task, dm = trained("champion", epochs=30)
    return task, dm


def with_settings(task: ArcLightningTask, **settings) -> ArcLightningTask:
    """The same trained model under other evaluation settings."""
    other = ArcLightningTask(
        task.model, format=task.format, eval_augmentations=settings.pop("eval_augmentations", 2), **settings
    )
    return other.eval()


def attempts(results: list[dict]) -> list:
    return [[None if a is None else a.tolist() for a in r["attempts"]] for r in results]


def scrambled(examples: list[Example]) -> list[Example]:
    """The same held-out outputs with their true outputs replaced by random grids of another shape."""
    rng = np.random.default_rng(5)
    return [
        Example(
            ex.task_id,
            ex.index,
            (ex.query[0], rng.integers(0, 10, (ex.query[1].shape[0] + 1, 3))),
            ex.context,
            ex.demos,
        )
        for ex in examples
    ]


def test_test_time_training_changes_predictions_and_nothing_else(champion):
    task, dm = champion
    tuned = with_settings(task, ttt=TTT)
    before = {k: v.clone() for k, v in task.state_dict().items()}
    rng_before = torch.random.get_rng_state()
    plain = task.evaluation_step(dm.eval_examples, epoch=0).outputs
    with torch.inference_mode():  # as in Lightning's validation loop
        first = tuned.evaluation_step(dm.eval_examples, epoch=0)
    assert all(torch.equal(v, task.state_dict()[k]) for k, v in before.items()), "the trained weights moved"
    assert torch.equal(torch.random.get_rng_state(), rng_before), "the global RNG moved"
    assert [r["ttt_steps"] for r in first.outputs] == [TTT["steps"]] * len(dm.eval_examples)
    assert len(first.ttt_seconds) == len({ex.task_id for ex in dm.eval_examples})
    # it learnt something of each task: the true outputs' likelihood moved, and so did some prediction
    assert all(abs(a["nll_bits"] - b["nll_bits"]) > 1e-3 for a, b in zip(plain, first.outputs))
    assert attempts(plain) != attempts(first.outputs)
    # deterministic from (seed, task): again the same, and a task evaluated alone as in the batch
    again = tuned.evaluation_step(dm.eval_examples, epoch=0).outputs
    assert attempts(again) == attempts(first.outputs)
    last = dm.eval_examples[-1].task_id
    alone = tuned.evaluation_step([ex for ex in dm.eval_examples if ex.task_id == last], epoch=0).outputs
    assert attempts(alone) == attempts([r for r in first.outputs if r["task"] == last])
    assert [r["nll_bits"] for r in alone] == [r["nll_bits"] for r in first.outputs if r["task"] == last]
    # another seed fine-tunes differently
    other = with_settings(task, ttt=TTT, seed=1).evaluation_step(dm.eval_examples[-1:], epoch=0).outputs
    assert other[0]["nll_bits"] != first.outputs[-1]["nll_bits"]


def test_test_time_training_never_sees_a_test_output(champion):
    """Scrambled true outputs: the same predictions (only the likelihood of the true output, which is
    measured, not learnt from, differs)."""
    task, dm = champion
    tuned = with_settings(task, ttt=TTT, ranking="poe")
    honest = tuned.evaluation_step(dm.eval_examples, epoch=0)
    blind = tuned.evaluation_step(scrambled(dm.eval_examples), epoch=0)
    assert attempts(honest.outputs) == attempts(blind.outputs)
    assert honest.tuned_demos_exact == blind.tuned_demos_exact and honest.demos_exact == blind.demos_exact
    assert [r["nll_bits"] for r in honest.outputs] != [r["nll_bits"] for r in blind.outputs]


def test_product_of_experts_picks_the_candidate_likelier_over_all_views():
    """Hand case: A is spelled by 3 views, B by 1; under the views' log-probabilities (A: -5 and -4, B:
    -1 and -2) the product of experts ranks B first, voting ranks A first; equal sums go to the votes."""
    a, b, c = np.array([[1, 2]]), np.array([[3]]), np.array([[4]])
    candidates = [a, b, a.copy(), None, a.copy()]
    grids, votes = am.distinct(candidates)
    assert [g.tolist() for g in grids] == [a.tolist(), b.tolist()] and votes == [3, 1]
    assert [g.tolist() for g in am.rank_by_product(grids, votes, [[-5.0, -4.0], [-1.0, -2.0]])] == [
        b.tolist(),
        a.tolist(),
    ]
    assert [g.tolist() for g in am.rank_attempts(candidates)] == [a.tolist(), b.tolist()]
    assert [g.tolist() for g in am.rank_by_product(grids, votes, [[-1.0, -2.0], [-2.0, -1.0]])] == [
        a.tolist(),
        b.tolist(),
    ]
    assert am.rank_by_product([c], [1], [[-3.0, -3.0]])[1] is None and am.rank_by_product([], [], []) == [None, None]


def test_product_of_experts_scores_each_candidate_in_every_view(champion, monkeypatch):
    """The ranking the task applies: each distinct candidate, in place of the output (never the true
    one), teacher-forced in every view; the attempts follow the summed log-probabilities."""
    task, dm = champion
    poe = with_settings(task, ranking="poe", eval_augmentations=3)
    seen = []
    real = poe.log_probs
    monkeypatch.setattr(poe, "log_probs", lambda examples, model: seen.append(examples) or real(examples, model))
    results = poe.predict(dm.eval_examples)
    (scored,) = seen
    assert len(scored) == sum(r["candidates"] for r in results) * 3
    # each scored output is a candidate in some view; mapped back, one of its output's distinct grids; the
    # attempts are the two grids with the highest log-probability summed over the 3 views
    views, key = poe.views(), lambda g: (g.shape, g.tobytes())  # noqa: E731
    assert any(r["candidates"] > 1 for r in results), "no output to rank"
    for r in results:
        mine = [ex for ex in scored if (ex.task_id, ex.index) == (r["task"], r["index"])]
        assert len(mine) == r["candidates"] * 3
        total: dict = {}
        for k, ex in enumerate(mine):
            grid = views[k % 3].invert(ex.query[1])
            total[key(grid)] = total.get(key(grid), 0.0) + float(real([ex], poe.model)[0])
        best = sorted(total, key=lambda g: -total[g])[:2]
        assert [key(a) for a in r["attempts"] if a is not None] == best[
            : len([a for a in r["attempts"] if a is not None])
        ]


def test_train_exact_counts_each_task_demonstration_once(champion, monkeypatch):
    """Hand case: decoding that reproduces exactly the demonstrations of the first task and no other: the
    fit is that task's share of all the tasks' demonstrations, each decoded once whatever the batch
    (a task's two test outputs do not decode its demonstrations twice)."""
    task, dm = champion
    first = dm.eval_examples[0].task_id
    decoded = []

    def oracle(examples, cached=True, record=None, model=None):
        decoded.extend((ex.task_id, ex.index) for ex in examples)
        return [list(af.grid_tokens(ex.query[1])[0]) if ex.task_id == first else [af.EOS] for ex in examples]

    plain = with_settings(task, eval_augmentations=1)
    monkeypatch.setattr(plain, "greedy", oracle)
    monkeypatch.setattr(plain, "predict", lambda examples, **_: [])
    parts = [plain.evaluation_step(batch, epoch=0) for batch in dm.val_dataloader()]
    demos = {t: len(ex.demos) for ex in dm.eval_examples for t in [ex.task_id]}
    assert sorted(decoded) == sorted((t, i) for t, n in demos.items() for i in range(n))
    expected = demos[first] / sum(demos.values())
    assert plain.figures(parts, 0)["arc/train_exact"] == pytest.approx(expected)


def test_prize_score_is_the_mean_over_all_tasks_of_their_solved_share():
    """Hand case: task a solves 1 of its 2 outputs, b its only one, c is missing from the results:
    (0.5 + 1 + 0) / 3 over the set; score() of the results alone counts the tasks it was given."""
    rows = [{"task": "a", "exact@2": 1}, {"task": "a", "exact@2": 0}, {"task": "b", "exact@2": 1}]
    assert am.prize_score(rows, ["a", "b", "c"]) == pytest.approx(0.5)
    g = lambda v: np.array([[v]])  # noqa: E731
    results = [
        {"task": "a", "index": 0, "target": g(1), "attempts": [g(2), g(1)]},
        {"task": "a", "index": 1, "target": g(1), "attempts": [g(2), None]},
        {"task": "b", "index": 0, "target": g(3), "attempts": [g(3), None]},
    ]
    figures = am.score(results)
    assert figures["arc/prize_score"] == pytest.approx(0.75) and figures["arc/exact_output@2"] == pytest.approx(2 / 3)
    assert figures["arc/exact_task@2"] == pytest.approx(0.5)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"ttt": {"step": 3}}, "ttt.step is not a test-time training setting"),
        ({"ttt": {"steps": -1}}, "ttt.steps must be an integer >= 0"),
        ({"ttt": {"lr": 0}}, "ttt.lr must be > 0"),
        ({"ttt": {"periodic": "no"}}, "ttt.augment and ttt.periodic must be true or false"),
        ({"ttt": {"steps": True}}, "ttt.steps and ttt.batch_size must be integers"),
        ({"ranking": "best"}, "ranking must be one of ('vote', 'poe')"),
        ({"eval_augmentations": 0}, "eval_augmentations must be an integer >= 1"),
    ],
)
def test_bad_settings_are_refused(settings, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        ArcLightningTask(torch.nn.Linear(1, 1), **settings)


def test_periodic_evaluations_fine_tune_only_when_asked():
    from types import SimpleNamespace

    task = ArcLightningTask(torch.nn.Linear(1, 1), ttt={"steps": 2})
    assert task.tunes_at(0), "outside training (verify.py, eval.py): always"
    assert not ArcLightningTask(torch.nn.Linear(1, 1)).tunes_at(0), "steps=0: never"
    task._trainer = SimpleNamespace(max_epochs=5)  # in training: the final evaluation only
    assert not task.tunes_at(1) and task.tunes_at(4)
    task._trainer = SimpleNamespace(max_epochs=-1, max_steps=-1, global_step=5000)  # no limit: no final evaluation
    assert not task.tunes_at(0) and not task.tunes_at(999)
    task._trainer = SimpleNamespace(max_epochs=-1, max_steps=100, global_step=100)  # a step limit reached: final
    assert task.tunes_at(7)
    periodic = ArcLightningTask(torch.nn.Linear(1, 1), ttt={"steps": 2, "periodic": True})
    periodic._trainer = SimpleNamespace(max_epochs=5)
    assert periodic.tunes_at(1) and periodic.tunes_at(4)
    assert TestTimeTraining.of(None) == TestTimeTraining()


def test_the_curve_script_gives_what_an_evaluation_with_those_settings_gives(champion):
    """scripts/ttt_curves.py fine-tunes once and reads every (steps, views, ranking) cell on the way; a cell
    equals a plain evaluation with those settings."""
    import importlib.util

    from conftest import ROOT

    spec = importlib.util.spec_from_file_location(
        "ttt_curves", ROOT / "src/experiments/families/arc/scripts/ttt_curves.py"
    )
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    task, dm = champion
    probe = with_settings(task)
    figures, seconds = script.curves(probe, dm, [0, 3, 8], [1, 3], TestTimeTraining.of(TTT), progress=lambda _: None)
    assert len(figures) == 3 * 2 * 2 and seconds > 0
    for steps, views, ranking in [(8, 3, "poe"), (3, 1, "vote"), (0, 3, "vote")]:
        alone = with_settings(task, ttt={**TTT, "steps": steps}, eval_augmentations=views, ranking=ranking)
        parts = [alone.evaluation_step(batch, epoch=0) for batch in dm.val_dataloader()]
        expected = {
            k: v
            for k, v in alone.figures(parts, 0).items()
            if k.startswith("arc/") and "train_exact" not in k and "demos" not in k
        }
        assert figures[(steps, views, ranking)] == pytest.approx(expected), (steps, views, ranking)
