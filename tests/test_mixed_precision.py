"""trainer.precision=bf16-mixed on the CPU (Lightning autocasts there as on a GPU), so that what changes under
mixed precision is exercised before a GPU is: a killed bf16 run of each family resumes bit-identically (and
verify.py replays it so); verify.py, eval.py and predict.py evaluate a checkpoint under the precision its
run validated in (eval.py's figures equal the run's last epoch's, which full precision would not give);
ARC's cached decoding, test-time training and product of experts under autocast; MAGVIT-v2's quantizer in
full precision."""

import json

import pytest
import torch

from conftest import SINE, assert_identical, in_process, killed_then_rerun, run_name

pytestmark = pytest.mark.slow  # every family trained in bf16, killed and resumed

BF16 = "trainer.precision=bf16-mixed"
ARGS = [*SINE, f"data.train_points={128 * 64}", "trainer.max_epochs=3", "checkpoint.every_n_epochs=1", BF16]
RUN = "outputs/sine/" + run_name(ARGS)


def last_state(run):
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)


def evaluated_as_trained(run, cwd, *config_dir) -> dict:
    """eval.py on the run's own data: each of its figures beside the run's last history row's."""
    r = in_process("eval.py", *config_dir, f"ckpt={run}", cwd=cwd)
    assert r.returncode == 0, r.stdout + r.stderr
    metrics = json.loads((run / "eval" / "own" / "last" / "metrics.json").read_text())["metrics"]
    final = last_state(run)["history"][-1]
    return {k: (v, final[k]) for k, v in metrics.items() if not k.startswith("time/")}


def test_a_killed_bf16_run_resumes_bit_identically_and_evaluates_as_it_trained(tmp_path):
    reference = tmp_path / "reference"
    reference.mkdir()
    done = in_process("train.py", *ARGS, cwd=reference)
    assert done.returncode == 0, done.stdout + done.stderr
    assert last_state(reference / RUN)["config"]["trainer"]["precision"] == "bf16-mixed"
    killed_then_rerun(ARGS, tmp_path / RUN, tmp_path, delay=0.3)
    assert_identical(last_state(tmp_path / RUN), last_state(reference / RUN))
    pairs = evaluated_as_trained(tmp_path / RUN, tmp_path, *SINE[:2])
    assert pairs and all(a == b for a, b in pairs.values()), pairs
    # the same weights evaluated in full precision give other figures: the precision is what made them equal
    from experiments import load_run

    run = load_run(tmp_path / RUN, config_dir=SINE[1])
    run.task.evaluation_precision = None
    full = run.task.evaluate(run._stored.datamodule(), last_state(tmp_path / RUN)["epoch"])
    assert full["val/mse"] != pairs["val/mse"][1]
    v = in_process("verify.py", *SINE[:2], f"ckpt={tmp_path / RUN}", cwd=tmp_path)  # its replay in bf16 too
    assert v.returncode == 0 and "resume_exact" in v.stdout and "bit-identical" in v.stdout, v.stdout + v.stderr


def killed_bf16_run_resumes(args: list[str], experiment: str, tmp_path, delay: float):
    """The run once to its end, and once SIGKILLed inside a later epoch then rerun: the two bit-identical;
    verify.py replays its last epoch bit-identical (under the run's precision). Returns the resumed run."""
    reference = tmp_path / "reference"
    reference.mkdir()
    done = in_process("train.py", *args, cwd=reference)
    assert done.returncode == 0, done.stdout + done.stderr
    (run,) = (reference / "outputs" / experiment).iterdir()
    assert last_state(run)["config"]["trainer"]["precision"] == "bf16-mixed"
    resumed = tmp_path / "outputs" / experiment / run.name
    killed_then_rerun(args, resumed, tmp_path, delay=delay)
    assert_identical(last_state(resumed), last_state(run))
    v = in_process("verify.py", f"ckpt={resumed}", "stages=[integrity,history_consistent,resume_exact]", cwd=tmp_path)
    assert v.returncode == 0 and "bit-identical" in v.stdout, v.stdout + v.stderr  # its replay in bf16 too
    return resumed


def test_arc_under_bf16_resumes_and_its_test_time_training_and_product_of_experts_evaluate_as_in_training(tmp_path):
    """Killed and resumed under Lightning's autocast, bit-identical; the final evaluation of training
    (test-time training 2 steps, 2 views, product of experts) and eval.py's of the same checkpoint under the
    run's precision: every figure equal (before, test-time training's steps read autocast's cache of the
    weights before each update); cached and uncached decoding under autocast spell the same tokens."""
    args = [
        "experiment=exp3_champion",
        "data=arc_tiny",
        "data.batch_size=2",
        "trainer.max_epochs=5",
        "logger=none",
        "checkpoint.every_n_epochs=1",
        "task.eval_every_n_epochs=5",
        "task.eval_augmentations=2",
        "task.ranking=poe",
        "task.ttt.steps=2",
        "trainer.enable_progress_bar=false",
        BF16,
    ]
    run = killed_bf16_run_resumes(args, "exp3_champion", tmp_path, delay=0.5)
    pairs = evaluated_as_trained(run, tmp_path)
    assert pairs["arc/ttt_train_exact"] and all(a == b for a, b in pairs.values()), pairs

    from experiments import load_run

    loaded = load_run(run)
    examples = loaded._stored.datamodule().eval_examples
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        assert loaded.task.greedy(examples, cached=True) == loaded.task.greedy(examples, cached=False)


def test_ternary_under_bf16_resumes_and_evaluates_as_it_trained(tmp_path):
    args = [
        "experiment=ternary_v5_5",
        "logger=none",
        "data.batch_size=512",
        "task.coverage_samples=200",
        "trainer.enable_progress_bar=false",
        "trainer.max_epochs=2",
        "+trainer.limit_train_batches=4",
        "checkpoint.every_n_epochs=1",
        BF16,
    ]
    run = killed_bf16_run_resumes(args, "ternary_v5_5", tmp_path, delay=0.5)
    pairs = evaluated_as_trained(run, tmp_path)
    assert all(a == b for a, b in pairs.values()), pairs


def test_video_under_bf16_resumes_and_evaluates_as_it_trained(tmp_path):
    """MAGVIT-v2 (its quantizer in float32 inside the autocast)."""
    args = [
        "experiment=magvit_v2",
        "logger=none",
        "trainer.enable_progress_bar=false",
        "data.frames=5",
        "data.size=8",
        "data.train_clips=8",
        "data.val_clips=4",
        "data.batch_size=4",
        "trainer.max_epochs=3",
        "checkpoint.every_n_epochs=1",
        BF16,
    ]
    run = killed_bf16_run_resumes(args, "magvit_v2", tmp_path, delay=0.3)
    pairs = evaluated_as_trained(run, tmp_path)
    assert all(a == b for a, b in pairs.values()), pairs


def test_the_quantizer_computes_in_full_precision_under_autocast():
    """MAGVIT-v2's LFQ under bf16 autocast: its entropies (logs of products over the bits) in float32 (in bf16
    a real run's loss went NaN in its second epoch: docs/GPU.md)."""
    from experiments.families.video.magvit_v2 import LFQ

    torch.manual_seed(0)
    z = (torch.randn(2, 10, 3, 4, 4) * 5).bfloat16().requires_grad_()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = LFQ(10)(z)
    assert out["entropy_loss"].dtype == out["commitment_loss"].dtype == torch.float32
    (out["entropy_loss"] + out["commitment_loss"]).backward()
    assert torch.isfinite(z.grad).all()
