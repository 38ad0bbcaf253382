"""Build hook (the rest of the metadata is in pyproject.toml): an installed, non-editable copy has no git
checkout to ask, so the commit it was built from is recorded inside the package at build time
(experiments/BUILD_COMMIT), where checkpoint/policy.py's `git_commit` reads it."""

import sys
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

sys.path.insert(0, str(Path(__file__).parent / "src"))
from experiments.commit import checkout_commit  # noqa: E402  (standard library only)


class BuildWithCommit(build_py):
    def run(self):
        super().run()
        target = Path(self.build_lib) / "experiments" / "BUILD_COMMIT"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(checkout_commit(Path(__file__).parent) + "\n")


setup(cmdclass={"build_py": BuildWithCommit})
