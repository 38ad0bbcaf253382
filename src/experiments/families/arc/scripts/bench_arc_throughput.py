"""ARC training throughput.

    python src/experiments/families/arc/scripts/bench_arc_throughput.py \
        [--experiment exp3_champion] [--epochs 40] [--repeats 4] [override ...]
    python src/experiments/families/arc/scripts/bench_arc_throughput.py --against padded \
        [--steps 48] [--ours-steps 0] [override ...]

Default (`--against hand`): target tokens per second of our train.py code path against a hand-written
torch loop over the same model, the same batches (same loader, augmentation and collation) and AdamW.
Last line: `ratio=<ours / hand-written tokens per second>`.

`--against padded`: training examples per second of our path (length-bucketed batches, packed: no padding
computed, `model.packed`) against the same path, model and batches with every grid padded to 30x30 and
computed padded (the public code's layout), at the public size (d_model 160, 3 decoder layers, d_ff 640), batch 8,
on `data=arc_full`
(the ARC-AGI-1 training tasks and the evaluation tasks' demonstrations), epoch 0's order on both sides:
ours over the whole epoch (--ours-steps to cut it), padded over its first --steps batches (a padded
batch costs the same whatever it holds). Also prints the arithmetic: forward FLOPs per example, padded
against our batches padded to their longest, and against no padding at all (the bound: what packing computes),
and `ratio_to_bound`: our speed-up over the padded side divided by that bound. Last line:
`ratio_vs_padded=<ours / padded examples per second>`.

Validation is off on every side."""

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[5]  # the checkout: src/experiments/families/<family>/scripts
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from bench_train_overhead import TrainingClock  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from experiments.assemble import build, build_trainer, plain_config  # noqa: E402
from experiments.cli import CONF_DIR, quiet_libraries  # noqa: E402
from experiments.config_schema import register  # noqa: E402
from experiments.families.arc.format import PAD  # noqa: E402


def target_tokens(datamodule, epochs: int) -> int:
    total = 0
    for epoch in range(epochs):
        datamodule.train_sampler.set_epoch(epoch)
        total += sum(int((b["targets"] != PAD).sum()) for b in datamodule.train_dataloader())
    return total


def ours(cfg, run_dir: Path) -> float:
    datamodule, model, lightning_task = build(cfg)
    trainer, _ = build_trainer(cfg, run_dir, plain_config(cfg), lightning_task)
    clock = TrainingClock()
    trainer.callbacks.append(clock)
    trainer.fit(lightning_task, datamodule=datamodule)
    return clock.seconds


def hand_written(cfg) -> float:
    """The same model, batches and optimizer in a plain loop, on the trainer's device and in its precision
    (bf16 autocast as Lightning's bf16-mixed)."""
    datamodule, model, lightning_task = build(cfg)
    device = torch.device("cuda" if cfg.trainer.accelerator in ("gpu", "cuda") else "cpu")
    lightning_task.to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.task.lr, weight_decay=cfg.task.weight_decay)
    model.train()
    precision = (
        torch.autocast(device.type, torch.bfloat16)
        if str(cfg.trainer.precision).startswith("bf16")
        else (contextlib.nullcontext())
    )
    t0 = time.perf_counter()
    for epoch in range(cfg.trainer.max_epochs):
        datamodule.train_sampler.set_epoch(epoch)
        for batch in datamodule.train_dataloader():
            with precision:
                loss = lightning_task.training_loss({k: v.to(device) for k, v in batch.items()}, 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


PUBLIC_SIZE = ["model.d_model=160", "model.decoder_layers=3", "model.d_ff=640"]


def forward_flops(batch: dict, fmt: str, m, each: bool = False) -> float:
    """Matmul FLOPs of one forward pass over the batch as laid out (padding computed like any token), or
    (`each`) over each example's own lengths, as if nothing were padded. Attention: 4 Lq Lk d per layer."""
    d, ff = m.d_model, m.d_ff
    block = 2 * (4 * d * d + 2 * d * ff)  # self-attention projections and feed-forward, per token
    lengths = lambda key: (
        (batch[key] != PAD).sum(1)
        if each
        else torch.full(  # noqa: E731
            (batch[key].shape[0],), batch[key].shape[1]
        )
    ).double()
    if fmt == "decoder_only":
        n = lengths("tokens")
        return float((m.layers * (n * block + 4 * n * n * d)).sum())
    s, t = lengths("src"), lengths("tgt_in")
    total = m.encoder_layers * (s * block + 4 * s * s * d)
    total += m.decoder_layers * (t * (block + 4 * d * d) + s * 4 * d * d + 4 * t * t * d + 4 * t * s * d)
    if fmt == "champion":
        c = lengths("context")
        total += c * block + 4 * c * c * d + c * 4 * d * d  # one layer over the cells, then the pooling
    return float(total.sum())


def arithmetic(cfg, steps: int | None) -> tuple[float, float]:
    """Forward FLOPs of the first `steps` batches of epoch 0 (None: all of them): padded / ours, and
    padded / no padding at all."""
    fmt, totals = cfg.data.format, {}
    for side, extra in (("ours", False), ("padded", True)):
        datamodule = build(cfg)[0]
        datamodule.full_size_padding = extra
        datamodule.train_sampler.set_epoch(0)
        batches = [b for _, b in zip(range(steps or len(datamodule.train_sampler)), datamodule.train_dataloader())]
        totals[side] = sum(forward_flops(b, fmt, cfg.model) for b in batches)
        if side == "ours":
            totals["none"] = sum(forward_flops(b, fmt, cfg.model, each=True) for b in batches)
    return totals["padded"] / totals["ours"], totals["padded"] / totals["none"]


def against_padded(args) -> None:
    """Ours over the whole of epoch 0 (or --ours-steps batches); padded over its first --steps batches: every
    padded batch has the same shapes, so it costs the same whatever examples it holds."""
    rates, measured = {}, {}
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        common = [
            f"experiment={args.experiment}",
            "data=arc_full",
            "data.batch_size=8",
            *PUBLIC_SIZE,
            "logger=none",
            "trainer.max_epochs=1",
            "+trainer.limit_val_batches=0",
            "checkpoint.save_top_k=0",
            "trainer.enable_progress_bar=false",
            f"paths.outputs={tmp}",
            *args.overrides,
        ]
        for side, extra, steps in (
            ("ours", [], args.ours_steps),
            ("padded", ["+data.full_size_padding=true", "model.packed=false"], args.steps),
        ):
            cfg = compose(
                "train", overrides=common + extra + ([f"+trainer.limit_train_batches={steps}"] if steps else [])
            )
            datamodule = build(cfg)[0]
            batches = datamodule.train_sampler.batch_indices(0)[: steps or None]
            examples, seconds = sum(len(b) for b in batches), ours(cfg, Path(tmp) / side)
            rates[side], measured[side] = examples / seconds, len(batches)
            print(
                f"{side}: {len(batches)} batches, {examples} examples in {seconds:.1f} s = {rates[side]:.2f} "
                f"examples/s ({len(batches) / seconds:.3f} steps/s)",
                flush=True,
            )
    print(
        f"{args.experiment}: public size, batch 8, data=arc_full, epoch 0 in the same order on both sides; "
        f"threads={torch.get_num_threads()}"
    )
    bucketed, unpadded = arithmetic(cfg, args.ours_steps)
    print(
        f"arithmetic (forward FLOPs per example) over the {measured['ours']} batches ours ran: padded / the same "
        f"batches padded to their longest {bucketed:.1f}; padded / no token padding (the bound) {unpadded:.1f}"
    )
    ratio = rates["ours"] / rates["padded"]
    print(
        f"ratio_to_bound={ratio / unpadded:.2f} (ours / padded examples per second, over padded / no-padding "
        f"FLOPs: {ratio:.2f} / {unpadded:.2f})"
    )
    print(f"ratio_vs_padded={ratio:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="exp3_champion")
    parser.add_argument("--against", choices=("hand", "padded"), default="hand")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("--steps", type=int, default=48, help="padded batches measured with --against padded")
    parser.add_argument("--ours-steps", type=int, default=0, help="our batches measured (0: the whole epoch)")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    register()
    quiet_libraries()
    if args.against == "padded":
        return against_padded(args)
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                f"experiment={args.experiment}",
                "logger=none",
                f"trainer.max_epochs={args.epochs}",
                "+trainer.limit_val_batches=0",
                "checkpoint.save_top_k=0",
                "trainer.enable_progress_bar=false",
                f"paths.outputs={tmp}",
                *args.overrides,
            ],
        )
        tokens = target_tokens(build(cfg)[0], args.epochs)
        best_ours = best_hand = 0.0
        for r in range(args.repeats):
            sec = ours(cfg, Path(tmp) / f"run{r}")
            sec_h = hand_written(cfg)
            best_ours, best_hand = max(best_ours, tokens / sec), max(best_hand, tokens / sec_h)
            print(
                f"repeat {r}: ours {tokens / sec:,.0f} tokens/s | hand-written {tokens / sec_h:,.0f} tokens/s",
                flush=True,
            )
    print(
        f"{args.experiment}: {tokens:,} target tokens over {args.epochs} epochs; threads={torch.get_num_threads()}; "
        f"ours={best_ours:,.0f} tokens/s hand={best_hand:,.0f} tokens/s"
    )
    if torch.cuda.is_available():
        print(f"peak_memory_gib={torch.cuda.max_memory_allocated() / 2**30:.2f}")
    print(f"ratio={best_ours / best_hand:.3f}")


if __name__ == "__main__":
    main()
