"""Paired comparisons between the groups of a sweep, one held-out output at a time.

A mean +- std over three seeds cannot say whether one configuration beats another. What can: the same
held-out outputs scored under both, compared output by output. The contract with a family:
- its task class names `paired_metrics` (metric -> column of its per-output file), which of them are
  `binary_metrics` (0/1 per output), and its direction (`higher_is_better` / `lower_is_better`);
- each run writes `per_output.csv` in its run directory, one row per held-out output, with a `task`
  column (the unit that is resampled) and an `index` column (which output of that task).

For a step baseline -> variant and a metric: each output's value is averaged over the seeds of each side,
then `mean_diff` = mean over the outputs both sides scored of (variant - baseline). Its 95% interval is a
percentile bootstrap (scipy.stats.bootstrap, 10,000 resamples, fixed seed) that resamples whole tasks:
outputs of one task are not independent of each other, tasks are. For a binary metric, `p_value` is the
exact McNemar test on the discordant outputs (scipy.stats.binomtest; with several seeds an output counts
for the side whose seed-averaged value is higher, a sign test). `verdict`: `helps` / `hurts` when the
interval excludes 0 in that direction, else `not supported`.
"""

import csv
import io
import math
from pathlib import Path

import numpy as np

from experiments.atomic import atomic_savefig, atomic_write_csv
from experiments.errors import UserError
from experiments.untrusted import read_text

PER_OUTPUT = "per_output.csv"
# A row an output: ARC's 419 evaluation outputs take 30 KB. Read as dicts a CSV takes about 100x its bytes.
MAX_PER_OUTPUT_BYTES = 4 << 20
RESAMPLES, CONFIDENCE, BOOTSTRAP_SEED = 10_000, 0.95, 0
COLUMNS = [
    "metric",
    "baseline",
    "variant",
    "mean_diff",
    "ci_low",
    "ci_high",
    "n_outputs",
    "n_seeds",
    "p_value",
    "verdict",
]


# ---- the statistics: pure functions ----
def task_bootstrap_interval(diffs: np.ndarray, tasks: np.ndarray) -> tuple[float, float]:
    """95% percentile bootstrap interval of the mean of `diffs` (one per output) resampling whole tasks:
    a resample draws tasks with replacement and takes the mean over all their outputs. nan when fewer than
    two tasks."""
    from scipy.stats import bootstrap

    names, which = np.unique(tasks, return_inverse=True)
    if len(names) < 2:
        return float("nan"), float("nan")
    sums = np.bincount(which, weights=diffs)
    counts = np.bincount(which).astype(float)
    if np.all(sums / counts == sums[0] / counts[0]):  # every task alike: nothing to resample
        d = float(sums.sum() / counts.sum())
        return d, d
    result = bootstrap(
        (sums, counts),
        lambda s, c, axis=-1: s.sum(axis) / c.sum(axis),
        paired=True,
        vectorized=True,
        n_resamples=RESAMPLES,
        confidence_level=CONFIDENCE,
        method="percentile",
        rng=np.random.default_rng(BOOTSTRAP_SEED),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def mcnemar_exact(baseline: np.ndarray, variant: np.ndarray) -> float:
    """Exact (binomial) McNemar p-value, two-sided: of the outputs where the two sides disagree, how
    unlikely a split at least this uneven is if each side is as likely to be the right one."""
    from scipy.stats import binomtest

    better, worse = int(np.sum(variant > baseline)), int(np.sum(variant < baseline))
    if better + worse == 0:
        return 1.0
    return float(binomtest(better, better + worse, 0.5).pvalue)


def verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    if ci_low != ci_low or ci_high != ci_high:
        return "not supported"
    if ci_low > 0:
        return "helps" if higher_is_better else "hurts"
    if ci_high < 0:
        return "hurts" if higher_is_better else "helps"
    return "not supported"


def compare(baseline: dict, variant: dict, higher_is_better: bool, binary: bool) -> dict:
    """baseline, variant: {(task, index): seed-averaged value}. The row of comparisons.csv, less names."""
    keys = sorted(set(baseline) & set(variant))
    b = np.array([baseline[k] for k in keys], dtype=float)
    v = np.array([variant[k] for k in keys], dtype=float)
    diffs = v - b
    low, high = task_bootstrap_interval(diffs, np.array([k[0] for k in keys]))
    return {
        "mean_diff": float(diffs.mean()) if keys else float("nan"),
        "ci_low": low,
        "ci_high": high,
        "n_outputs": len(keys),
        "p_value": mcnemar_exact(b, v) if binary else None,
        "verdict": verdict(low, high, higher_is_better),
    }


# ---- from run directories ----
def read_per_output(run_dir: Path) -> list[dict] | None:
    """A run's per-output records (data: read with the bound on text files; a file that cannot be read as
    CSV is none)."""
    path = Path(run_dir) / PER_OUTPUT
    if not path.exists():
        return None
    try:
        return list(csv.DictReader(io.StringIO(read_text(path, MAX_PER_OUTPUT_BYTES))))
    except (OSError, UserError, csv.Error):
        return None


def seed_averaged(runs: list[list[dict]], column: str) -> dict:
    """{(task, index): mean over the runs that scored it} of one column; a row without a number there is
    left out."""
    values: dict[tuple, list[float]] = {}
    for rows in runs:
        for r in rows:
            try:
                key, value = (str(r["task"]), int(r["index"])), float(r[column])
            except (KeyError, TypeError, ValueError):
                continue
            values.setdefault(key, []).append(value)
    return {k: sum(v) / len(v) for k, v in values.items()}


def steps(groups: list[str], experiment_of: dict[str, str], chain: list[str] | None) -> list[tuple[str, str]]:
    """(baseline, variant) group pairs. With a chain of experiments: each consecutive pair of the chain,
    between groups that differ only in their experiment; without: consecutive groups in sweep order."""
    if not chain:
        return list(zip(groups, groups[1:]))
    rest = {g: " ".join(p for p in g.split() if not p.startswith("experiment=")) for g in groups}
    pairs = []
    for a, b in zip(chain, chain[1:]):
        for ga in (g for g in groups if experiment_of.get(g) == a):
            pairs += [(ga, gb) for gb in groups if experiment_of.get(gb) == b and rest[gb] == rest[ga]]
    return pairs


def comparisons(groups: list[dict], chain: list[str] | None, task_cls) -> list[dict]:
    """Rows of comparisons.csv for a sweep's groups ({"group", "experiment", "run_dirs"}, in sweep order)."""
    metrics = task_cls.paired_metrics
    if not metrics:
        return []
    runs = {g["group"]: [r for r in (read_per_output(d) for d in g["run_dirs"]) if r] for g in groups}
    higher = set(task_cls.higher_is_better)
    binary = set(task_cls.binary_metrics)
    rows = []
    for base, var in steps([g["group"] for g in groups], {g["group"]: g["experiment"] for g in groups}, chain):
        if not runs[base] or not runs[var]:
            continue
        n_b, n_v = len(runs[base]), len(runs[var])
        for metric, column in metrics.items():
            row = compare(
                seed_averaged(runs[base], column), seed_averaged(runs[var], column), metric in higher, metric in binary
            )
            rows.append(
                {
                    "metric": metric,
                    "baseline": base,
                    "variant": var,
                    **row,
                    "n_seeds": n_b if n_b == n_v else f"{n_b}/{n_v}",
                }
            )
    return rows


# ---- writing ----
def _cell(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def write_csv(rows: list[dict], path: Path) -> None:
    atomic_write_csv([{k: "" if row[k] is None else row[k] for k in COLUMNS} for row in rows], path, COLUMNS)


def short_names(rows: list[dict]) -> dict[str, str]:
    """Group name -> what sets it apart: the overrides all groups share and the `experiment=` prefix dropped."""
    groups = list(dict.fromkeys(g for r in rows for g in (r["baseline"], r["variant"])))
    shared = set.intersection(*(set(g.split()) for g in groups)) if groups else set()
    return {g: " ".join(p.replace("experiment=", "") for p in g.split() if p not in shared) or g for g in groups}


def markdown(rows: list[dict]) -> list[str]:
    short = short_names(rows).get
    lines = [
        "| metric | baseline | variant | mean diff | 95% CI (tasks resampled) | outputs | seeds | p (McNemar) "
        "| verdict |",
        "|" + " --- |" * 9,
    ]
    for r in rows:
        lines.append(
            f"| {r['metric']} | {short(r['baseline'])} | {short(r['variant'])} | {_cell(r['mean_diff'])} | "
            f"[{_cell(r['ci_low'])}, {_cell(r['ci_high'])}] | {r['n_outputs']} | {r['n_seeds']} | "
            f"{_cell(r['p_value'])} | {r['verdict']} |"
        )
    return lines


def draw(rows: list[dict], path: Path, title: str, higher_is_better: set) -> None:
    """One panel per metric: each step's mean difference with its interval, coloured by verdict; the steps
    share the rows of the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    steps_shown = list(dict.fromkeys((r["baseline"], r["variant"]) for r in rows))
    short = short_names(rows)
    colour = {"helps": "tab:green", "hurts": "tab:red", "not supported": "tab:gray"}
    fig, axes = plt.subplots(
        1, len(metrics), figsize=(3.3 * len(metrics) + 2.2, 1.4 + 0.5 * len(steps_shown)), squeeze=False, sharey=True
    )
    for ax, metric in zip(axes[0], metrics):
        for r in (r for r in rows if r["metric"] == metric):
            y, low, high = steps_shown.index((r["baseline"], r["variant"])), r["ci_low"], r["ci_high"]
            err = [[r["mean_diff"] - low], [high - r["mean_diff"]]] if low == low else None
            ax.errorbar(r["mean_diff"], y, xerr=err, fmt="o", capsize=4, color=colour[r["verdict"]])
        ax.axvline(0, color="black", linewidth=0.8)
        better = "higher" if metric in higher_is_better else "lower"
        ax.set_title(f"{metric}\nvariant - baseline ({better} is better)", fontsize=8)
        ax.tick_params(axis="x", labelsize=7)
    axes[0][0].set_yticks(range(len(steps_shown)))
    axes[0][0].set_yticklabels([f"{short[v]}\nvs {short[b]}" for b, v in steps_shown], fontsize=7)
    axes[0][0].invert_yaxis()
    fig.suptitle(f"{title}: 95% intervals, tasks resampled; green helps, red hurts, grey not supported", fontsize=8)
    fig.tight_layout()
    atomic_savefig(fig, path, dpi=110)
    plt.close(fig)
