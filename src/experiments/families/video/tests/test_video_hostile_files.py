"""A data folder is untrusted (docs/SECURITY.md): a small crafted file in it (a FIFO named as a clip, a
9000x9000 image of 28 KB, a GIF of thousands of 24-byte frames on a 4096x4096 canvas) is refused in one line
naming it (a UserError; exit 2 through the programs), before it can hang the reader, fill its memory or
keep it decoding for hours."""

import tracemalloc

import numpy as np
import pytest
import torch

from conftest import fifo_feeding, in_process, one_error_line
from experiments.families.video import files
from experiments.families.video.data import VideoDataModule
from experiments.family import UserError

CONTENT = b"CRAFTED-CONTENT-1234"  # what a FIFO gives whatever opens it: never quoted in a refusal


def write_frames(folder, n: int) -> None:
    from PIL import Image

    folder.mkdir()
    for t in range(n):
        Image.fromarray(np.full((24, 32, 3), 40 * t % 256, dtype=np.uint8)).save(folder / f"{t:04d}.png")


def gif(width: int, height: int, frames: int) -> bytes:
    """A GIF of `frames` frames of 1x1 pixel on a width x height canvas, 24 bytes a frame: the decoder
    paints the whole canvas for each."""
    le = lambda n: n.to_bytes(2, "little")  # noqa: E731
    control = b"\x21\xf9\x04\x00\x00\x00\x00\x00"  # graphic control: no delay
    image = b"\x2c" + le(0) + le(0) + le(1) + le(1) + b"\x00"  # a 1x1 image at (0, 0)
    pixels = b"\x02\x02\x44\x01\x00"  # LZW: clear, colour 0, end
    screen = le(width) + le(height) + b"\xf0\x00\x00" + b"\x00\x00\x00\xff\xff\xff"  # 2 colours
    return b"GIF89a" + screen + (control + image + pixels) * frames + b"\x3b"


def mkv(path, frames: int, side: int = 8) -> None:
    """A Matroska video of `frames` black frames: its header declares no frame count."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=8)
        stream.width, stream.height, stream.pix_fmt = side, side, "yuv420p"
        black = av.VideoFrame.from_ndarray(np.zeros((side, side, 3), np.uint8), format="rgb24")
        for _ in range(frames):
            for packet in stream.encode(black):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def fifo(path):
    return fifo_feeding(path, CONTENT)  # (the shared one: conftest.py)


def refusal(folder, **kwargs) -> str:
    """The one line reading `folder` through the data module is refused with."""
    with pytest.raises(UserError) as e:
        VideoDataModule(folder=str(folder), frames=8, size=16, **kwargs)
    message = str(e.value)
    assert isinstance(e.value, ValueError), "the programs report a data module's ValueError as data: ... (exit 2)"
    assert "\n" not in message and CONTENT.decode() not in message and "GIF89a" not in message
    return message


@pytest.mark.parametrize("name", ["x.mp4", "x.gif", "x.npy", "f/0008.png"])
def test_a_fifo_named_as_a_clip_or_a_frame_is_refused_before_it_is_opened(tmp_path, name):
    write_frames(tmp_path / "f", 8)
    with fifo(tmp_path / name) as path:
        assert f"{path}: is a FIFO (named pipe), not a file" in refusal(tmp_path)


def test_the_npy_reader_does_not_wait_on_a_fifo(tmp_path):
    """read_clip opens without blocking and looks at what it opened (a FIFO put in a file's place after the
    folder was looked at)."""
    with fifo(tmp_path / "x.npy") as path, pytest.raises(UserError, match="x.npy is a FIFO, not a file"):
        files.read_clip(path)


def test_a_folder_or_a_link_to_nothing_named_as_a_clip_is_refused(tmp_path):
    (tmp_path / "a.mp4").mkdir()
    assert f"{tmp_path / 'a.mp4'}: is a folder, not a file" in refusal(tmp_path)
    (tmp_path / "a.mp4").rmdir()
    (tmp_path / "a.mp4").symlink_to(tmp_path / "gone.mp4")
    assert f"{tmp_path / 'a.mp4'}: cannot be read (No such file or directory)" in refusal(tmp_path)


def test_a_huge_image_is_refused_from_its_header_before_it_is_decoded(tmp_path):
    """9000x9000 of 1-bit pixels is 28 KB of PNG and, decoded, 243 MB of RGB (2.6 GB at the resize): its
    size is read from the header and refused past MAX_PIXELS with no pixel decoded."""
    from PIL import Image

    write_frames(tmp_path / "f", 8)
    Image.new("1", (9000, 9000), 1).save(tmp_path / "f" / "0008.png")
    tracemalloc.start()
    try:
        message = refusal(tmp_path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert f"{tmp_path / 'f' / '0008.png'}: a frame of 9000x9000, more than 16,777,216 pixels" in message
    assert peak < 32 << 20, f"{peak:,} bytes taken before the refusal: the image was decoded"


def test_only_png_jpeg_and_bmp_decoders_read_frames(tmp_path):
    """Pillow picks a decoder by the content: a frame named .png that holds another format (EPS would run
    Ghostscript) is not decoded."""
    from PIL import Image

    write_frames(tmp_path / "f", 8)
    Image.new("RGB", (32, 24)).save(tmp_path / "f" / "0008.png", format="TIFF")
    with pytest.raises(ValueError, match=r"0008.png: cannot be read as an image"):
        VideoDataModule(folder=str(tmp_path), frames=8, size=16)


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test when a frame of a video is converted: a refusal must come before."""

    def decoded(*args):
        raise AssertionError("a frame was decoded before the refusal")

    monkeypatch.setattr(files, "square", decoded)


def test_a_gif_of_many_frames_on_a_huge_canvas_is_refused_before_decoding(tmp_path, no_decoding):
    """10,000 frames of 24 bytes on a 4096x4096 canvas: 230 KB, 0.6 s a frame (hours). Its packets are
    counted before any is decoded: more than MAX_SOURCE_PIXELS in all."""
    (tmp_path / "x.gif").write_bytes(gif(4096, 4096, 10_000))
    assert f"{tmp_path / 'x.gif'}: more than 2,147,483,648 pixels to decode (10,000 frames of 4096x4096)" in refusal(
        tmp_path
    )


def test_what_a_header_declares_is_refused_when_the_video_is_opened(tmp_path):
    """A GIF's header gives its frame count and canvas: refused by open_video, before a packet is read."""
    (tmp_path / "x.gif").write_bytes(gif(4096, 4096, 10_000))
    with pytest.raises(UserError, match=r"x.gif: more than 2,147,483,648 pixels to decode \(10,000 frames"):
        files.open_video(tmp_path / "x.gif")


def test_a_video_that_declares_no_frame_count_is_counted_by_its_packets(tmp_path, no_decoding, monkeypatch):
    """Matroska declares no count: the packets are counted, none decoded, against both bounds."""
    mkv(tmp_path / "x.mkv", 51)
    monkeypatch.setattr(files, "MAX_FRAMES", 50)
    assert f"{tmp_path / 'x.mkv'}: more than 50 frames" in refusal(tmp_path)
    monkeypatch.setattr(files, "MAX_FRAMES", 10_000)
    monkeypatch.setattr(files, "MAX_SOURCE_PIXELS", 8 * 8 * 50)
    assert f"{tmp_path / 'x.mkv'}: more than 3,200 pixels to decode (51 frames of 8x8)" in refusal(tmp_path)


def test_a_canvas_past_the_frame_bound_is_refused_before_decoding(tmp_path, no_decoding, monkeypatch):
    """The codec's frame size, as the header declares it."""
    monkeypatch.setattr(files, "MAX_PIXELS", 64 * 64)
    (tmp_path / "x.gif").write_bytes(gif(65, 64, 1))
    assert f"{tmp_path / 'x.gif'}: a frame of 65x64, more than 4,096 pixels" in refusal(tmp_path)


def test_decoding_stops_past_the_bounds_when_a_file_under_declares(tmp_path, monkeypatch):
    """A file that under-declares (a Matroska file declares no count; its packets, stood in for here by a
    count of 0, may be fewer than the frames a decoder gives): decoding stops at the first frame past the
    bound, and none after it is decoded."""
    seen = []
    monkeypatch.setattr(files, "packets_of", lambda path: 0)
    monkeypatch.setattr(files, "square", lambda frame, size: seen.append(frame.shape) or torch.zeros(3, size, size))
    monkeypatch.setattr(files, "MAX_FRAMES", 20)
    mkv(tmp_path / "x.mkv", 40)
    assert f"{tmp_path / 'x.mkv'}: more than 20 frames" in refusal(tmp_path)
    assert len(seen) == 20
    monkeypatch.setattr(files, "MAX_FRAMES", 10_000)
    monkeypatch.setattr(files, "MAX_SOURCE_PIXELS", 8 * 8 * 30)
    seen.clear()
    assert f"{tmp_path / 'x.mkv'}: more than 1,920 pixels to decode (31 frames of 8x8)" in refusal(tmp_path)
    assert len(seen) == 30


def test_a_frame_folder_past_the_pixels_of_a_source_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "MAX_SOURCE_PIXELS", 24 * 32 * 10)
    write_frames(tmp_path / "f", 12)
    assert f"{tmp_path / 'f'}: more than 7,680 pixels to decode (11 frames of 32x24)" in refusal(tmp_path)


def test_the_programs_refuse_a_fifo_clip_in_one_line(tmp_path):
    (data := tmp_path / "clips").mkdir()
    np.save(data / "a.npy", np.zeros((3, 8, 16, 16), dtype=np.uint8))
    with fifo(data / "b.mp4"):
        r = in_process("train.py", "experiment=magvit", "logger=none", f"data.folder={data}", cwd=tmp_path)
    assert r.returncode == 2
    assert one_error_line(r) == (
        f"error: data: {data / 'b.mp4'}: is a FIFO (named pipe), not a file; data.folder reads regular files only"
    )
    assert not (tmp_path / "outputs").exists()
