"""Cached decoding makes exactly the decisions of full recomputation, for every model format, on real
ARC tasks with models trained a few epochs (an untrained model stops after a token or two)."""

import pytest
import torch

from experiments.families.arc import format as af
from experiments.families.arc.champion import Champion
from experiments.families.arc.data import ArcDataModule, collate
from experiments.families.arc.decoder_only import DecoderOnly
from experiments.families.arc.encoder_decoder import EncoderDecoder
from experiments.families.arc.task import ArcLightningTask

pytestmark = pytest.mark.slow  # four ARC formats trained 60 epochs each

MODELS = {
    "decoder_only": ("decoder_only", DecoderOnly),
    "encoder_decoder_1d": ("encoder_decoder", EncoderDecoder),
    "encoder_decoder_grid2d_equivariant": (
        "encoder_decoder",
        lambda: EncoderDecoder(positions="grid2d", colours="equivariant"),
    ),
    "champion": ("champion", Champion),
}


def trained(name: str, epochs: int = 60) -> tuple[ArcLightningTask, ArcDataModule]:
    fmt, make = MODELS[name]
    torch.manual_seed(0)
    dm = ArcDataModule(format=fmt, max_tasks=4, max_side=6)
    task = ArcLightningTask(make(), format=fmt, eval_augmentations=2)
    opt = torch.optim.AdamW(task.parameters(), lr=2e-3)
    for epoch in range(epochs):
        dm.train_sampler.set_epoch(epoch)
        for batch in dm.train_dataloader():
            loss = task.training_loss(batch, 0)
            opt.zero_grad()
            loss.backward()
            opt.step()
    return task.eval(), dm


@pytest.fixture(scope="module", params=list(MODELS))
def model_and_data(request):
    return trained(request.param)


def test_cached_decoding_matches_full_recomputation(model_and_data):
    task, dm = model_and_data
    examples = dm.eval_examples + dm.train_examples  # held-out and seen: short and long outputs
    cached_log, full_log = [], []
    cached = task.greedy(examples, cached=True, record=cached_log)
    full = task.greedy(examples, cached=False, record=full_log)
    assert cached == full, "the cached path chose other tokens"
    assert len(cached_log) == len(full_log)
    for step, ((rows_c, logits_c), (rows_f, logits_f)) in enumerate(zip(cached_log, full_log)):
        assert rows_c == rows_f
        diff = (logits_c - logits_f).abs().max().item()
        assert diff < 1e-4, f"step {step}: logits differ by {diff}"
    # the comparison covered real decoding: long sequences, and finished ones leaving the batch
    assert max(len(g) for g in cached) >= 15, [len(g) for g in cached]
    sizes = [len(rows) for rows, _ in cached_log]
    assert sizes[0] == len(examples) and sizes[-1] < sizes[0], "no sequence finished before the others"


def test_first_step_logits_equal_the_teacher_forced_pass(model_and_data):
    """The cached start + one step gives the logits the training forward pass gives at the first output token."""
    task, dm = model_and_data
    examples = dm.eval_examples
    log = []
    task.greedy(examples, cached=True, record=log)
    batch = collate(examples, task.format)
    with torch.no_grad():
        teacher = task.model(batch)
    if task.format == "decoder_only":
        first = torch.tensor([len(af.grid_tokens(ex.query[0])[0]) for ex in examples])  # the SEP position
        teacher = teacher[torch.arange(len(examples)), first]
    else:
        teacher = teacher[:, 0]
    assert (log[0][1] - teacher).abs().max().item() < 1e-4


def test_prediction_is_the_same_through_either_path(model_and_data):
    task, dm = model_and_data
    a = task.predict(dm.eval_examples, cached=True)
    b = task.predict(dm.eval_examples, cached=False)
    for x, y in zip(a, b):
        for ga, gb in zip(x["attempts"], y["attempts"]):
            assert (ga is None and gb is None) or (ga.shape == gb.shape and (ga == gb).all())
