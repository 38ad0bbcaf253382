"""Atomic writes: a file is either as it was or completely new, never torn, whatever kills the process,
and a failed write (a full disk) leaves no temporary file behind. Every file the framework writes, and a
family's own files (through experiments.family), goes through here."""

import csv
import io
import os
import shutil
import socket
from collections.abc import Callable
from pathlib import Path

from experiments.errors import WriteFailed

TMP_MARK = ".tmp-"  # temporary files are `.<name>.tmp-<pid>-<host>`, beside their target


def temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}-{socket.gethostname()}")


def write_and_sync(tmp: Path, data: bytes) -> None:
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def link_or_copy(src: Path, tmp: Path) -> None:
    try:
        os.link(src, tmp)
    except OSError:
        shutil.copyfile(src, tmp)


def atomic_write_files(writes: dict[Path, Callable[[Path], None]]) -> None:
    """Write files that belong together (a checkpoint and its sidecar): each `write(temporary)` fills a
    temporary file in the target's folder, and only when all are written are they renamed over their
    targets, in order. A process killed at any moment leaves each target old or new, never torn. A write
    that fails (a full disk, an I/O error) or is interrupted removes every temporary file and leaves every
    target as it was. A kill, a Ctrl-C or an error between two renames (which take no space) leaves a new
    checkpoint beside its old sidecar and the new sidecar's temporary file, with which the run's next start
    completes the pair (checkpoint/io.finish_interrupted_pairs). A failure is raised as WriteFailed naming the
    file and the reason."""
    writes = {Path(path): write for path, write in writes.items()}
    temps = {path: temporary(path) for path in writes}
    current, renamed = None, 0
    try:
        for current, write in writes.items():
            current.parent.mkdir(parents=True, exist_ok=True)
            temps[current].unlink(missing_ok=True)  # a leftover of the same name may be a link to a checkpoint
            write(temps[current])
        for current, tmp in temps.items():
            os.replace(tmp, current)
            renamed += 1
    except BaseException as e:  # a Ctrl-C inside a write leaves no temporary file either
        # once a target is renamed, the others' temporaries stay: the next start completes the pair with them
        for tmp in temps.values() if renamed == 0 else ():
            tmp.unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise WriteFailed(f"could not write {current}: {e.strerror or e}") from e
        raise
    for folder in dict.fromkeys(path.parent for path in temps):
        dir_fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """One file, atomically (atomic_write_files)."""
    atomic_write_files({Path(path): lambda tmp: write_and_sync(tmp, data)})


def atomic_savefig(fig, path: Path, **savefig_args) -> None:
    """A matplotlib figure, atomically: rendered in memory, then written as atomic_write_bytes does."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format=Path(path).suffix.lstrip("."), **savefig_args)
    atomic_write_bytes(path, buffer.getvalue())


def writer_is_gone(tmp: Path) -> bool:
    """Whether the process that wrote a temporary file has ended: its PID, on this host, is not running.
    A file of another host, or of an unreadable name, is not known to be stale."""
    pid, _, host = tmp.name.rpartition(TMP_MARK)[2].partition("-")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_temporaries(folder: Path, writers_gone_only: bool = False, of: list[str] | None = None) -> list[Path]:
    """The temporary files that killed writes left in `folder` (only those of the files named in `of`, when
    given): all of them (for the folder's one writer, under its lock), or only those whose writer has
    ended (a folder that several programs write)."""
    patterns = [f".{name}{TMP_MARK}*" for name in of] if of else [f".*{TMP_MARK}*"]
    folder = Path(folder)
    found = [p for pattern in patterns for p in folder.glob(pattern) if p.is_file()] if folder.is_dir() else []
    stale = [p for p in found if not writers_gone_only or writer_is_gone(p)]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_csv(rows: list[dict], path: Path, columns: list[str] | None = None) -> None:
    """Rows as CSV (columns as given, else in order of first appearance; floats exact, as repr; a missing
    value an empty cell), written atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=columns or list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    atomic_write_bytes(path, text.getvalue().encode())
