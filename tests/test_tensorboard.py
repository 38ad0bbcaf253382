"""logger=tensorboard: the same config and metrics as the other loggers, and the run's pictures, in
TensorBoard event files read back here record by record (tensorboardX's own protobufs)."""

import struct

import torch
import yaml
from tensorboardX.proto import event_pb2

from conftest import ROOT, in_process

ARGS = [
    "--config-dir",
    str(ROOT / "examples" / "sine" / "conf"),
    "experiment=sine",
    "trainer.max_epochs=6",
    "trainer.enable_progress_bar=false",
    "logger=tensorboard",
]


def events(path):
    """The Event records of one event file (TFRecord framing: length, its CRC, data, the data's CRC)."""
    data, i = path.read_bytes(), 0
    while i < len(data):
        (n,) = struct.unpack("<Q", data[i : i + 8])
        event = event_pb2.Event()
        event.ParseFromString(data[i + 12 : i + 12 + n])
        i += 12 + n + 4
        yield event


def test_tensorboard_holds_the_config_every_metric_and_the_pictures(tmp_path):
    r = in_process("train.py", *ARGS, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "outputs" / "sine" / "trainer.max_epochs=6"  # the logger is not part of the identity
    config = yaml.safe_load((run / "tensorboard" / "hparams.yaml").read_text())
    assert config["experiment"] == "sine" and config["model"]["_target_"] == "examples.sine.model.MLP"
    assert config["trainer"]["max_epochs"] == 6 and config["seed"] == 0
    scalars, images = {}, {}
    for f in (run / "tensorboard").glob("events.out.tfevents.*"):
        for event in events(f):
            for value in event.summary.value:
                if value.HasField("image"):
                    images.setdefault(value.tag, []).append(event.step)
                else:
                    scalars.setdefault(value.tag, []).append((event.step, value.simple_value))
    history = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["history"]
    for key in ("val/r2", "train/loss"):
        logged = [v for _, v in sorted(scalars[key])]
        assert logged == [torch.tensor(row[key]).float().item() for row in history], key  # every epoch, float32
    assert images["fit"] == [
        max(step for step, _ in scalars["val/r2"])
    ]  # fit.png, drawn at the end, at the last figures' step
    assert len(scalars["epoch"]) == len({step for step, _ in scalars["epoch"]})  # once a step, not once per logged row
    epoch_at = dict(scalars["epoch"])  # every logged row's epoch, by step: counted from 1, as everywhere
    assert [epoch_at[step] for step, _ in sorted(scalars["val/r2"])] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert [epoch_at[step] for step, _ in sorted(scalars["train/loss"])] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
