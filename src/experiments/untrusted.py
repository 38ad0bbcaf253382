"""What a program reads but did not compose itself is data, never code (docs/SECURITY.md).

A checkpoint's stored config, a run directory's `run.yaml`, reports, sidecars and data files may have been
written by anyone. Before anything is built from a stored config, `check_stored_config` proves that it
can only build what the user's own config folders build:

- every `_target_` must be one that a registered config folder places at the same key (`model`, `data`,
  `task`, `trainer`, `checkpoint`, `logger`, `callbacks.<name>`, ...). The registered folders are the
  ones the program was started with: the package's config tree and each `--config-dir` the user gives
  (`registry`). Their YAML files are read as text; nothing named in the stored config is imported first;
- no other Hydra instruction (`_args_`, `_partial_`, `_recursive_`, `_convert_`, any `_key_`) and no
  `${...}` interpolation anywhere;
- every other value a plain scalar, list or mapping, within bounds of size and depth.

Anything else is refused with one line naming the key and why (the programs exit 2). The check does not
rest on Hydra's own block list, which older versions do not have.

Files are opened only when they are regular files (`open_regular`: a FIFO, a device or a folder is refused
before any read that could block) and read with a size bound (`read_text`); YAML is read without aliases
(`read_yaml`), and everything structured is walked with bounds that count a shared value as often as it is
reachable (`check_bounded`), before anything else walks it.
"""

import errno
import importlib.resources
import os
import pickletools
import stat
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from experiments.errors import UserError

MAX_TEXT_BYTES = 16 << 20  # run.yaml, reports, sidecars, task files: far above any real one
MAX_CONFIG_VALUES = 100_000
MAX_CONFIG_DEPTH = 32
MAX_YAML_BYTES = 1 << 20  # run.yaml: a real one is a few KB
MAX_CHECKPOINT_VALUES = 1_000_000  # a checkpoint's values (history, optimizer and loop state), each reference counted
MAX_CHECKPOINT_DEPTH = 64
TARGET = "_target_"


def kind_of(mode: int) -> str:
    for test, name in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISCHR, "a device"),
        (stat.S_ISBLK, "a device"),
    ):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: Path, flags: int = os.O_RDONLY, mode: str = "rb", one_name: bool = False, **kwargs):
    """A file opened (os.open `flags`, then as open's `mode`) only when it is a regular file: a FIFO would
    block the open or the first read forever, a device never ends. It is opened non-blocking, so that a FIFO
    is refused rather than waited on. Links are followed unless `flags` holds O_NOFOLLOW (a data folder may
    hold them; a file a program writes in a run directory never is one). With `one_name`, a file that has
    other names (a hard link: writing it writes them) is refused too."""
    try:
        fd = os.open(path, flags | os.O_NONBLOCK, 0o644)
    except OSError as e:
        what = {errno.ELOOP: "a link", errno.EISDIR: "a folder", errno.ENXIO: "a FIFO or a socket"}.get(e.errno)
        if what is None:
            raise
        raise UserError(f"{path} is {what}, not a file: refusing to open it")
    found = os.fstat(fd)
    kind = found.st_mode
    if not stat.S_ISREG(kind) or one_name and found.st_nlink > 1:
        os.close(fd)
        if stat.S_ISREG(kind):
            raise UserError(
                f"{path} has {found.st_nlink} names (hard links): refusing to write what would change them all"
            )
        raise UserError(f"{path} is {kind_of(kind)}, not a file: refusing to open it")
    os.set_blocking(fd, True)
    return os.fdopen(fd, mode, **kwargs)


def read_text(path: Path, limit: int = MAX_TEXT_BYTES) -> str:
    """A text file read whole only when it is a regular file of at most `limit` bytes (UserError otherwise,
    or when it is not UTF-8); OSError as for any read."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise UserError(
            f"{path} is larger than {limit:,} bytes: not a file this framework reads (a real one is far smaller)"
        )
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text")


class _NoAliases(yaml.SafeLoader):
    """YAML without aliases (`*name`): this framework never writes one (`yaml_text`), and a few hundred
    bytes of nested aliases expand to gigabytes for anything that walks the result."""

    def compose_node(self, parent, index):
        if self.check_event(yaml.AliasEvent):
            raise yaml.composer.ComposerError(None, None, "an alias", self.peek_event().start_mark)
        return super().compose_node(parent, index)


class _NoAliasesDumper(yaml.SafeDumper):
    def ignore_aliases(self, data) -> bool:
        return True


def yaml_text(data) -> str:
    """YAML as this framework writes it: a value reached twice is written twice, never as an alias."""
    return yaml.dump(data, Dumper=_NoAliasesDumper, sort_keys=False)


def read_yaml(path: Path, limit: int = MAX_YAML_BYTES):
    """A YAML file this framework wrote (run.yaml), read as data: a regular file within `limit` bytes, no
    aliases, within the bounds of a config (check_bounded). The error names the line, never the content."""
    text = read_text(path, limit)
    try:
        data = yaml.load(text, Loader=_NoAliases)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = (
            "an alias (*name), which this framework never writes"
            if getattr(e, "problem", "") == "an alias"
            else "a syntax error"
        )
        raise UserError(f"{path} is not YAML that this framework writes: {what}{at}")
    except RecursionError:
        raise UserError(f"{path} is nested deeper than any YAML this framework writes")
    check_bounded(data, str(path), MAX_CONFIG_VALUES, MAX_CONFIG_DEPTH)
    return data


def _is_tensor(node) -> bool:
    return type(node).__module__.startswith("torch") and hasattr(node, "element_size") and hasattr(node, "numel")


def check_bounded(
    value,
    where: str,
    max_values: int = MAX_CHECKPOINT_VALUES,
    max_depth: int = MAX_CHECKPOINT_DEPTH,
    max_tensor_bytes: float | None = None,
) -> None:
    """Refuse (UserError) a structure read from a file before anything else walks it: more than `max_values`
    values, counting a value shared by many references once per reference (a pickle's memo or YAML's aliases
    keep a small file small while a walk of it takes gigabytes), nesting deeper than `max_depth`, or tensors
    whose shapes declare more than `max_tensor_bytes` bytes (an expanded view of a small storage declares
    its full size: what making it contiguous would take). Walked without recursion."""
    stack, count, declared = [(value, 0)], 0, 0
    while stack:
        node, depth = stack.pop()
        count += 1
        if count > max_values or depth > max_depth:
            raise UserError(
                f"{where} holds more than {max_values:,} values (a value shared by many references "
                f"counted once for each) or nests deeper than {max_depth} levels: no file this framework "
                f"writes does; refusing to use it"
            )
        if isinstance(node, dict):
            stack.extend((item, depth + 1) for pair in node.items() for item in pair)
        elif isinstance(node, (list, tuple, set, frozenset)):
            stack.extend((item, depth + 1) for item in node)
        elif max_tensor_bytes is not None and _is_tensor(node):
            declared += node.numel() * node.element_size()
            if declared > max_tensor_bytes:
                raise UserError(
                    f"{where} holds tensors whose shapes declare over {declared:,} bytes, more than "
                    f"{max_tensor_bytes:,.0f} for this file (e.g. an expanded view of a small storage); "
                    f"refusing to use it. A real checkpoint's tensors declare about its own size"
                )


def excerpt(value, limit: int = 80) -> str:
    """A value from an untrusted file, short enough for one line."""
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + "...'"


# ---- which targets the user's config folders register ----
@dataclass(frozen=True)
class Registry:
    """What the config folders a program was started with may build: {config key: targets placed there},
    the experiment presets' names, the folders (for messages), and {old target: current target} for
    classes a family moved (its `renamed_targets.yaml`), so that checkpoints written before still load."""

    targets: dict
    experiments: frozenset
    folders: tuple
    renamed: dict = field(default_factory=dict)

    def allowed(self, key: str) -> frozenset:
        return self.targets.get(key, frozenset())


def _package(header: str | None, group: str, stem: str) -> str:
    """Where a config file's content lands in the composed config, as Hydra's `# @package` header says
    (default: the file's group)."""
    if header is None or header == "_group_":
        return group.replace("/", ".")
    parts = []
    for part in header.split("."):
        if part == "_global_":
            continue
        parts.append(group.replace("/", ".") if part == "_group_" else stem if part == "_name_" else part)
    return ".".join(p for p in parts if p)


def _targets_in(node, key: str, found: dict) -> None:
    if isinstance(node, dict):
        if isinstance(node.get(TARGET), str):
            found.setdefault(key, set()).add(node[TARGET])
        for k, v in node.items():
            _targets_in(v, f"{key}.{k}" if key else str(k), found)
    elif isinstance(node, list):
        for i, v in enumerate(node):
            _targets_in(v, f"{key}.{i}", found)


def _config_files(root, group: str = ""):
    """(group, file) for every YAML file below a config folder (a Path or an importlib Traversable), but
    Hydra's own `hydra/` group, which composes no run config."""
    for item in sorted(root.iterdir(), key=lambda p: p.name):
        if item.is_dir():
            if not (group == "" and item.name == "hydra"):
                yield from _config_files(item, f"{group}/{item.name}" if group else item.name)
        elif item.name.endswith(".yaml"):  # the only config files Hydra composes
            yield group, item


def _folder(source: str):
    """A config search path entry (`file://DIR`, `pkg://package`, or a plain folder) as something to walk."""
    if source.startswith("pkg://"):
        return importlib.resources.files(source.removeprefix("pkg://").replace("/", "."))
    return Path(source.removeprefix("file://"))


RENAMED = "renamed_targets"  # <config folder>/renamed_targets.yaml: {renamed_targets: {old: current}}


def _renamed(text: str) -> dict:
    try:
        found = (yaml.safe_load(text) or {}).get(RENAMED) or {}
    except (yaml.YAMLError, AttributeError):
        return {}
    return {old: new for old, new in found.items() if isinstance(old, str) and isinstance(new, str)}


def registry(sources: list[str]) -> Registry:
    """The targets and experiment names that these config folders register (read as text, nothing imported)."""
    from hydra.plugins.config_source import ConfigSource

    targets, presets, renamed = {}, set(), {}
    for source in sources:
        root = _folder(source)
        if not root.is_dir():
            continue
        for group, file in _config_files(root):
            text = file.read_text()
            stem = file.name.rsplit(".", 1)[0]
            if (group, stem) == ("", RENAMED):
                renamed.update(_renamed(text))
                continue
            if group == "experiment" or group.startswith("experiment/"):  # experiment=sub/name for nested presets
                presets.add(f"{group.removeprefix('experiment').strip('/')}/{stem}".lstrip("/"))
            try:
                content = yaml.safe_load(text)
                header = ConfigSource._get_header_dict(text).get("package")
            except (yaml.YAMLError, ValueError):
                continue  # Hydra refuses such a file when it is used; it registers nothing
            if isinstance(content, dict):  # the defaults list composes other files; it is not config
                content = {k: v for k, v in content.items() if k != "defaults"}
            _targets_in(content, _package(header, group, stem), targets)
    return Registry({k: frozenset(v) for k, v in targets.items()}, frozenset(presets), tuple(sources), renamed)


def program_registry(hydra_node=None) -> Registry:
    """The registry of a Hydra program: its config search path (the package's config tree, each
    `--config-dir`, `hydra.searchpath` entries), Hydra's own folder left out. `hydra_node`: a composed
    config's `hydra` node (what a sweep's callbacks are given); by default the running job's."""
    if hydra_node is None:
        from hydra.core.hydra_config import HydraConfig

        hydra_node = HydraConfig.get()
    sources = [
        f"{s.schema}://{s.path}"
        for s in hydra_node.runtime.config_sources
        if s.provider != "hydra" and s.schema in ("file", "pkg")
    ]
    return registry(sources)


def current_registry(extra: tuple[str, ...] = ()) -> Registry:
    """The running Hydra program's registry; outside one (scripts), the package's config tree and `extra`
    folders (a script's `--config-dir`)."""
    from hydra.core.hydra_config import HydraConfig

    if HydraConfig.initialized():
        return program_registry()
    return registry([*package_config_folders(), *extra])


def package_config_folders() -> list[str]:
    """The package's config folder and each built-in family's (what hydra_plugins/experiments_families puts
    on a program's search path), for a script that runs outside Hydra."""
    package = Path(__file__).resolve().parent
    return [str(package / "conf"), *(str(conf) for conf in sorted((package / "families").glob("*/conf")))]


# ---- a stored config, checked before anything is built from it ----
def check_stored_config(config: dict, reg: Registry, where: str) -> dict:
    """A stored config as data that builds only what `reg` registers, with moved classes' targets under their
    current names (reg.renamed); anything that could run code or is not plain data is refused (UserError,
    one line naming the key)."""
    if not isinstance(config, dict):
        raise UserError(f"{where}: its config is a {type(config).__name__}, not a mapping")
    count = 0

    def refuse(key: str, why: str):
        raise UserError(
            f"{where}: config {key} {why}; a stored config is data and may not name code to run (docs/SECURITY.md)"
        )

    def walk(node, key: str, depth: int):
        nonlocal count
        count += 1
        if count > MAX_CONFIG_VALUES or depth > MAX_CONFIG_DEPTH:
            refuse(
                key or "(root)",
                f"is larger than any config this framework writes (over {MAX_CONFIG_VALUES:,} "
                f"values or {MAX_CONFIG_DEPTH} levels)",
            )
        if isinstance(node, dict):
            out = {}
            if TARGET in node:  # the outermost target first: it is what would be called
                out[TARGET] = current_target(node[TARGET], key)
            for k, v in node.items():
                if not isinstance(k, str):
                    refuse(f"{key}[{excerpt(k)}]", "has a key that is not a string")
                child = f"{key}.{k}" if key else k
                if k.startswith("_") and k != TARGET:
                    refuse(child, f"is a Hydra instruction ({excerpt(k)})")
                if k != TARGET:
                    out[k] = walk(v, child, depth + 1)
            return out
        if isinstance(node, list):
            return [walk(v, f"{key}.{i}", depth + 1) for i, v in enumerate(node)]
        if isinstance(node, str):
            if "${" in node:
                refuse(key, f"holds an interpolation ({excerpt(node)})")
        elif not (node is None or isinstance(node, (bool, int, float))):
            refuse(key, f"holds a {type(node).__name__}, not a plain value")
        return node

    def current_target(target, key: str) -> str:
        if not isinstance(target, str):
            refuse(f"{key}._target_", f"is a {type(target).__name__}, not a class name")
        if not key:
            refuse("_target_", "is at the top level, where no registered config places one")
        target = reg.renamed.get(target, target)
        allowed = reg.allowed(key)
        if target not in allowed:
            known = ", ".join(sorted(allowed)[:4]) or "none"
            raise UserError(
                f"{where}: config {key}._target_={excerpt(target)} is not a target that a registered config folder "
                f"places at {key} (registered: {known}); a stored config is data and may not name code to run. A "
                f"family of your own: give its config folder, as to train.py: --config-dir PATH (docs/SECURITY.md)"
            )
        return target

    return walk(config, "", 0)


def with_current_targets(config, renamed: dict):
    """A config with moved classes' `_target_`s under their current names (to compare it with a new one;
    nothing is built from it)."""
    if isinstance(config, dict):
        return {
            k: renamed.get(v, v) if k == TARGET and isinstance(v, str) else with_current_targets(v, renamed)
            for k, v in config.items()
        }
    if isinstance(config, list):
        return [with_current_targets(v, renamed) for v in config]
    return config


def check_experiment_name(name, reg: Registry, where: str) -> str:
    """A stored config's experiment, used to compose a config: one of the registered presets' names."""
    if not isinstance(name, str) or name not in reg.experiments:
        raise UserError(
            f"{where}: its config names experiment {excerpt(name)}, which no registered config folder "
            f"has (experiment/<name>.yaml); give its config folder with --config-dir"
        )
    return name


# ---- pickles: what object a refused file holds, found without unpickling ----
def pickled_globals(data: bytes, limit: int = 8) -> list[str]:
    """The names of the callables a pickle would import (GLOBAL, STACK_GLOBAL), read from its opcodes
    (pickletools parses, it never executes); torch's own tensor machinery left out."""
    names, pushed, memo = [], [], {}
    try:
        for op, arg, _ in pickletools.genops(data):
            if op.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
            elif op.name == "STACK_GLOBAL" and len(pushed) >= 2:
                names.append(f"{pushed[-2]}.{pushed[-1]}")
            elif op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE", "BINUNICODE8"):
                pushed.append(arg)
            elif op.name == "MEMOIZE" and pushed:
                memo[len(memo)] = pushed[-1]
            elif op.name in ("BINPUT", "LONG_BINPUT", "PUT") and pushed:
                memo[arg] = pushed[-1]
            elif op.name in ("BINGET", "LONG_BINGET", "GET"):
                pushed.append(memo.get(arg, "?"))
            if len(names) > 10_000:
                break
    except Exception:  # a torn pickle: the names found so far are what there is
        pass
    safe = ("torch.", "collections.OrderedDict", "_codecs.encode")
    found = [n for n in dict.fromkeys(names) if not n.startswith(safe)]
    return found[:limit]
