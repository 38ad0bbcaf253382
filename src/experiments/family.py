"""What a family imports from the framework: this module, and nothing else of it (docs/FAMILIES.md).

A family is a folder: a model (a plain nn.Module), a data module, a task (`ExperimentTask`), their
config groups, and optionally pictures, scripts and tests. The built-in ones live in
`experiments/families/`; a user's own anywhere, given to the programs with `--config-dir`. Both register
the same way (their config folder on Hydra's search path) and import the framework only from here, so
everything else in `experiments` may change without breaking a family.
"""

from experiments.atomic import atomic_savefig, atomic_write_bytes, atomic_write_csv
from experiments.callbacks import console_print
from experiments.epoch_sampler import BatchLoader, EpochBatchSampler, at_limit, batches_done, shard
from experiments.errors import RunStopped, StageFailure, UserError
from experiments.run_dir import epoch_number
from experiments.stages.preflight import PreflightContext
from experiments.stages.registry import StageResult
from experiments.task_contract import ExperimentTask
from experiments.untrusted import excerpt, open_regular, read_text

# one line per kind of need, as docs/FAMILIES.md lists them
# fmt: off
__all__ = [
    "ExperimentTask",                                                   # the contract (task_contract.py)
    "EpochBatchSampler", "BatchLoader", "batches_done", "shard",        # data order as a function of (seed, epoch)
    "at_limit",                                                         # the epoch that ends training
    "atomic_write_bytes", "atomic_write_csv", "atomic_savefig",         # a family's own files, never torn
    "epoch_number",                                                     # epochs as users count them (from 1)
    "StageResult", "StageFailure", "PreflightContext",                  # a family's own preflight stages
    "UserError", "RunStopped",                                          # bad input (exit 2); a deliberate stop (exit 1)
    "console_print",                                                    # a line above the progress bar
    "read_text", "open_regular", "excerpt",          # data files: regular only, bounded; a value shortened
]
# fmt: on

# `excerpt` was called `shown` until 2026-12: a family written against that name keeps working.
shown = excerpt
