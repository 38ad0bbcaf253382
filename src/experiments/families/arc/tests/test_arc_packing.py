"""Packed full passes (`model.packed`, packing.py: the batch's real tokens end to end, attention example by
example) against padded ones: the same logits and gradients for every format on real tasks of different
sizes, and a training run that ends with the same per-output results and the same weights to float
tolerance. The packed run's exact resume after a kill: test_arc_resume.py (the presets pack)."""

import copy
import csv

import pytest
import torch

from conftest import in_process
from experiments.families.arc import format as af
from experiments.families.arc.champion import Champion
from experiments.families.arc.data import ArcDataModule, collate
from experiments.families.arc.decoder_only import DecoderOnly
from experiments.families.arc.encoder_decoder import EncoderDecoder

pytestmark = pytest.mark.slow  # the champion trained packed and padded


@pytest.fixture(scope="module")
def examples():
    """Real demonstrations of sides 1 to 10 in one batch, so that every example is padded but the longest."""
    exs = ArcDataModule(max_tasks=12, max_side=10).train_examples
    sizes = {ex.query[0].size + ex.query[1].size: ex for ex in exs}
    return list(sizes.values())[:8]


MODELS = [
    (lambda packed: DecoderOnly(packed=packed), "decoder_only"),
    (lambda packed: EncoderDecoder(packed=packed), "encoder_decoder"),
    (lambda packed: EncoderDecoder(positions="grid2d", colours="equivariant", packed=packed), "encoder_decoder"),
    (lambda packed: Champion(packed=packed), "champion"),
]


def logits_and_grads(model, batch):
    model.zero_grad()
    logits = model(batch)
    real = batch["targets"] != af.PAD
    torch.nn.functional.cross_entropy(logits[real], batch["targets"][real]).backward()
    return logits[real].detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("make, fmt", MODELS)
@pytest.mark.parametrize("full_size", [False, True], ids=["bucketed", "padded_30x30"])
def test_packed_and_padded_passes_agree(examples, make, fmt, full_size):
    """30x30: padding inside the champion's context too (every grid's canvas), which packing drops."""
    torch.manual_seed(0)
    padded = make(False)
    packed = copy.deepcopy(padded)
    for m in (packed, getattr(packed, "core", None)):
        if m is not None:
            m.packed = True
    batch = collate(examples, fmt, full_size)
    lengths = (batch["tokens" if fmt == "decoder_only" else "src"] != af.PAD).sum(1)
    assert lengths.min() < lengths.max(), "the batch must hold padding for packing to leave out"
    logits, grads = logits_and_grads(packed, batch)
    want_logits, want_grads = logits_and_grads(padded, batch)
    assert torch.allclose(logits, want_logits, atol=1e-5), (logits - want_logits).abs().max()
    assert grads.keys() == want_grads.keys()
    for name, g in grads.items():
        assert torch.allclose(g, want_grads[name], rtol=1e-4, atol=1e-6), (name, (g - want_grads[name]).abs().max())


TRAIN = [
    "experiment=exp3_champion",
    "data=arc_tiny",
    "data.batch_size=4",
    "trainer.max_epochs=8",
    "task.eval_every_n_epochs=8",
    "task.eval_augmentations=2",
    "logger=none",
    "trainer.enable_progress_bar=false",
]


def trained(root, *extra):
    root.mkdir()
    r = in_process("train.py", *TRAIN, *extra, cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (root / "outputs" / "exp3_champion").iterdir()
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    with open(run / "per_output.csv", newline="") as f:
        return state, list(csv.DictReader(f))


def test_packed_training_gives_unpacked_trainings_results(tmp_path):
    packed, packed_outputs = trained(tmp_path / "packed")
    padded, padded_outputs = trained(tmp_path / "padded", "model.packed=false")
    assert packed["config"]["model"]["packed"] is True and padded["config"]["model"]["packed"] is False
    weights = packed["state_dict"]
    assert weights.keys() == padded["state_dict"].keys()
    for name, w in weights.items():
        want = padded["state_dict"][name]
        if name.endswith("in_proj_bias"):  # (queries, keys, values)' biases: the keys' one left out, as it
            # moves every score of a query alike, which softmax ignores: its gradient is zero up to rounding,
            # which AdamW scales up to whole steps, so it differs between any two summation orders
            w, want = (torch.cat([t[: len(t) // 3], t[2 * len(t) // 3 :]]) for t in (w, want))
        assert torch.allclose(w, want, rtol=1e-3, atol=1e-5), name
    assert any(not torch.equal(w, padded["state_dict"][name]) for name, w in weights.items()), (
        "bit-identical weights: the two runs did not compute differently"
    )
    for a, b in zip(packed["history"], padded["history"], strict=True):
        assert a["train/loss"] == pytest.approx(b["train/loss"], rel=1e-4)
    # the per-output records: the same attempts, hence the same scores, output by output
    assert len(packed_outputs) == len(padded_outputs) > 0
    for a, b in zip(packed_outputs, padded_outputs):
        assert {k: v for k, v in a.items() if k != "nll_bits"} == {k: v for k, v in b.items() if k != "nll_bits"}
        assert float(a["nll_bits"]) == pytest.approx(float(b["nll_bits"]), rel=1e-4)
