"""Which key a user meant. A key given at the top level of train.py's config that nothing reads (`lr=0.01`,
Hydra's own advice `+lr=0.01`, `tags=[dev]`, `+ckpt_path=...`) would be ignored in silence; it is refused,
named against the keys the composed config does have (`task.lr`, `logger.tags`)."""

import difflib
import re

from omegaconf import OmegaConf


def dotted_keys(node, prefix: str = "") -> list[str]:
    """Every key of a plain config tree as a dotted path (`task.lr`), `_target_` and the like left out."""
    if not isinstance(node, dict):
        return []
    paths = []
    for key, value in node.items():
        if isinstance(key, str) and not key.startswith("_"):
            paths += [f"{prefix}{key}", *dotted_keys(value, f"{prefix}{key}.")]
    return paths


def meant(key: str, paths: list[str]) -> str | None:
    """The dotted key `key` most likely stands for: one whose last part is `key` (the shallowest), else one
    whose last part closely resembles it; None when none does."""
    by_depth = sorted((p for p in paths if p != key), key=lambda p: (p.count("."), p))
    same = [p for p in by_depth if p.rsplit(".", 1)[-1] == key]
    if same:
        return same[0]
    last_parts = {}
    for path in by_depth:
        last_parts.setdefault(path.rsplit(".", 1)[-1], path)
    close = difflib.get_close_matches(key, list(last_parts), n=1, cutoff=0.8)
    return last_parts[close[0]] if close else None


def unread(cfg, known: set[str]) -> list[str]:
    """The config's top-level keys that the program does not know and no interpolation in it reads
    (a preset may keep a value at the top for its groups to interpolate: `${hidden}`)."""
    extra = [key for key in cfg if key not in known]
    if not extra:
        return []
    text = OmegaConf.to_yaml(cfg, resolve=False)
    return [key for key in extra if not re.search(r"\$\{\s*" + re.escape(key) + r"(?![\w-])", text)]


# Lightning-Hydra habits with no key of that name here: what does the job instead
HABITS = {
    "ckpt_path": "a run resumes from its own last.ckpt when its command is rerun (resume=auto); to start "
    "from another run's weights, init_from=PATH"
}
HABITS["resume_from_checkpoint"] = HABITS["ckpt_path"]


def refusal(key: str, value: str, paths: list[str], program: str) -> str:
    """The line for a top-level key nothing reads: what it is, and the key it most likely stands for."""
    hint = meant(key, paths)
    return f"{key} is not a key of {program}'s config and nothing would read it: " + (
        f"did you mean {hint}={value}?" if hint else HABITS.get(key, "--help lists the keys and groups")
    )
