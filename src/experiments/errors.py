"""Errors a user can fix: the programs print them as one line and exit with status 2."""


class UserError(Exception):
    """Bad input: a config, a path or a request that cannot work as given. The message says how to fix it."""


class StageFailure(Exception):
    """A validation stage found a problem (exit status 1)."""


class RunStopped(Exception):
    """A callback stopped training on purpose (e.g. coverage collapsed); the last checkpoint on disk is
    the last good one (exit status 1)."""
