"""ARC training throughput: target tokens per second of our train.py code path against a hand-written
torch loop over the same model, the same batches (same loader, augmentation and collation) and AdamW.

    python scripts/bench_arc_throughput.py [--experiment exp3_champion] [--epochs 40] [--repeats 4] [override ...]

Validation is off on both sides. Last line: `ratio=<ours / hand-written tokens per second>`."""
import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "scripts"))

import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from bench_train_overhead import TrainingClock  # noqa: E402
from experiments.cli import CONF_DIR, quiet_libraries  # noqa: E402
from experiments.config_schema import register  # noqa: E402
from experiments.data.arc_format import PAD  # noqa: E402
from experiments.train import build, build_trainer, plain_config  # noqa: E402


def target_tokens(datamodule, epochs: int) -> int:
    total = 0
    for epoch in range(epochs):
        datamodule.train_sampler.set_epoch(epoch)
        total += sum(int((b["targets"] != PAD).sum()) for b in datamodule.train_dataloader())
    return total


def ours(cfg, run_dir: Path) -> float:
    datamodule, model, task = build(cfg)
    trainer, _ = build_trainer(cfg, run_dir, plain_config(cfg))
    clock = TrainingClock()
    trainer.callbacks.append(clock)
    trainer.fit(task, datamodule=datamodule)
    return clock.seconds


def hand_written(cfg) -> float:
    datamodule, model, task = build(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.task.lr, weight_decay=cfg.task.weight_decay)
    model.train()
    t0 = time.perf_counter()
    for epoch in range(cfg.trainer.max_epochs):
        datamodule.train_sampler.set_epoch(epoch)
        for batch in datamodule.train_dataloader():
            loss = task.training_loss(batch, 0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--experiment", default="exp3_champion")
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=4)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    register()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={args.experiment}", "logger=none",
                                          f"trainer.max_epochs={args.epochs}", "+trainer.limit_val_batches=0",
                                          "checkpoint.save_top_k=0", "trainer.enable_progress_bar=false",
                                          f"paths.outputs={tmp}", *args.overrides])
        tokens = target_tokens(build(cfg)[0], args.epochs)
        best_ours = best_hand = 0.0
        for r in range(args.repeats):
            sec = ours(cfg, Path(tmp) / f"run{r}")
            sec_h = hand_written(cfg)
            best_ours, best_hand = max(best_ours, tokens / sec), max(best_hand, tokens / sec_h)
            print(f"repeat {r}: ours {tokens / sec:,.0f} tokens/s | hand-written {tokens / sec_h:,.0f} tokens/s",
                  flush=True)
    print(f"{args.experiment}: {tokens:,} target tokens over {args.epochs} epochs; threads={torch.get_num_threads()}; "
          f"ours={best_ours:,.0f} tokens/s hand={best_hand:,.0f} tokens/s")
    print(f"ratio={best_ours / best_hand:.3f}")


if __name__ == "__main__":
    main()
