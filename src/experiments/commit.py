"""Which commit of the code is running: asked of git (standard library only, so that setup.py can use it
at build time without the project's dependencies)."""

import subprocess
from pathlib import Path


def checkout_commit(folder: Path) -> str:
    """HEAD of the git checkout holding `folder` ('+dirty' when tracked files have uncommitted changes),
    or 'unknown' where there is no checkout or no git."""

    def git(*args):
        return subprocess.run(["git", *args], cwd=folder, capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return "unknown"
        dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return head.stdout.strip() + ("+dirty" if dirty else "")
