"""Validation stages: what a stage is and how a program runs a list of them.

A stage is a small function `stage(ctx) -> StageResult | None`; it raises StageFailure with one line
that names the problem. Each program lists its stages by name in one place: train.py's preflight in
stages/preflight.py (`PREFLIGHT_STAGES`, plus a family's own `preflight_stages`), verify.py's in
stages/checkpoint_stages.py (`CHECKPOINT_STAGES`). `run_stages` times each one and stops at the first
failure.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from experiments.errors import StageFailure, UserError, first_line


@dataclass
class StageResult:
    name: str
    status: str = "pass"  # pass | fail | skip
    seconds: float = 0.0
    details: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)


def run_stages(names, ctx, stages: dict[str, Callable], stop_on_failure: bool = True) -> list[StageResult]:
    unknown = [n for n in names if n not in stages]
    if unknown:
        raise UserError(f"unknown validation stage(s) {unknown}; known: {sorted(stages)}")
    results = []
    for name in names:
        t0 = time.perf_counter()
        try:
            result = stages[name](ctx) or StageResult(name=name)
        except StageFailure as e:
            result = StageResult(name=name, status="fail", details=str(e))
        except UserError:
            raise
        except Exception as e:  # a stage that crashes has failed; say how, and go on with the others
            first = first_line(e)
            result = StageResult(name=name, status="fail", details=f"crashed: {type(e).__name__}: {first}")
        result.name, result.seconds = name, time.perf_counter() - t0
        results.append(result)
        if result.status == "fail" and stop_on_failure:
            break
    return results
