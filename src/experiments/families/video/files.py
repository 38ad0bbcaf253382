"""Clips from the files people have: `.npy` arrays, video files (read with PyAV, FFmpeg inside its wheel) and
folders of image frames. Every source is data: read within bounds, and a file that cannot be read is
refused with its name, never skipped.

A video or a frame folder is cut into clips of `frames` frames, a new clip every `stride` frames; each
frame is cropped to its central square and resized to `size` x `size` (area averaging), RGB in [0, 1].
A `.npy` file is one clip as it is, shaped (C, T, H, W).
"""
import re
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

VIDEO = (".mp4", ".webm", ".avi", ".mkv", ".mov", ".gif")
IMAGE = (".png", ".jpg", ".jpeg", ".bmp")
MAX_FRAMES = 10_000  # read from one source at most: a clip folder, not a film
MAX_PIXELS = 4096 * 4096  # a frame at most (decoded whole before it is resized)
# The demuxer each kind is read with, whatever the file's content claims (a playlist named .mp4 would
# otherwise open the files or addresses it lists), and local files only.
DEMUXER = {".mp4": "mov", ".mov": "mov", ".mkv": "matroska", ".webm": "matroska", ".avi": "avi", ".gif": "gif"}


def read_clip(path: Path) -> np.ndarray:
    """A .npy file, read only when its header's shape fits the file's size (a file is data: a header can
    claim any shape), never unpickled."""
    with open(path, "rb") as f:
        try:
            major, _ = np.lib.format.read_magic(f)
            read_header = np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
            shape, _, dtype = read_header(f)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{path}: not a .npy array ({e})")
        if dtype.hasobject or int(np.prod(shape, dtype=np.float64)) * dtype.itemsize > Path(path).stat().st_size:
            raise ValueError(f"{path}: its header claims a {dtype} array of shape {shape}, which the file does not hold")
    try:
        return np.load(path, allow_pickle=False)
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
    of the kinds read (named, so that nothing is left out silently)."""
    entries = sorted(p for p in Path(folder).iterdir() if not p.name.startswith("."))
    odd = [p.name for p in entries if p.is_file() and p.suffix.lower() not in (".npy", *VIDEO)]
    odd += [p.name + "/" for p in entries if p.is_dir() and not frame_files(p)]
    if odd:
        raise ValueError(f"{folder} holds {', '.join(odd[:5])}{' and more' if len(odd) > 5 else ''}, which "
                         f"are not clips: data.folder takes .npy clips, videos ({' '.join(VIDEO)}) and folders "
                         f"of frames ({' '.join(IMAGE)}); move the others out")
    if not entries:
        raise ValueError(f"no clips in {folder}: data.folder takes .npy clips, videos ({' '.join(VIDEO)}) and "
                         f"folders of frames ({' '.join(IMAGE)})")
    return entries


def in_order(name: str) -> list:
    """A frame's place by its name, numbers as numbers: `f_2.png` before `f_10.png`."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


def frame_files(folder: Path) -> list[Path]:
    return sorted((p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE),
                  key=lambda p: in_order(p.name))


def square(frame: np.ndarray, size: int) -> torch.Tensor:
    """An (H, W, 3) uint8 frame as a (3, size, size) float frame in [0, 1]: its central square, resized."""
    h, w = frame.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    x = torch.from_numpy(np.ascontiguousarray(frame[top:top + side, left:left + side, :3])).permute(2, 0, 1)
    x = x.float().div(255).unsqueeze(0)
    return F.interpolate(x, size=(size, size), mode="area")[0] if side != size else x[0]


def video_frames(path: Path, size: int) -> list[torch.Tensor]:
    import av

    try:
        with av.open(str(path), format=DEMUXER[path.suffix.lower()], options={"protocol_whitelist": "file"}) as container:
            if not container.streams.video:
                raise ValueError(f"{path}: has no video stream")
            stream = container.streams.video[0]
            if (stream.width or 0) * (stream.height or 0) > MAX_PIXELS:
                raise ValueError(f"{path}: frames of {stream.width}x{stream.height}, more than {MAX_PIXELS:,} pixels; "
                                 f"scale the video down first")
            frames = []
            for frame in container.decode(stream):
                if len(frames) == MAX_FRAMES:
                    raise ValueError(f"{path}: more than {MAX_FRAMES:,} frames; cut it into shorter files")
                if frame.width * frame.height > MAX_PIXELS:
                    raise ValueError(f"{path}: a frame of {frame.width}x{frame.height}; scale the video down first")
                frames.append(square(frame.to_ndarray(format="rgb24"), size))
    except (av.error.FFmpegError, OSError) as e:  # a broken or truncated file, or not a video at all
        raise ValueError(f"{path}: cannot be read as a video ({' '.join(str(e).split())})")
    return frames


def image_frames(folder: Path, size: int) -> list[torch.Tensor]:
    from PIL import Image, UnidentifiedImageError

    files = frame_files(folder)
    if len(files) > MAX_FRAMES:
        raise ValueError(f"{folder}: {len(files):,} frames, more than {MAX_FRAMES:,}; split it into shorter folders")
    frames = []
    for path in files:
        try:
            with Image.open(path) as image:  # Pillow refuses images past its decompression-bomb limit
                frames.append(square(np.asarray(image.convert("RGB")), size))
        except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
            raise ValueError(f"{path}: cannot be read as an image ({' '.join(str(e).split())})")
    return frames


def cut(frames: list[torch.Tensor], length: int, stride: int, source: Path) -> list[torch.Tensor]:
    """Clips (3, length, size, size) starting every `stride` frames; refused when there is not one."""
    if len(frames) < length:
        raise ValueError(f"{source}: {len(frames)} frame(s), fewer than data.frames={length} of a clip")
    return [torch.stack(frames[start:start + length], 1) for start in range(0, len(frames) - length + 1, stride)]


def clips_of(source: Path, frames: int, size: int, stride: int) -> tuple[list[torch.Tensor], list[str]]:
    """One source's clips and their names (`name` for a .npy file, `name@start` for the clips cut from a
    video or a frame folder)."""
    if source.suffix.lower() == ".npy":
        return [npy_clip(source)], [source.name]
    decoded = image_frames(source, size) if source.is_dir() else video_frames(source, size)
    clips = cut(decoded, frames, stride, source)
    return clips, [f"{source.name}@{i * stride}" for i in range(len(clips))]
