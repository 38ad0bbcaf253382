"""Registers the built-in families of `experiments` as a user's own family is registered: each folder of
experiments/families/ that holds a `conf/` joins Hydra's config search path, as `--config-dir` adds a
user's. Only for the programs of `experiments` (their primary config folder is the package's `conf/`), so
other Hydra applications in the same environment are left alone. Standard library and Hydra only:
Hydra imports every plugin module of every application."""

import importlib.util
from pathlib import Path

from hydra.core.config_search_path import ConfigSearchPath
from hydra.plugins.search_path_plugin import SearchPathPlugin


def _package() -> Path | None:
    spec = importlib.util.find_spec("experiments")  # locates the package without importing it
    return Path(spec.origin).parent if spec and spec.origin else None


class BuiltInFamilies(SearchPathPlugin):
    def manipulate_search_path(self, search_path: ConfigSearchPath) -> None:
        package = _package()
        if package is None:
            return
        ours = (package / "conf").resolve()
        folders = [str(entry.path) for entry in search_path.get_path() if str(entry.path).startswith(("file://", "/"))]
        if not any(Path(folder.removeprefix("file://")).resolve() == ours for folder in folders):
            return
        for conf in sorted((package / "families").glob("*/conf")):
            search_path.append(provider=f"family {conf.parent.name}", path=f"file://{conf}")
