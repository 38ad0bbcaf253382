"""The Ternary family through the real programs: v5.5 learns; the hyperbolic variants: the v5.5 -> v5.11
chain with frozen_checkpoint.path=auto, every refusal of the frozen_checkpoint / frozen_coverage preflight,
frozen parts that never change, homeostasis in a real run, and the coverage guard; predict.py's latent means
(v5.5 and v5.11), radii and valuation levels against the models' own."""

import csv
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conftest import ROOT, env, in_process, one_error_line, run_program
from experiments.checkpoint.io import save_checkpoint
from experiments.families.ternary.data import all_operations
from experiments.families.ternary.metrics import reconstruction_coverage, trits_from_logits
from experiments.families.ternary.vae_v5_5 import DualVAE

pytestmark = pytest.mark.slow  # the v5.5 -> v5.11 chain trained and verified

QUIET = ["logger=none", "trainer.enable_progress_bar=false"]
PARTS = ("model.encoder_a.", "model.encoder_b.", "model.decoder_a.")


def verify(target: Path, cwd: Path) -> subprocess.CompletedProcess:
    return run_program("verify.py", f"ckpt={target}", cwd=cwd)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A v5.5 run trained to full coverage and passed through verify.py, as docs/families/ternary.md's chain has it."""
    root = tmp_path_factory.mktemp("chain")
    outputs = root / "outputs"
    r = in_process(
        "train.py", "experiment=ternary_v5_5", f"paths.outputs={outputs}", "trainer.max_epochs=5", *QUIET, cwd=root
    )
    assert r.returncode == 0, r.stdout + r.stderr  # (coverage/recon_a 99.95% at epoch 5)
    run = outputs / "ternary_v5_5" / "trainer.max_epochs=5"
    v = verify(run, root)
    assert v.returncode == 0, v.stdout + v.stderr
    return {"root": root, "outputs": outputs, "run": run, "ckpt": run / "checkpoints" / "epoch=0005.ckpt"}


def test_verify_flags_sampled_coverage_as_proving_nothing(source):
    """The v5.5 source's verification: reconstruction coverage beats the untrained control by far, while the
    sampled coverage of an untrained decoder is as high: the report must say it proves nothing."""
    report = json.loads((source["run"] / "checkpoints" / "verification" / "epoch=0005.json").read_text())
    metrics = {s["name"]: s for s in report["stages"]}["metrics"]["metrics"]
    assert metrics["coverage/recon_a"]["clearly_better"] is True
    assert metrics["coverage/recon_a"]["untrained_control"] < 0.01
    assert metrics["coverage/sampled_a"]["clearly_better"] is False


def test_v5_5_reconstructs_every_operation_where_an_untrained_one_reconstructs_none(source):
    """The source run learns: both VAEs reconstruct >= 99% of the 19,683 operations after 5 epochs, an
    untrained model of the same architecture and seed < 1%; and the logged figure is of the saved weights."""
    ckpt = torch.load(source["ckpt"], weights_only=True)
    last = ckpt["history"][-1]
    assert last["coverage/recon_a"] >= 0.99 and last["coverage/recon_b"] >= 0.99, last
    ops = all_operations()

    def coverage_b(model):
        with torch.no_grad():
            return reconstruction_coverage(trits_from_logits(model.decoder_b(model.encode(ops.float())["mu_b"])), ops)

    torch.manual_seed(0)
    assert coverage_b(DualVAE()) < 0.01
    trained = DualVAE()
    trained.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    # the same operations reconstructed (the history's figure is the exact ratio; this one a float32 mean)
    assert round(coverage_b(trained) * 19683) == round(last["coverage/recon_b"] * 19683)
    # the run's picture: every operation in latent space, reconstructed or missed, as of the last epoch
    assert (source["run"] / "latent.png").stat().st_size > 10_000


def latent_rows(run: Path, input_name: str) -> list[dict]:
    (out,) = (run / "predict").glob(f"{input_name}*")
    return list(csv.DictReader(open(out / "last" / "latent.csv")))


def means(rows: list[dict], side: str) -> torch.Tensor:
    return torch.tensor([[float(r[f"mu_{side}_{i}"]) for i in range(16)] for r in rows])


def test_predict_writes_each_operations_latent_means(source):
    """All 19,683 operations (no input) and a file of some (indices and trits, in the file's order): latent.csv
    holds the encoders' means as the model computes them, and which operations each decoder reconstructs."""
    r = in_process("predict.py", f"ckpt={source['run']}", cwd=source["root"])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "19,683 predictions in " in r.stdout and "latent.csv, latent.png, prediction.json" in r.stdout
    rows = latent_rows(source["run"], "default")
    ckpt = torch.load(source["run"] / "checkpoints" / "last.ckpt", weights_only=True)
    model = DualVAE()
    model.load_state_dict({k.removeprefix("model."): v for k, v in ckpt["state_dict"].items()})
    ops = all_operations().float()
    with torch.no_grad():  # the evaluation's batches of 4,096, as predict.py runs them
        enc = [model.encode(ops[i : i + 4096]) for i in range(0, len(ops), 4096)]
    assert [int(r["operation"]) for r in rows] == list(range(19683))
    for side in ("a", "b"):
        expected = torch.cat([e[f"mu_{side}"] for e in enc])
        assert torch.allclose(means(rows, side), expected, rtol=0, atol=1e-6), side
    exact_b = sum(r["exact_b"] == "True" for r in rows)
    assert exact_b == round(ckpt["history"][-1]["coverage/recon_b"] * 19683)
    (source["root"] / "ops.txt").write_text(
        "# three operations\n19682\n-1 -1 -1 -1 -1 -1 -1 -1 -1\n1,0,0,0,0,0,0,0,0\n"
    )
    r = in_process("predict.py", f"ckpt={source['run']}", f"input={source['root'] / 'ops.txt'}", cwd=source["root"])
    assert r.returncode == 0, r.stdout + r.stderr
    some = latent_rows(source["run"], "ops.txt")
    assert [int(r["operation"]) for r in some] == [19682, 0, 9842] and some[1]["trits"] == "-1 -1 -1 -1 -1 -1 -1 -1 -1"
    assert torch.allclose(means(some, "a"), means([rows[19682], rows[0], rows[9842]], "a"), rtol=0, atol=1e-6)
    (source["root"] / "bad_ops.txt").write_text("1 2 3\n")
    r = in_process("predict.py", f"ckpt={source['run']}", f"input={source['root'] / 'bad_ops.txt'}", cwd=source["root"])
    assert r.returncode == 2 and "bad_ops.txt:1: '1 2 3' is not an operation" in one_error_line(r)


def predicted_radii_are_the_models(run: Path, root: Path) -> None:
    """v5.11's predictions: every operation's Poincare radii (of the model's own embeddings), 3-adic
    valuation level and latent means, as load_run's model gives them."""
    from experiments import load_run
    from experiments.families.ternary import hyperbolic_metrics as hm

    r = in_process("predict.py", f"ckpt={run}", cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    rows = latent_rows(run, "default")
    model = load_run(run).model
    ops = all_operations().float()
    with torch.no_grad():
        out = [model(ops[i : i + 4096]) for i in range(0, len(ops), 4096)]
    for side in ("a", "b"):
        radius = hm.poincare_radius(torch.cat([o[f"z_hyp_{side}"] for o in out]).double())
        assert torch.allclose(
            torch.tensor([float(r[f"radius_{side}"]) for r in rows], dtype=torch.float64), radius, rtol=0, atol=1e-6
        )
        assert torch.allclose(means(rows, side), torch.cat([o[f"mu_{side}"] for o in out]), rtol=0, atol=1e-6)
    assert [int(r["valuation"]) for r in rows] == hm.valuation(torch.arange(19683)).tolist()
    assert (run / "predict" / "default" / "last" / "radii.png").stat().st_size > 10_000


def frozen_state(path: Path, prefixes=PARTS) -> dict:
    state = torch.load(path, weights_only=True)["state_dict"]
    return {k: v for k, v in state.items() if k.startswith(prefixes)}


def train_v511(source, *overrides, experiment="ternary_v5_11"):
    return in_process(
        "train.py",
        f"experiment={experiment}",
        f"paths.outputs={source['outputs']}",
        *QUIET,
        *overrides,
        cwd=source["root"],
    )


def test_chain_auto_starts_at_full_coverage_keeps_it_and_learns_the_hierarchy(source):
    r = train_v511(source, "frozen_checkpoint.path=auto", "trainer.max_epochs=10")
    assert r.returncode == 0, r.stdout + r.stderr
    assert f"picked {source['ckpt']}" in r.stdout  # says which checkpoint it took
    start = float(re.search(r"frozen_coverage .* coverage ([\d.]+)% >= 95%", r.stdout).group(1))
    assert start >= 99.0
    run = source["outputs"] / "ternary_v5_11" / "frozen_checkpoint.path=auto,trainer.max_epochs=10"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    history = last["history"]
    assert len(history) == 10 and min(row["coverage/recon_a"] for row in history) >= 0.99
    assert history[-1]["hierarchy/b"] <= -0.80
    # frozen parameters never changed: every tensor of encoders A, B and decoder A equals the source's
    src, trained = frozen_state(source["ckpt"]), frozen_state(run / "checkpoints" / "last.ckpt")
    assert src.keys() == trained.keys() and len(src) == 26
    assert all(torch.equal(src[k], trained[k]) for k in src)
    assert last["frozen"]["source"]["path"] == str(source["ckpt"].resolve())
    v = verify(run, source["root"])
    assert v.returncode == 0, v.stdout + v.stderr
    report = json.loads((run / "checkpoints" / "verification" / "epoch=0010.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    assert stages["frozen_identical"]["status"] == "pass" and "byte-identical" in stages["frozen_identical"]["details"]
    metrics = stages["metrics"]["metrics"]
    assert metrics["hierarchy/b"]["clearly_better"] and metrics["coverage/recon_a"]["untrained_control"] >= 0.99
    predicted_radii_are_the_models(run, source["root"])
    rep = subprocess.run(
        [
            sys.executable,
            str(ROOT / "src" / "experiments" / "families" / "ternary" / "scripts" / "ternary_report.py"),
            str(run),
        ],
        env=env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert rep.returncode == 0, rep.stderr
    png = run / "report" / "ternary_report.png"
    assert f"wrote {png}" in rep.stdout and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def other_sources(source):
    """Checkpoints that must be refused: barely trained, of another width, of an incompatible variant."""
    other = source["root"] / "other"
    short = ["trainer.max_epochs=1", "+trainer.limit_train_batches=2", "checkpoint.save_top_k=0"]
    for extra in ([], ["model.latent_dim=8"]):
        r = in_process(
            "train.py", "experiment=ternary_v5_5", f"paths.outputs={other}", *short, *extra, *QUIET, cwd=source["root"]
        )
        assert r.returncode == 0, r.stdout + r.stderr
    runs = {p.name: p for p in (other / "ternary_v5_5").iterdir()}
    family = source["root"] / "v5_12.ckpt"
    ckpt = torch.load(source["ckpt"], weights_only=True)
    ckpt["config"]["experiment"] = "ternary_v5_12"  # v5.11 may load only v5.5 or v5.11 parts
    save_checkpoint(ckpt, family)
    narrow = next(p for name, p in runs.items() if "latent_dim=8" in name)
    untrained = next(p for name, p in runs.items() if "latent_dim" not in name)
    crafted = {}  # a file is data: a state_dict that is not names to tensors is bad input, not a crash
    for name, state in (
        ("listed", list(ckpt["state_dict"].values())),
        ("floats", {k: 0.5 for k in ckpt["state_dict"]}),
    ):
        crafted[name] = source["root"] / f"{name}.ckpt"
        save_checkpoint(
            {**ckpt, "config": {**ckpt["config"], "experiment": "ternary_v5_5"}, "state_dict": state}, crafted[name]
        )
    return {"family": family, "narrow": narrow / "checkpoints" / "last.ckpt", "untrained": untrained, **crafted}


REFUSALS = {
    "null path": ([], [r"frozen_checkpoint\.path is null", r"allow_random=true", "compatible under"]),
    "missing file": (["frozen_checkpoint.path=/nowhere/v5_5.ckpt"], [r"/nowhere/v5_5\.ckpt does not exist"]),
    "wrong family": (
        ["frozen_checkpoint.path={family}"],
        [r"is a ternary_v5_12 checkpoint; ternary_v5_11 loads frozen parts only from ternary_v5_5 or ternary_v5_11"],
    ),
    "wrong shapes": (
        ["frozen_checkpoint.path={narrow}"],
        [r"do not fit this model: model\.decoder_a\.net\.0\.weight \(32, 8\) in the checkpoint vs \(32, 16\) here"],
    ),
    "state_dict a list": (
        ["frozen_checkpoint.path={listed}"],
        [r"listed\.ckpt is not a checkpoint of this framework: its state_dict is a list"],
    ),
    "state_dict of floats": (
        ["frozen_checkpoint.path={floats}"],
        [r"floats\.ckpt is not a checkpoint of this framework: its state_dict holds float at"],
    ),
    "low coverage": (
        ["frozen_checkpoint.path={untrained}"],
        [r"coverage of the frozen parts is \d+\.\d+%.*below frozen_checkpoint\.min_coverage=95%"],
    ),
}


@pytest.mark.parametrize("case", list(REFUSALS))
def test_refusals_stop_before_training_with_one_line(case, source, other_sources):
    overrides, patterns = REFUSALS[case]
    overrides = [o.format(**other_sources) for o in overrides]
    written = lambda: sorted((source["outputs"] / "ternary_v5_11").glob("*/checkpoints/*"))  # noqa: E731
    before = written()
    r = in_process(
        "train.py",
        "experiment=ternary_v5_11",
        f"paths.outputs={source['outputs']}",
        *QUIET,
        *overrides,
        cwd=source["root"],
    )
    assert r.returncode == 2, r.stdout + r.stderr  # the frozen parts' source is bad input
    error = one_error_line(r)
    assert error.endswith("Nothing was trained."), error
    for pattern in patterns:
        assert re.search(pattern, error), (pattern, error)
    if case in ("null path", "wrong shapes"):  # suggests what would work
        assert str(source["run"] / "checkpoints") in error
    assert "Training ternary_v5_11" not in r.stdout and written() == before  # stopped before training


def test_allow_random_trains_and_says_so(source):
    r = train_v511(source, "frozen_checkpoint.allow_random=true", "trainer.max_epochs=1")
    assert r.returncode == 0, r.stdout + r.stderr
    assert "frozen parts are RANDOM" in r.stdout and "not enforced" in r.stdout
    ckpt = torch.load(
        source["outputs"]
        / "ternary_v5_11"
        / "frozen_checkpoint.allow_random=true,trainer.max_epochs=1"
        / "checkpoints"
        / "last.ckpt",
        weights_only=True,
    )
    assert ckpt["frozen"]["source"]["allow_random"] is True


def test_partial_freeze_homeostasis_in_a_real_run_and_verified(source):
    r = train_v511(
        source,
        f"frozen_checkpoint.path={source['ckpt']}",
        "trainer.max_epochs=10",
        experiment="ternary_v5_11_partial_freeze",
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert re.search(r"homeostasis: epoch 5: coverage/recon_a [\d.]+% -> unfroze encoder A", r.stdout)
    run = next((source["outputs"] / "ternary_v5_11_partial_freeze").iterdir())
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    frozen_flags = [row["homeostasis/encoder_a_frozen"] for row in last["history"]]
    assert frozen_flags == [1.0] * 4 + [0.0] * 6
    assert last["frozen"]["always_frozen"] == ["decoder_a"]
    src, trained = frozen_state(source["ckpt"]), frozen_state(run / "checkpoints" / "last.ckpt")
    assert all(torch.equal(src[k], trained[k]) for k in src if k.startswith("model.decoder_a."))
    assert not all(torch.equal(src[k], trained[k]) for k in src if k.startswith("model.encoder_b."))
    v = verify(run, source["root"])  # resume_exact restores the controller's state (A unfrozen) from the file
    assert v.returncode == 0, v.stdout + v.stderr


def test_coverage_guard_stops_a_collapse_and_keeps_the_last_good_checkpoint(source):
    # Encoder A unfrozen after one epoch at 10 x lr with no cross-entropy to hold it: coverage collapses.
    r = train_v511(
        source,
        f"frozen_checkpoint.path={source['ckpt']}",
        "task.encoder_a_lr_scale=10",
        "task.ce_weight=0",
        "callbacks.homeostasis.warmup_epochs=1",
        "callbacks.homeostasis.hysteresis=0",
        "callbacks.coverage_guard.stop=true",
        "checkpoint.save_top_k=0",
        experiment="ternary_v5_11_partial_freeze",
    )
    assert r.returncode == 1, r.stdout + r.stderr
    error = next(line for line in r.stdout.splitlines() if line.startswith("error:"))
    assert re.search(r"coverage/recon_a fell to \d+\.\d+% at epoch 2, below 95%; stopped", error)
    assert "last good checkpoint" in error and "(epoch 1)" in error
    run = next(p for p in (source["outputs"] / "ternary_v5_11_partial_freeze").iterdir() if "coverage_guard" in p.name)
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["epoch"] == 0 and last["history"][-1]["coverage/recon_a"] >= 0.99
    assert sorted(p.name for p in (run / "checkpoints").glob("*.ckpt")) == ["last.ckpt"]


def test_v5_12_trains_with_its_rich_loss(source):
    r = train_v511(
        source, f"frozen_checkpoint.path={source['ckpt']}", "trainer.max_epochs=3", experiment="ternary_v5_12"
    )
    assert r.returncode == 0, r.stdout + r.stderr
    run = next((source["outputs"] / "ternary_v5_12").iterdir())
    history = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["history"]
    assert history[-1]["hierarchy/b"] < history[0]["hierarchy/b"] and history[-1]["hierarchy/b"] < -0.3
    assert all(row["train/separation"] >= 0 and row["coverage/recon_a"] >= 0.99 for row in history)


def test_an_operations_file_is_read_as_data(tmp_path):
    """predict.py's operations file: a FIFO is refused unread, a file past 4 MiB refused, a bad line named."""
    import pytest

    from conftest import fifo_feeding
    from experiments.errors import UserError
    from experiments.families.ternary.data import TernaryOpsDataModule

    with fifo_feeding(tmp_path / "ops.txt", b"0\n"), pytest.raises(UserError, match="is a FIFO"):
        TernaryOpsDataModule(operations=str(tmp_path / "ops.txt"))
    (tmp_path / "big.txt").write_text("0\n" * ((4 << 20) // 2 + 1))  # 2 bytes past 4 MiB, every line valid
    with pytest.raises(UserError, match="big.txt is larger than 4,194,304 bytes"):
        TernaryOpsDataModule(operations=str(tmp_path / "big.txt"))
    (tmp_path / "ok.txt").write_text("5\n-1 0 1 -1 0 1 -1 0 1  # a comment\n")
    assert TernaryOpsDataModule(operations=str(tmp_path / "ok.txt")).predicted.shape == (2, 9)
