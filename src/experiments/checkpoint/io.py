"""Atomic checkpoint writes with a sha256 sidecar, and safe loading (`weights_only=True` only)."""
import csv
import hashlib
import io
import os
import pickle
import re
import shutil
from pathlib import Path

import torch
from lightning.pytorch.plugins.io import TorchCheckpointIO

from experiments.errors import UserError, WriteFailed


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar(path: Path) -> Path:
    return Path(str(path) + ".sha256")


TMP_MARK = ".tmp-"  # temporary files are `.<name>.tmp-<pid>`, beside their target


def temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}{TMP_MARK}{os.getpid()}")


def write_and_sync(tmp: Path, data: bytes) -> None:
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write to a temporary file in the same folder, fsync, then rename over the target: a process
    killed at any moment leaves either the old file or the new one, never a torn one. A write that fails
    (a full disk, an I/O error) removes its temporary file, leaves the target as it was and raises
    WriteFailed naming the file and the reason."""
    path = Path(path)
    tmp = temporary(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        write_and_sync(tmp, data)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WriteFailed(f"could not write {path}: {e.strerror or e}") from e
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def remove_temporaries(folder: Path) -> list[Path]:
    """The temporary files that killed writes left in `folder` (only its writer may call this)."""
    stale = [p for p in Path(folder).glob(f".*{TMP_MARK}*") if p.is_file()] if Path(folder).is_dir() else []
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def atomic_write_csv(rows: list[dict], path: Path) -> None:
    """Rows as CSV (columns in order of first appearance; floats exact, as repr; a missing value an empty
    cell), written atomically."""
    text = io.StringIO(newline="")
    writer = csv.DictWriter(text, fieldnames=list(dict.fromkeys(k for row in rows for k in row)))
    writer.writeheader()
    writer.writerows({k: repr(v) if isinstance(v, float) else v for k, v in row.items()} for row in rows)
    atomic_write_bytes(path, text.getvalue().encode())


def save_checkpoint(checkpoint: dict, path: Path) -> str:
    """Serialise, then write the file and its sha256 sidecar atomically. Returns the hash."""
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_bytes(path, data)
    atomic_write_bytes(sidecar(path), f"{digest}  {Path(path).name}\n".encode())
    return digest


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Give an already written checkpoint a second name (hard link where possible), atomically."""
    tmp = temporary(dst)
    try:
        try:
            os.link(src, tmp)
        except OSError:
            shutil.copyfile(src, tmp)
        os.replace(tmp, dst)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise WriteFailed(f"could not write {dst}: {e.strerror or e}") from e
    atomic_write_bytes(sidecar(dst), sidecar(src).read_text().replace(src.name, dst.name).encode())


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's checkpoint writer, made atomic and hashed."""

    def save_checkpoint(self, checkpoint, path, storage_options=None) -> None:
        save_checkpoint(checkpoint, Path(path))

    def load_checkpoint(self, path, map_location=None, weights_only=None):
        return load_checkpoint(Path(path), map_location=map_location)


def recorded_sha256(path: Path) -> str | None:
    """The sha256 written beside a file when it was saved (its sidecar), or None without one."""
    side = sidecar(path)
    words = side.read_text().split() if side.is_file() else []
    return words[0] if words else None


def read_intact(path: Path) -> tuple[dict | None, str | None]:
    """(the checkpoint, None) when it can be trusted, else (None, why): it must open with weights_only=True
    and match the sha256 its sidecar recorded when it was written (a missing or stale sidecar, e.g. from a
    kill between the two renames, is not trusted either)."""
    try:
        ckpt = load_checkpoint(path)
    except UserError as e:
        return None, str(e).removeprefix(f"{path} ")
    recorded = recorded_sha256(path)
    if recorded is None:
        return None, "no .sha256 sidecar (its write was interrupted)"
    if sha256_file(path) != recorded:
        return None, "its sha256 differs from the one recorded when it was written"
    return ckpt, None


def damage(path: Path) -> str | None:
    """Why a checkpoint cannot be trusted (read_intact), or None when it is intact."""
    return read_intact(path)[1]


def load_checkpoint(path: Path, map_location="cpu") -> dict:
    """Open a checkpoint without unpickling arbitrary objects. Every failure is a UserError naming the file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(e))
        if not found:  # garbage bytes, not an object: the file is simply unreadable
            raise UserError(f"{path} is not a readable checkpoint (truncated or not a torch file)")
        raise UserError(f"{path} holds a pickled object ({found.group(1)}); refusing to unpickle it, since loading "
                        f"it could run arbitrary code. Only checkpoints of plain tensors and values are accepted")
    except Exception as e:  # torch raises many kinds on a torn or foreign file; all mean "unreadable"
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} is not a readable checkpoint (truncated or not a torch file): {first}")
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} is not a checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    return ckpt
