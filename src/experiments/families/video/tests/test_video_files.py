"""data.folder with the files people have: videos (.mp4, .webm, .gif, written here with PyAV), folders of
image frames and .npy clips side by side; cut into clips, resized, split by source; a file that cannot be
read is named in one line; a folder of them trains and evaluates through the real programs."""

import json

import numpy as np
import pytest
import torch

from conftest import in_process, one_error_line
from experiments.families.video.data import VideoDataModule, load_folder

pytestmark = pytest.mark.slow  # video files written and a model trained on them

COLOURS = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (220, 220, 60)]


def frame(t: int, height: int = 24, width: int = 32) -> np.ndarray:
    """A frame of one colour (which changes every 4 frames), with a dark column band at the left edge
    that the central square crop cuts away."""
    pixels = np.empty((height, width, 3), dtype=np.uint8)
    pixels[:] = COLOURS[(t // 4) % len(COLOURS)]
    pixels[:, :3] = 0
    return pixels


def write_video(path, n: int, codec: str, pix_fmt: str = "yuv420p") -> None:
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=8)
        stream.width, stream.height, stream.pix_fmt = 32, 24, pix_fmt
        for t in range(n):
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame(t), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def write_frames(folder, n: int) -> None:
    from PIL import Image

    folder.mkdir()
    for t in range(n):
        Image.fromarray(frame(t)).save(folder / f"{t:04d}.png")


@pytest.fixture(scope="module")
def clip_folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("videos")
    write_video(folder / "a.mp4", 20, "mpeg4")  # 20 frames: clips at 0, 4, 8, 12
    write_video(folder / "b.gif", 10, "gif", "rgb8")  # 10 frames: a clip at 0
    write_frames(folder / "c", 12)  # 12 frames: clips at 0, 4
    write_video(folder / "d.webm", 8, "libvpx")  # 8 frames: a clip at 0
    np.save(folder / "e.npy", np.full((3, 8, 16, 16), 128, dtype=np.uint8))  # one clip as it is
    return folder


def test_videos_frames_and_arrays_are_cut_resized_and_named(clip_folder):
    clips, names, origin = load_folder(clip_folder, frames=8, size=16, stride=4)
    assert names == ["a.mp4@0", "a.mp4@4", "a.mp4@8", "a.mp4@12", "b.gif@0", "c@0", "c@4", "d.webm@0", "e.npy"]
    assert origin == [0, 0, 0, 0, 1, 2, 2, 3, 4]
    assert clips.shape == (9, 3, 8, 16, 16) and clips.min() >= 0 and clips.max() <= 1
    lossless = clips[names.index("c@4")]  # PNG frames 4-11: colours 1 and 2, the dark band cropped away
    for t, colour in ((0, COLOURS[1]), (4, COLOURS[2])):
        assert torch.allclose(lossless[:, t], torch.tensor(colour).float().div(255)[:, None, None], atol=1e-6)
    for name in ("a.mp4@8", "b.gif@0", "d.webm@0"):  # lossy codecs: the colour within a few levels
        i, start = names.index(name), int(name.split("@")[1])
        expected = torch.tensor(COLOURS[(start // 4) % 4]).float().div(255)
        assert (clips[i][:, 0].mean((1, 2)) - expected).abs().max() < 0.06, name


def test_the_split_keeps_each_source_on_one_side(clip_folder):
    data = VideoDataModule(folder=str(clip_folder), frames=8, size=16, stride=4, val_fraction=0.4)
    assert data.val_names == ["d.webm@0", "e.npy"] and len(data.train) == 7  # the last 2 of 5 sources


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("broken.mp4", b"not a video at all" * 10, "broken.mp4: cannot be read as a video"),
        ("notes.txt", b"hello", "holds notes.txt, which are not clips"),
    ],
)
def test_a_file_that_is_not_a_clip_is_named(tmp_path, name, content, expected):
    write_video(tmp_path / "good.mp4", 8, "mpeg4")
    (tmp_path / name).write_bytes(content)
    with pytest.raises(ValueError, match=expected):
        load_folder(tmp_path)


def test_frames_are_read_in_the_order_their_numbers_give(tmp_path):
    from experiments.families.video.files import frame_files

    (tmp_path / "f").mkdir()
    for t in (1, 2, 10, 9):
        (tmp_path / "f" / f"frame_{t}.png").write_bytes(b"")
    assert [p.name for p in frame_files(tmp_path / "f")] == [f"frame_{t}.png" for t in (1, 2, 9, 10)]


def test_a_video_shorter_than_a_clip_is_named(tmp_path):
    write_video(tmp_path / "short.mp4", 5, "mpeg4")
    with pytest.raises(ValueError, match=r"short.mp4: 5 frame\(s\), fewer than data.frames=8"):
        load_folder(tmp_path, frames=8)


@pytest.fixture(scope="module")
def folder_run(clip_folder, tmp_path_factory):
    """magvit trained 2 epochs on the folder of videos, frames and an array."""
    root = tmp_path_factory.mktemp("folder_run")
    args = [
        "experiment=magvit",
        "logger=none",
        f"data.folder={clip_folder}",
        "data.stride=4",
        "data.batch_size=4",
        "trainer.max_epochs=2",
    ]
    r = in_process("train.py", *args, cwd=root)
    assert r.returncode == 0, r.stdout + r.stderr
    (run,) = (root / "outputs" / "magvit").iterdir()
    return root, run


def test_a_folder_of_videos_trains_and_evaluates(clip_folder, folder_run, tmp_path):
    _, run = folder_run
    assert (
        torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 2 * 2
    )  # 7 clips, 4 a batch
    r = in_process(
        "eval.py", f"ckpt={run}", f"data.folder={clip_folder}", "data.stride=4", "data.val_fraction=1", cwd=tmp_path
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (out,) = (run / "eval").glob("data.folder=*")
    assert json.loads((out / "last" / "metrics.json").read_text())["metrics"]["val/psnr"] > 0
    (bad := tmp_path / "bad").mkdir()
    (bad / "x.avi").write_bytes(b"\x00" * 64)
    r = in_process("eval.py", f"ckpt={run}", f"data.folder={bad}", "data.val_fraction=1", cwd=tmp_path)
    assert r.returncode == 2 and f"{bad / 'x.avi'}: cannot be read as a video" in one_error_line(r)


def test_predict_reconstructs_each_clip_as_eval_scores_it(clip_folder, folder_run, tmp_path):
    """predict.py on a folder of one .mp4, one .gif and one frame folder: per clip its reconstruction (PNG
    frames, which the data module reads back), its latent (.npy) and its PSNR, equal to eval.py's per clip;
    one clip file alone; the Python API's records the same."""
    import csv
    import shutil

    from experiments import load_run

    _, run = folder_run
    (new := tmp_path / "new").mkdir()
    for name in ("a.mp4", "b.gif", "c"):
        (shutil.copytree if (clip_folder / name).is_dir() else shutil.copy)(clip_folder / name, new / name)
    e = in_process(
        "eval.py", f"ckpt={run}", f"data.folder={new}", "data.val_fraction=1", f"out={tmp_path / 'eval'}", cwd=tmp_path
    )
    assert e.returncode == 0, e.stdout + e.stderr
    evaluated = list(csv.DictReader(open(tmp_path / "eval" / "per_clip.csv")))
    p = in_process("predict.py", f"ckpt={run}", f"input={new}", cwd=tmp_path)
    assert p.returncode == 0, p.stdout + p.stderr
    (out,) = (run / "predict").glob("new-*")
    out = out / "last"
    rows = list(csv.DictReader(open(out / "per_clip.csv")))
    assert (
        [r["clip"] for r in rows]
        == [r["clip"] for r in evaluated]
        == ["a.mp4@0", "a.mp4@4", "a.mp4@8", "a.mp4@12", "b.gif@0", "c@0", "c@4"]
    )
    assert [float(r["psnr"]) for r in rows] == [float(r["psnr"]) for r in evaluated]
    for n, row in enumerate(rows):
        frames = sorted((out / "reconstructions" / row["folder"]).glob("*.png"))
        assert len(frames) == 8 and row["folder"].startswith(f"{n:04d}-")
        latent = np.load(out / "tokens" / f"{row['folder']}.npy", allow_pickle=False)
        assert latent.shape == (64, 8, 16, 16) and row["tokens"] == "latent"
    # the reconstructions are clips the data module reads back (8-bit PNG: within half a step of 255)
    clips, names, _ = load_folder(out / "reconstructions", frames=8, size=16)
    records = load_run(run).predict(new)
    assert [r["clip"] for r in records] == [r["clip"] for r in rows] and len(names) == 7
    for clip, r in zip(clips, records):
        assert (clip - r["reconstruction"]).abs().max() <= 0.5 / 255 + 1e-6
        assert r["psnr"] == float(next(row["psnr"] for row in rows if row["clip"] == r["clip"]))
    assert (out / "reconstructions.png").stat().st_size > 1000
    p = in_process("predict.py", f"ckpt={run}", f"input={new / 'b.gif'}", cwd=tmp_path)
    assert p.returncode == 0 and "1 prediction in " in p.stdout, p.stdout + p.stderr


def test_a_quantizers_tokens_are_its_codes(tmp_path):
    """magvit_v2's prediction files hold each clip's codes as integers, as the model gives them."""
    from experiments.families.video.magvit_v2 import MagVitV2
    from experiments.families.video.task import VideoTask

    torch.manual_seed(0)
    task = VideoTask(MagVitV2(bits=6, space_factor=2, time_factor=2)).eval()
    clips = torch.rand(2, 3, 5, 8, 8)
    records = task.prediction_step({"clips": clips, "names": ["x.npy", "y/z"]})
    task.prediction_files(records, tmp_path, None)
    codes = task.model(clips)["codes"]
    for k, stem in enumerate(["0000-x.npy", "0001-y_z"]):
        tokens = np.load(tmp_path / "tokens" / f"{stem}.npy", allow_pickle=False)
        assert tokens.dtype == np.int64 and np.array_equal(tokens, codes[k].numpy())
        assert len(list((tmp_path / "reconstructions" / stem).glob("*.png"))) == 5


def test_pictures_leave_a_white_gap_between_frames_and_name_each_clip(tmp_path):
    from experiments.families.video.pictures import draw_reconstructions, psnr, strip

    clip = torch.zeros(3, 3, 2, 2)  # 3 black frames of 2x2
    img = strip(clip)
    assert img.shape == (2, 3 * 2 + 2, 3) and (img[:, [2, 5]] == 1).all() and (img[:, [0, 1, 3, 4, 6, 7]] == 0).all()
    assert psnr(torch.zeros(1, 1, 1, 1), torch.full((1, 1, 1, 1), 0.1)) == pytest.approx(20.0)  # MSE 0.01
    draw_reconstructions(
        clip[None], clip[None] + 0.1, tmp_path / "x.png", title="epoch 1: val/psnr 20", names=["a.mp4@0"]
    )
    assert (tmp_path / "x.png").read_bytes()[:4] == b"\x89PNG"


def test_one_source_given_alone_is_read_as_data(clip_folder, tmp_path):
    """predict.py's input may be one clip or one frame folder: the same checks (a FIFO named as a video is
    refused before anything opens it)."""
    from conftest import fifo_feeding

    clips, names, _ = load_folder(clip_folder / "c", frames=8, size=16, stride=4)
    assert names == ["c@0", "c@4"] and clips.shape == (2, 3, 8, 16, 16)
    assert load_folder(clip_folder / "e.npy", frames=8, size=16)[1] == ["e.npy"]
    with fifo_feeding(tmp_path / "x.mp4", b"\x00" * 64), pytest.raises(ValueError, match="is a FIFO"):
        load_folder(tmp_path / "x.mp4", frames=8, size=16)
