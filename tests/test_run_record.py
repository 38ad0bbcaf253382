"""What a run leaves to read: train.log (the console as plain lines), the composed config and overrides in
.hydra/, and a closing summary that names every file; output that reads well when it is not a terminal."""

import pytest
import yaml

from conftest import ROOT, run_train
from experiments.console import PlainLines, plain

ARGS = [
    "--config-dir",
    str(ROOT / "examples" / "sine" / "conf"),
    "experiment=sine",
    "trainer.max_epochs=3",
    "logger.tags=[record]",
]  # the default logger (wandb, offline), whose own lines are coloured on a terminal


def test_plain_keeps_a_lines_last_state_without_escape_codes():
    assert plain("\x1b[1;34mwandb\x1b[0m: Find logs at: \x1b[1;35mlogs\x1b[0m") == "wandb: Find logs at: logs"
    assert plain("\r       \repoch 3/80 | train/loss 0.964 | 2.6s") == "epoch 3/80 | train/loss 0.964 | 2.6s"
    assert plain("\rsaving 10%\rsaving 100%") == "saving 100%"
    assert plain("\r          \r") is None  # a bar cleared: nothing to keep
    assert plain("Epoch 14/80: 100%|██████████| 37/37 [00:02<00:00, 14.23it/s]") is None
    assert plain("Validation DataLoader 0:  50%|█████     | 3/6 [00:01<00:01,  2.10s/it]\x1b[A") is None
    assert plain("an ordinary line with [brackets] and 100%") == "an ordinary line with [brackets] and 100%"
    assert plain("see \x1b]8;;https://wandb.ai\x1b\\the run\x1b]8;;\x1b\\ here") == "see the run here"  # a link


def test_plain_lines_are_passed_on_whole():
    got = []
    lines = PlainLines(got.append)
    for piece in ("epo", "ch 1\nEpoch 2:  50%|#  | 1/2 [00:00<00:00, 9.1it/s]", "\r", "\x1b[31mred\x1b[0m\n", "tail"):
        lines.write(piece)
    assert got == ["epoch 1\n", "red\n"]
    lines.close()
    assert got[-1] == "tail\n"


def test_a_bar_redrawn_all_epoch_is_kept_short_and_as_plain_reads_it():
    got = []
    lines = PlainLines(got.append)
    for i in range(20_000):
        lines.write(f"\rEpoch 1:  {i % 100}%|#  | {i}/20000 [00:01<00:01, 9.1it/s]")
    assert len(lines.pending) < 10_000  # not every redraw of the epoch
    lines.write("\r" + " " * 40 + "\r")  # cleared, then the epoch's line
    lines.write("epoch 1/3 | train/loss 0.3\n")
    assert got == ["epoch 1/3 | train/loss 0.3\n"]


def test_log_lines_of_libraries_reach_train_log(tmp_path):
    import logging
    import sys

    from experiments.console import logged_to

    handler = logging.StreamHandler(sys.stdout)
    logger = logging.getLogger("some.library")
    logger.addHandler(handler), logger.setLevel(logging.INFO)
    try:
        with logged_to(tmp_path / "train.log", "cmd") as log:
            log.keep()
            logger.info("a model summary")
    finally:
        logger.removeHandler(handler)
    assert "a model summary" in (tmp_path / "train.log").read_text()
    assert handler.stream is sys.stdout


@pytest.mark.slow  # a run started three times as processes
def test_a_run_keeps_its_console_config_and_overrides_and_names_its_files(tmp_path):
    r = run_train(*ARGS, cwd=tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    run = tmp_path / "outputs" / "sine" / "trainer.max_epochs=3"
    console = r.stdout + r.stderr
    # not a terminal (a pipe): no bars redrawn, no colours, an epoch a line
    assert "\r" not in console and "\x1b" not in console, repr(console[-2000:])
    assert [line.split(" |")[0] for line in r.stdout.splitlines() if line.startswith("epoch ")] == [
        "epoch 1/3",
        "epoch 2/3",
        "epoch 3/3",
    ]

    log = (run / "train.log").read_text()
    assert "\r" not in log and "\x1b" not in log
    assert log.splitlines()[0].startswith("==== ") and "python train.py " + " ".join(ARGS) in log.splitlines()[0]
    for line in r.stdout.splitlines():  # every line the console showed, in train.log
        assert line in log, line
    assert "epoch 3/3 | train/loss" in log and "Done: sine, 3 epochs" in log

    config = yaml.safe_load((run / ".hydra" / "config.yaml").read_text())
    assert config == yaml.safe_load((run / "run.yaml").read_text()) and config["trainer"]["max_epochs"] == 3
    assert yaml.safe_load((run / ".hydra" / "overrides.yaml").read_text()) == [
        "experiment=sine",
        "trainer.max_epochs=3",
        "logger.tags=[record]",
    ]

    holds = next(line for line in r.stdout.splitlines() if line.startswith("  holds: "))
    for name in ("train.log", "history.csv", "run.yaml", "fit.png", ".hydra/ (2 files)", "wandb/"):
        assert name in holds, holds
    files = sum(1 for p in (run / "checkpoints").iterdir() if p.is_file())
    assert f"checkpoints/ ({files} files)" in holds
    # every start of the run is a wandb folder of its own: the hint uploads them all
    assert f"wandb sync {run}/wandb/offline-run-*" in r.stdout
    assert "You can sync this run" not in console  # wandb's own hint names only this start's folder
