"""wandb as its users expect it, offline (nothing leaves the machine): the composed config as the run's
config, one run id per run directory across a SIGKILL and the resume, the run directory's name, tags, every
picture the run writes logged as an image, the final figures in the summary."""

import json
import signal
import time

import pytest
import torch
from wandb_records import records

from conftest import ROOT, run_train, start_train, wait_for
from experiments.loggers import stable_id

pytestmark = pytest.mark.slow  # runs killed and resumed with wandb offline

ARGS = [
    "--config-dir",
    str(ROOT / "examples" / "sine" / "conf"),
    "experiment=sine",
    "trainer.max_epochs=40",
    "trainer.enable_progress_bar=false",
    "logger.tags=[ci,example]",
]  # the default logger: wandb, offline


def by_kind(path):
    out = {}
    for r in records(path):
        out.setdefault(r.WhichOneof("record_type"), []).append(r)
    return out


def test_one_wandb_run_per_run_directory_across_a_kill_with_config_images_and_summary(tmp_path):
    run = tmp_path / "outputs" / "sine" / "trainer.max_epochs=40"  # logger.tags is not part of the identity
    proc = start_train(*ARGS, cwd=tmp_path)
    wait_for(run / "checkpoints" / "last.ckpt", proc)
    time.sleep(0.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["run"]["finished"]
    again = run_train(*ARGS, cwd=tmp_path)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "anonymous setting" not in again.stdout + again.stderr

    files = sorted(run.glob("wandb/offline-run-*/run-*.wandb"))
    assert len(files) == 2  # the killed start and the resume...
    assert {f.name for f in files} == {f"run-{stable_id(str(run))}.wandb"}  # ...one wandb run
    # The killed start's file may hold no record at all (wandb's service had not flushed); what it holds
    # and all of the resumed start's say the same.
    started = [by_kind(f) for f in files if "run" in by_kind(f)]
    assert started and "exit" in started[-1]
    for kinds in started:
        (header,) = kinds["run"]
        assert header.run.display_name == "sine/trainer.max_epochs=40" and list(header.run.tags) == ["ci", "example"]
        config = {item.key: json.loads(item.value_json) for r in kinds["config"] for item in r.config.update}
        assert config["experiment"] == "sine" and config["model"]["_target_"] == "examples.sine.model.MLP"
        assert config["trainer"]["max_epochs"] == 40 and config["seed"] == 0

    finished = started[-1]
    logged = {item.key or "/".join(item.nested_key) for r in finished["history"] for item in r.history.item}
    assert "fit/filenames" in logged  # fit.png, drawn at the end of training, logged as an image
    history = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["history"]
    summary = {}
    for r in finished["summary"]:
        summary.update({item.key or "/".join(item.nested_key): item.value_json for item in r.summary.update})
    assert (
        float(summary["val/r2"]) == history[-1]["val/r2"] and float(summary["train/loss"]) == history[-1]["train/loss"]
    )
