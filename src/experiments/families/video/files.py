"""Clips from the files people have: `.npy` arrays, video files (read with PyAV, FFmpeg inside its wheel) and
folders of image frames. Every source is data: read within bounds, and a file that cannot be read is
refused with its name, never skipped. Every source is a regular file (or a folder of them), checked before
anything opens it: a FIFO would block its reader forever, a device never end. What a decoder is given is
bounded by what the file declares, before a frame is decoded: a small crafted file (a GIF of 24-byte frames
on a 4096x4096 canvas) can otherwise cost hours and gigabytes.

A video or a frame folder is cut into clips of `frames` frames, a new clip every `stride` frames; each
frame is cropped to its central square and resized to `size` x `size` (area averaging), RGB in [0, 1].
A `.npy` file is one clip as it is, shaped (C, T, H, W).
"""

import os
import re
import stat
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from experiments.family import UserError, open_regular

VIDEO = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".gif")
IMAGE = (".png", ".jpg", ".jpeg", ".bmp")
MAX_FRAMES = 10_000  # read from one source at most: a clip folder, not a film
MAX_PIXELS = 4096 * 4096  # a frame or an image at most (decoded whole before it is resized)
# Decoded from one source at most, all its frames together: about 1,000 frames of 1080p, 260 of 4K, 7,000 of
# 640x480, far above what a clip folder's sources hold (clips of 8-17 frames, resized to 16-64 pixels). It
# bounds the time a small file can take: decoding runs at 25-60 million pixels a second, so a 3 KB GIF of
# 127 frames on a 4096x4096 canvas, just within it, took 87 s; 10,000 such frames would take two hours.
MAX_SOURCE_PIXELS = 1 << 31
# Images are decoded by these Pillow plugins only, whatever the content claims (Pillow would otherwise pick
# any of its decoders by the content, EPS among them, which runs Ghostscript).
IMAGE_FORMATS = ("PNG", "JPEG", "BMP")
# The demuxer each kind is read with, whatever the file's content claims (a playlist named .mp4 would
# otherwise open the files or addresses it lists), and local files only.
DEMUXER = {".mp4": "mov", ".mov": "mov", ".mkv": "matroska", ".webm": "matroska", ".avi": "avi", ".gif": "gif"}


class DataFileError(UserError, ValueError):
    """A data file refused, in one line naming it and never quoting it: a UserError to whoever reads a folder,
    and a ValueError to the programs, which report a data module's ValueError as `data: ...` (exit 2)."""


KINDS = {
    stat.S_IFDIR: "a folder",
    stat.S_IFIFO: "a FIFO (named pipe)",
    stat.S_IFCHR: "a device",
    stat.S_IFBLK: "a device",
    stat.S_IFSOCK: "a socket",
}


def regular(path: Path) -> Path:
    """`path` when it is a regular file (a link to one too), looked at before anything opens it (PyAV opens
    by name; what this module opens itself, it opens with open_regular, which looks again at what it opened)."""
    try:
        mode = os.stat(path).st_mode
    except OSError as e:  # a link to nothing, a folder one may not enter
        raise DataFileError(f"{path}: cannot be read ({e.strerror})")
    if not stat.S_ISREG(mode):
        raise DataFileError(
            f"{path}: is {KINDS.get(stat.S_IFMT(mode), 'not a regular file')}, not a file; "
            f"data.folder reads regular files only"
        )
    return path


def read_clip(path: Path) -> np.ndarray:
    """A .npy file, read only when its header's shape fits the file's size (a file is data: a header can
    claim any shape), never unpickled."""
    try:
        f = open_regular(path)
    except OSError as e:
        raise DataFileError(f"{path}: cannot be read ({e.strerror})")
    with f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path}: not a .npy array ({e})")
        if dtype.hasobject or int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > os.fstat(f.fileno()).st_size:
            raise ValueError(
                f"{path}: its header claims a {dtype} array of shape {shape}, which the file does not hold"
            )
        f.seek(0)
        try:
            return np.load(f, allow_pickle=False)
        except (ValueError, OSError, EOFError) as e:  # e.g. a file cut short
            raise ValueError(f"{path}: {' '.join(str(e).split())}")


def npy_clip(f: Path) -> torch.Tensor:
    """A .npy file as one clip (C, T, H, W) float in [0, 1], checked."""
    a = read_clip(f)
    if a.ndim != 4 or a.shape[0] not in (1, 3) or a.size == 0:
        raise ValueError(f"{f}: expected a clip shaped (C, T, H, W) with C 1 or 3, got {a.shape}")
    if a.dtype == np.uint8:
        a = a.astype(np.float32) / 255.0
    elif not np.issubdtype(a.dtype, np.floating):
        raise ValueError(f"{f}: clips are uint8 (0-255) or float (0-1), not {a.dtype}")
    elif not np.isfinite(a).all():
        raise ValueError(f"{f}: holds NaN or Inf at {int((~np.isfinite(a)).sum())} value(s); clips must be finite")
    elif a.min() < 0 or a.max() > 1:
        raise ValueError(f"{f}: float clips must lie in [0, 1], found [{a.min():.3g}, {a.max():.3g}]")
    return torch.from_numpy(a.astype(np.float32))


def sources(folder: Path) -> list[Path]:
    """The clip sources in `folder`, sorted by name; refused when there are none, or when a file is none
    of the kinds read (named, so that nothing is left out silently), or when one named as a clip is not a
    regular file (before any is opened). `folder` may also be one source itself: a clip file, or a folder
    of frames only."""
    folder = Path(folder)
    if folder.suffix.lower() in (".npy", *VIDEO) and not folder.is_dir():
        return [regular(folder)]
    entries = sorted(p for p in folder.iterdir() if not p.name.startswith("."))
    if entries and all(p.suffix.lower() in IMAGE and not p.is_dir() for p in entries):
        return [folder]  # a folder of frames: one source
    for p in entries:
        if p.suffix.lower() in (".npy", *VIDEO):
            regular(p)
    odd = [p.name for p in entries if p.suffix.lower() not in (".npy", *VIDEO) and not p.is_dir()]
    odd += [p.name + "/" for p in entries if p.is_dir() and not frame_files(p)]
    if odd:
        raise ValueError(
            f"{folder} holds {', '.join(odd[:5])}{' and more' if len(odd) > 5 else ''}, which "
            f"are not clips: data.folder takes .npy clips, videos ({' '.join(VIDEO)}) and folders "
            f"of frames ({' '.join(IMAGE)}); move the others out"
        )
    if not entries:
        raise ValueError(
            f"no clips in {folder}: data.folder takes .npy clips, videos ({' '.join(VIDEO)}) and "
            f"folders of frames ({' '.join(IMAGE)})"
        )
    return entries


def in_order(name: str) -> list:
    """A frame's place by its name, numbers as numbers: `f_2.png` before `f_10.png`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    """A folder's frames: every entry named as an image (one that is not a regular file is refused when
    read, never skipped)."""
    return sorted((p for p in folder.iterdir() if p.suffix.lower() in IMAGE), key=lambda p: in_order(p.name))


def square(frame: np.ndarray, size: int) -> torch.Tensor:
    """An (H, W, 3) uint8 frame as a (3, size, size) float frame in [0, 1]: its central square, resized."""
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = torch.from_numpy(np.array(frame[top : top + side, left : left + side, :3])).permute(2, 0, 1)  # a copy: writable
    x = x.float().div(255).unsqueeze(0)
    return F.interpolate(x, size=(size, size), mode="area")[0] if side != size else x[0]


def bounded(path: Path, frames: int, width: int, height: int, pixels: int | None = None) -> None:
    """Refused when `frames` frames of width x height (`pixels` in all, when they differ) are past the bounds:
    a frame of more than MAX_PIXELS, more than MAX_FRAMES frames, more than MAX_SOURCE_PIXELS in all."""
    if width * height > MAX_PIXELS:
        raise DataFileError(
            f"{path}: a frame of {width}x{height}, more than {MAX_PIXELS:,} pixels; scale it down first"
        )
    if frames > MAX_FRAMES:
        raise DataFileError(f"{path}: more than {MAX_FRAMES:,} frames; cut it into shorter ones")
    if (frames * width * height if pixels is None else pixels) > MAX_SOURCE_PIXELS:
        raise DataFileError(
            f"{path}: more than {MAX_SOURCE_PIXELS:,} pixels to decode ({frames:,} frames of "
            f"{width}x{height}); cut it into shorter ones or scale it down"
        )


def open_video(path: Path):
    """A video container and its video stream, refused when what they declare is past the bounds: the
    codec's frame size and, where the container gives it, the frame count."""
    import av

    container = av.open(str(regular(path)), format=DEMUXER[path.suffix.lower()], options={"protocol_whitelist": "file"})
    if not container.streams.video:
        container.close()
        raise ValueError(f"{path}: has no video stream")
    stream = container.streams.video[0]
    try:
        bounded(path, stream.frames, stream.codec_context.width or 0, stream.codec_context.height or 0)
    except DataFileError:
        container.close()
        raise
    return container, stream


def packets_of(path: Path) -> int:
    """The frames a video holds, counted from its packets without decoding one (a GIF declares no count, and
    a header may under-declare); counting stops past MAX_FRAMES."""
    container, stream = open_video(path)
    with container:
        n = 0
        for packet in container.demux(stream):
            if packet.size:  # the demuxer ends with an empty packet
                n += 1
            if n > MAX_FRAMES:
                break
        bounded(path, n, stream.codec_context.width or 0, stream.codec_context.height or 0)
    return n


def video_frames(path: Path, size: int) -> list[torch.Tensor]:
    """A video's frames: refused before one is decoded when its header or its packet count is past the
    bounds, and the decoding stopped past them all the same (a decoder may give more frames than packets,
    or larger ones than the header said)."""
    import av

    try:
        packets_of(path)
        container, stream = open_video(path)
        with container:
            frames, pixels = [], 0
            for frame in container.decode(stream):
                pixels += frame.width * frame.height
                bounded(path, len(frames) + 1, frame.width, frame.height, pixels)
                frames.append(square(frame.to_ndarray(format="rgb24"), size))
    except (av.error.FFmpegError, OSError) as e:  # a broken or truncated file, or not a video at all
        raise ValueError(f"{path}: cannot be read as a video ({' '.join(str(e).split())})")
    return frames


def image_frames(folder: Path, size: int) -> list[torch.Tensor]:
    """A folder's frames, each image's size read from its header and bounded (with the folder's pixels so far)
    before it is decoded."""
    from PIL import Image, UnidentifiedImageError

    files = frame_files(folder)
    if len(files) > MAX_FRAMES:
        raise ValueError(f"{folder}: {len(files):,} frames, more than {MAX_FRAMES:,}; split it into shorter folders")
    for path in files:  # all looked at before one is opened
        regular(path)
    frames, pixels = [], 0
    for path in files:
        try:
            with open_regular(path) as f, Image.open(f, formats=IMAGE_FORMATS) as image:  # reads the header only
                pixels += image.width * image.height
                bounded(path, 1, image.width, image.height)
                bounded(folder, len(frames) + 1, image.width, image.height, pixels)
                frames.append(square(np.asarray(image.convert("RGB")), size))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"{path}: cannot be read as an image ({' '.join(str(e).split())})")
    return frames


def cut(frames: list[torch.Tensor], length: int, stride: int, source: Path) -> list[torch.Tensor]:
    """Clips (3, length, size, size) starting every `stride` frames; refused when there is not one."""
    if len(frames) < length:
        raise ValueError(f"{source}: {len(frames)} frame(s), fewer than data.frames={length} of a clip")
    return [torch.stack(frames[start : start + length], 1) for start in range(0, len(frames) - length + 1, stride)]


def clips_of(source: Path, frames: int, size: int, stride: int) -> tuple[list[torch.Tensor], list[str]]:
    """One source's clips and their names (`name` for a .npy file, `name@start` for the clips cut from a
    video or a frame folder)."""
    if source.suffix.lower() == ".npy":
        return [npy_clip(source)], [source.name]
    decoded = image_frames(source, size) if source.is_dir() else video_frames(source, size)
    clips = cut(decoded, frames, stride, source)
    return clips, [f"{source.name}@{i * stride}" for i in range(len(clips))]
