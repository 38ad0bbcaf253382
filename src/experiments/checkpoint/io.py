"""Atomic checkpoint writes with a sha256 sidecar, and safe loading (`weights_only=True` only)."""

import hashlib
import io
import os
import pickle
import struct
import warnings
import zipfile
from pathlib import Path

from experiments.atomic import TMP_MARK, atomic_write_files, link_or_copy, write_and_sync
from experiments.errors import UserError, WriteFailed, first_line
from experiments.untrusted import check_bounded


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def sidecar(path: Path) -> Path:
    return Path(str(path) + ".sha256")


def sidecar_text(digest: str, path: Path) -> bytes:
    return f"{digest}  {Path(path).name}\n".encode()


def save_checkpoint(checkpoint: dict, path: Path) -> str:
    """Serialise, then write the file and its sha256 sidecar together (atomic_write_files). Returns the hash."""
    import torch  # here, not at import: a program refusing its command line answers before torch loads

    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    data = buffer.getvalue()
    digest = hashlib.sha256(data).hexdigest()
    atomic_write_files(
        {
            Path(path): lambda tmp: write_and_sync(tmp, data),
            sidecar(path): lambda tmp: write_and_sync(tmp, sidecar_text(digest, path)),
        }
    )
    return digest


def copy_checkpoint(src: Path, dst: Path) -> None:
    """Give an already written checkpoint a second name (hard link where possible), with its sidecar."""
    digest = recorded_sha256(src)
    if digest is None:
        raise WriteFailed(f"could not write {dst}: its source {src} has no sha256 sidecar")
    atomic_write_files(
        {
            Path(dst): lambda tmp: link_or_copy(src, tmp),
            sidecar(dst): lambda tmp: write_and_sync(tmp, sidecar_text(digest, dst)),
        }
    )


def recorded_sha256(path: Path) -> str | None:
    """The sha256 written beside a file when it was saved (its sidecar), or None without one (or with one
    that is not a sidecar: too large, not text)."""
    return digest_in(sidecar(path))


def digest_in(side: Path) -> str | None:
    """The sha256 a sidecar file records (at most 4 KiB read), or None: no such file, or not a sidecar."""
    if not side.is_file():
        return None
    with open(side, "rb") as f:
        data = f.read(4097)
    try:
        words = data.decode("ascii").split() if len(data) <= 4096 else []
    except UnicodeDecodeError:
        return None
    return words[0] if words else None


def finish_interrupted_pairs(folder: Path) -> list[str]:
    """Complete the checkpoint writes a kill cut between their two renames (atomic_write_files renames the
    checkpoint, then its sidecar): such a write leaves the new checkpoint beside the old sidecar, and the new
    sidecar as a temporary file. Where that temporary file records the checkpoint's sha256, the pair is
    whole: its rename is done now. Called by the run's lock holder before it removes stale temporaries;
    returns the checkpoints so completed."""
    done, hashed = [], {}
    for tmp in sorted(folder.glob(f".*.sha256{TMP_MARK}*")):
        base, marker, _ = tmp.name[1:].partition(".sha256" + TMP_MARK)
        if not marker or not base.endswith(".ckpt") or TMP_MARK in base:  # only `.<name>.ckpt.sha256.tmp-...`
            continue
        checkpoint, side = folder / base, folder / (base + ".sha256")
        if any(p.is_symlink() for p in (tmp, side, checkpoint)) or not tmp.is_file() or not checkpoint.is_file():
            continue
        digest = digest_in(tmp)
        if digest is None or digest == recorded_sha256(checkpoint) or side.is_dir():
            continue
        if checkpoint not in hashed:  # each checkpoint read once, however many temporaries name it
            hashed[checkpoint] = sha256_file(checkpoint)
        if digest == hashed[checkpoint]:
            try:
                os.replace(tmp, side)
            except OSError:
                continue
            done.append(checkpoint.name)
    return done


def state_dict_problem(state) -> str | None:
    """Why `state` is not a model's state dict (a mapping of names to tensors), or None."""
    import torch

    if not isinstance(state, dict):
        return f"is a {type(state).__name__}, not a mapping of names to tensors"
    odd = next((k for k, v in state.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)), None)
    return None if odd is None else f"holds {type(state[odd]).__name__} at {str(odd)[:60]!r}, not a tensor"


def not_ours(ckpt: dict) -> str | None:
    """Why a loaded file is not a checkpoint of this framework (what every reader relies on), or None."""
    missing = [k for k in ("epoch", "global_step", "state_dict") if k not in ckpt]
    if missing:
        return f"it lacks {', '.join(missing)}"
    if not all(isinstance(ckpt[k], int) and not isinstance(ckpt[k], bool) for k in ("epoch", "global_step")):
        return "its epoch or global_step is not an integer"
    if not isinstance(ckpt.get("run", {}), dict) or not isinstance(ckpt.get("config", {}), dict):
        return "its run or config is not a mapping"
    history = ckpt.get("history", [])
    if not isinstance(history, list) or not all(isinstance(row, dict) for row in history):
        return "its history is not a list of rows"
    odd = state_dict_problem(ckpt["state_dict"])
    return f"its state_dict {odd}" if odd else None


def read_intact(path: Path) -> tuple[dict | None, str | None]:
    """(the checkpoint, None) when it can be trusted, else (None, why): it must open with weights_only=True
    and match the sha256 its sidecar recorded when it was written (a missing or stale sidecar, e.g. from a
    kill between the two renames, is not trusted either)."""
    try:
        ckpt = load_checkpoint(path)
    except UserError as e:
        return None, str(e).removeprefix(f"{path} ")
    why = not_ours(ckpt)
    if why:
        return None, f"{why}: not a checkpoint of this framework"
    recorded = recorded_sha256(path)
    if recorded is None:
        return None, "no .sha256 sidecar (its write was interrupted)"
    if sha256_file(path) != recorded:
        return None, "its sha256 differs from the one recorded when it was written"
    return ckpt, None


# Reading a checkpoint is bounded: a zip entry may declare any size, and torch inflates what it declares.
# verify.py's and eval.py's `max_inflation` setting changes it for that program.
MAX_INFLATION = 10  # the entries' declared sizes, summed, at most this many times the file's size
MAX_ENTRIES = 100_000


def check_archive(path: Path, max_inflation: float | None = None) -> bytes:
    """Refuse, before anything is inflated, a file that is not a torch zip archive or whose entries declare
    more bytes than `max_inflation` x its size (torch stores tensors uncompressed: a real one declares about
    its own size). Returns the archive's pickle (`data.pkl`), to name what it holds should torch refuse it."""
    limit = (max_inflation or MAX_INFLATION) * max(path.stat().st_size, 1)
    try:
        one_reading(path)
        with zipfile.ZipFile(path) as archive:
            entries = archive.infolist()
            if len(entries) > MAX_ENTRIES:
                raise UserError(f"{path} holds {len(entries):,} archive entries; a checkpoint holds a few")
            if (
                any(e.compress_type != zipfile.ZIP_STORED for e in entries)
                or min(e.header_offset for e in entries) != 0
            ):
                raise UserError(
                    f"{path} is not laid out as torch writes a checkpoint (compressed entries, or data "
                    f"before the first): refusing to inflate it"
                )
            declared = sum(e.file_size for e in entries)
            pickles = [e for e in entries if e.filename.endswith("data.pkl")]
            data = archive.read(pickles[0]) if pickles and declared <= limit else b""
    except (zipfile.BadZipFile, ValueError, OSError, EOFError, NotImplementedError, struct.error):
        with path.open("rb") as f:
            head = f.read(MAX_PICKLE_SCAN)
        if head[:1] == b"\x80":  # a bare pickle (protocol 2 and later), not a torch archive
            refuse_pickle(path, head)
        raise UserError(f"{path} is not a readable checkpoint (truncated, or not a torch zip archive)")
    if declared > limit:
        raise UserError(
            f"{path} declares {declared:,} bytes inside a {path.stat().st_size:,}-byte file (more than "
            f"max_inflation={max_inflation or MAX_INFLATION} times its size): refusing to inflate it. "
            f"A real checkpoint declares about its own size; raise max_inflation only for a file you trust"
        )
    return data


MAX_PICKLE_SCAN = 64 << 20
EOCD, ZIP64_LOCATOR, ZIP64_EOCD = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"


def one_reading(path: Path) -> None:
    """Python's zipfile and torch's reader find the central directory through the end records in different
    ways; a file crafted so that they find different ones could pass the size check and then inflate what
    torch reads. torch writes one layout: the end record last (no comment), preceded by a zip64 locator that
    points at the zip64 end record just before it. Anything else is refused (ValueError: unreadable)."""
    size = path.stat().st_size
    with path.open("rb") as f:
        f.seek(max(0, size - 98))
        tail = f.read()
    if size < 98 or tail[-22:-18] != EOCD or struct.unpack("<H", tail[-2:])[0] != 0:
        raise ValueError("no end record where torch writes it")
    if tail[-42:-38] == ZIP64_LOCATOR:
        (offset,) = struct.unpack("<Q", tail[-34:-26])
        if offset != size - 98 or tail[:4] != ZIP64_EOCD or struct.unpack("<Q", tail[4:12])[0] != 44:
            raise ValueError("a zip64 locator that points elsewhere")


def refuse_pickle(path: Path, data: bytes, refused: Exception | None = None):
    """A file whose pickle would import code: name what it would import (found without unpickling). One that
    imports nothing but uses what the safe loader does not read (e.g. an integer of thousands of digits) is
    named by the loader's own words."""
    from experiments.untrusted import pickled_globals

    names = pickled_globals(data)
    if not names and refused is not None:
        said = str(refused).split("WeightsUnpickler error:")[-1].strip().splitlines()
        raise UserError(
            f"{path} holds a value that safe loading does not read ({said[0] if said else 'unknown'}: "
            f"e.g. an integer too large for 8 bytes); only checkpoints of plain tensors and values are "
            f"accepted"
        )
    what = f"a pickled object ({', '.join(names)})" if names else "a pickled object"
    raise UserError(
        f"{path} holds {what}; refusing to unpickle it, since loading it could run arbitrary code. "
        f"Only checkpoints of plain tensors and values are accepted"
    )


def load_checkpoint(path: Path, map_location="cpu", max_inflation: float | None = None) -> dict:
    """Open a checkpoint without unpickling arbitrary objects, within the bounds of `check_archive`. Every
    failure is a UserError naming the file."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"checkpoint {path} does not exist")
    if not path.is_file():
        raise UserError(f"checkpoint {path} is not a file")
    pickled = check_archive(path, max_inflation)
    import torch

    try:
        with warnings.catch_warnings():  # torch's note on an unusual pickle protocol: the refusal below says more
            warnings.simplefilter("ignore", UserWarning)
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as e:
        refuse_pickle(path, pickled, e)
    except Exception as e:  # torch raises many kinds on a torn or foreign file; all mean "unreadable"
        first = first_line(e) or type(e).__name__
        first = first.split("(Could this error message be improved?")[0].strip()  # torch's request, not ours
        raise UserError(f"{path} is not a readable checkpoint (truncated or not a torch file): {first}")
    if not isinstance(ckpt, dict):
        raise UserError(f"{path} is not a checkpoint: it holds a {type(ckpt).__name__}, not a dict")
    # what the archive's bound cannot see: values shared by reference, and tensor views larger than their storage
    check_bounded(ckpt, str(path), max_tensor_bytes=(max_inflation or MAX_INFLATION) * max(path.stat().st_size, 1))
    return ckpt
