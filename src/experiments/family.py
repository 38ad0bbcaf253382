"""What a family imports from the framework: this module, and nothing else of it (docs/FAMILIES.md).

A family is a folder: a model (a plain nn.Module), a data module, a task (`ExperimentTask`), their
config groups, and optionally pictures, scripts and tests. The built-in ones live in
`experiments/families/`; a user's own anywhere, given to the programs with `--config-dir`. Both register
the same way (their config folder on Hydra's search path) and import the framework only from here, so
everything else in `experiments` may change without breaking a family.
"""

# ruff: noqa: F401 (every import is re-exported: __all__ is list(EXPORTS))
from experiments.atomic import atomic_savefig, atomic_write_bytes, atomic_write_csv
from experiments.callbacks import console_print
from experiments.epoch_sampler import BatchLoader, EpochBatchSampler, at_limit, batches_done, shard
from experiments.errors import RunStopped, StageFailure, UserError
from experiments.run_dir import epoch_number
from experiments.stages.preflight import PreflightContext
from experiments.stages.registry import StageResult
from experiments.task_contract import ExperimentTask
from experiments.untrusted import excerpt, open_regular, read_text

# What each name is for; docs/FAMILIES.md's table of them is generated from this (experiments/contract_doc.py)
EXPORTS = {
    "ExperimentTask": "the LightningModule a family's task subclasses: the contract (task_contract.py, below)",
    "EpochBatchSampler": "batch order as a pure function of (seed, epoch), resumable mid-epoch, sharded under DDP",
    "BatchLoader": "`tensor[indices]` per batch of the sampler",
    "batches_done": "batches done in the current epoch (for a data module's `state_dict`)",
    "shard": "a training sampler's DDP share",
    "at_limit": "whether `epoch` ends training by the epoch or step limit (work done only at the last evaluation)",
    "atomic_write_bytes": "a family's own file, never torn, no temporary left on failure",
    "atomic_write_csv": "the same, for rows of a CSV file",
    "atomic_savefig": "the same, for a matplotlib figure",
    "epoch_number": "an epoch as users read it (Lightning's + 1)",
    "StageResult": "what a family's own preflight stage returns",
    "StageFailure": "what a family's own preflight stage raises when its check fails (exit 1)",
    "PreflightContext": "what a preflight stage receives: `cfg`, `task`, `datamodule`, `experiment`, "
    "`resume_from`, `real_batches()`",
    "UserError": "bad input: one line, exit 2, nothing written",
    "RunStopped": "a deliberate stop of a run (exit 1), e.g. by a callback",
    "console_print": "a line above the progress bar",
    "read_text": "a data file's text, read with a bound, only when it is a regular file (a FIFO or a device is "
    "refused before any read could block)",
    "open_regular": "a data file opened for a reader of its own (binary), only when it is a regular file",
    "excerpt": "an untrusted value short enough for one line of a message (was `shown`, still accepted)",
}
__all__ = list(EXPORTS)

# `excerpt` was called `shown` until 2026-12: a family written against that name keeps working.
shown = excerpt
