"""Where the framework ends, by rule over every file (no hand list):

- the framework is every module of `experiments` outside `experiments/families/`; it imports no family
  (no `experiments.families...`, no `examples...`) and its code names none (docstrings and comments may give
  examples); its config tree (`experiments/conf/`) names no family's class or preset;
- a family's modules (each folder of `experiments/families/`, and `examples/sine`; not its tests and
  scripts, which drive the framework from outside as a user does) import the framework only through its
  public module, `experiments.family`, and no other family.
"""

import ast
import io
import re
import tokenize
from pathlib import Path

import pytest

from conftest import ROOT

SRC = ROOT / "src" / "experiments"
FAMILIES = sorted(p for p in (SRC / "families").iterdir() if p.is_dir() and (p / "conf").is_dir())
FRAMEWORK = sorted(
    [
        *(p for p in SRC.rglob("*.py") if "families" not in p.relative_to(SRC).parts),
        *(ROOT / "src" / "hydra_plugins").rglob("*.py"),
    ]
)
FRAMEWORK_CONF = sorted((SRC / "conf").rglob("*.yaml"))
# a family's own modules; its tests and scripts drive the framework from outside, as a user does
FAMILY_CODE = {
    family.name: sorted(p for p in family.rglob("*.py") if not {"tests", "scripts"} & set(p.parts))
    for family in FAMILIES
}
FAMILY_CODE["sine (examples)"] = sorted((ROOT / "examples" / "sine").rglob("*.py"))
PUBLIC = "experiments.family"


def family_words() -> list[str]:
    """What names a family: its folder, its presets and config options, the classes its configs build,
    and the metrics its tasks report (read from the families themselves, so a new family is covered too)."""
    words = {"sine"}
    for family in FAMILIES:
        words.add(family.name)
        words |= {p.stem for p in (family / "conf").rglob("*.yaml") if p.stem not in ("default", "renamed_targets")}
        for text in (p.read_text() for p in (family / "conf").rglob("*.yaml")):
            words |= {t.rsplit(".", 1)[-1].lower() for t in re.findall(r"_target_:\s*([\w.]+)", text)}
        for task in family.glob("*.py"):
            words |= set(re.findall(r'"((?:coverage|hierarchy|arc|codes|val)/[\w@]+)"', task.read_text()))
    return sorted(w.lower() for w in words)


WORDS = family_words()


def imported_modules(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:  # `from experiments import families` too
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def code_without_prose(path: Path) -> str:
    """The module's tokens but its comments and docstrings (string statements)."""
    text = path.read_text()
    docstrings = {
        (n.value.lineno, n.value.col_offset)
        for n in ast.walk(ast.parse(text))
        if isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) and isinstance(n.value.value, str)
    }
    kept = [
        tok.string
        for tok in tokenize.generate_tokens(io.StringIO(text).readline)
        if tok.type != tokenize.COMMENT and not (tok.type == tokenize.STRING and tok.start in docstrings)
    ]
    return " ".join(kept).lower()


def named_families(text: str) -> list[str]:
    return [w for w in WORDS if re.search(rf"(?<![a-z0-9]){re.escape(w)}(?![a-z0-9])", text)]


def test_the_rule_sees_every_file_and_every_family():
    assert len(FRAMEWORK) > 25 and FRAMEWORK_CONF and {f.name for f in FAMILIES} == {"arc", "ternary", "video"}
    assert all(FAMILY_CODE.values())
    assert {"arc", "exp3_champion", "dualvae", "coverage/recon_a", "val/psnr", "magvit"} <= set(WORDS)
    assert named_families("from experiments.families.arc import x; m = 'coverage/recon_a'") == [
        "arc",
        "coverage/recon_a",
    ]
    assert named_families("search archive recoverage") == []


@pytest.mark.parametrize("path", FRAMEWORK, ids=lambda p: str(p.relative_to(ROOT / "src")))
def test_the_framework_imports_no_family(path):
    family = sorted(m for m in imported_modules(path) if m.startswith(("experiments.families", "examples")))
    assert not family, f"{path.name} imports {family}"


@pytest.mark.parametrize("path", FRAMEWORK, ids=lambda p: str(p.relative_to(ROOT / "src")))
def test_the_framework_names_no_family(path):
    assert not named_families(code_without_prose(path)), f"{path.name} names {named_families(code_without_prose(path))}"


@pytest.mark.parametrize("path", FRAMEWORK_CONF, ids=lambda p: str(p.relative_to(SRC / "conf")))
def test_the_framework_config_names_no_family(path):
    text = "\n".join(line.split("#", 1)[0] for line in path.read_text().lower().splitlines())
    assert "experiments.families" not in text and not named_families(text), f"{path} names {named_families(text)}"


@pytest.mark.parametrize("family", sorted(FAMILY_CODE))
def test_a_family_imports_the_framework_only_through_its_public_module(family):
    own = f"experiments.families.{family}"
    wrong = sorted(
        {
            f"{p.name}: {m}"
            for p in FAMILY_CODE[family]
            for m in imported_modules(p)
            if m.startswith("experiments")
            and m != PUBLIC
            and not m.startswith(PUBLIC + ".")
            and m != own
            and not m.startswith(own + ".")
        }
    )
    assert not wrong, f"{family} imports private framework modules or another family: {wrong}"


def test_a_family_written_against_an_earlier_public_name_still_imports():
    from experiments import family

    assert family.shown is family.excerpt  # `excerpt` was `shown` until 2026-12
    assert family.excerpt("x" * 100, 10) == "'xxxxxxxxx...'"
