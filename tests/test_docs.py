"""Documentation that cannot rot: the site builds with every link and anchor resolved; every command the
README and docs/ show is composed by Hydra (or parsed) the way its program would take it, without training,
so a misspelt experiment, group, key or flag fails here; every file path and dotted module that the docs,
comments and messages name exists; the contract's page is what task_contract.py generates."""

import ast
import re
import shlex
import subprocess
import sys
from functools import cache
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.utils import get_class
from markdown.extensions.toc import slugify

from experiments.cli import CONF_DIR, quote_path_values
from experiments.config_schema import register
from experiments.untrusted import registry

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # examples.sine, as the root's scripts import it
DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").rglob("*.md")])
FAMILIES = sorted((ROOT / "src/experiments/families").glob("*/")) + [ROOT / "examples/sine"]
PROGRAMS = {"train.py": "train", "verify.py": "verify", "eval.py": "eval", "predict.py": "predict"}
CONSOLE_SCRIPTS = {f"experiments-{name}": f"{name}.py" for name in PROGRAMS.values()}
# What a placeholder stands for, where one real value checks the rest of the command (word by word)
STAND_INS = {
    "NAME": "ternary_v5_5",
    "RUN": "outputs/exp3_champion/default",
    "RUN_DIR": "outputs/exp3_champion/default",
    "FILE": "x",
    "FILE.png": "x.png",
    "SUBMISSION": "x",
    "FOLDER": "x",
    "DIR": "x",
    "PATH": "x",
    "...": "x",
    "<yours>": "debug",
}
PLACEHOLDER = re.compile(r"\.\.\.|<|>|^(?:KEY|VALUE|GROUP|E|S|N|ARGS|OPTION)$|=(?:KEY|VALUE|GROUP|E|S|N|ARGS)$")

register()


# ---- the commands the docs show ----
def fenced_and_inline(text: str) -> tuple[list[str], str]:
    """The lines of the fenced code blocks (continuations joined) and the text outside them."""
    lines, outside, in_block = [], [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            outside.append(line)
        elif lines and lines[-1].endswith("\\"):
            lines[-1] = lines[-1][:-1] + " " + line.strip()
        else:
            lines.append(line.strip())
    return lines, "\n".join(outside)


def shell_words(line: str) -> list[str] | None:
    """The words of a shell line up to its comment; None when it does not split (a sentence, not a command)."""
    try:
        return shlex.split(line, comments=True)
    except ValueError:
        return None


def command_words(words: list[str]) -> list[str] | None:
    """A shell command's words as `python <target> <args>`: a prompt, environment assignments, `timeout N`,
    `nohup` and redirections dropped, console scripts as the scripts they are; None when it runs no python."""
    while words and (words[0] in ("$", "nohup", "do", "then") or re.fullmatch(r"[A-Z_]+=\S*", words[0])):
        words = words[1:]
    if words[:1] == ["timeout"]:
        words = words[2:]
    kept, skip = [], False
    for word in words:
        if skip:
            skip = False
        elif word in (">", ">>", "<", "2>"):
            skip = True
        elif not re.fullmatch(r"\d?>&\d|\d?>>?\S+", word):
            kept.append(word)
    if kept[:1] and kept[0] in CONSOLE_SCRIPTS:
        return ["python", CONSOLE_SCRIPTS[kept[0]], *kept[1:]]
    if kept[:3] == ["python", "-m", "experiments"]:
        return ["python", "train.py", *kept[3:]]
    if len(kept) >= 2 and kept[0] in ("python", "python3") and kept[1] != "-c":
        return kept
    return None


def commands_in(text: str) -> list[str]:
    """Commands that run python (a program, a script, a module, a console script), from code blocks and spans."""
    lines, outside = fenced_and_inline(text)
    spans = [" ".join(s.split()) for s in re.findall(r"`([^`]+)`", outside, flags=re.S)]
    found = []
    for candidate in lines + spans:
        for part in re.split(r"\s*(?:&&|;|\|\|)\s*", candidate):
            words = command_words(shell_words(part) or [])
            if words:
                found.append(" ".join(shlex.quote(w) for w in words))
    return found


def documented_commands() -> list[tuple[str, str]]:
    seen, out = set(), []
    for doc in DOCS:
        for command in commands_in(doc.read_text()):
            if command not in seen:
                seen.add(command)
                out.append((doc.relative_to(ROOT).as_posix(), command))
    return out


# ---- composing them as the programs would ----
@cache
def experiments_available() -> frozenset[str]:
    """The experiment presets every config folder registers, as the programs read them."""
    return registry([str(family / "conf") for family in FAMILIES]).experiments


COMPOSED: dict = {}  # many commands compose the same config: once each


def compose_train(overrides: list[str], config_dir: str | None) -> object:
    """Hydra's composition of train.py's config, with a --config-dir on the search path as train.py puts it."""
    if config_dir:
        overrides = [*overrides, f"hydra.searchpath=[file://{(ROOT / config_dir).resolve()}]"]
    key = tuple(sorted(overrides))
    if key not in COMPOSED:
        COMPOSED[key] = compose("train", overrides=overrides, return_hydra_config=True)
    return COMPOSED[key]


def jobs_of(overrides: list[str]) -> list[list[str]]:
    """A multirun's overrides as jobs: each option of each swept config group once (experiment=a,b), the
    others at their first value; a swept value of a key (seed=0,1, task.lr=...) composes as its first does.
    One job when nothing is swept."""
    parsed = OverridesParser.create().parse_overrides([quote_path_values(o) for o in overrides])
    values = [
        [f"{o.get_key_element()}={v}" for v in o.sweep_string_iterator()] if o.is_sweep_override() else [o.input_line]
        for o in parsed
    ]
    values = [v if "." not in v[0].split("=")[0] and not v[0].startswith("seed=") else v[:1] for v in values]
    first = [v[0] for v in values]
    return [first] + [first[:i] + [v] + first[i + 1 :] for i, vs in enumerate(values) for v in vs[1:]]


def preset_sweep_jobs(cfg, overrides: list[str]) -> list[list[str]]:
    """A `sweep=` preset's own swept parameters (hydra.sweeper.params), each listed value once; a range an
    optimiser samples (Optuna's interval) is left to it."""
    swept = []
    for key, value in (cfg.hydra.sweeper.get("params") or {}).items():
        try:
            jobs_of([f"{key}={value}"])
            swept.append(f"{key}={value}")
        except Exception:  # interval(...): not a list of values
            continue
    return [[*overrides, *job] for job in jobs_of(swept)] if swept else []


def split_program_args(words: list[str]) -> tuple[str | None, list[str]]:
    """(--config-dir's value, the remaining overrides); other flags (-m, --cfg job, --help) dropped."""
    config_dir, rest, skip = None, [], False
    for i, word in enumerate(words):
        if skip:
            skip = False
            continue
        if word == "--config-dir":
            config_dir, skip = words[i + 1], True
        elif word.startswith("--config-dir="):
            config_dir = word.split("=", 1)[1]
        elif word == "--cfg":
            skip = True
        elif not word.startswith("-"):
            rest.append(word)
    return config_dir, rest


def check_train(args: list[str]) -> None:
    config_dir, overrides = split_program_args(args)
    for job in jobs_of(overrides):
        cfg = compose_train(job, config_dir)
        assert cfg.hydra.runtime.choices.get("experiment") or cfg.get("sweep_name"), "composes no experiment"
        if cfg.get("sweep_name"):
            for preset_job in preset_sweep_jobs(cfg, job):
                compose_train(preset_job, config_dir)


def experiments_of(ckpt: str, config_dir: str | None) -> list[str]:
    """outputs/<experiment>/... -> [the experiment]; outputs/sweeps/<sweep id> -> the experiments its preset
    sweeps; [] when the path names neither."""
    parts = Path(ckpt).parts
    if len(parts) > 1 and parts[0] == "outputs" and parts[1] in experiments_available():
        return [parts[1]]
    if len(parts) > 2 and parts[:2] == ("outputs", "sweeps"):
        cfg = compose_train([f"sweep={parts[2].split(',')[0]}"], config_dir)
        swept = str((cfg.hydra.sweeper.get("params") or {}).get("experiment", ""))
        return [e for e in swept.split(",") if e] or [cfg.hydra.runtime.choices.experiment]
    return []


def check_evaluation(program: str, args: list[str]) -> None:
    """verify.py, eval.py, predict.py: the program's own keys compose with its config; eval.py's and
    predict.py's data and task arguments compose onto the experiment the checkpoint's path names."""
    config_dir, overrides = split_program_args(args)
    forwarded = [o for o in overrides if re.match(r"(data|task)[.=]", o)]
    own = [quote_path_values(o) for o in overrides if o not in forwarded]
    cfg = compose(program, overrides=own)
    if program == "verify" and cfg.stages:
        from experiments.stages.checkpoint_stages import CHECKPOINT_STAGES

        assert set(cfg.stages) <= set(CHECKPOINT_STAGES), f"unknown stages {set(cfg.stages) - set(CHECKPOINT_STAGES)}"
    assert program != "verify" or not forwarded, "verify.py takes no data or task arguments"
    experiments = experiments_of(str(cfg.ckpt or ""), config_dir)
    assert experiments or not forwarded, f"{cfg.ckpt}: no experiment to check the data and task arguments against"
    for experiment in experiments if forwarded else []:
        run = compose_train([f"experiment={experiment}", *forwarded], config_dir)
        settings = get_class(run.task._target_).evaluation_settings
        for o in forwarded:
            if o.startswith("task."):
                assert o[5:].split(".")[0].split("=")[0] in settings, f"{o}: not an evaluation setting"


def script_options(path: Path) -> set[str]:
    """The --flags a script's argparse parser declares (read from its source, not run)."""
    options = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_argument":
            options |= {a.value for a in node.args if isinstance(a, ast.Constant) and str(a.value).startswith("-")}
    return options


def check_script(script: str, args: list[str]) -> None:
    path = ROOT / script
    assert path.is_file(), f"{script} does not exist"
    declared = script_options(path)
    for word in args:
        flag = word.split("=", 1)[0]
        if flag.startswith("--"):
            assert flag in declared, f"{script} has no option {flag} (it has {sorted(declared)})"


def check_module(module: str, args: list[str]) -> None:
    """A module exists, and, run as a script, declares every --flag used."""
    import importlib.util

    spec = importlib.util.find_spec(module)
    assert spec is not None, f"no module {module}"
    if Path(spec.origin).is_relative_to(ROOT / "src"):  # ours: its flags too (others: pip, venv)
        check_script(str(Path(spec.origin).relative_to(ROOT)), args)


def stand_in(word: str) -> str:
    """A placeholder word (or value) replaced by a real one: RUN -> a run directory, ckpt=... -> ckpt=x."""
    key, sep, value = word.rpartition("=")
    return word if word == "..." else f"{key}{sep}{STAND_INS.get(value, value)}"


def kind_of(command: str) -> tuple[str, str, list[str]]:
    """(what the command runs: a program, a script, a module, its help, or a placeholder; the target; its args)."""
    words = [stand_in(w) for w in shlex.split(command)[1:]]
    if any(PLACEHOLDER.search(w) for w in words):
        return "skipped: a placeholder", "", []
    if len(words) == 1 and words[0] in PROGRAMS:
        return "skipped: a program named in prose", "", []
    if words[0] == "-m":
        return "module", words[1], words[2:]
    target, args = words[0], words[1:]
    if target in PROGRAMS:
        return ("help" if {"--help", "--hydra-help"} & set(args) else "composed"), target, args
    return "script", target, args


def check_command(command: str) -> str:
    """Checks one documented command as its program would take it; returns its kind."""
    kind, target, args = kind_of(command)
    if kind == "module":
        check_module(target, args)
    elif kind == "composed" and PROGRAMS[target] == "train":
        check_train(args)
    elif kind == "composed":
        check_evaluation(PROGRAMS[target], args)
    elif kind == "script":
        check_script(target, args)
    return kind


COMMANDS = documented_commands()


@pytest.fixture(scope="module", autouse=True)
def hydra_once():
    """One Hydra initialisation for the module's hundred compositions (each program's config is in CONF_DIR)."""
    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        yield


def test_the_docs_show_commands_of_every_kind():
    kinds = {kind_of(c)[0] for _, c in COMMANDS}
    assert {"composed", "script", "skipped: a placeholder"} <= kinds, kinds
    assert sum(c.split()[1] in PROGRAMS for _, c in COMMANDS) > 60  # the extraction finds them


@pytest.mark.parametrize("where,command", COMMANDS, ids=[f"{w}: {c[:70]}" for w, c in COMMANDS])
@pytest.mark.slow  # about a hundred Hydra compositions
def test_a_documented_command_composes(where, command):
    check_command(command)


@pytest.mark.parametrize(
    "command,why",
    [
        ("python train.py experiment=exp3_champoin", "Could not find 'experiment/exp3_champoin'"),
        ("python train.py experiment=exp3_champion trainer.max_epoch=2", "trainer.max_epoch"),
        ("python train.py -m experiment=exp3_champion seed=0,1 data=arc_smal", "data/arc_smal"),
        ("python eval.py ckpt=outputs/exp3_champion/default task.ranking_=poe", "task.ranking_"),
        ("python verify.py ckpt=x stages=[loadable,integrty]", "integrty"),
        ("python src/experiments/families/arc/scripts/ttt_curves.py x --step 0,25", "--step"),
        ("python scripts/summarise.py x", "summarise.py does not exist"),
        ("python train.py -m experiment=exp3_champion,exp2_perminvv seed=0,1", "exp2_perminvv"),
        ("python eval.py ckpt=outputs/sweeps/arc_ablation_cpu_ttt data.tasks_fromm=evaluation", "tasks_fromm"),
        ("python src/experiments/families/arc/scripts/ttt_curves.py RUN --max-taskz 40", "--max-taskz"),
        ("python -m experiments.contract_doc --wrte", "--wrte"),
    ],
)
def test_a_misspelt_command_fails_the_check(command, why):
    with pytest.raises(Exception, match=re.escape(why)):
        check_command(command)


def test_commands_are_found_however_the_docs_write_them():
    text = """
```bash
$ OMP_NUM_THREADS=1 timeout 600 python train.py experiment=ternary_v5_5 > log.txt 2>&1
experiments-verify ckpt=outputs/ternary_v5_5/default && python -m experiments experiment=sine
python train.py experiment=ternary_v5_5 \\
  seed=1   # a comment
```
and `python eval.py ckpt=outputs/ternary_v5_5/default
data.batch_size=8` in a sentence."""
    assert commands_in(text) == [
        "python train.py experiment=ternary_v5_5",
        "python verify.py ckpt=outputs/ternary_v5_5/default",
        "python train.py experiment=sine",
        "python train.py experiment=ternary_v5_5 seed=1",
        "python eval.py ckpt=outputs/ternary_v5_5/default data.batch_size=8",
    ]


# ---- the files and modules they name ----
PATH = re.compile(r"(?<![\w./~=,-])((?:\.{1,2}/)?(?:[\w.-]+/)+[\w.-]+\.(?:py|md|yaml|sh|toml|png))\b")
MODULE = re.compile(r"(?<![\w./])((?:experiments|hydra_plugins|examples)\.[a-z_][\w.]*[\w])(?!\w)")
# Where a path may be named from, besides the folders holding the file that names it: the repository, the
# package (as its modules name each other), the config folders (as configs name their groups' files)
BASES = [ROOT, ROOT / "src", ROOT / "src/experiments", CONF_DIR, *(f / "conf" for f in FAMILIES)]
# What tests name on purpose that is not there (crafted files, moved classes): only repository paths count
REPOSITORY = ("src/", "docs/", "scripts/", "tests/", "examples/", "conf/", ".ci/", "README.md")
# Folders that hold what runs write, never files of the repository
# fmt: off
RUNTIME = ("outputs/", "multirun/", "wandb/", "checkpoints/", "eval/", "predict/", "validation/", "report/",
           "reconstructions/", "tmp/", "/tmp", "my_tasks/", "clips/", "mypkg/", "RUN_DIR/", "site/", ".hydra/",
           "...")
# fmt: on


def tracked(*patterns: str) -> list[Path]:
    out = subprocess.run(["git", "ls-files", *patterns], cwd=ROOT, capture_output=True, text=True, check=True)
    return [ROOT / line for line in out.stdout.splitlines() if (ROOT / line).is_file()]


def named_text() -> list[Path]:
    """The docs, and the code, configs and scripts whose comments and messages name files and modules."""
    files = tracked("*.py", "*.yaml", "*.sh", "*.toml", ".ci/run") + DOCS
    return sorted(set(files) - {Path(__file__).resolve()})  # this file names stale things on purpose


FOLDER = re.compile(r"(?<![\w./-])((?:[\w.-]+/)+)")
# Dotted names that are not modules: an MLflow tag's name
NOT_MODULES = {"experiments.run_dir_id"}


def named_folders(text: str) -> list[Path]:
    """Folders of the repository a text names (`families/arc/`, `examples/sine/`): a path after one of them
    in the same text may be relative to it."""
    names = {m.rstrip("/") for m in FOLDER.findall(text)}
    return [base / n for n in names for base in (ROOT, ROOT / "src/experiments") if (base / n).is_dir()]


def resolves(path: str, where: Path, folders: list[Path] = ()) -> bool:
    path = path.removeprefix("./")
    bases = [*where.parents[: len(where.relative_to(ROOT).parts)], *BASES, *folders]
    return any((base / path).exists() for base in bases) or path.startswith(RUNTIME)


def module_exists(dotted: str) -> bool:
    """`experiments.a.b.C.method`: the longest importable module prefix, then attributes on it."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ImportError:
            continue
        for attr in parts[i:]:
            if not hasattr(obj, attr):
                return False
            obj = getattr(obj, attr)
        return True
    return False


@cache
def missing_names() -> list[str]:
    missing = []
    for file in named_text():
        text = file.read_text(errors="replace")
        rel = file.relative_to(ROOT)
        a_test = rel.parts[0] == "tests" or "tests" in rel.parts[:-1]
        folders = named_folders(text)
        for path in set(PATH.findall(text)):
            if (not a_test or path.startswith(REPOSITORY)) and not resolves(path, file, folders):
                missing.append(f"{rel}: {path}")
        if a_test or rel.name == "renamed_targets.yaml":  # old and crafted names, on purpose
            continue
        for dotted in set(MODULE.findall(text)):
            if dotted not in NOT_MODULES and not dotted.endswith((".py", ".md", ".yaml")) and not module_exists(dotted):
                missing.append(f"{rel}: {dotted}")
    return sorted(missing)


def test_every_named_file_and_module_exists():
    assert missing_names() == []


def test_a_stale_name_is_caught():
    doc = ROOT / "docs" / "families" / "arc.md"
    assert not resolves("src/experiments/data/arc.py", doc) and resolves("docs/GPU.md", doc)
    assert resolves("families/arc/test_time.py", doc) and not resolves("scripts/ttt_curves.py", doc)
    assert resolves("scripts/ttt_curves.py", ROOT / "src/experiments/families/arc/task.py")  # its own family's
    assert MODULE.findall("see experiments.family. Or experiments.api.load_run(path)") == [
        "experiments.family",
        "experiments.api.load_run",
    ]
    assert not module_exists("experiments.data.arc.ArcDataModule")
    assert module_exists("experiments.families.arc.data.ArcDataModule")


def slug(heading: str) -> str:
    """The anchor mkdocs gives a heading (Python-Markdown's table of contents)."""
    return slugify(heading, "-")


def test_the_readmes_links_and_anchors_resolve():
    """The README is outside the site (mkdocs checks the pages' own links): its links are checked here."""
    readme = (ROOT / "README.md").read_text()
    links = re.findall(r"\]\(([^)#\s]+)(?:#([\w-]+))?\)", readme)
    assert len(links) > 20
    for target, anchor in links:
        if target.startswith("http"):
            continue
        page = ROOT / target
        assert page.is_file(), f"README links {target}, which does not exist"
        if anchor:
            anchors = {slug(h) for h in re.findall(r"^#+ (.+)$", page.read_text(), flags=re.M)}
            assert anchor in anchors, f"README links {target}#{anchor}: no such heading"
    assert slug("Which component helps: paired comparisons") == "which-component-helps-paired-comparisons"


# ---- the site, and the contract's page ----
def test_the_site_builds_with_every_link_and_anchor_resolved(tmp_path):
    r = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stdout + r.stderr
    assert (tmp_path / "site" / "families" / "arc" / "index.html").is_file()


def test_every_class_attribute_of_the_contract_is_on_the_page():
    from experiments.task_contract import ATTRIBUTES, ExperimentTask

    assert set(ATTRIBUTES) == set(ExperimentTask.__annotations__)


def test_the_contract_page_is_what_the_code_generates():
    from experiments.contract_doc import PAGE, generated_part, render

    assert generated_part(PAGE.read_text()) == render(), "run: python -m experiments.contract_doc --write"
