"""Training and honest evaluation of the ARC baselines.

Training: teacher-forced cross-entropy on output tokens. Evaluation: greedy autoregressive decoding (no
teacher forcing, through the model's key/value cache: `decoding.py`) of each held-out test output under
`eval_augmentations` views of the task (the first is the identity), each mapped back; the two best-ranked
distinct grids are attempts 1 and 2. Ranking (`ranking`): `vote` (the grids most views spelled) or `poe`,
product of experts (the grids whose log-probability, summed over the views, is highest: each candidate
is scored teacher-forced in every view). The output's size is part of the prediction.

Test-time training (`ttt`, `test_time.py`): before a task's outputs are decoded, a copy of the model is
fine-tuned on that task's demonstrations and predicts it instead (at the final evaluation of training,
verify.py and eval.py; at every evaluation with `ttt.periodic`).

Each evaluation also measures the teacher-forced likelihood of each true output (identity view;
`arc/test_nll`, bits per output token) under the model that predicts it, how many of the evaluated tasks'
own demonstrations the model reproduces exactly (`arc/train_exact`, identity view; with test-time
training also its copies' `arc/ttt_train_exact`), and writes `submission.json` (ARC Prize format) and
`per_output.csv` (one row per held-out output, what a sweep's paired comparisons read; each evaluation's
copy also under `validation/`) in the run directory; the end of training draws every held-out output with its
two attempts (`predictions.png`, more pages as `predictions_2.png`, ..., numbered to sort: pictures.py).
eval.py writes the same files for any task set.

Prediction (predict.py, `load_run(...).predict`): a task file or a folder of them, test outputs optional, goes
through the evaluation's decoding and ranking unchanged (views, ranking, test-time training as eval.py has
them), nothing scored: `submission.json` and the prediction pages.
"""

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from experiments.families.arc import format as af
from experiments.families.arc.data import Example, augment, by_task, collate, demonstrations_of
from experiments.families.arc.decoding import CachedSteps, FullRecomputation, greedy
from experiments.families.arc.metrics import (
    distinct,
    exact,
    nll_bits,
    output_record,
    rank_attempts,
    rank_by_product,
    score,
    submitted,
)
from experiments.families.arc.test_time import TestTimeTraining, fine_tuned, token_loss
from experiments.family import ExperimentTask, UserError, at_limit, atomic_write_bytes, atomic_write_csv, epoch_number

RANKINGS = ("vote", "poe")


@dataclass
class ArcPart:
    """One evaluation batch's results (whole tasks)."""

    outputs: list = field(default_factory=list)  # one result per held-out output (metrics.score)
    demos_exact: list = field(default_factory=list)  # each demonstration reproduced exactly by the model?
    tuned_demos_exact: list = field(default_factory=list)  # ... by its task's fine-tuned copy?
    ttt_seconds: list = field(default_factory=list)  # per fine-tuned task


class ArcLightningTask(ExperimentTask):
    summary_keys = (
        "train/loss",
        "arc/exact_output@1",
        "arc/exact_output@2",
        "arc/exact_task@2",
        "arc/cell_accuracy",
        "arc/right_shape",
        "arc/test_nll",
        "arc/train_exact",
    )
    higher_is_better = (
        "arc/exact_output@1",
        "arc/exact_output@2",
        "arc/exact_task@1",
        "arc/exact_task@2",
        "arc/prize_score",
        "arc/cell_accuracy",
        "arc/right_shape",
        "arc/train_exact",
        "arc/ttt_train_exact",
    )
    lower_is_better = ("arc/test_nll",)
    count_keys = {
        "arc/exact_output@1": "arc/outputs",
        "arc/exact_output@2": "arc/outputs",
        "arc/exact_task@1": "arc/tasks",
        "arc/exact_task@2": "arc/tasks",
        "arc/train_exact": "arc/demos",
        "arc/ttt_train_exact": "arc/tuned_demos",
    }
    # A sweep's paired comparisons (comparisons.py): metric -> its column of per_output.csv; the binary
    # ones also get an exact McNemar test.
    paired_metrics = {"arc/exact_output@2": "exact@2", "arc/cell_accuracy": "cell_accuracy", "arc/test_nll": "nll_bits"}
    binary_metrics = ("arc/exact_output@2",)
    primary_metric = "arc/cell_accuracy"
    long_validation = True  # decoding every held-out output: the progress bar shows it
    evaluation_settings = ("eval_augmentations", "ranking", "ttt", "train_exact", "max_decode_tokens")

    def __init__(
        self,
        model,
        format: str = "encoder_decoder",
        lr: float = 1e-3,
        weight_decay: float = 0.01,
        eval_augmentations: int = 1,
        max_decode_tokens: int = af.MAX_SIDE * (af.MAX_SIDE + 1) + 1,
        eval_every_n_epochs: int = 1,
        seed: int = 0,
        ranking: str = "vote",
        ttt: dict | None = None,
        train_exact: bool = True,
    ):
        super().__init__()
        if ranking not in RANKINGS:
            raise ValueError(f"ranking must be one of {RANKINGS} (voting, product of experts), got {ranking!r}")
        if not (isinstance(eval_augmentations, int) and eval_augmentations >= 1):
            raise ValueError(
                f"eval_augmentations must be an integer >= 1 (1: the identity view only), got {eval_augmentations!r}"
            )
        self.model, self.format = model, format
        self.lr, self.weight_decay = lr, weight_decay
        self.eval_augmentations, self.max_decode_tokens, self.seed = eval_augmentations, max_decode_tokens, seed
        self.eval_every_n_epochs = eval_every_n_epochs
        self.ranking, self.ttt, self.train_exact = ranking, TestTimeTraining.of(ttt), train_exact
        self.last_results: list[dict] = []

    # ---- training ----
    def training_loss(self, batch: dict, batch_idx: int) -> torch.Tensor:
        loss = token_loss(self.model(batch), batch["targets"])
        n = int((batch["targets"] != af.PAD).sum())
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
        return (epoch + 1) % self.eval_every_n_epochs == 0 or self.is_final(epoch)

    def is_final(self, epoch: int) -> bool:
        """The last epoch of training, by its epoch or step limit (`at_limit`, as the checkpoint policy tells
        a run's end); a run with neither (`trainer.max_epochs=-1`) has no final evaluation to single out."""
        return at_limit(self.trainer, epoch)

    def tunes_at(self, epoch: int) -> bool:
        """Whether an evaluation fine-tunes per task: always outside training (verify.py, eval.py), at its
        final evaluation, and at every one with `ttt.periodic`."""
        if not self.ttt.steps:
            return False
        return self.ttt.periodic or self._trainer is None or self.is_final(epoch)  # _trainer: None outside one

    def evaluation_step(self, examples: list, epoch: int) -> ArcPart:
        """The batch's outputs predicted (by each task's fine-tuned copy when test-time training is on)
        and, with `train_exact`, its tasks' demonstrations decoded by the model (and by each copy)."""
        part = ArcPart()
        if self.train_exact:
            part.demos_exact = self.reproduces([d for exs in by_task(examples).values() for d in self.demos(exs[0])])
        self.decode_outputs(examples, epoch, part, scored=True)
        return part

    def decode_outputs(self, examples: list, epoch: int, part: ArcPart, scored: bool) -> None:
        """The batch's outputs into `part`: all together by the model, or task by task by each one's fine-tuned
        copy when this evaluation tunes; `scored`: the true outputs are known (their likelihood, and with
        `train_exact` the copies' fit of the demonstrations, are measured)."""
        if not self.tunes_at(epoch):
            part.outputs = self.predict(examples, scored=scored)
            return
        for task_id, exs in by_task(examples).items():
            start = time.perf_counter()
            tuned = fine_tuned(self.model, self.format, task_id, exs[0].demos, self.ttt, self.seed, self.device)
            part.ttt_seconds.append(time.perf_counter() - start)
            part.outputs += self.predict(
                exs, model=tuned, ttt_steps=self.ttt.steps if tuned is not None else 0, scored=scored
            )
            if scored and self.train_exact:
                part.tuned_demos_exact += self.reproduces(self.demos(exs[0]), tuned)

    def demos(self, example: Example) -> list[Example]:
        return demonstrations_of(example.task_id, example.demos, self.format)

    def figures(self, parts: list, epoch: int) -> dict[str, float]:
        figures = score(in_task_order([r for part in parts for r in part.outputs]))
        for name, key, count in (
            ("arc/train_exact", "demos_exact", "arc/demos"),
            ("arc/ttt_train_exact", "tuned_demos_exact", "arc/tuned_demos"),
            ("time/ttt_s_per_task", "ttt_seconds", None),
        ):
            values = [v for part in parts for v in getattr(part, key)]
            if values:
                figures[name] = float(np.mean(values))
                if count:
                    figures[count] = float(len(values))
        return figures

    def evaluation_files(
        self, parts: list, figures: dict, folder: Path, epoch: int, during_training: bool, datamodule=None
    ) -> None:
        """submission.json and per_output.csv; during training also each evaluation's copy under validation/, the
        pictures once at the end (on_fit_end), for eval.py the pictures now."""
        results = in_task_order([r for part in parts for r in part.outputs])
        write_submission(results, folder / "submission.json")
        write_per_output(results, folder / "per_output.csv")
        if during_training:
            write_per_output(results, folder / "validation" / f"per_output_epoch={epoch_number(epoch):04d}.csv")
            self.last_results = results
        else:
            self.draw(results, folder, epoch, figures)

    def on_fit_end(self) -> None:
        if self.last_results and self.trainer.is_global_zero:
            # on_fit_end: current_epoch already counts the finished epochs; the last one is current_epoch - 1
            self.draw(
                self.last_results, Path(self.trainer.default_root_dir), self.current_epoch - 1, score(self.last_results)
            )

    @staticmethod
    def draw(results: list[dict], folder: Path, epoch: int, metrics: dict) -> None:
        from experiments.families.arc.pictures import draw_predictions

        title = (
            f"epoch {epoch_number(epoch)}: cell accuracy {metrics['arc/cell_accuracy']:.1%}, right shape "
            f"{metrics['arc/right_shape']:.1%}, exact@2 {metrics['arc/exact_output@2']:.1%} "
            f"of {len(results)} outputs ({how_decoded(results)})"
        )
        draw_predictions(results, folder, title)

    # ---- prediction (predict.py, load_run(...).predict) ----
    def prediction_data(self, data: dict, path: Path | None) -> dict:
        """Every task of the file or folder, test outputs optional, evaluated as eval.py would (batches, order)."""
        if path is None:
            raise UserError(
                "give the ARC tasks to predict: input=TASK.json or input=FOLDER (of task files; test outputs optional)"
            )
        return {
            **data,
            "folder": str(path),
            "split": "subset",
            "max_tasks": None,
            "max_side": None,
            "task_ids": None,
            "tasks_from": "evaluation",
            "outputs_optional": True,
        }

    def prediction_step(self, examples: list) -> list[dict]:
        """Each test input's record: `task`, `index`, `input`, `attempts` (ranked, as the evaluation ranks them;
        `submitted` the two grids submission.json holds), `target` (None: not known), how it was predicted
        (`views`, `ranking`, `ttt_steps`, `candidates`)."""
        part = ArcPart()
        self.decode_outputs(examples, epoch=0, part=part, scored=False)
        return [{**r, "submitted": submitted(r["attempts"])} for r in part.outputs]

    def prediction_files(self, records: list[dict], folder: Path, datamodule) -> None:
        """submission.json (ARC Prize format) and the pages of every input with its two attempts."""
        from experiments.families.arc.pictures import draw_predictions

        results = in_task_order(records)
        write_submission(results, folder / "submission.json")
        tasks = len({r["task"] for r in results})
        draw_predictions(
            results,
            folder,
            f"{len(results)} test input{'s' * (len(results) != 1)} of {tasks} "
            f"task{'s' * (tasks != 1)} ({how_decoded(results)})",
        )

    @torch.no_grad()
    def check_outputs(self, examples: list) -> list[tuple[str, torch.Tensor, tuple]]:
        batch = self._to_device(collate(examples, self.format))
        logits = self.model(batch)
        key = "tokens" if self.format == "decoder_only" else "tgt_in"
        return [("logits", logits, (*batch[key].shape, af.VOCAB))]

    def _to_device(self, batch: dict) -> dict:
        return {k: v.to(self.device) for k, v in batch.items()}

    @torch.no_grad()
    def predict(
        self,
        examples: list,
        cached: bool = True,
        model: torch.nn.Module | None = None,
        ttt_steps: int = 0,
        scored: bool = True,
    ) -> list[dict]:
        """Results for `score`: each test output with its two attempts, ranked over the views, by `model`
        (default: the task's). All views of all the given outputs are decoded together, as one batch. Not
        `scored` (outputs unknown): no likelihood (`nll_bits`, `tokens` None)."""
        model = self.model if model is None else model
        was_training = model.training
        model.eval()
        views = self.views()
        candidates = self.candidates(examples, views, model, cached)
        attempts = self.rank(examples, candidates, views, model)
        bits, tokens = self.likelihood(examples, model) if scored else ([None] * len(examples),) * 2
        model.train(was_training)
        return [
            {
                "task": ex.task_id,
                "index": ex.index,
                "input": ex.query[0],
                "target": ex.query[1],
                "attempts": a,
                "demos": list(ex.demos),
                "nll_bits": None if b is None else float(b),
                "tokens": None if n is None else int(n),
                "views": len(views),
                "ranking": self.ranking,
                "ttt_steps": ttt_steps,
                "candidates": len(distinct(c)[0]),
            }
            for ex, c, a, b, n in zip(examples, candidates, attempts, bits, tokens)
        ]

    def candidates(self, examples: list, views: list, model, cached: bool = True) -> list[list]:
        """Each output's candidate from each view (None: no grid), mapped back to the task as given; all
        views of all outputs decoded together, as one batch."""
        seen = [augment(ex, view) for ex in examples for view in views]
        found = [[] for _ in examples]
        for j, tokens in enumerate(self.greedy(seen, cached, model=model)):
            grid = af.tokens_to_grid(tokens)
            found[j // len(views)].append(None if grid is None else views[j % len(views)].invert(grid))
        return found

    def rank(self, examples: list, candidates: list, views: list, model) -> list[list]:
        """Attempts 1 and 2 of each output from its candidates (one per view, mapped back): by vote, or by
        product of experts over `view_log_probs`."""
        if self.ranking == "vote":
            return [rank_attempts(c, 2) for c in candidates]
        found = [distinct(c) for c in candidates]
        tables = self.view_log_probs(examples, [grids for grids, _ in found], views, model)
        return [rank_by_product(grids, votes, table) for (grids, votes), table in zip(found, tables)]

    def view_log_probs(self, examples: list, grids: list[list], views: list, model) -> list[np.ndarray]:
        """Per output, a (grids x views) table: each of its grids put in the place of the output (never the
        true one) and seen in every view, its teacher-forced log-probability; all scored as one batch."""
        scored = [
            augment(Example(ex.task_id, ex.index, (ex.query[0], grid), ex.context), view)
            for ex, gs in zip(examples, grids)
            for grid in gs
            for view in views
        ]
        log_probs, at, tables = self.log_probs(scored, model), 0, []
        for gs in grids:
            tables.append(log_probs[at : at + len(gs) * len(views)].reshape(len(gs), len(views)))
            at += len(gs) * len(views)
        return tables

    @torch.no_grad()
    def log_probs(self, examples: list, model, chunk: int = 256) -> np.ndarray:
        """Teacher-forced log-probability (nats) of each example's whole output, batched by `chunk`."""
        out = []
        for i in range(0, len(examples), chunk):
            batch = self._to_device(collate(examples[i : i + chunk], self.format))
            bits, tokens = nll_bits(model(batch), batch["targets"], af.PAD)
            out.append(-(bits * tokens).double().cpu().numpy() * math.log(2))
        return np.concatenate(out) if out else np.zeros(0)

    @torch.no_grad()
    def reproduces(self, demonstrations: list, model: torch.nn.Module | None = None) -> list[bool]:
        """Whether `model` decodes each demonstration's output exactly from its input and context (identity
        view): does it fit what it was given."""
        if not demonstrations:
            return []
        model = self.model if model is None else model
        was_training = model.training
        model.eval()
        decoded = self.greedy(demonstrations, model=model)
        model.train(was_training)
        return [exact(af.tokens_to_grid(tokens), ex.query[1]) for ex, tokens in zip(demonstrations, decoded)]

    @torch.no_grad()
    def likelihood(self, examples: list, model: torch.nn.Module | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced bits per token of each true output (row ends and EOS included) under the model,
        as given (the identity view), and its token count."""
        batch = self._to_device(collate(examples, self.format))
        return nll_bits((self.model if model is None else model)(batch), batch["targets"], af.PAD)

    def greedy(
        self, examples: list, cached: bool = True, record: list | None = None, model: torch.nn.Module | None = None
    ) -> list[list[int]]:
        """Greedy decoding of each example's output from its input (and context): through the model's
        key/value cache, or (`cached=False`, the reference) by full recomputation at every step."""
        model = self.model if model is None else model
        steps = (CachedSteps if cached else FullRecomputation)(model, self.format, examples, self.device)
        return greedy(steps, self.format, len(examples), self.max_decode_tokens, self.device, record)


def how_decoded(results: list[dict]) -> str:
    """What a page's title says of how its outputs were decoded: `2 views, poe, test-time training 3 steps`."""
    how = results[0] if results else {}
    ttt = f"test-time training {how.get('ttt_steps')} steps" if how.get("ttt_steps") else "no test-time training"
    return f"{how.get('views')} views, {how.get('ranking')}, {ttt}"


def in_task_order(results: list[dict]) -> list[dict]:
    """Results by (task, output index): evaluation batches run in order of length."""
    return sorted(results, key=lambda r: (r["task"], r["index"]))


def write_per_output(results: list[dict], path: Path) -> None:
    """One row per held-out output (metrics.py `output_record`), written atomically."""
    atomic_write_csv([output_record(r) for r in results], path)


def write_submission(results: list[dict], path: Path) -> None:
    """ARC Prize format: task id -> one {attempt_1, attempt_2} per test input, in order; the attempts as
    `metrics.submitted` gives them (the ones exact match scores), so any scorer of the file agrees with
    the run's figures."""
    tasks: dict[str, dict[int, dict]] = {}
    for r in results:
        a1, a2 = (a.tolist() for a in submitted(r["attempts"]))
        tasks.setdefault(r["task"], {})[r["index"]] = {"attempt_1": a1, "attempt_2": a2}
    data = {t: [entries[i] for i in sorted(entries)] for t, entries in sorted(tasks.items())}
    atomic_write_bytes(path, json.dumps(data).encode())
