"""Bad input: one clear line, a non-zero exit, no traceback, and no run directory left behind. (train.py runs
inside the test process here: every command is refused before training.)"""

import pytest

from conftest import FAST, SINE, in_process, one_error_line


def train(*args, cwd):
    return in_process("train.py", *args, cwd=cwd)


@pytest.mark.parametrize(
    "override, expected",
    [
        ("trainer.max_epoch=2", "max_epoch"),  # unknown key
        ("experiment=no_such_experiment", "no_such_experiment"),  # experiment that does not exist
        ("seed=abc", "seed"),  # wrong type, top-level schema
        ("trainer.max_epochs=abc", "trainer.max_epochs"),  # wrong type, checked against Trainer's signature
        ("+model.latnt_dim=3", "latnt_dim"),  # unknown key added on purpose, not a parameter
        ("resume=sometimes", "resume"),  # not one of the allowed values
    ],
)
def test_bad_config_is_one_line(workdir, override, expected):
    r = train(*[a for a in FAST if a.split("=")[0] != override.split("=")[0]], override, cwd=workdir)
    assert r.returncode == 2, r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("error: ") and expected in lines[0]
    assert "Traceback" not in r.stdout + r.stderr
    assert not list(workdir.glob("outputs/**/*")), "a failed start must leave no run directory behind"


def test_did_you_mean(workdir):
    r = train(*FAST, "+task.learning_rate=0.1", cwd=workdir)
    assert r.returncode == 2
    assert "task.learning_rate" in r.stderr


def test_cfg_job_prints_composed_config(workdir):
    r = in_process("train.py", "--cfg", "job", "experiment=ternary_v5_5", cwd=workdir)
    assert r.returncode == 0, r.stderr
    assert "_target_: experiments.families.ternary.vae_v5_5.DualVAE" in r.stdout
    assert "max_epochs: 20" in r.stdout
    assert not (workdir / "outputs").exists()


@pytest.mark.parametrize(
    "override, expected",
    [
        ("checkpoint.every_n_epochs=0", "checkpoint.every_n_epochs must be >= 1"),
        ("checkpoint.mode=sideways", "checkpoint.mode must be 'min' or 'max'"),
        ("checkpoint.mode=min", "checkpoint.mode=min contradicts SineTask: higher is better for val/r2"),  # no monitor
        ("validation.preflight=[config,no_such_stage]", "unknown validation stage"),
        ("task._target_=torch.nn.Identity", "is not an experiments.family.ExperimentTask"),  # outside the contract
    ],
)
def test_bad_settings_found_after_composition_are_one_line_too(workdir, override, expected):
    r = train(*SINE, override, cwd=workdir)  # (its checkpoint.monitor is null: the family's)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "Traceback" not in r.stdout + r.stderr
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and expected in lines[0], r.stderr
    assert not list(workdir.glob("outputs/**/run.yaml")) and not list(workdir.glob("outputs/**/*.ckpt"))


def test_paths_with_equals_and_commas_pass_as_one_value():
    from experiments.cli import quote_path_values

    run = "ckpt=outputs/ternary_v5_5/seed=1,trainer.max_epochs=40/checkpoints/epoch=0004.ckpt"
    assert (
        quote_path_values(run) == "ckpt='outputs/ternary_v5_5/seed=1,trainer.max_epochs=40/checkpoints/epoch=0004.ckpt'"
    )
    assert quote_path_values("seed=0,1,2") == "seed=0,1,2"  # a sweep stays a sweep
    assert quote_path_values("trainer.max_epochs=3") == "trainer.max_epochs=3"


def test_misspelled_key_names_the_right_key_at_once(workdir):
    r = train(*FAST, "trainer.max_epoch=2", cwd=workdir)
    assert (
        r.returncode == 2
        and "error: trainer.max_epoch is not a key of trainer: did you mean trainer.max_epochs=2?" in r.stderr
    ), r.stderr
    r = train("experiment=exp3_champion", "task.eval_evry_n_epochs=5", cwd=workdir)
    assert r.returncode == 2 and "did you mean task.eval_every_n_epochs=5?" in r.stderr, r.stderr
    # a parameter of Lightning's Trainer the config does not set: not misspelt, only missing its +
    r = train(*FAST, "trainer.deterministic=true", cwd=workdir)
    assert (
        r.returncode == 2
        and "error: trainer.deterministic is not in the config's trainer, though trainer takes "
        "it: add it with +trainer.deterministic=true"
        in r.stderr
    ), r.stderr
    assert not list(workdir.glob("outputs/**/*"))


@pytest.mark.parametrize(
    "overrides, expected",
    [
        (["experiment=../experiment/ternary_v5_5"], "an experiment is the name of a preset"),
        (["paths.outputs="], "paths.outputs is empty"),
        (["paths.outputs={file}"], "is a file, not a folder"),
        (["paths.outputs=/proc/no_runs_here"], "paths.outputs"),  # root: mkdir fails; others: not writable
        (["experiment=magvit", "data.folder={empty}"], "data: no clips in"),  # refused by the family's data module
    ],
)
@pytest.mark.slow  # five refused starts, each a program run
def test_a_refused_start_leaves_nothing_behind(workdir, overrides, expected):
    (workdir / "a_file").write_text("")
    (workdir / "empty").mkdir()
    overrides = [o.format(file=workdir / "a_file", empty=workdir / "empty") for o in overrides]
    if not any(o.startswith("experiment=") for o in overrides):
        overrides = ["experiment=ternary_v5_5", *overrides]
    r = train("logger=none", "trainer.enable_progress_bar=false", *overrides, cwd=workdir)
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r)
    assert expected in line and "Error executing job" not in r.stdout + r.stderr, line
    assert sorted(p.name for p in workdir.iterdir()) == ["a_file", "empty"], "no run directory, here or above"
    assert not (workdir.parent / "experiment").exists() and not list((workdir / "empty").iterdir())


@pytest.mark.parametrize(
    "args, expected",
    [
        (
            ["experimnt=exp3_champion"],
            "experimnt is not a key or group of train.py: did you mean experiment=exp3_champion?",
        ),
        (["+experimnt=exp3_champion"], "did you mean experiment=exp3_champion?"),  # Hydra's own hint, followed
        (["experiment=ternary_v5_5", "sed=1"], "sed is not a key or group of train.py: did you mean seed=1?"),
        (["experiment=ternary_v5_5", "debg=limit"], "did you mean debug=limit?"),
    ],
)
def test_a_misspelled_top_level_key_or_group_says_which_was_meant(workdir, args, expected):
    r = train(*args, cwd=workdir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert expected in one_error_line(r)
    assert not (workdir / "outputs").exists(), "nothing trains"


@pytest.mark.parametrize(
    "args, expected",
    [
        (["lr=0.01"], "lr is not a key or group of train.py: did you mean task.lr=0.01?"),  # no `+lr` advice
        (["+lr=0.01"], "lr is not a key of train.py's config and nothing would read it: did you mean task.lr=0.01?"),
        (["tags=[dev]"], "did you mean logger.tags=[dev]?"),  # the exact leaf before a look-alike group (task)
        (["+tags=[dev]"], "did you mean logger.tags=[dev]?"),
        (
            ["+ckpt_path=/runs/x/last.ckpt"],
            "ckpt_path is not a key of train.py's config and nothing would read it: a run "
            "resumes from its own last.ckpt when its command is rerun (resume=auto); to "
            "start from another run's weights, init_from=PATH",
        ),
        (["+lr=0.01", "preflight_only=true"], "did you mean task.lr=0.01?"),
    ],
)
@pytest.mark.slow  # six refused starts, each a program run
def test_a_top_level_key_nothing_reads_is_refused_naming_the_key_meant(workdir, args, expected):
    r = train("experiment=exp0_encoder_decoder", *args, cwd=workdir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert expected in one_error_line(r)
    assert not (workdir / "outputs").exists(), "nothing trains, no run directory is left"


def test_a_top_level_key_a_preset_interpolates_is_read():
    """A value kept at the top for the groups to interpolate (`hidden: 64`, `model.width: ${hidden}`) is read."""
    from omegaconf import OmegaConf

    from experiments.config_keys import unread

    cfg = OmegaConf.create({"seed": 0, "hidden": 64, "model": {"width": "${hidden}"}, "lr": 0.1, "hidden2": 3})
    assert unread(cfg, {"seed", "model"}) == ["lr", "hidden2"]


def test_trainer_gpu_without_a_gpu_is_refused_before_the_preflight(workdir):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    r = train(*SINE, "trainer=gpu", "preflight_only=true", cwd=workdir)
    assert r.returncode == 2, r.stdout + r.stderr
    assert "trainer.accelerator=gpu, but torch" in one_error_line(r) and "use trainer=cpu" in one_error_line(r)
    assert "preflight" not in r.stdout, "refused before the preflight stages"
    assert not (workdir / "outputs").exists()


@pytest.mark.slow  # real processes, with and without a Slurm job's environment
def test_lightnings_srun_hint_only_inside_a_slurm_job_and_once(tmp_path):
    """A machine with `srun` on its PATH (here a stand-in; a cluster's login node): outside a Slurm job,
    Lightning's hint to start with srun means nothing and is not shown; inside one it is shown once (Lightning
    gives it from each place that looks for Slurm). Real processes: a warning shown once stays shown once."""
    import os
    import subprocess

    from conftest import run_train

    (tmp_path / "bin").mkdir()
    (tmp_path / "bin" / "srun").write_text("#!/bin/sh\nexit 0\n")
    (tmp_path / "bin" / "srun").chmod(0o755)
    path = {"PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    hint = "The `srun` command is available on your system but is not used"
    for extra, shown in (({}, 0), ({"SLURM_JOB_ID": "4242"}, 1)):
        r = run_train(*SINE, "trainer.max_epochs=1", "resume=never", cwd=tmp_path, extra_env={**path, **extra})
        assert r.returncode == 0, r.stdout + r.stderr
        assert (r.stdout + r.stderr).count(hint) == shown, (extra, r.stdout + r.stderr)
    assert subprocess.run(["which", "srun"], env={**os.environ, **path}, capture_output=True).returncode == 0
