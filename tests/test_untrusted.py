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

from conftest import ROOT, in_process, one_error_line, run_program
from experiments.checkpoint.io import check_archive, load_checkpoint, save_checkpoint, sha256_file
from experiments.errors import UserError
from experiments.untrusted import check_stored_config, package_config_folders, pickled_globals, registry

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
    return {
        "_target_": "torch.load",
        "weights_only": False,
        "f": {"_target_": "io.BytesIO", "initial_bytes": {"_target_": "base64.b64decode", "s": payload}},
    }


def payloads(marker) -> dict:
    """Each: (change to the stored config, what the refusal names)."""
    shell = {"_target_": "os.system", "command": f"touch {marker}"}
    return {
        "pickle as the model": (
            lambda c: c.update(model=pickle_through_torch_load(marker)),
            "model._target_='torch.load'",
        ),
        "pickle in model.latent_dim": (
            lambda c: c["model"].update(latent_dim=pickle_through_torch_load(marker)),
            "model.latent_dim._target_='torch.load'",
        ),
        "pickle in data.batch_size": (
            lambda c: c["data"].update(batch_size=pickle_through_torch_load(marker)),
            "data.batch_size._target_",
        ),
        "pickle in task.lr": (lambda c: c["task"].update(lr=pickle_through_torch_load(marker)), "task.lr._target_"),
        "builtins.open": (
            lambda c: c.update(model={"_target_": "builtins.open", "file": str(marker), "mode": "w"}),
            "model._target_='builtins.open'",
        ),
        "os.system": (lambda c: c.update(model=shell), "model._target_='os.system'"),
        "_args_": (lambda c: c["model"].update(_args_=[shell]), "model._args_ is a Hydra instruction"),
        "_partial_": (lambda c: c["task"].update(_partial_=True), "task._partial_ is a Hydra instruction"),
        "interpolation": (
            lambda c: c["data"].update(batch_size="${oc.env:HOME}"),
            "data.batch_size holds an interpolation",
        ),
        "planted module": (
            lambda c: c["model"].update(_target_="outputs.evil_mod.Model"),
            "model._target_='outputs.evil_mod.Model'",
        ),
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


@pytest.mark.parametrize("program", ["verify.py", "eval.py", "predict.py"])
@pytest.mark.parametrize("name", list(payloads("m")))
@pytest.mark.slow  # every payload through each program as a process (load_run's test below is quick)
def test_a_crafted_config_runs_nothing(ternary_run, tmp_path, program, name):
    marker = tmp_path / "MARKER"
    ckpt = crafted(ternary_run, tmp_path, marker, name)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    # The planted module's case in a process of its own, whose PYTHONPATH makes outputs/ importable, as it is
    # from a checkout's root (verify.py's default stages build the model (restorable), `stages=[loadable]`
    # only imported the planted module); the others inside the test process, where a payload that ran would
    # leave its marker as well
    planted = name == "planted module"
    stages = ["stages=[loadable]"] if program == "verify.py" and planted else []
    r = run_program(
        program, f"ckpt={ckpt}", *stages, cwd=tmp_path, extra_env={"PYTHONPATH": str(tmp_path)} if planted else None
    )
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r)
    assert payloads(marker)[name][1] in line and "may not name code to run" in line, line
    assert not marker.exists(), "the payload ran"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before, "nothing may be written"


@pytest.mark.parametrize("name", list(payloads("m")))
def test_load_run_refuses_a_crafted_config_as_the_programs_do(ternary_run, tmp_path, name):
    """The Python API reads a checkpoint through the same reader: the same refusal, nothing run or written."""
    from experiments import load_run

    marker = tmp_path / "MARKER"
    ckpt = crafted(ternary_run, tmp_path, marker, name)
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    with pytest.raises(UserError, match="may not name code to run") as refused:
        load_run(ckpt)
    assert payloads(marker)[name][1] in str(refused.value)
    assert not marker.exists(), "the payload ran"
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before


def forged_report(ckpt, stages=("loadable", "integrity", "restorable", "predicts", "frozen_identical", "metrics")):
    """What anyone can write: a report saying `passed`, with the file's own sha256."""
    folder = ckpt.parent / "verification"
    folder.mkdir(exist_ok=True)
    (folder / f"{ckpt.stem}.json").write_text(
        json.dumps(
            {
                "checkpoint": {"path": str(ckpt), "sha256": sha256_file(ckpt)},
                "passed": True,
                "stages": [{"name": s, "status": "pass"} for s in stages],
            }
        )
    )


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
    untrained["state_dict"] = {
        k: torch.randn_like(v) if v.is_floating_point() else v for k, v in untrained["state_dict"].items()
    }
    save_checkpoint(untrained, ckpt("untrained"))
    torch.save({"state_dict": {}, "config": {"experiment": "ternary_v5_5"}, "x": Shell(marker)}, ckpt("pickled"))
    (ckpt("pickled").parent / "epoch=0006.ckpt.sha256").write_text(f"{sha256_file(ckpt('pickled'))}  epoch=0006.ckpt\n")
    forged_report(ckpt("untrained"))
    forged_report(ckpt("pickled"))
    forged_report(ckpt("partial"), stages=("loadable",))
    r = in_process(
        "train.py",
        "experiment=ternary_v5_11",
        "frozen_checkpoint.path=auto",
        f"paths.outputs={outputs}",
        "logger=none",
        "trainer.enable_progress_bar=false",
        cwd=tmp_path,
    )
    assert r.returncode == 2, r.stdout + r.stderr
    line = one_error_line(r)
    assert "no checkpoint of ternary_v5_5 or ternary_v5_11" in line and line.endswith("Nothing was trained."), line
    assert f"{ckpt('untrained')} (frozen_coverage: reconstruction coverage of the frozen parts is" in line
    assert f"{ckpt('pickled')} (" in line and "holds a pickled object (posix.system)" in line
    assert (
        "partial/checkpoints/last.ckpt (epoch=0006.ckpt verified without integrity, restorable, predicts, "
        "metrics passing)" in line
    )
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
    assert not registry([PACKAGE_CONF]).allowed("model"), "the framework's own folder registers no family"
    package = registry(package_config_folders())  # and each built-in family's, as the programs see them
    assert "experiments.families.ternary.vae_v5_5.DualVAE" in package.allowed("model")
    assert "experiments.families.ternary.vae_v5_5.DualVAE" not in package.allowed("task")
    assert package.allowed("trainer") == {"lightning.pytorch.Trainer"}
    assert "experiments.families.ternary.homeostasis.CoverageGuard" in package.allowed("callbacks.coverage_guard")
    assert not any("SweepSummary" in t for ts in package.targets.values() for t in ts), "hydra/ composes no run"
    assert {"exp3_champion", "ternary_v5_5", "magvit"} <= package.experiments
    assert "examples.sine.model.MLP" not in package.allowed("model")
    with_sine = registry([*package_config_folders(), SINE_CONF])  # a user's family: its folder, as given to train.py
    assert "examples.sine.model.MLP" in with_sine.allowed("model") and "sine" in with_sine.experiments


def test_a_real_config_passes_and_every_other_shape_is_refused(ternary_run):
    config = torch.load(ternary_run / "checkpoints" / "last.ckpt", weights_only=True)["config"]
    reg = registry(package_config_folders())
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


def stored_zip(path, entries: dict) -> None:
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED) as z:
        for name, data in entries.items():
            z.writestr(name, data)


def test_an_archive_that_inflates_beyond_its_bound_is_refused_before_inflating(tmp_path):
    deflated = tmp_path / "deflated.ckpt"
    with zipfile.ZipFile(deflated, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data/0", b"\0" * (8 << 20))  # 8 MiB of zeros deflate to a few KiB
        z.writestr("archive/data.pkl", pickle.dumps({}))
    with pytest.raises(UserError, match="not laid out as torch writes a checkpoint"):  # torch never compresses
        check_archive(deflated)
    lying = tmp_path / "lying.ckpt"  # stored, but its central directory declares 100 MB
    stored_zip(lying, {"archive/data.pkl": pickle.dumps({}), "archive/data/0": b"x" * 100})
    data = bytearray(lying.read_bytes())
    central = data.rindex(b"PK\x01\x02")  # the last entry's central header: its uncompressed size at +24
    data[central + 24 : central + 28] = (100_000_000).to_bytes(4, "little")
    lying.write_bytes(bytes(data))
    bound = r"declares 100,000,\d+ bytes inside a [\d,]+-byte file \(more than max_inflation=10 "
    with pytest.raises(UserError, match=bound):
        check_archive(lying)
    torn = tmp_path / "torn.ckpt"
    torn.write_bytes(deflated.read_bytes()[:100])
    with pytest.raises(UserError, match="not a readable checkpoint"):
        check_archive(torn)


def two_readings(path, honest: bytes, hidden: bytes) -> None:
    """One file, two archives: Python's zipfile finds `honest` (through the plain end record), a reader that
    follows the zip64 locator (torch's) finds `hidden`. What a bound checked with zipfile alone would miss."""
    import struct

    def central(archive):
        n, size, offset = struct.unpack("<HII", archive[-12:-2])
        entries, p = [], offset
        for _ in range(n):
            names, extra, comment = struct.unpack("<HHH", archive[p + 28 : p + 34])
            entries.append(bytearray(archive[p : p + 46 + names + extra + comment]))
            p += len(entries[-1])
        return archive[:offset], entries

    def moved(entries, by):
        for e in entries:
            e[42:46] = struct.pack("<I", struct.unpack("<I", e[42:46])[0] + by)
        return b"".join(bytes(e) for e in entries)

    (h_local, h_entries), (x_local, x_entries) = central(honest), central(hidden)
    out = bytearray(b"PK\x03\x04" + bytes(36)) + h_local
    x_at = len(out)
    out += x_local
    x_cd_at = len(out)
    x_cd = moved(x_entries, x_at)
    out += x_cd
    z64_at = len(out)
    out += struct.pack("<IQHHIIQQQQ", 0x06064B50, 44, 45, 45, 0, 0, len(x_entries), len(x_entries), len(x_cd), x_cd_at)
    last = h_entries[-1]
    last[32:34] = struct.pack("<H", struct.unpack("<H", last[32:34])[0] + 20)  # the locator hides in its comment
    h_cd_at = len(out)
    h_cd = moved(h_entries, 0)
    out += h_cd + struct.pack("<IIQI", 0x07064B50, 0, z64_at, 1)
    out += struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, len(h_entries), len(h_entries), len(h_cd) + 20, h_cd_at - 40, 0)
    path.write_bytes(bytes(out))


def test_a_file_that_reads_as_two_archives_is_refused(tmp_path):
    import io

    small = io.BytesIO()
    torch.save({"config": {}, "epoch": 0, "state_dict": {}}, small)
    hidden = io.BytesIO()
    with zipfile.ZipFile(hidden, "w", zipfile.ZIP_DEFLATED) as z:
        for info in zipfile.ZipFile(io.BytesIO(small.getvalue())).infolist():
            data = zipfile.ZipFile(io.BytesIO(small.getvalue())).read(info)
            if info.filename.endswith("data.pkl"):
                data = pickle.dumps({"config": {}, "epoch": 0, "state_dict": {}, "x": "A" * 4_000_000}, protocol=2)
            z.writestr(info.filename, data)
    polyglot = tmp_path / "two.ckpt"
    two_readings(polyglot, small.getvalue(), hidden.getvalue())
    assert [i.filename for i in zipfile.ZipFile(polyglot).infolist()], "zipfile reads the honest archive"
    with pytest.raises(UserError, match="not a readable checkpoint"):
        load_checkpoint(polyglot)


def test_a_stored_best_entry_cannot_name_a_file_to_delete(tmp_path):
    """The policy deletes an evicted best checkpoint: from a checkpoint's state only its own file names."""
    from experiments.checkpoint.policy import CheckpointPolicy

    policy = CheckpointPolicy(dirpath=str(tmp_path / "checkpoints"), save_top_k=1, monitor="m")
    victim = tmp_path / "victim"
    policy.load_state_dict(
        {
            "best": [
                {"score": 1e30, "epoch": 0, "path": str(victim)},
                {"score": 1.0, "epoch": 1, "path": "../x.ckpt"},
                {"score": float("nan"), "epoch": 2, "path": "best-epoch=0003.ckpt"},
                "junk",
                {"score": 0.5, "epoch": 3, "path": "best-epoch=0004.ckpt"},
            ]
        }
    )
    assert policy.best == [{"score": 0.5, "epoch": 3, "path": "best-epoch=0004.ckpt"}]


def test_a_poisoned_candidate_is_passed_over_not_fatal(tmp_path):
    from experiments.checkpoint.frozen import _recheck

    ckpt = {"config": {"experiment": "a"}, "epoch": 0, "global_step": 1, "state_dict": {"model.p.w": 3}}
    path = tmp_path / "poisoned.ckpt"
    save_checkpoint(ckpt, path)
    assert _recheck(path, ["a"], "b", {}, ("p",), lambda p, s: None) == (
        None,
        "its state_dict holds int at 'model.p.w', not a tensor: not a checkpoint of this framework",
    )
    save_checkpoint({**ckpt, "state_dict": {"model.p.w": torch.ones(1)}}, path)
    (tmp_path / "poisoned.ckpt.sha256").write_bytes(b"\xff\xfe")
    found, why = _recheck(path, ["a"], "b", {}, ("p",), lambda p, s: None)
    assert found is None and "sidecar" in why


def test_a_sweep_directory_of_junk_is_summarised_without_a_crash(tmp_path):
    from experiments.sweep import write_summary

    (tmp_path / "jobs").mkdir()
    (tmp_path / "plan.json").write_text("[1]")
    for i, record in enumerate([{"num": 0, "run_dir": 5, "error": 5, "status": "finished"}, [1], {"num": "x"}]):
        (tmp_path / "jobs" / f"{i:04d}.json").write_text(json.dumps(record))
    (tmp_path / "jobs" / "0003.json").write_bytes(b"\xff")
    summary = write_summary(tmp_path, registry([PACKAGE_CONF]))
    assert [(r["job"], r["status"], r["run_dir"], r["error"]) for r in summary["rows"]] == [(0, "incomplete", None, "")]


def test_data_files_that_lie_about_their_size_or_nest_too_deep_are_one_line(tmp_path):
    import numpy as np

    from experiments.families.arc.data import read_task
    from experiments.families.video.data import load_folder

    (tmp_path / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(ValueError, match="nested too deeply"):
        read_task(tmp_path / "deep.json")
    clips = tmp_path / "clips"
    clips.mkdir()
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 100000, 100000, 100000), }"
    header += " " * (63 - (len(header) + 10) % 64) + "\n"
    (clips / "huge.npy").write_bytes(np.lib.format.magic(1, 0) + len(header).to_bytes(2, "little") + header.encode())
    with pytest.raises(ValueError, match=r"huge.npy: its header claims a float32 array of shape \(3, 100000"):
        load_folder(clips)
