"""Faults: a run killed (SIGKILL) or interrupted mid-epoch resumes from its last
step-level backup and ends like an uninterrupted run; backups are written atomically."""

import json
import os
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

import ssl_zoo.training as training
from ssl_zoo.backup import (BackupMismatchError, TrainingBackup, read_backup_state,
                            restore_backup, resume_plan)
from ssl_zoo.training import TrainConfig, train_and_evaluate

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _common(tmp_path, **kwargs):
    return {**dict(method="supervised", dataset="digits", backbone="vgg_tile",
                   width=0.0625, epochs=3, steps_per_epoch=10, batch_size=16,
                   max_test_examples=64, verbose=0, seed=3,
                   cache_dir=str(tmp_path / "cache")), **kwargs}


def _weights(model):
    return [keras.ops.convert_to_numpy(w) for w in model.weights]


def test_resume_plan_finishes_the_partial_epoch_then_the_whole_ones():
    assert resume_plan(0, 0, 3, 10) == [
        {"initial_epoch": 0, "epochs": 3, "steps_per_epoch": 10, "skip": 0,
         "batch_offset": 0}]
    plan = resume_plan(1, 4, 3, 10)
    assert [(p["initial_epoch"], p["epochs"], p["steps_per_epoch"], p["skip"])
            for p in plan] == [(1, 2, 6, 14), (2, 3, 10, 20)]
    # the steps of the plan are exactly the steps left
    assert sum((p["epochs"] - p["initial_epoch"]) * p["steps_per_epoch"]
               for p in plan) == 3 * 10 - 14
    assert [p["epochs"] for p in resume_plan(2, 9, 3, 10)] == [3]
    assert resume_plan(3, 0, 3, 10) == []


class _Crash(Exception):
    pass


def train_killed_at_step(cfg, step, monkeypatch):
    """Runs `train_and_evaluate(cfg)` until it dies after optimizer step `step`."""

    class CrashAtStep(training.StopOnNonFinite):
        def on_train_batch_end(self, batch, logs=None):
            super().on_train_batch_end(batch, logs)
            if int(self.model.optimizer.iterations) == step:
                raise _Crash("killed")

    with monkeypatch.context() as patch:
        patch.setattr(training, "StopOnNonFinite", CrashAtStep)
        with pytest.raises(_Crash):
            train_and_evaluate(cfg, log=lambda *_: None)


def test_an_interrupted_run_resumes_mid_epoch_and_ends_like_an_uninterrupted_one(
        tmp_path, monkeypatch):
    """Backups every 4 steps; the run dies at step 17 (epoch 2, batch 7): the backup
    holds step 16 (epoch 1 + 6 batches), and the resumed run trains steps 17..30 on
    the batches an uninterrupted run sees, ending with the same weights and metrics."""
    common = _common(tmp_path, backup_every=4)
    reference = train_and_evaluate(TrainConfig(model_dir=str(tmp_path / "a"), **common),
                                   log=lambda *_: None)
    killed = tmp_path / "b"
    train_killed_at_step(TrainConfig(model_dir=str(killed), **common), 17, monkeypatch)
    state = read_backup_state(str(killed / "backup"))
    assert (state["epoch"], state["batch"], state["step"]) == (1, 6, 16)

    logs = []
    resumed = train_and_evaluate(TrainConfig(model_dir=str(killed), **common),
                                 log=logs.append)
    assert any("resuming from the backup of epoch 1, step 6 of the next (16 steps "
               "done)" in line for line in logs), logs
    assert int(resumed["model"].optimizer.iterations) == 30
    for a, b in zip(_weights(resumed["model"]), _weights(reference["model"])):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    for key in ("accuracy", "balanced_accuracy", "loss"):
        assert resumed["metrics"][key] == pytest.approx(reference["metrics"][key],
                                                        abs=1e-5), key
    # the history keeps the epoch finished before the kill (read back from
    # history.json), then the partial epoch and the last one
    ref_loss, loss = reference["history"]["loss"], resumed["history"]["loss"]
    assert len(loss) == 3 == len(ref_loss)
    assert loss[0] == pytest.approx(ref_loss[0], rel=1e-6)   # written by the killed run
    assert loss[2] == pytest.approx(ref_loss[2], rel=1e-4)
    rows = json.load(open(killed / "history.json"))
    assert [r["epoch"] for r in rows] == [0, 1, 2] and all(r["seconds"] > 0 for r in rows)
    assert resumed["train_seconds"] == pytest.approx(sum(r["seconds"] for r in rows))
    assert not (killed / "backup").exists()   # the trained model replaced it


def test_a_backup_that_fails_to_write_leaves_the_previous_one(tmp_path, monkeypatch):
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    x, y = np.ones((32, 2), "float32"), np.ones(32, "float32")
    backup = TrainingBackup(str(tmp_path), steps_per_epoch=8, save_freq=2)
    model.fit(x, y, batch_size=4, epochs=1, verbose=0, callbacks=[backup])
    before = read_backup_state(str(tmp_path))
    saved = _weights(model)
    assert (before["epoch"], before["batch"], before["step"]) == (1, 0, 8)

    def dies_mid_write(self, path, *args, **kwargs):
        with open(path, "wb") as f:
            f.write(b"\x89HDF half a file")
        raise OSError("disk full")

    monkeypatch.setattr(keras.Model, "save_weights", dies_mid_write)
    with pytest.raises(OSError, match="disk full"):
        model.fit(x, y, batch_size=4, epochs=2, initial_epoch=1, verbose=0,
                  callbacks=[TrainingBackup(str(tmp_path), 8, save_freq=2)])
    monkeypatch.undo()
    assert read_backup_state(str(tmp_path)) == before
    assert sorted(os.listdir(tmp_path)) == ["state.json", "step-0000000008.weights.h5"]
    fresh = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    fresh.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    assert restore_backup(fresh, str(tmp_path), 8) == (1, 0)
    for a, b in zip(_weights(fresh), saved):
        np.testing.assert_array_equal(a, b)
    assert int(fresh.optimizer.iterations) == 8
    with pytest.raises(BackupMismatchError, match="written with 8 steps per epoch and "
                                                  "this run has 5"):
        restore_backup(fresh, str(tmp_path), 5)


def test_bad_backup_settings_are_named(tmp_path):
    with pytest.raises(ValueError, match="save_freq must be 'epoch' or an int >= 1"):
        TrainingBackup(str(tmp_path), 10, save_freq=0)
    with pytest.raises(ValueError, match="backup_every must be >= 1"):
        train_and_evaluate(TrainConfig(backup_every=0))
    (tmp_path / "state.json").write_text(json.dumps(
        {"epoch": 1, "batch": 0, "step": 4, "steps_per_epoch": 4,
         "weights": "step-0000000004.weights.h5"}))
    with pytest.raises(FileNotFoundError, match="is missing: the backup was damaged"):
        read_backup_state(str(tmp_path))


def _cli_train(args):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
    env.pop("TF_CONFIG", None)
    return subprocess.Popen([sys.executable, "-m", "ssl_zoo.cli", "train", *args],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def test_ssl_zoo_train_killed_with_sigkill_mid_epoch_resumes_from_its_step_backup(
        tmp_path):
    """The real thing: `ssl-zoo train --model_dir --backup_every` killed with SIGKILL
    in the middle of an epoch, restarted with the same command: it resumes at the
    step of its last backup and ends with the metrics of an uninterrupted seeded run
    (tolerance 1e-4)."""
    common = _common(tmp_path, epochs=3, steps_per_epoch=40, backup_every=5)
    reference = train_and_evaluate(TrainConfig(model_dir=str(tmp_path / "a"), **common),
                                   log=lambda *_: None)
    model_dir = tmp_path / "b"
    flags = [f"--{k}={v}" for k, v in common.items() if k != "verbose"]
    flags += [f"--model_dir={model_dir}"]
    proc = _cli_train(flags)
    state_path = model_dir / "backup" / "state.json"
    state = None
    try:
        deadline = time.time() + 240
        while time.time() < deadline and proc.poll() is None:
            if state_path.exists():
                # Freeze the run, then read a backup that cannot move under us.
                proc.send_signal(signal.SIGSTOP)
                state = json.loads(state_path.read_text())
                if state["batch"] > 0 and state["step"] >= 40:
                    break        # mid-epoch, after a whole epoch: kill here
                proc.send_signal(signal.SIGCONT)
                state = None
            time.sleep(0.01)
        assert state is not None, "the run ended before it could be killed mid-epoch"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.communicate()
    assert not (model_dir / "metrics.json").exists()
    resumed = _cli_train(flags)
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    assert (f"resuming from the backup of epoch {state['epoch']}, step {state['batch']} "
            f"of the next ({state['step']} steps done)") in out, out
    metrics = json.loads((model_dir / "metrics.json").read_text())["metrics"]
    for key in ("accuracy", "balanced_accuracy", "loss"):
        assert metrics[key] == pytest.approx(reference["metrics"][key], abs=1e-4), key


def test_a_truncated_cache_file_left_by_a_killed_process_is_rebuilt(tmp_path):
    import tensorflow as tf
    from ssl_zoo.data import load_arrays
    root = tmp_path / "images"
    rng = np.random.RandomState(0)
    for c in ("cat", "dog"):
        (root / "train" / c).mkdir(parents=True)
        for i in range(3):
            png = tf.io.encode_png(rng.randint(0, 256, (8, 8, 3)).astype("uint8"))
            (root / "train" / c / f"{i}.png").write_bytes(png.numpy())
    cache = tmp_path / "cache"
    first = load_arrays(str(root), "train", cache_dir=str(cache))
    images = sorted(cache.glob("*.images.npy"))
    assert len(images) == 1
    data = images[0].read_bytes()
    images[0].write_bytes(data[:len(data) // 3])       # what a kill mid-write leaves
    again = load_arrays(str(root), "train", cache_dir=str(cache))
    np.testing.assert_array_equal(again.images, first.images)
    np.testing.assert_array_equal(again.labels, first.labels)
    assert images[0].read_bytes() == data               # rebuilt, not kept truncated


def test_float16_loss_scaling_skips_overflowing_steps_and_keeps_weights_finite():
    """mixed_float16: a step whose scaled gradients overflow changes no weight and
    halves the loss scale; NaN/Inf never reaches the float32 weights."""
    from ssl_zoo.models import SupervisedModel
    keras.mixed_precision.set_global_policy("mixed_float16")
    model = SupervisedModel("vgg_tile", num_classes=3, width=0.0625)
    optimizer = keras.optimizers.LossScaleOptimizer(keras.optimizers.SGD(0.01),
                                                    initial_scale=2.0 ** 40)
    model.compile(optimizer=optimizer)
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 255, (8, 8, 8, 3)).astype("float32")
    y = np.arange(8) % 3
    model.build(x.shape)
    def trainable():
        return [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]

    before = trainable()
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    assert float(keras.ops.convert_to_numpy(optimizer.dynamic_scale)) == 2.0 ** 39
    # the overflowing step was skipped (batch-norm statistics move in the forward pass)
    for a, b in zip(trainable(), before):
        np.testing.assert_array_equal(a, b)
    model.fit(x, y, batch_size=8, epochs=40, verbose=0)   # the scale comes down, it trains
    assert all(np.isfinite(w).all() for w in _weights(model))
    after = trainable()
    assert any(not np.array_equal(a, b) for a, b in zip(after, before))
    assert float(keras.ops.convert_to_numpy(optimizer.dynamic_scale)) < 2.0 ** 39
