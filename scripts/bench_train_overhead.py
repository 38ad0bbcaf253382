"""Framework overhead on the Ternary VAE: steps per second of our train.py code path against a minimal
hand-written torch loop, same model, batch size, data order, optimizer and threads, in one process.

    python scripts/bench_train_overhead.py [--epochs 3] [--repeats 2] [override ...]

Our path is what train.py runs (Trainer, callbacks, progress bar, checkpoint policy, atomic saves);
per-epoch validation is switched off on both sides since the hand loop has none. Our time runs from
the start of training to its end (per-epoch checkpoint writes included; the one-off fit setup is
reported separately as ratio_fit). ratio_bare is Lightning with nothing of ours attached: the
floor any code path on Lightning's automatic optimisation can reach. Last line:
`ratio=<ours / hand-written steps per second>`
(best of the repeats of each)."""

import argparse
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

import lightning as L  # noqa: E402
import torch  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402
from lightning.pytorch.callbacks import Callback  # noqa: E402

from experiments.assemble import build, build_trainer, plain_config  # noqa: E402
from experiments.cli import CONF_DIR, quiet_libraries  # noqa: E402
from experiments.config_schema import register  # noqa: E402


class TrainingClock(Callback):
    """Times the training loop itself (first batch to end of training), without the one-off fit setup."""

    def on_train_start(self, trainer, pl_module):
        self.t0 = time.perf_counter()

    def on_train_end(self, trainer, pl_module):
        self.seconds = time.perf_counter() - self.t0


def ours(cfg, run_dir: Path) -> tuple[int, float, float]:
    """Returns (steps, seconds of the training loop, seconds of the whole fit call)."""
    datamodule, model, task = build(cfg)
    trainer, _ = build_trainer(cfg, run_dir, plain_config(cfg), task)
    clock = TrainingClock()
    trainer.callbacks.append(clock)
    t0 = time.perf_counter()
    trainer.fit(task, datamodule=datamodule)
    return trainer.global_step, clock.seconds, time.perf_counter() - t0


def bare_lightning(cfg) -> tuple[int, float]:
    """Lightning alone on the same task: no callbacks, bar, logger or checkpoints. The floor that any
    code path on Lightning's automatic optimisation can reach."""
    datamodule, model, task = build(cfg)
    clock = TrainingClock()
    trainer = L.Trainer(
        max_epochs=cfg.trainer.max_epochs,
        limit_val_batches=0,
        logger=False,
        callbacks=[clock],
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        accelerator=cfg.trainer.accelerator,
        devices=1,
    )
    trainer.fit(task, datamodule=datamodule)
    return trainer.global_step, clock.seconds


def hand_written(cfg, steps: int) -> tuple[int, float]:
    datamodule, model, task = build(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.task.lr, weight_decay=cfg.task.weight_decay)
    data, sampler = datamodule.operations, datamodule.train_sampler
    done, epoch = 0, 0
    t0 = time.perf_counter()
    while done < steps:
        sampler.set_epoch(epoch)
        for idx in sampler:
            loss, _ = task.compute_loss(data[idx], epoch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            done += 1
            if done == steps:
                break
        epoch += 1
    return done, time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    register()
    quiet_libraries()
    with tempfile.TemporaryDirectory() as tmp, initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "train",
            overrides=[
                "experiment=ternary_v5_5",
                "logger=none",
                f"trainer.max_epochs={args.epochs}",
                "+trainer.limit_val_batches=0",
                "checkpoint.save_top_k=0",
                f"paths.outputs={tmp}",
                *args.overrides,
            ],
        )
        best_ours = best_fit = best_hand = best_bare = 0.0
        for r in range(args.repeats):
            steps, sec, fit_sec = ours(cfg, Path(tmp) / f"run{r}")
            best_ours, best_fit = max(best_ours, steps / sec), max(best_fit, steps / fit_sec)
            steps_h, sec_h = hand_written(cfg, steps)
            best_hand = max(best_hand, steps_h / sec_h)
            steps_b, sec_b = bare_lightning(cfg)
            best_bare = max(best_bare, steps_b / sec_b)
            print(
                f"repeat {r}: ours {steps / sec:.1f} steps/s ({steps / fit_sec:.1f}/s counting fit setup) | "
                f"bare Lightning {steps_b / sec_b:.1f}/s | hand-written {steps_h / sec_h:.1f}/s",
                flush=True,
            )
    print(
        f"threads={torch.get_num_threads()} batch_size={cfg.data.batch_size} ours={best_ours:.1f} steps/s "
        f"hand={best_hand:.1f} steps/s; with fit setup: ratio_fit={best_fit / best_hand:.3f}; "
        f"bare Lightning floor: ratio_bare={best_bare / best_hand:.3f}"
    )
    print(f"ratio={best_ours / best_hand:.3f}")


if __name__ == "__main__":
    main()
