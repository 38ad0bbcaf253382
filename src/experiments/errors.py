"""Errors a user can fix (the programs print them as one line and exit with status 2), exit statuses, outcomes."""

import errno
from dataclasses import dataclass


class UserError(Exception):
    """Bad input: a config, a path or a request that cannot work as given. The message says how to fix it."""


class StageFailure(Exception):
    """A validation stage found a problem (exit status 1)."""


class RunStopped(Exception):
    """A callback stopped training on purpose (e.g. coverage collapsed); the last checkpoint on disk is
    the last good one (exit status 1)."""


class WriteFailed(Exception):
    """A file could not be written (no space left, an I/O error): the run stops (exit status 1); the
    message names the file and the reason. Nothing earlier was touched and no temporary file is left."""


# A disk that is full, read-only or failing: the machine's trouble, not a bug, so one line rather than a traceback
DISK_TROUBLE = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EIO}


def write_failure(e: BaseException) -> WriteFailed | None:
    """A failed write as WriteFailed: ours already are; a library's OSError (a logger's file, a figure) when
    it is disk trouble. None for anything else, which keeps its traceback."""
    if isinstance(e, WriteFailed):
        return e
    if isinstance(e, OSError) and e.errno in DISK_TROUBLE:
        where = f" {e.filename}" if e.filename else ""
        if e.errno == errno.EIO:  # a read can fail so too (a failing disk, a network filesystem)
            return WriteFailed(f"I/O error on{where or ' a file'}: {e.strerror or e}")
        return WriteFailed(f"could not write{where}: {e.strerror or e}")
    return None


def write_failure_line(failed: WriteFailed) -> str:
    return f"error: {failed}. Free space (or fix the disk) and rerun the same command"


def first_line(e: BaseException) -> str:
    """An error's message as one line (its first), for a report that names many: "" when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else ""


# Exit statuses of the programs: done; failed (a verify stage, a sweep job); the user's input refused; stopped by
# Ctrl-C; stopped by SIGTERM (both save first: rerun the same command to resume).
EXIT_OK, EXIT_FAILED, EXIT_USER, EXIT_INTERRUPTED, EXIT_PREEMPTED = 0, 1, 2, 130, 143


@dataclass
class Outcome:
    """How a program's job ended: its exit status and, when it failed, the one line that says why (a
    sweep's job record keeps it)."""

    code: int
    error: str | None = None
    stop: bool = False  # the job completed, but the user pressed Ctrl-C as it ended: a sweep stops after it
