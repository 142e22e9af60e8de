"""Run archives: an unfinished run packed on one machine (`pack_run`, `ssl-zoo pack`)
and unpacked on another (`unpack_run`, `ssl-zoo unpack`) resumes there at its backup's
step and ends like an uninterrupted run; bad archives and busy or occupied run
directories get named errors."""

import io
import json
import os
import shutil
import tarfile

import keras
import numpy as np
import pytest

from test_faults import train_killed_at_step

from ssl_zoo.backup import RunArchiveError, pack_run, read_backup_state, unpack_run
from ssl_zoo.training import TrainConfig, train_and_evaluate
from ssl_zoo.utils.io import DirectoryInUseError, directory_lock

def _common(tmp_path, **kwargs):
    return {**dict(method="supervised", dataset="digits", backbone="vgg_tile",
                   width=0.0625, epochs=3, steps_per_epoch=10, batch_size=16,
                   max_test_examples=64, verbose=0, seed=3, backup_every=4,
                   eval_every=10, eval_keep=1, cache_dir=str(tmp_path / "cache")),
            **kwargs}


@pytest.fixture(scope="module")
def _crashed_once(tmp_path_factory):
    root = tmp_path_factory.mktemp("crashed")
    common = _common(root)
    reference = train_and_evaluate(TrainConfig(model_dir=str(root / "a"), **common),
                                   log=lambda *_: None)
    with pytest.MonkeyPatch.context() as monkeypatch:
        train_killed_at_step(TrainConfig(model_dir=str(root / "b"), **common), 17,
                             monkeypatch)
    return common, reference, root / "b"


@pytest.fixture
def crashed_run(tmp_path, _crashed_once):
    """A run killed at step 17 (its backup holds step 16; a copy of its own for the
    test) and its uninterrupted twin."""
    common, reference, killed = _crashed_once
    shutil.copytree(killed, tmp_path / "b")
    return common, reference, tmp_path / "b"


def test_a_packed_run_resumes_elsewhere_and_ends_like_an_uninterrupted_one(
        tmp_path, crashed_run):
    common, reference, killed = crashed_run
    archive = tmp_path / "carry" / "run.tar.gz"
    packed = pack_run(str(killed), str(archive))
    assert packed["step"] == 16
    assert sorted(packed["files"]) == ["backup/state.json",
                                       "backup/step-0000000016.weights.h5",
                                       "evaluations.json", "history.json"]
    assert packed["bytes"] == os.path.getsize(archive)
    # Another machine: a fresh directory, nothing of the original run.
    elsewhere = tmp_path / "elsewhere"
    assert unpack_run(str(archive), str(elsewhere))["step"] == 16
    assert read_backup_state(str(elsewhere / "backup"))["step"] == 16
    logs = []
    resumed = train_and_evaluate(TrainConfig(model_dir=str(elsewhere), **common),
                                 log=logs.append)
    assert any("resuming from the backup of epoch 1, step 6 of the next (16 steps "
               "done)" in line for line in logs), logs
    assert int(resumed["model"].optimizer.iterations) == 30
    for a, b in zip(resumed["model"].weights, reference["model"].weights):
        np.testing.assert_allclose(keras.ops.convert_to_numpy(a),
                                   keras.ops.convert_to_numpy(b), rtol=1e-5, atol=1e-6)
    # the history and the periodic evaluation made before the kill came along
    assert len(resumed["history"]["loss"]) == 3
    assert resumed["history"]["loss"][0] == pytest.approx(
        reference["history"]["loss"][0], rel=1e-6)
    steps = [e["step"] for e in resumed["details"]["periodic_evaluations"]]
    assert steps == [10, 20, 30]
    assert resumed["details"]["periodic_evaluations"][0]["accuracy"] == pytest.approx(
        reference["details"]["periodic_evaluations"][0]["accuracy"], abs=1e-9)
    # a trained run packs its model instead (the backup is gone once it is saved)
    finished = pack_run(str(elsewhere), str(tmp_path / "trained.tar.gz"))
    assert finished["step"] is None and "trained.keras" in finished["files"]


def test_unpack_refuses_to_replace_a_run_unless_asked(tmp_path, crashed_run):
    _, _, killed = crashed_run
    archive = str(tmp_path / "run.tar.gz")
    pack_run(str(killed), archive)
    with pytest.raises(RunArchiveError, match="already holds a run"):
        unpack_run(archive, str(killed))
    # overwrite: the backup is the archive's, and nothing of the replaced run (an
    # older step file, its final model and metrics) stays behind
    state = read_backup_state(str(killed / "backup"))
    (killed / "backup" / "step-0000000099.weights.h5").write_bytes(b"stale")
    (killed / "metrics.json").write_text("{}")
    assert unpack_run(archive, str(killed), overwrite=True)["step"] == state["step"]
    assert sorted(os.listdir(killed / "backup")) == ["state.json",
                                                     "step-0000000016.weights.h5"]
    assert not (killed / "metrics.json").exists()
    assert not [n for n in os.listdir(killed) if n.startswith(".unpack-")]


def test_run_archive_errors_are_named(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunArchiveError, match="neither a step backup nor a trained"):
        pack_run(str(empty), str(tmp_path / "x.tar.gz"))
    with pytest.raises(RunArchiveError, match="no run directory"):
        pack_run(str(tmp_path / "missing"), str(tmp_path / "x.tar.gz"))
    with pytest.raises(RunArchiveError, match="no run archive"):
        unpack_run(str(tmp_path / "missing.tar.gz"), str(tmp_path / "r"))
    # a member that would land outside the run directory
    evil = tmp_path / "evil.tar.gz"
    with tarfile.open(evil, "w:gz") as tar:
        data = b"{}"
        info = tarfile.TarInfo("../outside.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    with pytest.raises(RunArchiveError, match="'../outside.json', which is not a file"):
        unpack_run(str(evil), str(tmp_path / "r"))
    assert not (tmp_path / "outside.json").exists()
    # a truncated archive
    good = tmp_path / "good"
    (good / "backup").mkdir(parents=True)
    (good / "backup" / "step-0000000001.weights.h5").write_bytes(os.urandom(4096))
    (good / "backup" / "state.json").write_text(json.dumps(
        {"epoch": 0, "batch": 1, "step": 1, "steps_per_epoch": 2,
         "weights": "step-0000000001.weights.h5"}))
    pack_run(str(good), str(tmp_path / "good.tar.gz"))
    raw = (tmp_path / "good.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(raw[: len(raw) // 2])
    (tmp_path / "garbled.tar.gz").write_bytes(raw[:100] + b"x" * 400 + raw[500:])
    for bad in ("cut.tar.gz", "garbled.tar.gz"):
        with pytest.raises(RunArchiveError, match="not a readable run archive"):
            unpack_run(str(tmp_path / bad), str(tmp_path / "r2"))
    assert not (tmp_path / "r2" / "backup").exists()
    # an archive whose state names weights it does not hold changes nothing
    partial = tmp_path / "partial.tar.gz"
    with tarfile.open(partial, "w:gz") as tar:
        tar.add(good / "backup" / "state.json", arcname="backup/state.json")
    (tmp_path / "r3" / "backup").mkdir(parents=True)
    (tmp_path / "r3" / "history.json").write_text("[]")
    with pytest.raises(RunArchiveError, match="names backup/step-0000000001.weights.h5, "
                                              "which the archive does not hold"):
        unpack_run(str(partial), str(tmp_path / "r3"), overwrite=True)
    assert (tmp_path / "r3" / "history.json").read_text() == "[]"
    assert not (tmp_path / "r3" / "backup" / "state.json").exists()
    # a live run holds its directory: packing it is refused, not copied mid-write
    with directory_lock(str(good)):
        with pytest.raises(DirectoryInUseError):
            pack_run(str(good), str(tmp_path / "busy.tar.gz"))
    assert not (tmp_path / "busy.tar.gz").exists()


def test_cli_pack_and_unpack(tmp_path, capsys):
    from absl import app
    from harness import cli_flags

    from ssl_zoo import cli
    run = tmp_path / "run"
    (run / "backup").mkdir(parents=True)
    (run / "backup" / "step-0000000003.weights.h5").write_bytes(b"w" * 100)
    (run / "backup" / "state.json").write_text(json.dumps(
        {"epoch": 1, "batch": 1, "step": 3, "steps_per_epoch": 2,
         "weights": "step-0000000003.weights.h5"}))

    def cli_main(command, *args):
        with cli_flags(*args):
            cli.main(["ssl-zoo", command])
        return capsys.readouterr()

    archive = tmp_path / "run.tar.gz"
    out = cli_main("pack", f"--model_dir={run}", f"--archive={archive}")
    assert "packed the backup of step 3" in out.out
    out = cli_main("unpack", f"--archive={archive}", f"--model_dir={tmp_path / 'there'}")
    assert "unpacked the backup of step 3" in out.out
    assert (tmp_path / "there" / "backup" / "step-0000000003.weights.h5").read_bytes() \
        == b"w" * 100
    with pytest.raises(SystemExit) as exit_:      # a named error, exit status 2
        cli_main("unpack", f"--archive={archive}", f"--model_dir={tmp_path / 'there'}")
    assert exit_.value.code == 2
    assert "ssl-zoo unpack: error:" in capsys.readouterr().err
    out = cli_main("unpack", f"--archive={archive}", f"--model_dir={tmp_path / 'there'}",
                   "--overwrite")
    assert "unpacked the backup of step 3" in out.out
    with pytest.raises(app.UsageError, match="--model_dir and --archive are required"):
        cli_main("pack", f"--model_dir={run}")
