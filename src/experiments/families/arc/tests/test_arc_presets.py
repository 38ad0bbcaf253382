"""All five ARC presets pass preflight, train and evaluate end to end through train.py on the tiny set,
with test-time training at the final evaluation and product-of-experts ranking."""

import csv
import json

import pytest
import torch

from conftest import in_process

pytestmark = pytest.mark.slow  # the ARC presets trained to their final evaluation

PRESETS = ["exp_neg1_decoder_only", "exp0_encoder_decoder", "exp1_grid2d_pe", "exp2_perminv", "exp3_champion"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The five presets trained as the jobs of one sweep (one process: the same code path per job)."""
    root = tmp_path_factory.mktemp("presets")
    # (++: a multirun composes its base config with no experiment chosen, where task holds no keys yet)
    r = in_process(
        "train.py",
        "-m",
        f"experiment={','.join(PRESETS)}",
        "data=arc_tiny",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=5",
        "++task.eval_every_n_epochs=2",
        "++task.eval_augmentations=2",
        "++task.ttt.steps=3",
        "++task.ranking=poe",
        cwd=root,
    )
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "5 of 5 jobs finished" in r.stdout and r.stdout.count("preflight pass optimizer_step") == 5
    return root


@pytest.mark.parametrize("preset", PRESETS)
def test_preset_trains_and_evaluates(preset, trained):
    tmp_path = trained
    (rd,) = (tmp_path / "outputs" / preset).iterdir()
    ckpt = torch.load(rd / "checkpoints" / "last.ckpt", weights_only=True)
    evaluated = [row for row in ckpt["history"] if "arc/exact_output@2" in row]
    assert [row["epoch"] for row in evaluated] == [1, 3, 4], "every 2 epochs, and the final epoch always"
    assert evaluated[-1]["arc/outputs"] == 5.0 and evaluated[-1]["arc/tasks"] == 4.0
    submission = json.loads((rd / "submission.json").read_text())
    assert len(submission) == 4 and sum(len(v) for v in submission.values()) == 5
    first = next(iter(submission.values()))[0]
    assert set(first) == {"attempt_1", "attempt_2"} and isinstance(first["attempt_1"][0], list)
    assert (rd / "predictions.png").stat().st_size > 1000
    # each evaluation's per-output records under validation/ (eval.py's results: eval/), the final one at
    # the top (test_comparisons.py)
    assert sorted(p.name for p in (rd / "validation").iterdir()) == [f"per_output_epoch={e:04d}.csv" for e in (2, 4, 5)]
    assert (rd / "per_output.csv").read_bytes() == (rd / "validation" / "per_output_epoch=0005.csv").read_bytes()
    # test-time training at the final evaluation only (not periodic), recorded per output and in the history
    how = lambda epoch: {
        (r["ttt_steps"], r["ranking"], r["views"])  # noqa: E731
        for r in csv.DictReader(open(rd / "validation" / f"per_output_epoch={epoch:04d}.csv"))
    }
    assert how(2) == {("0", "poe", "2")} and how(5) == {("3", "poe", "2")}
    assert "arc/ttt_train_exact" not in evaluated[0] and "time/ttt_s_per_task" not in evaluated[0]
    assert 0 < evaluated[-1]["time/ttt_s_per_task"] and 0 <= evaluated[-1]["arc/ttt_train_exact"] <= 1
    assert all(0 <= row["arc/train_exact"] <= 1 for row in evaluated)


def test_presets_differ_only_in_their_component(tmp_path):
    """Like for like: the composed configs of the five presets differ only in model and data.format."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments.cli import CONF_DIR
    from experiments.config_schema import register

    register()
    configs = {}
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for p in PRESETS:
            cfg = OmegaConf.to_container(compose("train", overrides=[f"experiment={p}"]), resolve=True)
            cfg.pop("model"), cfg["data"].pop("format"), cfg["task"].pop("format")
            configs[p] = cfg
    first = configs[PRESETS[0]]
    for p in PRESETS[1:]:
        assert configs[p] == first, p


def test_the_cpu_preset_is_the_champion_on_arc_small_with_its_budget():
    """experiment=exp3_champion_ttt: the champion's model and format unchanged, data=arc_small (every task that
    fits 10x10), and the budget docs/families/arc.md measures: 240 epochs, 64 test-time steps, 8 views, poe."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments.cli import CONF_DIR
    from experiments.config_schema import register

    register()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        champion, cpu, small = (
            OmegaConf.to_container(compose("train", overrides=o), resolve=True)
            for o in (
                ["experiment=exp3_champion"],
                ["experiment=exp3_champion_ttt"],
                ["experiment=exp3_champion", "data=arc_small"],
            )
        )
    assert cpu["model"] == champion["model"] and cpu["data"] == small["data"]
    assert cpu["data"]["max_tasks"] is None and cpu["data"]["max_side"] == 10 and cpu["data"]["format"] == "champion"
    assert cpu["trainer"]["max_epochs"] == 240 and cpu["task"]["eval_every_n_epochs"] == 120
    assert (
        cpu["task"]["ttt"]["steps"],
        cpu["task"]["ttt"]["lr"],
        cpu["task"]["eval_augmentations"],
        cpu["task"]["ranking"],
    ) == (64, 1e-3, 8, "poe")
