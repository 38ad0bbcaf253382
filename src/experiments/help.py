"""`--help` of each program: what it does, its common commands, the groups it takes with their options, its
keys with their comments, and (verify.py) its stages. Read from the config folders and the stages' source as
text, so help comes at once, without importing torch or Lightning (Hydra's own: `--hydra-help`)."""

import ast
import re
import sys
import textwrap
from pathlib import Path

from experiments.cli import CONF_DIR

ABOUT = {
    "train": (
        "Train a model: an experiment preset (a family's model, data and task) composed with the "
        "framework's groups; preflight checks on real batches, then the fit, checkpoints and the run's "
        "figures. Rerunning the same command resumes the same run in the same directory "
        "(<outputs>/<experiment>/<overrides>).",
        [
            "python train.py experiment=NAME                      train one preset (rerun: resume it)",
            "python train.py experiment=NAME trainer.max_epochs=50 seed=1",
            "python train.py experiment=NAME debug=fast_dev_run   one batch of each, no checkpoints",
            "python train.py experiment=NAME preflight_only=true  the checks before training, nothing trained",
            "python train.py experiment=NAME resume=never         start over (the old run is moved aside)",
            "python train.py -m experiment=NAME1,NAME2 seed=0,1   a sweep; summary in <outputs>/sweeps/",
            "python train.py sweep=NAME                           a preset sweep",
            "python train.py --config-dir DIR experiment=NAME     a family of your own (DIR: its conf/)",
            "python train.py experiment=NAME --cfg job            print the composed config, train nothing",
        ],
    ),
    "verify": (
        "Verify a checkpoint, or every checkpoint of a run directory, with the stages below: exit 0 when "
        "all pass, 1 when one fails, 2 on bad input. The checkpoint is read as data (weights only); "
        "its config may build only what the config folders register. A report is written beside it.",
        [
            "python verify.py ckpt=RUN_DIR                         every stage that applies to a run",
            "python verify.py ckpt=RUN_DIR/checkpoints/last.ckpt   one file",
            "python verify.py ckpt=PATH stages=[loadable,integrity,metrics]",
        ],
    ),
    "eval": (
        "Evaluate a checkpoint (or a run directory's last.ckpt) with its family's evaluation: on its own "
        "data, another data group of its family (data=GROUP) or its data with keys changed "
        "(data.KEY=VALUE), and with the task's evaluation settings changed (task.KEY=VALUE). Results go "
        "to <run dir>/eval/<data>/<checkpoint>/ (metrics.json and the family's files). Given a sweep "
        "directory, every finished job's last checkpoint (those already evaluated so are kept), then the "
        "sweep's summary and paired comparisons of them in <sweep dir>/eval/<data>/.",
        [
            "python eval.py ckpt=RUN_DIR",
            "python eval.py ckpt=RUN_DIR data=GROUP",
            "python eval.py ckpt=RUN_DIR data.KEY=VALUE task.KEY=VALUE",
            "python eval.py ckpt=outputs/sweeps/SWEEP_ID data.KEY=VALUE   each job of a sweep, and their summary",
        ],
    ),
    "predict": (
        "Predict new inputs, whose answers nobody has, with a trained run (a checkpoint, or a run "
        "directory's last.ckpt): its family reads the input (a file or a folder of them) with the checks its "
        "data gets, and writes its predictions to <run dir>/predict/<input>/<checkpoint>/ with "
        "prediction.json (what each family takes and writes: docs/FAMILIES.md); task.KEY=VALUE changes how "
        "it predicts, as for eval.py. In Python: from experiments import load_run.",
        [
            "python predict.py ckpt=RUN_DIR input=PATH",
            "python predict.py ckpt=RUN_DIR input=PATH task.KEY=VALUE   e.g. more views, test-time training",
            "python predict.py ckpt=RUN_DIR/checkpoints/epoch=0004.ckpt input=PATH out=DIR",
        ],
    ),
}
STAGES_SOURCE = Path(__file__).resolve().parent / "stages" / "checkpoint_stages.py"
KEY_LINE = re.compile(r"^(\w+):\s*(.*?)\s*(?:#\s*(.*))?$")


def config_folders(argv: list[str]) -> list[Path]:
    """The program's config folder, the built-in families' and those given with --config-dir."""
    given = []
    for i, arg in enumerate(argv):
        if arg.startswith("--config-dir="):
            given.append(arg.split("=", 1)[1])
        elif arg in ("--config-dir", "-cd") and i + 1 < len(argv):
            given.append(argv[i + 1])
    return [CONF_DIR, *sorted((CONF_DIR.parent / "families").glob("*/conf")), *map(Path, given)]


def options(group: str, folders: list[Path]) -> list[str]:
    return sorted({p.stem for folder in folders for p in (folder / group).glob("*.yaml")})


def defaults_and_keys(config: Path) -> tuple[list[str], list[tuple[str, str, str]]]:
    """The groups a program's defaults list names, and its top-level keys (name, value, comment)."""
    groups, keys, in_defaults = [], [], False
    for line in config.read_text().splitlines():
        if line.startswith("defaults:"):
            in_defaults = True
            continue
        if in_defaults and line.startswith("  - "):
            name = line[4:].split(":")[0].strip().removeprefix("override ").split("/")[0]
            if name not in ("_self_", "hydra", "train_schema") and ":" in line:
                groups.append(name)
            continue
        in_defaults = False
        found = KEY_LINE.match(line)
        if found and found.group(1) != "hydra":
            keys.append(found.groups(""))
    return groups, keys


def stages() -> list[tuple[str, str]]:
    """verify.py's stages, in order, with the first line of each one's docstring (read as source)."""
    tree = ast.parse(STAGES_SOURCE.read_text())
    docs = {
        f.name: (ast.get_docstring(f) or "").split("\n\n")[0].replace("\n", " ")
        for f in tree.body
        if isinstance(f, ast.FunctionDef)
    }
    table = next(
        n.value
        for n in tree.body
        if isinstance(n, ast.Assign) and getattr(n.targets[0], "id", "") == "CHECKPOINT_STAGES"
    )
    return [(k.value, docs.get(v.id, "")) for k, v in zip(table.keys, table.values)]


def text(program: str, argv: list[str]) -> str:
    about, examples = ABOUT[program]
    folders = config_folders(argv)
    groups, keys = defaults_and_keys(CONF_DIR / f"{program}.yaml")
    lines = [*textwrap.wrap(f"{program}.py: {about}", 100), "", "Common commands:", *(f"  {e}" for e in examples)]
    if groups:
        lines += ["", "Groups (choose one option: GROUP=OPTION):"]
        lines += [f"  {g:12s} {' '.join(options(g, folders)) or '(none)'}" for g in groups]
    lines += [
        "",
        "Keys (KEY=VALUE; nested ones with dots, e.g. trainer.max_epochs=50):" if groups else "Keys (KEY=VALUE):",
    ]
    lines += [f"  {name:22s} {value:10s} {comment}".rstrip() for name, value, comment in keys]
    if program == "verify":
        lines += ["", "Stages (stages=[...]; default: all that apply to a file or a run):"]
        lines += [f"  {name:22s} {doc}" for name, doc in stages()]
    if program == "eval":
        lines += ["", f"Data groups (data=GROUP, of the checkpoint's family): {' '.join(options('data', folders))}"]
    lines += ["", "Hydra: --cfg job (print the composed config), --info searchpath, --hydra-help"]
    return "\n".join(lines)


def asked(argv: list[str]) -> bool:
    return "--help" in argv or "-h" in argv


def print_help(program: str) -> None:
    print(text(program, sys.argv[1:]))
