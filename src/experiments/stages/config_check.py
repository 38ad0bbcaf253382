"""Check every `_target_` node of a composed config against its target's signature and type hints.

The constructor is the schema: an unknown key, a missing required key or a value of the wrong type is
reported in one line naming the config key, before anything is built. (A separate dataclass schema
per node would repeat every signature and drift from it.)
"""

import difflib
import importlib
import importlib.util
import inspect
import types
import typing
from typing import Any

from omegaconf import DictConfig, OmegaConf

from experiments.errors import UserError

# Arguments the programs pass themselves when they instantiate a node (not expected in the config).
SUPPLIED = {
    "task": {"model"},
    "trainer": {"callbacks", "logger", "plugins", "default_root_dir"},
    "checkpoint": {"dirpath", "run_config"},
    "logger": {"save_dir"},
    "data": {"seed"},
}


def _import(path: str):
    module, _, name = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module), name)
    except ModuleNotFoundError as e:
        if e.name and module.startswith(e.name) and "." not in e.name:  # its package is not where Python looks
            raise UserError(
                f"cannot import {path!r}: no package {e.name!r} on the Python path; install the "
                f"family's package (pip install -e) or put the folder that holds it on PYTHONPATH"
            )
        raise UserError(f"cannot import {path!r}: {e}")
    except (ImportError, AttributeError, ValueError) as e:
        raise UserError(f"cannot import {path!r}: {e}")


def _hints(fn) -> dict:
    try:
        return typing.get_type_hints(fn)
    except Exception:  # unresolvable forward references: check names only
        return {}


def _matches(value: Any, hint) -> bool:
    """True when `value` (a plain config value) fits `hint`. Unknown or complex hints accept anything."""
    if hint is Any or hint is inspect.Parameter.empty:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, h) for h in typing.get_args(hint))
    if origin is typing.Literal:
        return value in typing.get_args(hint)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin in (list, tuple, typing.Sequence) or hint in (list, tuple):
        return isinstance(value, (list, tuple))
    if origin is dict or hint is dict:
        return isinstance(value, dict)
    if isinstance(value, dict) and "_target_" in value:
        return True  # a nested node, checked on its own
    return True  # classes, callables, protocols: a value of them cannot be written in YAML anyway


def _fmt(hint) -> str:
    if typing.get_origin(hint) is None and hasattr(hint, "__name__"):
        return hint.__name__
    return str(hint).replace("typing.", "")


def check_node(key: str, node: dict, supplied: set[str]) -> None:
    target = _import(node["_target_"])
    # `needs` on a target: {module: how to install it}, a library it imports only when built (an optional one)
    for module, install in getattr(target, "needs", {}).items():
        if importlib.util.find_spec(module) is None:
            raise UserError(f"{key}: {node['_target_']} needs {module}, which is not installed: {install}")
    fn = target.__init__ if inspect.isclass(target) else target
    sig = inspect.signature(target)
    params = sig.parameters
    has_kwargs = any(p.kind == p.VAR_KEYWORD for p in params.values())
    refused = sorted(n for n in supplied if n not in params and not has_kwargs)
    if refused:  # e.g. a data module without `seed`: its data order must follow the run's seed
        raise UserError(
            f"{node['_target_']} (config {key}) takes no {', '.join(f'{n}=' for n in refused)} argument, "
            f"which the framework passes it: add it to its __init__ (docs/FAMILIES.md)"
        )
    hints = _hints(fn)
    for name, value in node.items():
        if name.startswith("_"):
            continue
        if name not in params:
            if has_kwargs:
                continue
            close = difflib.get_close_matches(name, list(params), n=1)
            hint = f" (did you mean {key}.{close[0]}?)" if close else ""
            raise UserError(f"{key}.{name} is not a parameter of {node['_target_']}{hint}")
        if isinstance(value, dict) and "_target_" in value:
            check_node(f"{key}.{name}", value, set())
            continue
        if name in hints and not _matches(value, hints[name]):
            raise UserError(f"{key}.{name}={value!r} has type {type(value).__name__}, expected {_fmt(hints[name])}")
    missing = [
        n
        for n, p in params.items()
        if p.default is p.empty
        and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL)
        and n not in node
        and n not in supplied
        and n != "self"
    ]
    if missing:
        raise UserError(f"{key} is missing required key(s) {missing} of {node['_target_']}")


def check_config(cfg: DictConfig) -> int:
    """Validate every top-level `_target_` node. Returns how many were checked."""
    try:
        plain = OmegaConf.to_container(cfg, resolve=True, enum_to_str=True)
    except Exception as e:  # an interpolation that does not resolve
        raise UserError(f"config does not resolve: {' '.join(str(e).split())}")
    checked = 0
    for key, node in plain.items():
        if isinstance(node, dict) and "_target_" in node:
            check_node(key, node, SUPPLIED.get(key, set()))
            checked += 1
        elif key == "callbacks" and isinstance(node, dict):
            for name, child in node.items():
                if not (isinstance(child, dict) and "_target_" in child):
                    raise UserError(f"callbacks.{name} must be a config node with a _target_")
                check_node(f"callbacks.{name}", child, set())
                checked += 1
    return checked
