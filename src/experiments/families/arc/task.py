"""Training and honest evaluation of the ARC baselines.

Training: teacher-forced cross-entropy on output tokens. Evaluation: greedy autoregressive decoding (no
teacher forcing, through the model's key/value cache: `arc_decoding.py`) of each held-out test output
under `eval_augmentations` views of the task (the first is the identity), all views of an evaluation
batch decoded together, each mapped back before voting; the two most voted grids are attempts 1 and 2. The
output's size is part of the prediction. Each evaluation also measures the teacher-forced likelihood of
each true output (identity view; `arc/test_nll`, bits per output token) and writes `submission.json` (ARC
Prize format) and `per_output.csv` (one row per held-out output, what a sweep's paired comparisons read;
each evaluation's copy also under `eval/`) in the run directory; the end of training draws every
held-out output with its two attempts (`predictions.png`, more pages as `predictions_2.png`, ...). eval.py
writes the same files for any task set.
"""
import json
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments.family import atomic_write_bytes, atomic_write_csv, epoch_number, ExperimentTask
from experiments.families.arc import format as af
from experiments.families.arc.data import augment, collate
from experiments.families.arc.metrics import nll_bits, output_record, rank_attempts, score
from experiments.families.arc.decoding import CachedSteps, FullRecomputation, greedy


class ArcTask(ExperimentTask):
    summary_keys = ("train/loss", "arc/exact_output@1", "arc/exact_output@2", "arc/exact_task@2",
                    "arc/cell_accuracy", "arc/right_shape", "arc/test_nll")
    higher_is_better = ("arc/exact_output@1", "arc/exact_output@2", "arc/exact_task@1", "arc/exact_task@2",
                        "arc/cell_accuracy", "arc/right_shape")
    lower_is_better = ("arc/test_nll",)
    # A sweep's paired comparisons (comparisons.py): metric -> its column of per_output.csv; the binary
    # ones also get an exact McNemar test.
    paired_metrics = {"arc/test_nll": "nll_bits", "arc/cell_accuracy": "cell_accuracy",
                      "arc/exact_output@2": "exact@2"}
    binary_metrics = ("arc/exact_output@2",)
    primary_metric = "arc/cell_accuracy"
    long_validation = True  # decoding every held-out output: the progress bar shows it

    def __init__(self, model, format: str = "encoder_decoder", lr: float = 1e-3, weight_decay: float = 0.01,
                 eval_augmentations: int = 1, max_decode_tokens: int = af.MAX_SIDE * (af.MAX_SIDE + 1) + 1,
                 eval_every_n_epochs: int = 1, seed: int = 0):
        super().__init__()
        self.model, self.format = model, format
        self.lr, self.weight_decay = lr, weight_decay
        self.eval_augmentations, self.max_decode_tokens, self.seed = eval_augmentations, max_decode_tokens, seed
        self.eval_every_n_epochs = eval_every_n_epochs
        self.last_results: list[dict] = []

    # ---- training ----
    def training_loss(self, batch: dict, batch_idx: int) -> torch.Tensor:
        logits = self.model(batch)
        targets = batch["targets"]
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=af.PAD)
        n = int((targets != af.PAD).sum())
        self.add_training_terms(loss.detach() * n, n)  # the epoch's loss: a mean over its tokens
        return loss

    def training_figures(self, means: list[float], count: float) -> dict[str, float]:
        return {**super().training_figures(means, count), "train/tokens": count}

    def configure_optimizers(self):
        params = [p for p in self.parameters() if p.requires_grad]
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    # ---- evaluation ----
    def views(self) -> list[af.Augmentation]:
        rng = np.random.default_rng([self.seed, 2024])
        return [af.Augmentation()] + [af.Augmentation.random(rng) for _ in range(self.eval_augmentations - 1)]

    def evaluates(self, epoch: int) -> bool:
        """Decoding is the expensive part: every `eval_every_n_epochs` epochs, and the final epoch always."""
        return (epoch + 1) % self.eval_every_n_epochs == 0 or epoch + 1 >= (self.trainer.max_epochs or 0)

    def evaluation_step(self, examples: list, epoch: int) -> list[dict]:
        return self.predict(examples)

    def figures(self, parts: list, epoch: int) -> dict[str, float]:
        return score(in_task_order([r for part in parts for r in part]))

    def evaluation_files(self, parts: list, figures: dict, folder: Path, epoch: int, during_training: bool,
                         datamodule=None) -> None:
        """submission.json and per_output.csv; during training also each evaluation's copy under eval/, the
        pictures once at the end (on_fit_end), for eval.py the pictures now."""
        results = in_task_order([r for part in parts for r in part])
        write_submission(results, folder / "submission.json")
        write_per_output(results, folder / "per_output.csv")
        if during_training:
            write_per_output(results, folder / "eval" / f"per_output_epoch={epoch_number(epoch):04d}.csv")
            self.last_results = results
        else:
            self.draw(results, folder, epoch, figures)

    def on_fit_end(self) -> None:
        if self.last_results and self.trainer.is_global_zero:
            # on_fit_end: current_epoch already counts the finished epochs; the last one is current_epoch - 1
            self.draw(self.last_results, Path(self.trainer.default_root_dir), self.current_epoch - 1,
                      score(self.last_results))

    @staticmethod
    def draw(results: list[dict], folder: Path, epoch: int, metrics: dict) -> None:
        from experiments.families.arc.pictures import draw_predictions

        title = (f"epoch {epoch_number(epoch)}: cell accuracy {metrics['arc/cell_accuracy']:.1%}, right shape "
                 f"{metrics['arc/right_shape']:.1%}, exact@2 {metrics['arc/exact_output@2']:.1%} "
                 f"of {len(results)} outputs")
        draw_predictions(results, folder, title)

    @torch.no_grad()
    def check_outputs(self, examples: list) -> list[tuple[str, torch.Tensor, tuple]]:
        batch = self._to_device(collate(examples, self.format))
        logits = self.model(batch)
        key = "tokens" if self.format == "decoder_only" else "tgt_in"
        return [("logits", logits, (*batch[key].shape, af.VOCAB))]

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def predict(self, examples: list, cached: bool = True) -> list[dict]:
        """Results for `score`: each test output with its two attempts, voted over the views. All views of
        all the given outputs are decoded together, as one batch."""
        was_training = self.training
        self.eval()
        views = self.views()
        seen = [augment(ex, view) for ex in examples for view in views]
        candidates = [[] for _ in examples]
        for j, tokens in enumerate(self.greedy(seen, cached)):
            grid = af.tokens_to_grid(tokens)
            candidates[j // len(views)].append(None if grid is None else views[j % len(views)].invert(grid))
        bits, tokens = self.likelihood(examples)
        self.train(was_training)
        return [{"task": ex.task, "index": ex.index, "input": ex.query[0], "target": ex.query[1],
                 "attempts": rank_attempts(c, 2), "nll_bits": float(b), "tokens": int(n)}
                for ex, c, b, n in zip(examples, candidates, bits, tokens)]

    @torch.no_grad()
    def likelihood(self, examples: list) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced bits per token of each true output (row ends and EOS included) under the model,
        as given (the identity view), and its token count."""
        batch = self._to_device(collate(examples, self.format))
        return nll_bits(self.model(batch), batch["targets"], af.PAD)

    def greedy(self, examples: list, cached: bool = True, record: list | None = None) -> list[list[int]]:
        """Greedy decoding of each example's output from its input (and context): through the model's
        key/value cache, or (`cached=False`, the reference) by full recomputation at every step."""
        steps = (CachedSteps if cached else FullRecomputation)(self.model, self.format, examples, self.device)
        return greedy(steps, self.format, len(examples), self.max_decode_tokens, self.device, record)


def in_task_order(results: list[dict]) -> list[dict]:
    """Results by (task, output index): evaluation batches run in order of length."""
    return sorted(results, key=lambda r: (r["task"], r["index"]))


def write_per_output(results: list[dict], path: Path) -> None:
    """One row per held-out output (metrics/arc.py `output_record`), written atomically."""
    atomic_write_csv([output_record(r) for r in results], path)


def write_submission(results: list[dict], path: Path) -> None:
    """ARC Prize format: task id -> one {attempt_1, attempt_2} per test input, in order. A missing attempt
    (the model spelled no grid) is written as [[0]], the usual placeholder; our score counts it wrong, and
    so does a standard scorer unless the true output is that 1x1 grid."""
    tasks: dict[str, dict[int, dict]] = {}
    for r in results:
        a1, a2 = (a.tolist() if a is not None else [[0]] for a in r["attempts"])
        tasks.setdefault(r["task"], {})[r["index"]] = {"attempt_1": a1, "attempt_2": a2}
    data = {t: [entries[i] for i in sorted(entries)] for t, entries in sorted(tasks.items())}
    atomic_write_bytes(path, json.dumps(data).encode())
