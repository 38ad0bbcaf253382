"""ARC evaluation speed: decoding through the key/value cache against full recomputation of the decoder
over the whole prefix at every step (how the first version decoded), same model, same inputs, one run.

    python src/experiments/families/arc/scripts/bench_arc_decode.py \
        [--experiment exp3_champion] [--batch 32] [--arc-full] [override ...]

The model is the preset at the public size (d_model 160, 3 decoder layers, d_ff 640; overrides may
change it). Inputs: real ARC-AGI-1 test pairs whose output is 10x10, and 30x30. Each output is decoded
for exactly its true length (its tokens fed back, as a model that spells the right grid would), so both
sides do the same number of steps whatever the weights; batches of --batch sequences (evaluation
decodes the 8 views of an output together). Prints outputs per second of each side for each size and
the largest logit difference between them; last line: `ratio=<cached / full recomputation at 30x30>`.

`--arc-full` also times the whole `data=arc_full` evaluation (419 outputs x 8 views, each to its true
length): as evaluation now runs it (measured in full), and as the first version ran it (extrapolated from
measured decoder passes; see `arc_full_workload`).
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[5]  # the checkout: src/experiments/families/<family>/scripts
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from experiments.assemble import build  # noqa: E402
from experiments.cli import CONF_DIR, quiet_libraries  # noqa: E402
from experiments.config_schema import register  # noqa: E402
from experiments.families.arc import format as af  # noqa: E402
from experiments.families.arc.data import augment, examples_of, load_tasks  # noqa: E402
from experiments.families.arc.decoding import CachedSteps, FullRecomputation, first_token  # noqa: E402

PUBLIC_SIZE = ["model.d_model=160", "model.decoder_layers=3", "model.d_ff=640"]


@torch.no_grad()
def decode_to_length(steps, fmt: str, examples: list) -> tuple[float, list[torch.Tensor]]:
    """Feed each example's true output tokens through `steps`, one per step, each sequence leaving the
    batch at its own end; (seconds, logits of each step)."""
    outputs = [af.grid_tokens(ex.query[1])[0] for ex in examples]
    positions = [af.positions_of(o) for o in outputs]
    running = list(range(len(examples)))
    tokens = torch.full((len(examples),), first_token(fmt), dtype=torch.long)
    rows = cols = torch.zeros(len(examples), dtype=torch.long)
    logits, t0 = [], time.perf_counter()
    for t in range(max(len(o) for o in outputs)):
        logits.append(steps(tokens, rows, cols))
        slots = [s for s, i in enumerate(running) if t + 1 < len(outputs[i])]
        if not slots:
            break
        if len(slots) < len(running):
            steps.keep(torch.tensor(slots))
            running = [running[s] for s in slots]
        tokens = torch.tensor([outputs[i][t] for i in running])
        rows = torch.tensor([min(positions[i][0][t + 1], af.MAX_SIDE) for i in running])
        cols = torch.tensor([min(positions[i][1][t + 1], af.MAX_SIDE) for i in running])
    return time.perf_counter() - t0, logits


def test_pairs(side: int) -> list:
    """ARC-AGI-1 test pairs (training and evaluation tasks) whose output is side x side, with context."""
    training, evaluation = load_tasks("arcagi")
    return [
        ex
        for arc_task in sorted(list(training) + list(evaluation), key=lambda t: t.id)
        for ex in examples_of(arc_task, "test")
        if ex.query[1].shape == (side, side) and ex.context
    ]


def views_of(example, n: int) -> list:
    """The identity and n - 1 random augmentations (of `example`, or the augmentations themselves)."""
    rng = np.random.default_rng(0)
    augmentations = [af.Augmentation()] + [af.Augmentation.random(rng) for _ in range(n - 1)]
    return augmentations if example is None else [augment(example, a) for a in augmentations]


def compare(lightning_task, fmt: str, batch: list) -> tuple[float, float, float]:
    """(cached seconds, full-recomputation seconds, largest logit difference) for one batch."""
    cached_s, cached = decode_to_length(
        CachedSteps(lightning_task.model, fmt, batch, lightning_task.device), fmt, batch
    )
    full_s, full = decode_to_length(
        FullRecomputation(lightning_task.model, fmt, batch, lightning_task.device), fmt, batch
    )
    diff = max((a - b).abs().max().item() for a, b in zip(cached, full))
    return cached_s, full_s, diff


def arc_full_workload(lightning_task, fmt: str, experiment: str) -> None:
    """The arc_full evaluation (419 outputs x 8 views), each output decoded to its true length.
    Now (measured in full): the data module's evaluation batches (data.eval_batch_size outputs, by input
    length), all 8 views of a batch together through the cache, each sequence leaving at its end. Before
    (extrapolated): the first version's layout, batches of eval_batch_size outputs in data order, one view
    at a time, the whole decoder rerun over the prefix at every step until the longest output of the batch
    ends: one decoder pass over a real batch is timed at a few prefix lengths, and each batch's time is
    the sum of the (interpolated) pass times over its steps."""
    datamodule = build(compose("train", overrides=[f"experiment={experiment}", "data=arc_full", "logger=none"]))[0]
    views = views_of(None, 8)
    batches = list(datamodule.val_dataloader())
    t0 = time.perf_counter()
    for i, batch in enumerate(batches):
        jobs = [augment(ex, v) for ex in batch for v in views]
        decode_to_length(CachedSteps(lightning_task.model, fmt, jobs, lightning_task.device), fmt, jobs)
        print(
            f"  cached: batch {i + 1}/{len(batches)} ({len(jobs)} sequences), {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    cached_total = time.perf_counter() - t0
    outputs, size = datamodule.eval_examples, datamodule.eval_batch_size
    old = [outputs[i : i + size] for i in range(0, len(outputs), size)]
    longest = [max(len(af.grid_tokens(ex.query[1])[0]) for ex in b) for b in old]
    probe = old[int(np.argmax(longest))]
    lengths = [1, 50, 100, 200, 400, 600, af.MAX_SIDE * (af.MAX_SIDE + 1) + 1]
    pass_s = [one_pass_seconds(lightning_task, fmt, probe, n) for n in lengths]
    per_batch = [float(np.interp(np.arange(1, n + 1), lengths, pass_s).sum()) for n in longest]
    full_total = len(views) * sum(per_batch)
    print(f"arc_full evaluation: {len(outputs)} outputs x 8 views, each decoded to its true length")
    print(f"  now, cached (measured in full): {cached_total:,.0f} s = {cached_total / 60:.1f} min")
    print(
        f"  before, full recomputation (extrapolated from decoder passes over a batch of {size} at prefix "
        f"lengths {lengths}: {', '.join(f'{x:.2f}' for x in pass_s)} s): {full_total:,.0f} s = "
        f"{full_total / 3600:.1f} h"
    )


@torch.no_grad()
def one_pass_seconds(lightning_task, fmt: str, examples: list, length: int) -> float:
    """One full-recomputation step: the decoder over a prefix of `length` tokens of each sequence."""
    steps = FullRecomputation(lightning_task.model, fmt, examples, lightning_task.device)
    n = len(examples)
    fed = torch.full((n,), af.BOS if fmt != "decoder_only" else af.SEP, dtype=torch.long)
    zeros = torch.zeros(n, dtype=torch.long)
    for _ in range(length - 1):  # history only: record the prefix without running the model
        for seq in steps.alive:
            steps.fed[seq].append(int(fed[seq]))
            steps.rows[seq].append(0)
            steps.cols[seq].append(0)
    t0 = time.perf_counter()
    steps(fed, zeros, zeros)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="exp3_champion")
    parser.add_argument("--batch", type=int, default=32, help="sequences decoded together (4 outputs x 8 views)")
    parser.add_argument("--arc-full", action="store_true", help="also time the whole arc_full evaluation workload")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    register()
    quiet_libraries()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train", overrides=[f"experiment={args.experiment}", "logger=none", *PUBLIC_SIZE, *args.overrides]
        )
    torch.manual_seed(0)
    _, model, lightning_task = build(cfg)
    lightning_task.eval()
    fmt = cfg.data.format
    print(
        f"{args.experiment}: {sum(p.numel() for p in model.parameters()):,} parameters; batch {args.batch}; "
        f"threads={torch.get_num_threads()}"
    )
    rates = {}
    for side in (10, 30):
        pairs = test_pairs(side)
        batch = (pairs * args.batch)[: args.batch] if len(pairs) >= args.batch else views_of(pairs[0], args.batch)
        cached_s, full_s, diff = compare(lightning_task, fmt, batch)
        rates[side] = (args.batch / cached_s, args.batch / full_s)
        print(
            f"{side}x{side} outputs ({len(af.grid_tokens(batch[0].query[1])[0])} steps): cached "
            f"{rates[side][0]:.3f} outputs/s, full recomputation {rates[side][1]:.4f} outputs/s "
            f"(x{rates[side][0] / rates[side][1]:.1f}); largest logit difference {diff:.1e}",
            flush=True,
        )
    if args.arc_full:
        with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
            arc_full_workload(lightning_task, fmt, args.experiment)
    print(f"ratio={rates[30][0] / rates[30][1]:.1f}")


if __name__ == "__main__":
    main()
