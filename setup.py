"""Build hook (the rest of the metadata is in pyproject.toml): an installed, non-editable copy has no git
checkout to ask, so the commit it was built from is recorded inside the package at build time
(experiments/BUILD_COMMIT), where checkpoint/policy.py's `git_commit` reads it."""
import subprocess
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


def checkout_commit() -> str:
    def git(*args):
        return subprocess.run(["git", *args], cwd=Path(__file__).parent, capture_output=True, text=True)

    head = git("rev-parse", "HEAD")
    if head.returncode != 0:
        return "unknown"
    dirty = git("status", "--porcelain", "--untracked-files=no").stdout.strip()
    return head.stdout.strip() + ("+dirty" if dirty else "")


class BuildWithCommit(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "experiments" / "BUILD_COMMIT"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(checkout_commit() + "\n")


setup(cmdclass={"build_py": BuildWithCommit})
