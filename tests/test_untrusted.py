"""A checkpoint is data, never code (docs/SECURITY.md): crafted stored configs, pickles, archive bombs and
forged reports are refused by the real verify.py, eval.py and train.py with one line, exit 2, and the
payload's marker file never appears; the allow-list and the bounds themselves on hand-made cases."""
import base64
import json
import os
import pickle
import shutil
import zipfile

import pytest
import torch

from conftest import ROOT, one_error_line, run_program, run_train
from experiments.checkpoint.io import check_archive, save_checkpoint, sha256_file
from experiments.errors import UserError
from experiments.untrusted import check_stored_config, pickled_globals, registry

PACKAGE_CONF = str(ROOT / "src" / "experiments" / "conf")
SINE_CONF = str(ROOT / "examples" / "sine" / "conf")


class Shell:
    """What an attacker pickles: `touch MARKER` when unpickled."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def pickle_through_torch_load(marker) -> dict:
    """The node that runs a pickle through torch.load(weights_only=False) when instantiated."""
    payload = base64.b64encode(pickle.dumps(Shell(marker))).decode()
    return {"_target_": "torch.load", "weights_only": False,
            "f": {"_target_": "io.BytesIO", "initial_bytes": {"_target_": "base64.b64decode", "s": payload}}}


def payloads(marker) -> dict:
    """Each: (change to the stored config, what the refusal names)."""
    shell = {"_target_": "os.system", "command": f"touch {marker}"}
    return {
        "pickle as the model": (lambda c: c.update(model=pickle_through_torch_load(marker)),
                                "model._target_='torch.load'"),
        "pickle in model.latent_dim": (lambda c: c["model"].update(latent_dim=pickle_through_torch_load(marker)),
                                       "model.latent_dim._target_='torch.load'"),
        "pickle in data.batch_size": (lambda c: c["data"].update(batch_size=pickle_through_torch_load(marker)),
                                      "data.batch_size._target_"),
        "pickle in task.lr": (lambda c: c["task"].update(lr=pickle_through_torch_load(marker)), "task.lr._target_"),
        "builtins.open": (lambda c: c.update(model={"_target_": "builtins.open", "file": str(marker), "mode": "w"}),
                          "model._target_='builtins.open'"),
        "os.system": (lambda c: c.update(model=shell), "model._target_='os.system'"),
        "_args_": (lambda c: c["model"].update(_args_=[shell]), "model._args_ is a Hydra instruction"),
        "_partial_": (lambda c: c["task"].update(_partial_=True), "task._partial_ is a Hydra instruction"),
        "interpolation": (lambda c: c["data"].update(batch_size="${oc.env:HOME}"),
                          "data.batch_size holds an interpolation"),
        "planted module": (lambda c: c["model"].update(_target_="outputs.evil_mod.Model"),
                           "model._target_='outputs.evil_mod.Model'"),
    }


def crafted(run, folder, marker, name):
    """A copy of a real checkpoint with one payload in its config, and a sidecar that matches (an attacker
    writes one too), next to a planted module under outputs/ that would run at import."""
    change, _ = payloads(marker)[name]
    ckpt = torch.load(run / "checkpoints" / "epoch=0006.ckpt", weights_only=True)
    change(ckpt["config"])
    path = folder / "shared.ckpt"
    save_checkpoint(ckpt, path)
    (folder / "outputs").mkdir(exist_ok=True)
    (folder / "outputs" / "evil_mod.py").write_text(f"open({str(marker)!r}, 'w').close()\nclass Model: pass\n")
    return path


@pytest.mark.parametrize("program", ["verify.py", "eval.py"])
@pytest.mark.parametrize("name", list(payloads("m")))
def test_a_crafted_config_runs_nothing(ternary_run, tmp_path, program, name):
    marker = tmp_path / "MARKER"
    ckpt = crafted(ternary_run, tmp_path, marker, name)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # PYTHONPATH: the planted module under outputs/ is importable, as it is from a checkout's root; verify.py's
    # default stages build the model (restorable), `stages=[loadable]` only imported the planted module
    stages = ["stages=[loadable]"] if program == "verify.py" and name == "planted module" else []
    r = run_program(program, f"ckpt={ckpt}", *stages, cwd=tmp_path, extra_env={"PYTHONPATH": str(tmp_path)})
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r)
    assert payloads(marker)[name][1] in line and "may not name code to run" in line, line
    assert not marker.exists(), "the payload ran"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing may be written"


def forged_report(ckpt, stages=("loadable", "integrity", "restorable", "predicts", "frozen_identical", "metrics")):
    """What anyone can write: a report saying `passed`, with the file's own sha256."""
    folder = ckpt.parent / "verification"
    folder.mkdir(exist_ok=True)
    (folder / f"{ckpt.stem}.json").write_text(json.dumps({
        "checkpoint": {"path": str(ckpt), "sha256": sha256_file(ckpt)}, "passed": True,
        "stages": [{"name": s, "status": "pass"} for s in stages]}))


def test_auto_rechecks_what_a_report_claims(ternary_run, tmp_path):
    """frozen_checkpoint.path=auto takes nothing on trust: a forged report on untrained weights, a forged
    report on a pickle, and a one-stage verification are each passed over, named, and nothing trains."""
    outputs, marker = tmp_path / "outputs", tmp_path / "MARKER"
    runs = {}
    for name in ("untrained", "pickled", "partial"):
        runs[name] = outputs / "ternary_v5_5" / name
        shutil.copytree(ternary_run, runs[name], ignore=shutil.ignore_patterns("verification"))
    ckpt = lambda name: runs[name] / "checkpoints" / "epoch=0006.ckpt"  # noqa: E731
    untrained = torch.load(ckpt("untrained"), weights_only=True)
    untrained["state_dict"] = {k: torch.randn_like(v) if v.is_floating_point() else v
                               for k, v in untrained["state_dict"].items()}
    save_checkpoint(untrained, ckpt("untrained"))
    torch.save({"state_dict": {}, "config": {"experiment": "ternary_v5_5"}, "x": Shell(marker)}, ckpt("pickled"))
    (ckpt("pickled").parent / "epoch=0006.ckpt.sha256").write_text(f"{sha256_file(ckpt('pickled'))}  epoch=0006.ckpt\n")
    forged_report(ckpt("untrained"))
    forged_report(ckpt("pickled"))
    forged_report(ckpt("partial"), stages=("loadable",))
    r = run_train("experiment=ternary_v5_11", "frozen_checkpoint.path=auto", f"paths.outputs={outputs}",
                  "logger=none", "trainer.enable_progress_bar=false", cwd=tmp_path)
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r)
    assert "no checkpoint of ternary_v5_5 or ternary_v5_11" in line and line.endswith("Nothing was trained."), line
    assert f"{ckpt('untrained')} (frozen_coverage: reconstruction coverage of the frozen parts is" in line
    assert f"{ckpt('pickled')} (" in line and "holds a pickled object (posix.system)" in line
    assert "partial/checkpoints/last.ckpt (epoch=0006.ckpt verified without integrity, restorable, predicts, " \
           "metrics passing)" in line
    assert not marker.exists()
    assert not (outputs / "ternary_v5_11").exists(), "a refused start leaves no run directory"


def test_a_partial_verify_keeps_the_fuller_report(ternary_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(ternary_run, run, ignore=shutil.ignore_patterns("verification"))
    ckpt = run / "checkpoints" / "epoch=0006.ckpt"
    full = run_program("verify.py", f"ckpt={ckpt}", cwd=tmp_path)
    assert full.returncode == 0, full.stdout + full.stderr
    report = run / "checkpoints" / "verification" / "epoch=0006.json"
    kept = report.read_bytes()
    partial = run_program("verify.py", f"ckpt={ckpt}", "stages=[loadable]", cwd=tmp_path)
    assert partial.returncode == 0 and "kept" in partial.stdout, partial.stdout + partial.stderr
    assert report.read_bytes() == kept
    stages = json.loads(report.with_name("epoch=0006.partial.json").read_text())["stages"]
    assert [s["name"] for s in stages] == ["loadable"]


# ---- the allow-list and the bounds, in-process ----
def test_the_registry_is_what_the_config_folders_place_at_each_key():
    package = registry([PACKAGE_CONF])
    assert "experiments.models.ternary_vae_v5_5.DualVAE" in package.allowed("model")
    assert "experiments.models.ternary_vae_v5_5.DualVAE" not in package.allowed("task")
    assert package.allowed("trainer") == {"lightning.pytorch.Trainer"}
    assert "experiments.homeostasis.CoverageGuard" in package.allowed("callbacks.coverage_guard")  # a _global_ preset
    assert not any("SweepSummary" in t for ts in package.targets.values() for t in ts), "hydra/ composes no run"
    assert {"exp3_champion", "ternary_v5_5", "magvit"} <= package.experiments
    assert "examples.sine.model.MLP" not in package.allowed("model")
    with_sine = registry([PACKAGE_CONF, SINE_CONF])  # a user's family: its config folder, as given to train.py
    assert "examples.sine.model.MLP" in with_sine.allowed("model") and "sine" in with_sine.experiments


def test_a_real_config_passes_and_every_other_shape_is_refused(ternary_run):
    config = torch.load(ternary_run / "checkpoints" / "last.ckpt", weights_only=True)["config"]
    reg = registry([PACKAGE_CONF])
    check_stored_config(config, reg, "x.ckpt")  # what train.py writes is accepted
    deep = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]
    bad = {
        "a tensor": dict(config, seed=torch.zeros(1)),
        "a non-string key": dict(config, data={**config["data"], 3: 1}),
        "a top-level target": dict(config, _target_="os.system"),
        "a target that is not a string": dict(config, model={**config["model"], "_target_": ["os.system"]}),
        "too deep": dict(config, data=deep),
        "_convert_": dict(config, model={**config["model"], "_convert_": "all"}),
        "_recursive_": dict(config, model={**config["model"], "_recursive_": False}),
        "a registered target at another key": dict(config, task=dict(config["model"])),
    }
    for name, crafted_config in bad.items():
        with pytest.raises(UserError, match="x.ckpt: config"):
            check_stored_config(crafted_config, reg, "x.ckpt")
            pytest.fail(name)


@pytest.mark.parametrize("protocol", [2, 4])
def test_a_pickle_is_named_without_being_run(tmp_path, protocol):
    marker = tmp_path / "MARKER"
    data = pickle.dumps({"x": Shell(marker)}, protocol=protocol)
    assert pickled_globals(data) == ["posix.system"]
    assert not marker.exists()


def test_an_archive_that_inflates_beyond_its_bound_is_refused_before_inflating(tmp_path):
    bomb = tmp_path / "bomb.ckpt"
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", b"\0" * (8 << 20))  # 8 MiB of zeros deflate to a few KiB
        z.writestr("archive/data.pkl", pickle.dumps({}))
    bound = r"declares 8,388,\d+ bytes inside a [\d,]+-byte file \(more than max_inflation=10 "
    with pytest.raises(UserError, match=bound):
        check_archive(bomb)
    check_archive(bomb, max_inflation=10_000)  # the setting raises the bound for a file one trusts
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(bomb.read_bytes()[:100])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        check_archive(torn)
