"""How exact@2 moves with test-time training steps, views and ranking, for one ARC checkpoint: the curves the
CPU preset was chosen by.

    python src/experiments/families/arc/scripts/ttt_curves.py outputs/exp3_champion/default \
        [--steps 0,25,50,100] [--views 1,4,8] [--lr 1e-3] [--batch-size 8] [--max-tasks 0] [--tasks-from training]

Each task's copy is fine-tuned once, for the largest step count, and evaluated at every step count on the
way (step 0 is the checkpoint itself); each evaluation decodes the largest number of views once, and a
smaller number is its first views (the task's views are a prefix of a longer list), so one pass gives every
(steps, views, ranking) cell at the cost of the largest. The figures are the task's own (`metrics.score`),
the same as `eval.py ... task.ttt.steps=S task.eval_augmentations=V task.ranking=R` gives for that cell
(tests/test_arc_ttt.py holds one cell equal). Writes `ttt_curves.csv` and `ttt_curves.png` in
`<run directory>/eval/ttt_curves/` (or --out); last line: the best cell.
"""

import argparse
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[5]  # the checkout: src/experiments/families/<family>/scripts
sys.path.insert(0, str(ROOT / "src"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from experiments.families.arc.data import by_task  # noqa: E402
from experiments.families.arc.metrics import distinct, rank_attempts, rank_by_product, score  # noqa: E402
from experiments.families.arc.test_time import TestTimeTraining, fine_tuned  # noqa: E402
from experiments.family import atomic_write_csv  # noqa: E402


def load(target: Path, data_args: dict):
    """The checkpoint's task with trained weights and its data module (eval.py's reader)."""
    from omegaconf import OmegaConf

    from experiments.stored_run import StoredRun, checkpoint_of
    from experiments.untrusted import current_registry

    checkpoint = checkpoint_of(target)
    stored = StoredRun(checkpoint, current_registry())
    node = OmegaConf.to_container(OmegaConf.merge(stored.config["data"], data_args))
    return checkpoint, stored.trained(checkpoint), stored.datamodule(node)


@torch.no_grad()
def decoded(lightning_task, examples: list, model, views: list) -> dict:
    """Per output: the candidate of each view (mapped back), and each distinct grid's log-probability in
    every view (the product of experts' experts): the task's own `candidates` and `view_log_probs`."""
    found = lightning_task.candidates(examples, views, model)
    grids = [distinct(c)[0] for c in found]
    bits, tokens = lightning_task.likelihood(examples, model)
    return {
        "candidates": found,
        "grids": grids,
        "log_probs": lightning_task.view_log_probs(examples, grids, views, model),
        "bits": bits.tolist(),
        "tokens": tokens.tolist(),
    }


def attempts_of(d: dict, i: int, k: int, ranking: str) -> list:
    """Output i's two attempts from its first k views."""
    candidates = d["candidates"][i][:k]
    if ranking == "vote":
        return rank_attempts(candidates, 2)
    grids, votes = distinct(candidates)
    keys = [(g.shape, g.tobytes()) for g in d["grids"][i]]
    rows = [keys.index((g.shape, g.tobytes())) for g in grids]
    return rank_by_product(grids, votes, d["log_probs"][i][rows, :k] if rows else [])


def cells(examples: list, d: dict, steps: int, view_counts: list, rankings: list) -> dict:
    """(steps, views, ranking) -> the results `score` takes, for these outputs."""
    out = {}
    for k in view_counts:
        for ranking in rankings:
            out[(steps, k, ranking)] = [
                {
                    "task": ex.task_id,
                    "index": ex.index,
                    "target": ex.query[1],
                    "attempts": attempts_of(d, i, k, ranking),
                    "nll_bits": d["bits"][i],
                    "tokens": d["tokens"][i],
                }
                for i, ex in enumerate(examples)
            ]
    return out


def curves(lightning_task, datamodule, steps: list, view_counts: list, ttt: TestTimeTraining, progress=print) -> tuple:
    """((steps, views, ranking) -> figures, seconds of test-time training per task); `ttt.steps` must be the
    largest of `steps`."""
    assert ttt.steps == max(steps), "the copies are fine-tuned for the largest step count"
    lightning_task.eval_augmentations = max(view_counts)
    views, rankings = lightning_task.views(), ["vote", "poe"]
    tasks = by_task(datamodule.eval_examples)
    results: dict = {}
    seconds = []
    t0 = time.perf_counter()
    for n, (name, exs) in enumerate(tasks.items(), 1):

        def add(s: int, model, exs=exs) -> None:
            for key, rs in cells(exs, decoded(lightning_task, exs, model, views), s, view_counts, rankings).items():
                results.setdefault(key, []).extend(rs)

        if 0 in steps:
            add(0, lightning_task.model)
        start = time.perf_counter()
        tuned = (
            fine_tuned(
                lightning_task.model,
                lightning_task.format,
                name,
                exs[0].demos,
                ttt,
                lightning_task.seed,
                lightning_task.device,
                milestones=[s for s in steps if s],
                at_milestone=add,
            )
            if max(steps)
            else None
        )
        if tuned is None and max(steps):  # nothing to learn from: the checkpoint's own predictions
            for s in (s for s in steps if s):
                add(s, lightning_task.model)
        seconds.append(time.perf_counter() - start)
        progress(f"task {n}/{len(tasks)} {name}: {time.perf_counter() - t0:.0f}s")
    return {key: score(rs) for key, rs in results.items()}, float(np.mean(seconds))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("ckpt", type=Path)
    parser.add_argument("--steps", default="0,25,50,100")
    parser.add_argument("--views", default="1,4,8")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-tasks", type=int, default=None, help="data.max_tasks (0: all that fit)")
    parser.add_argument("--tasks-from", default=None, help="data.tasks_from (training | evaluation)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    from experiments.errors import UserError

    data = {k: v for k, v in (("max_tasks", args.max_tasks), ("tasks_from", args.tasks_from)) if v is not None}
    if data.get("max_tasks") == 0:
        data["max_tasks"] = None
    try:
        checkpoint, lightning_task, datamodule = load(args.ckpt, data)
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    steps = sorted({int(s) for s in args.steps.split(",")})
    view_counts = sorted({int(v) for v in args.views.split(",")})
    ttt = TestTimeTraining.of({"steps": max(steps), "lr": args.lr, "batch_size": args.batch_size})
    figures, per_task = curves(lightning_task, datamodule, steps, view_counts, ttt)
    out = args.out or checkpoint.parents[1] / "eval" / "ttt_curves"
    out.mkdir(parents=True, exist_ok=True)
    rows = [
        {
            "steps": s,
            "views": v,
            "ranking": r,
            "lr": args.lr,
            "batch_size": args.batch_size,
            **{
                k.split("/")[1]: f[k]
                for k in (
                    "arc/exact_output@2",
                    "arc/prize_score",
                    "arc/cell_accuracy",
                    "arc/right_shape",
                    "arc/test_nll",
                )
            },
        }
        for (s, v, r), f in sorted(figures.items())
    ]
    atomic_write_csv(rows, out / "ttt_curves.csv")
    draw(
        rows,
        steps,
        view_counts,
        out / "ttt_curves.png",
        f"{checkpoint}: {len(datamodule.eval_examples)} outputs, "
        f"lr {args.lr}, batch {args.batch_size}; {per_task:.1f}s of test-time training per task",
    )
    outputs = len(datamodule.eval_examples)
    for row in rows:
        print(
            f"steps {row['steps']:4d} views {row['views']:3d} {row['ranking']:4s}  exact@2 "
            f"{round(row['exact_output@2'] * outputs)}/{outputs} ({row['exact_output@2']:.1%})  prize "
            f"{row['prize_score']:.1%}  cells {row['cell_accuracy']:.1%}  nll {row['test_nll']:.3f}"
        )
    best = max(rows, key=lambda r: (r["exact_output@2"], -r["steps"], -r["views"]))
    print(f"test-time training: {per_task:.2f}s per task for {max(steps)} steps; {out / 'ttt_curves.png'}")
    print(
        f"best steps={best['steps']} views={best['views']} ranking={best['ranking']} "
        f"exact@2={best['exact_output@2']:.4f} prize_score={best['prize_score']:.4f}"
    )
    return 0


def draw(rows: list, steps: list, view_counts: list, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from experiments.family import atomic_savefig

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ranking, style in (("vote", "-o"), ("poe", "--s")):
        for n, v in enumerate(view_counts):  # one colour per view count, one line style per ranking
            ys = [
                next(r["exact_output@2"] for r in rows if (r["steps"], r["views"], r["ranking"]) == (s, v, ranking))
                for s in steps
            ]
            axes[0].plot(steps, [100 * y for y in ys], style, color=f"C{n}", label=f"{v} views, {ranking}")
        ys = [
            next(
                r["exact_output@2"] for r in rows if (r["steps"], r["views"], r["ranking"]) == (max(steps), v, ranking)
            )
            for v in view_counts
        ]
        axes[1].plot(view_counts, [100 * y for y in ys], style, color="k", label=f"{max(steps)} steps, {ranking}")
    axes[0].set(xlabel="test-time training steps per task", ylabel="exact@2 (% of outputs)", xticks=steps)
    axes[1].set(xlabel="views", ylabel="exact@2 (% of outputs)", xticks=view_counts)
    for ax in axes:
        ax.legend(fontsize=7)
        ax.grid(alpha=0.3)
    fig.suptitle(title, fontsize=8)
    atomic_savefig(fig, path)
    plt.close(fig)


if __name__ == "__main__":
    sys.exit(main())
