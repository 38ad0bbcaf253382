"""A run directory: its layout, its identity, auto-resume.

A run's directory is `<outputs>/<experiment>/<overrides that change the result>` (hydra/default.yaml).
Running the same command again lands in the same directory; `decide` then resumes from `last.ckpt`,
reports a finished run, or refuses when the stored config differs from the new one.

Layout (every program finds a run's files through the names and functions here):
    run.yaml                          the composed config, written once at the start: the run's identity
    .hydra/config.yaml, overrides.yaml  the latest start's composed config and command-line overrides, where
                                      Hydra users look for them
    train.log                         what the console showed, every start appended, as plain lines
    history.csv                       one row per finished epoch (the checkpoint history), whatever the logger
    checkpoints/epoch=NNNN.ckpt       (+ .sha256 sidecars) the checkpoint policy's files (NNNN: `epoch_number`)
    checkpoints/last.ckpt             the newest state: what a rerun resumes from
    checkpoints/verification/         verify.py's reports, <checkpoint stem>.json and .md
    checkpoints/damaged/<time>/       checkpoints that failed their check at a resume, moved aside (never deleted)
    .lock                             held by the one process training the run (PID and host inside)
    eval/<data>/<checkpoint stem>/    eval.py's results: metrics.json and the family's files
    superseded/<UTC time>/            an earlier run moved aside by resume=never
"""

import contextlib
import datetime
import fcntl
import hashlib
import os
import re
import shutil
import socket
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from experiments.atomic import atomic_write_bytes, remove_temporaries
from experiments.checkpoint.io import read_intact, sidecar
from experiments.errors import UserError
from experiments.untrusted import kind_of, open_regular, read_yaml, yaml_text

RUN_CONFIG = "run.yaml"
HISTORY = "history.csv"
CHECKPOINTS = "checkpoints"
LAST = "last.ckpt"
VERIFICATION = "verification"
SUPERSEDED = "superseded"
DAMAGED = "damaged"
LOCK = ".lock"
EVAL = "eval"  # eval.py's results: eval/<data>/<checkpoint>/
PREDICT = "predict"  # predict.py's: predict/<input>/<checkpoint>/
TRAIN_LOG = "train.log"
START_RECORD = ".hydra"


# ---- where a run goes (Hydra's run.dir and sweep.dir: conf/hydra/default.yaml, resolvers of config_schema) ----
def run_id(override_dirname: str) -> str:
    """Directory name for a run's overrides: 'default' when there are none; '/' is not a separator."""
    # quotes are the command line's (cli.quote_path_values), not part of the value
    name = override_dirname.replace("/", "~").replace("'", "").replace('"', "") or "default"
    if len(name) > 150:  # file systems cap a name at 255 bytes
        name = name[:120] + "-" + hashlib.sha1(name.encode()).hexdigest()[:12]
    return name


def outputs_root(outputs) -> str:
    """`${outputs_root:${paths.outputs}}`: the folder that holds every run directory, refused (one line,
    before Hydra creates anything) when it is empty, a file, or under a folder this process cannot write."""
    text = "" if outputs is None else str(outputs)
    if not text.strip():
        raise UserError(
            "paths.outputs is empty: give the folder that holds the run directories, e.g. paths.outputs=outputs"
        )
    path = Path(text)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if existing.exists() and not existing.is_dir():
        raise UserError(f"paths.outputs={text}: {existing} is a file, not a folder; choose another paths.outputs")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise UserError(f"paths.outputs={text}: {existing} is not writable by this user; choose another paths.outputs")
    return text


def run_subdir(experiment, override_dirname: str) -> str:
    """`${run_subdir:${hydra:runtime.choices.experiment},${hydra:job.override_dirname}}`: a run's directory
    below the outputs root, `<experiment>/<overrides>`; an experiment given as a path that leaves the
    outputs root (`experiment=../x`, an absolute path) is refused."""
    name = str(experiment)
    if not name or name.startswith(("/", "\\")) or ".." in PurePosixPath(name).parts:
        raise UserError(
            f"experiment={name}: an experiment is the name of a preset (experiment/<name>.yaml), not a "
            f"path; its run directory must stay inside paths.outputs"
        )
    return f"{name}/{run_id(override_dirname)}"


def run_path(outputs, experiment, override_dirname: str) -> str:
    """`hydra.run.dir`: <outputs root>/<experiment>/<overrides>, both parts checked."""
    return f"{outputs_root(outputs)}/{run_subdir(experiment, override_dirname)}"


def epoch_number(epoch: int) -> int:
    """An epoch as users read it everywhere (console, file names, history.csv, verify, eval): counted from
    1, so that "epoch 20" of a 20-epoch run is its last. Lightning's `current_epoch`, a checkpoint's
    `epoch` and the history rows inside a checkpoint count from 0, as Lightning resumes from them."""
    return epoch + 1


def checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS


def history_csv(run_dir: Path) -> Path:
    return Path(run_dir) / HISTORY


def last_checkpoint(run_dir: Path) -> Path:
    return Path(run_dir) / CHECKPOINTS / LAST


def run_of(path: Path) -> Path:
    """The run directory of a run directory, its checkpoint folder, or a file in that folder."""
    path = Path(path)
    if path.is_file():
        path = path.parent
    return path.parent if path.name == CHECKPOINTS else path


def checkpoint_files(target: Path) -> list[Path]:
    """The checkpoints of a run directory (or of a folder of checkpoints), in name order."""
    folder = checkpoint_dir(target) if checkpoint_dir(target).is_dir() else Path(target)
    return sorted(folder.glob("*.ckpt"))


def verification_report(checkpoint: Path) -> Path:
    """Where verify.py writes its JSON report of a checkpoint (the Markdown beside it)."""
    return checkpoint.parent / VERIFICATION / f"{checkpoint.stem}.json"


def refuse_links_out(folder: Path, root: Path, below: bool = True) -> None:
    """A folder a program writes into, at or below `root` (a run directory: train.py's own; verify.py's
    reports, eval.py's results in a run it did not make), is the program's own only where it is made of
    real folders inside `root`: refused (UserError, nothing written) when it leads outside `root` through a
    link, or with `below` when anything under it is a link (a write, an append or a move there would land
    wherever it points; wandb's own links excepted: `wandb_link`), a FIFO, socket or device (an open of it
    would block or never end), or a folder that cannot be listed (what it hides is not known)."""
    folder, root = Path(os.path.abspath(folder)), Path(os.path.abspath(root))  # as written: links not followed
    chain = [p for p in (folder, *folder.parents) if p.is_relative_to(root)]
    existing = next((p for p in chain if p.exists() or p.is_symlink()), None)
    if existing is None:  # nothing there yet: made fresh
        return
    try:
        outside = not existing.resolve().is_relative_to(root.resolve())
    except (RuntimeError, OSError):  # a loop of links
        outside = True
    if outside:
        raise UserError(
            f"{existing} leads outside {root} (a link): refusing to write there; remove the link, or "
            f"give the output path yourself"
        )
    if not below or not folder.is_dir():
        return

    def unlisted(error: OSError):
        raise UserError(
            f"{error.filename} cannot be listed ({error.strerror}): refusing to write below {folder} "
            f"without knowing what it holds"
        )

    for where, folders, files in os.walk(folder, onerror=unlisted):  # links to folders are listed, never entered
        for name in folders + files:
            path = Path(where) / name
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode) and not wandb_link(path.relative_to(folder).parts):
                raise UserError(
                    f"{path} is a link: refusing to write below {folder}, where a write could land "
                    f"wherever a link points; a run's folders are real folders (put runs elsewhere "
                    f"with paths.outputs); remove the link"
                )
            if not (stat.S_ISLNK(mode) or stat.S_ISDIR(mode) or stat.S_ISREG(mode)):
                raise UserError(
                    f"{path} is {kind_of(mode)}, which no program of this framework makes: refusing to "
                    f"use {folder} (opening it could block forever); remove it"
                )


def wandb_link(parts: tuple[str, ...]) -> bool:
    """The links wandb itself makes in a run's `wandb/` folder (an earlier run's in superseded/ too), each
    replaced by a rename at every start, never written through: its newest run and logs, and each start's
    link to its core log in wandb's cache."""
    if parts[:1] == (SUPERSEDED,):
        parts = parts[2:]
    return parts in (("wandb", "latest-run"), ("wandb", "debug.log"), ("wandb", "debug-internal.log")) or (
        len(parts) == 4 and parts[0] == "wandb" and parts[2:] == ("logs", "debug-core.log")
    )


def is_superseded(path: Path) -> bool:
    return SUPERSEDED in Path(path).parts


def flatten(d, prefix: str = "") -> dict:
    out = {}
    if isinstance(d, dict):
        for k, v in d.items():
            out.update(flatten(v, f"{prefix}{k}."))
        if not d and prefix:
            out[prefix[:-1]] = {}
    else:
        out[prefix[:-1]] = d
    return out


def config_diff(old: dict, new: dict, ignore: list[str]) -> list[str]:
    """Lines 'key: old -> new' for every result-defining key that differs."""

    def ignored(key: str) -> bool:
        return any(key == i or key.startswith(i + ".") for i in ignore)

    a, b = flatten(old), flatten(new)
    lines = []
    for key in sorted(set(a) | set(b)):
        if ignored(key):
            continue
        # A key that an older config lacks equals a null: new optional settings default to null (off).
        if a.get(key) != b.get(key):
            lines.append(f"{key}: {a.get(key, '<absent>')!r} -> {b.get(key, '<absent>')!r}")
    return lines


@dataclass
class Decision:
    action: str  # "fresh" | "resume" | "finished"
    ckpt_path: Path | None = None
    epoch: int | None = None  # Lightning's count, from 0: the epoch done, or the one it was saved in (mid_epoch)
    step: int | None = None
    mid_epoch: bool = False  # saved by a stop (SIGTERM, Ctrl-C) inside epoch `epoch`, not at its end


def has_damaged_aside(run_dir: Path) -> bool:
    """Whether an earlier resume moved checkpoints into checkpoints/damaged/."""
    return any((checkpoint_dir(run_dir) / DAMAGED).rglob("*.ckpt"))


def stop_point(history: list[dict], epoch: int, step: int) -> tuple[int, bool]:
    """Where a run stood at `step` (Lightning's `epoch` then): (the epoch just done, False) when the history's
    last epoch ended at that step, whoever saved it then; else (the epoch it was inside, True). The stop
    line and the rerun's "Resuming" line both say it from here."""
    if history and history[-1].get("global_step") == step:
        return history[-1]["epoch"], False
    return epoch, True


def open_lock(path: Path):
    """`.lock` opened for reading and writing, created if missing; never through a link (the PID line would
    be written into whatever it points at), and only when it is a regular file (a FIFO would block)."""
    try:
        return open_regular(path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, "r+", one_name=True)
    except UserError as e:
        raise UserError(f"{e}; it should be the run's lock file: remove it, then rerun")


@contextlib.contextmanager
def held(run_dir: Path):
    """One writer per run directory: an exclusive lock on `.lock` for as long as the run trains. A second
    launch while it is held is refused at once (UserError naming the holder's PID and host); the kernel
    releases the lock of a process that dies however it dies, so a killed run's lock is simply taken over."""
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    path = run_dir / LOCK
    handle = open_lock(path)
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        line = handle.read(200).strip()
        holder = line if re.fullmatch(r"PID \d+ on [\w.-]+ since [\w:+.-]+", line) else "another process"
        handle.close()
        raise UserError(
            f"{run_dir} is being trained by {holder}: one process writes a run. Wait for it to end "
            f"(the same command then resumes or reports the run complete), or stop it first"
        )
    handle.seek(0)
    handle.truncate()
    since = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    handle.write(f"PID {os.getpid()} on {socket.gethostname()} since {since}\n")
    handle.flush()
    try:
        yield
    finally:
        if [p.name for p in run_dir.iterdir()] == [LOCK]:  # a start refused at once leaves no directory behind
            path.unlink(missing_ok=True)
        fcntl.flock(handle, fcntl.LOCK_UN)
        handle.close()


def readers_write_here(parts: tuple[str, ...]) -> bool:
    """Folders of a run (as parts below it) that verify.py, eval.py and predict.py write, without the run's lock."""
    return VERIFICATION in parts or parts[:1] in ((EVAL,), (PREDICT,))


def remove_stale_temporaries(root: Path, shared=lambda parts: True) -> int:
    """Temporary files of writes killed earlier, in `root` and every folder below it but what was moved
    aside (superseded/, damaged/). Where `shared(parts below root)` (by default everywhere) other programs
    may be writing, only those whose writer has ended; elsewhere all (the caller is the one writer: the
    run's lock holder)."""
    removed = 0
    for folder, subfolders, _ in os.walk(root):
        subfolders[:] = [d for d in subfolders if d not in (SUPERSEDED, DAMAGED)]
        parts = Path(folder).relative_to(root).parts
        removed += len(remove_temporaries(Path(folder), writers_gone_only=shared(parts)))
    return removed


def supersede(run_dir: Path) -> Path | None:
    """Move an earlier run's state aside (nothing is deleted) so that a new run can start: its config,
    checkpoints and logger output alike."""
    items = [p for p in run_dir.iterdir() if p.name not in (SUPERSEDED, LOCK)] if run_dir.exists() else []
    if not items:
        return None
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
    dest = run_dir / SUPERSEDED / stamp
    dest.mkdir(parents=True)
    for p in items:
        shutil.move(str(p), str(dest / p.name))
    return dest


def newest_intact(run_dir: Path) -> tuple[Path | None, dict | None, list[str]]:
    """The checkpoint to resume from: `last.ckpt` when it is intact (checkpoint.io.read_intact), else the
    newest intact checkpoint of the run (by global step), every damaged one moved aside into
    `checkpoints/damaged/<time>/` with its sidecar. Returns (path, its contents, what was moved and why);
    (None, None, []) for a run without checkpoints."""
    last = last_checkpoint(run_dir)
    if last.is_file():
        ckpt, _ = read_intact(last)
        if ckpt is not None:
            return last, ckpt, []
    files = checkpoint_files(run_dir) if checkpoint_dir(run_dir).is_dir() else []
    read = {p: read_intact(p) for p in files}
    why = {p: reason for p, (_, reason) in read.items()}
    moved = []
    if any(why.values()):
        stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S%fZ")
        aside = checkpoint_dir(run_dir) / DAMAGED / stamp
        aside.mkdir(parents=True)
        for p, reason in why.items():
            if reason:
                for q in (p, sidecar(p)):
                    if q.exists():
                        shutil.move(str(q), str(aside / q.name))
                moved.append(f"{p.name}: {reason}")
        moved.append(f"(moved to {aside})")
    intact = [p for p, reason in why.items() if not reason]
    if not intact:
        return None, None, moved
    newest = max(intact, key=lambda p: (read[p][0]["global_step"], p.name == LAST))
    return newest, read[newest][0], moved


def decide(run_dir: Path, config: dict, ignore: list[str], comparable=lambda config: config) -> Decision:
    """Fresh, resume or finished; refused when the run directory holds another config. Both configs are
    compared as `comparable` makes them (e.g. moved classes under their current names, derived settings
    filled in), so that a change of spelling is not a change of run."""
    stored_path = run_dir / RUN_CONFIG
    resume_from, ckpt, moved = newest_intact(run_dir)
    if resume_from is None and (moved or has_damaged_aside(run_dir)):  # refused until the user chooses resume=never
        tried = "; ".join(moved) or (
            f"only damaged ones, moved to {checkpoint_dir(run_dir) / DAMAGED} by an earlier start"
        )
        raise UserError(
            f"cannot resume {run_dir}: no intact checkpoint ({tried}). Rerun with resume=never to "
            f"start over (the run is moved to {SUPERSEDED}/)"
        )
    if moved:
        print(
            f"warning: damaged checkpoint(s) moved aside: {'; '.join(moved)}. Resuming from {resume_from.name}, "
            f"the newest intact checkpoint.",
            flush=True,
        )
    stored = None
    if stored_path.exists() or stored_path.is_symlink():
        try:
            stored = read_yaml(stored_path)
        except UserError as e:
            raise UserError(f"{e}; rerun with resume=never to start over")
    elif ckpt is not None:  # the checkpoint holds the config too
        stored = ckpt.get("config")
    if stored is not None:
        diff = config_diff(comparable(stored), comparable(config), ignore)
        if diff:
            shown = "; ".join(diff[:8]) + (f"; and {len(diff) - 8} more" if len(diff) > 8 else "")
            raise UserError(
                f"{run_dir} holds a run with a different config ({shown}). Rerun with resume=never to "
                f"start over (the old run is moved to {SUPERSEDED}/), or choose another paths.outputs"
            )
    if ckpt is None:
        return Decision("fresh")
    action = "finished" if ckpt.get("run", {}).get("finished") else "resume"
    epoch, mid_epoch = stop_point(ckpt.get("history") or [], ckpt.get("epoch"), ckpt.get("global_step"))
    return Decision(action, resume_from, epoch, ckpt.get("global_step"), mid_epoch)


def contents(run_dir: Path) -> list[str]:
    """A run directory's files and folders (a folder with how many files it holds), the lock and earlier
    runs left out."""
    shown = []
    for path in sorted(run_dir.iterdir(), key=lambda p: (p.is_dir(), p.name)):
        if path.name in (LOCK, SUPERSEDED):
            continue
        if path.is_dir():
            n = sum(1 for p in path.rglob("*") if p.is_file())
            shown.append(f"{path.name}/ ({n} file{'s' if n != 1 else ''})")
        else:
            shown.append(path.name)
    return shown


def train_log(run_dir: Path) -> Path:
    return run_dir / TRAIN_LOG


def write_start_record(run_dir: Path, config: dict, overrides: list[str]) -> None:
    """This start's config and overrides, as Hydra would write them (its own writing is off: it would write
    before the run is decided, and so overwrite a run's record with a refused command's)."""
    atomic_write_bytes(run_dir / START_RECORD / "config.yaml", yaml_text(config).encode())
    atomic_write_bytes(run_dir / START_RECORD / "overrides.yaml", yaml_text(overrides).encode())


def write_run_config(run_dir: Path, config: dict) -> None:
    path = run_dir / RUN_CONFIG
    if not path.exists():
        atomic_write_bytes(path, yaml_text(config).encode())
