"""Test-time training: before a task's test inputs are decoded, a copy of the trained model is fine-tuned on
that task's demonstrations alone, then used for that task and discarded.

The copy learns leave-one-out pseudo-tasks: each demonstration is the query, the champion's two context
pairs are drawn from the task's other demonstrations, and every pseudo-example is seen under a random
dihedral transform and colour permutation. What it trains on is a function of (seed, task id) only, so a
task's result does not depend on the batch it was evaluated in, on the other tasks, or on the process.
It is given `Example.demos` and nothing else of the task: the test outputs never reach it (a test scrambles
them and compares the predictions).
"""

import copy
import zlib
from dataclasses import dataclass, fields

import numpy as np
import torch
import torch.nn.functional as F

from experiments.families.arc import format as af
from experiments.families.arc.data import Example, augment, collate


@dataclass(frozen=True)
class TestTimeTraining:
    """`task.ttt`: how each task's copy is fine-tuned. steps=0: off."""

    steps: int = 0  # optimizer steps per task
    lr: float = 1e-3
    batch_size: int = 8  # pseudo-examples per step (drawn with replacement)
    weight_decay: float = 0.0
    augment: bool = True  # each pseudo-example under a random dihedral transform and colour permutation
    periodic: bool = False  # also at training's periodic evaluations (always: the final one, verify, eval)

    __test__ = False  # not a pytest test class, whatever its name

    @classmethod
    def of(cls, settings) -> "TestTimeTraining":
        """From the config's `task.ttt` mapping (null: off); an unknown key or a bad value is refused."""
        settings = dict(settings or {})
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(settings) - set(known))
        if unknown:
            raise ValueError(f"ttt.{unknown[0]} is not a test-time training setting; they are {', '.join(known)}")
        ttt = cls(**settings)
        counts = (ttt.steps, ttt.batch_size)
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in counts):
            raise ValueError(f"ttt.steps and ttt.batch_size must be integers, got {ttt.steps!r}, {ttt.batch_size!r}")
        if ttt.steps < 0 or ttt.batch_size < 1:
            raise ValueError(
                f"ttt.steps must be an integer >= 0 and ttt.batch_size >= 1, got {ttt.steps!r}, {ttt.batch_size!r}"
            )
        if not (isinstance(ttt.augment, bool) and isinstance(ttt.periodic, bool)):
            raise ValueError(
                f"ttt.augment and ttt.periodic must be true or false, got {ttt.augment!r}, {ttt.periodic!r}"
            )
        if not (
            isinstance(ttt.lr, (int, float))
            and ttt.lr > 0
            and isinstance(ttt.weight_decay, (int, float))
            and ttt.weight_decay >= 0
        ):
            raise ValueError(f"ttt.lr must be > 0 and ttt.weight_decay >= 0, got {ttt.lr!r}, {ttt.weight_decay!r}")
        return ttt


def token_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the target tokens (PAD positions do not count): what training minimises."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1), ignore_index=af.PAD)


def task_rng(seed: int, task_id: str) -> np.random.Generator:
    """The task's own random stream: a function of (seed, task id), stable across processes."""
    return np.random.default_rng([seed, zlib.crc32(task_id.encode()), 0x7717])


def pseudo_example(task_id: str, demos: list, i: int, rng: np.random.Generator) -> Example:
    """Demonstration i as the query, two context pairs drawn from the others (one repeated if it is alone)."""
    others = [d for j, d in enumerate(demos) if j != i]
    if not others:
        return Example(task_id, i, demos[i], [])
    picked = rng.choice(len(others), size=2, replace=len(others) < 2)
    return Example(task_id, i, demos[i], [others[j] for j in picked])


def fine_tuned(
    model: torch.nn.Module,
    fmt: str,
    task_id: str,
    demos: list,
    ttt: TestTimeTraining,
    seed: int,
    device,
    milestones=(),
    at_milestone=None,
) -> torch.nn.Module | None:
    """A copy of `model` fine-tuned on the task's demonstrations (None when it has none to learn from).
    Runs with gradients even inside Lightning's inference mode; leaves `model` and the global RNGs as they
    were. `at_milestone(step, copy in eval mode)` is called after each step in `milestones` (a curve of the
    effect of steps then costs the longest run only: scripts/ttt_curves.py)."""
    # a leave-one-out query needs another demonstration for the champion's context
    queries = list(range(len(demos))) if fmt != "champion" or len(demos) > 1 else []
    if not ttt.steps or not queries:
        return None
    rng = task_rng(seed, task_id)
    device = torch.device(device)
    cuda = [device.index or 0] if device.type == "cuda" else []
    # Under mixed precision (an evaluation inside autocast) each step's forward autocasts as the evaluation
    # does, without autocast's cache of cast weights: it would hand the next step the weights before this
    # step's update (the cache lives as long as the outermost autocast region, here the whole evaluation)
    mixed = torch.get_autocast_dtype(device.type) if torch.is_autocast_enabled(device.type) else None
    # the global generators are put back afterwards (CPU, and the CUDA device it runs on)
    with (
        torch.inference_mode(False),
        torch.enable_grad(),
        torch.random.fork_rng(devices=cuda),
        torch.autocast(device.type, enabled=False),
    ):  # backward and the optimizer's step in full precision
        s = int(rng.integers(2**31))  # dropout, if a model has any
        torch.default_generator.manual_seed(s)
        if cuda:
            torch.cuda.manual_seed(s)
        tuned = copy.deepcopy(model)
        params = [p for p in tuned.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(params, lr=ttt.lr, weight_decay=ttt.weight_decay, fused=True)
        for step in range(1, ttt.steps + 1):
            tuned.train()
            chosen = [
                pseudo_example(task_id, demos, queries[k], rng) for k in rng.integers(len(queries), size=ttt.batch_size)
            ]
            if ttt.augment:
                chosen = [augment(ex, af.Augmentation.random(rng)) for ex in chosen]
            batch = {k: v.to(device) for k, v in collate(chosen, fmt).items()}
            with torch.autocast(device.type, dtype=mixed, enabled=mixed is not None, cache_enabled=False):
                loss = token_loss(tuned(batch), batch["targets"])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            if step in milestones:
                at_milestone(step, tuned.eval())
    return tuned.eval()
