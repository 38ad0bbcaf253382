"""Video family: the seed's shape contract, causality of magvit_v2, data range, LFQ, and both presets
end to end through train.py and verify.py."""

import json

import numpy as np
import pytest
import torch

from conftest import in_process, one_error_line, run_program
from experiments.checkpoint.size import checkpoint_size_report
from experiments.families.video.data import VideoDataModule, load_folder
from experiments.families.video.magvit import SEED_PARAMETERS, MagVit
from experiments.families.video.magvit_v2 import LFQ, MagVitV2

TINY = [
    "logger=none",
    "trainer.enable_progress_bar=false",
    "data.train_clips=16",
    "data.val_clips=8",
    "data.batch_size=4",
]


def test_magvit_shape_contract_and_parameter_count():
    model = MagVit()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 16, 64, 64))
    assert out["latent"].shape == (1, 64, 16, 64, 64) and out["recon"].shape == (1, 3, 16, 64, 64)
    n = sum(p.numel() for p in model.parameters())
    assert abs(n - SEED_PARAMETERS) / SEED_PARAMETERS < 0.03, n


def test_magvit_v2_downsamples_and_quantizes():
    model = MagVitV2(bits=10, space_factor=4, time_factor=2)
    out = model(torch.rand(2, 3, 9, 16, 16))
    assert out["latent"].shape == (2, 10, 5, 4, 4) and out["recon"].shape == (2, 3, 9, 16, 16)
    assert out["codes"].min() >= 0 and out["codes"].max() < 1024
    with pytest.raises(ValueError, match="divisible"):
        model(torch.rand(1, 3, 8, 16, 16))


@pytest.mark.parametrize("t", [0, 2, 5, 7])
def test_magvit_v2_is_causal_in_time(t):
    torch.manual_seed(0)
    model = MagVitV2().eval()
    x = torch.rand(1, 3, 9, 16, 16)
    y = x.clone()
    y[:, :, t + 1 :] = torch.rand_like(y[:, :, t + 1 :])  # change every frame after t
    with torch.no_grad():
        out_x, out_y = model(x), model(y)
    a, b = out_x["recon"], out_y["recon"]
    assert torch.equal(a[:, :, : t + 1], b[:, :, : t + 1]), "an output frame saw a later input frame"
    # and the later frames are not ignored: the last latent (frames up to 8) sees them
    assert not torch.equal(out_x["latent"][:, :, -1], out_y["latent"][:, :, -1])


def test_lfq_codebook_entropy_is_exact():
    lfq = LFQ(bits=2)
    # two opposite codes, each half the time: 2 of 4 codes -> entropy ln 2, not the per-bit 2 ln 2
    z = torch.tensor([[5.0, 5.0], [-5.0, -5.0]]).view(2, 2, 1, 1, 1)
    p = torch.sigmoid(4 * z).movedim(1, -1).reshape(-1, 2)
    assert abs(lfq._codebook_entropy(p).item() - np.log(2)) < 1e-3
    out = lfq(z)
    assert sorted(out["codes"].reshape(-1).tolist()) == [0, 3]


def test_clips_are_in_unit_range_and_deterministic(tmp_path):
    a, b = VideoDataModule(seed=3), VideoDataModule(seed=3)
    assert torch.equal(a.train, b.train) and a.train.min() >= 0 and a.train.max() <= 1
    assert not torch.equal(a.train, VideoDataModule(seed=4).train)
    clip = (np.random.default_rng(0).random((3, 4, 8, 8)) * 255).astype(np.uint8)
    np.save(tmp_path / "a.npy", clip)
    np.save(tmp_path / "b.npy", clip)
    loaded, names, _ = load_folder(tmp_path)
    assert loaded.shape == (2, 3, 4, 8, 8) and loaded.max() <= 1.0 and names == ["a.npy", "b.npy"]
    np.save(tmp_path / "c.npy", clip.astype(np.float32))  # floats outside [0, 1]: refused
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        load_folder(tmp_path)


@pytest.fixture(scope="module")
def magvit_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("magvit")
    r = in_process(
        "train.py", "experiment=magvit", *TINY, "trainer.max_epochs=6", "checkpoint.every_n_epochs=2", cwd=root
    )
    assert r.returncode == 0, r.stdout + r.stderr
    (rd,) = (root / "outputs" / "magvit").iterdir()
    return rd


@pytest.mark.slow  # a real run trained for it
def test_magvit_trains_beats_control_and_verifies(magvit_run, tmp_path):
    ckpt = torch.load(magvit_run / "checkpoints" / "last.ckpt", weights_only=True)
    history = ckpt["history"]
    assert history[-1]["val/mse"] < history[0]["val/mse"]
    assert sorted(p.name for p in (magvit_run / "reconstructions").glob("*.png")) == [
        f"epoch={e:04d}.png" for e in range(1, 7)
    ]
    r = run_program("verify.py", f"ckpt={magvit_run}", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads((magvit_run / "checkpoints" / "verification" / "epoch=0006.json").read_text())
    stages = {s["name"]: s for s in report["stages"]}
    assert stages.pop("frozen_identical")["status"] == "skip"  # no frozen parts in this family
    assert all(s["status"] == "pass" for s in stages.values()), {k: s["details"] for k, s in stages.items()}
    assert stages["resume_exact"]["status"] == "pass" and stages["history_consistent"]["status"] == "pass"
    psnr = stages["metrics"]["metrics"]["val/psnr"]
    assert psnr["clearly_better"] and psnr["trained"] > psnr["untrained_control"]


@pytest.mark.slow  # a real run trained for it
def test_eval_on_a_folder_of_clips(magvit_run, tmp_path):
    """eval.py on .npy clips the run never saw: every clip measured and drawn, the totals from the clips."""
    import csv

    clips = tmp_path / "clips"
    clips.mkdir()
    from experiments.families.video.data import moving_shapes

    for i in range(5):  # uint8 clips of another seed, 8 frames of 16x16 as the run's
        np.save(clips / f"clip{i}.npy", (moving_shapes(i, 99, 8, 16) * 255).astype(np.uint8))
    r = run_program("eval.py", f"ckpt={magvit_run}", f"data.folder={clips}", "data.val_fraction=1", cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    (out,) = (magvit_run / "eval").glob("data.folder=*")
    result = json.loads((out / "last" / "metrics.json").read_text())
    rows = list(csv.DictReader(open(out / "last" / "per_clip.csv")))
    assert [row["clip"] for row in rows] == [f"clip{i}.npy" for i in range(5)]
    mse = np.mean([float(row["mse"]) for row in rows])  # clips of one size: the mean of the clips' MSE
    assert result["metrics"]["val/mse"] == pytest.approx(mse, rel=1e-5)
    assert result["metrics"]["val/psnr"] == pytest.approx(10 * np.log10(1 / mse), rel=1e-5)
    assert result["metrics"]["val/ssim"] == pytest.approx(np.mean([float(row["ssim"]) for row in rows]), rel=1e-5)
    assert sorted(p.name for p in (out / "last" / "reconstructions").iterdir()) == [
        "clips_0000-0003.png",
        "clips_0004-0004.png",
    ]  # 4 clips a picture (task.pictures)


@pytest.mark.slow  # a real run trained for it
def test_clips_holding_nan_are_refused_in_one_line(magvit_run, tmp_path):
    clips = tmp_path / "clips"
    clips.mkdir()
    clip = np.full((3, 8, 16, 16), 0.5, dtype=np.float32)
    np.save(clips / "good.npy", clip)
    clip[0, 2, 3, 4] = np.nan
    np.save(clips / "bad.npy", clip)
    before = sorted(magvit_run.rglob("*"))
    r = in_process("eval.py", f"ckpt={magvit_run}", f"data.folder={clips}", "data.val_fraction=1", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    assert f"{clips / 'bad.npy'}: holds NaN or Inf at 1 value(s)" in one_error_line(r)
    assert sorted(magvit_run.rglob("*")) == before, "a refused evaluation writes nothing"


@pytest.mark.slow  # a real run trained for it
def test_an_error_in_the_familys_code_is_one_line_with_the_command(magvit_run, tmp_path):
    """Grey clips (1 channel) into a 3-channel model: the model's own error, exit 1, one line naming the
    command that led to it; traceback=true shows the whole traceback."""
    clips = tmp_path / "grey"
    clips.mkdir()
    np.save(clips / "a.npy", np.zeros((1, 8, 16, 16), dtype=np.uint8))
    args = [f"ckpt={magvit_run}", f"data.folder={clips}", "data.val_fraction=1"]
    r = run_program("eval.py", *args, cwd=tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    line = one_error_line(r)
    assert line.startswith(f"error: eval.py {' '.join(args)}: RuntimeError: ") and "raised at" in line, line
    assert line.endswith("Rerun with traceback=true to see the whole traceback")
    full = run_program("eval.py", *args, "traceback=true", cwd=tmp_path)
    assert full.returncode == 1 and "Traceback (most recent call last)" in full.stderr


@pytest.mark.slow  # a real run trained for it
def test_checkpoints_stay_near_the_minimum(magvit_run):
    assert checkpoint_size_report(magvit_run / "checkpoints" / "last.ckpt")["ratio"] <= 1.1


@pytest.mark.slow  # a real run trained for it
def test_magvit_v2_trains_end_to_end(tmp_path):
    r = in_process("train.py", "experiment=magvit_v2", *TINY, "trainer.max_epochs=3", cwd=tmp_path)  # 9 frames
    assert r.returncode == 0, r.stdout + r.stderr
    (rd,) = (tmp_path / "outputs" / "magvit_v2").iterdir()
    last = torch.load(rd / "checkpoints" / "last.ckpt", weights_only=True)["history"][-1]
    assert 0 < last["codes/used_fraction"] <= 1 and last["codes/perplexity"] >= 1
    assert checkpoint_size_report(rd / "checkpoints" / "last.ckpt")["ratio"] <= 1.1


@pytest.mark.slow  # a real run trained for it
def test_eval_writes_no_picture_through_a_link_in_its_results(magvit_run, tmp_path):
    """A results folder from an earlier eval.py whose `reconstructions/` is now a link outside the run: the
    pictures are not drawn there; one line, exit 2."""
    import os
    import shutil

    run = tmp_path / "outputs" / "magvit" / magvit_run.name
    shutil.copytree(magvit_run, run, symlinks=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    results = run / "eval" / "own" / "last"
    results.mkdir(parents=True, exist_ok=True)
    shutil.rmtree(results / "reconstructions", ignore_errors=True)
    os.symlink(outside, results / "reconstructions")
    r = run_program("eval.py", f"ckpt={run}", cwd=tmp_path)
    assert r.returncode == 2 and "reconstructions is a link" in one_error_line(r), r.stdout + r.stderr
    assert list(outside.iterdir()) == []
