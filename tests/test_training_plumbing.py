"""Training plumbing of milestone 2: optimizer recipes, periodic evaluation (median of
the last N and best, kept across a resume), semi-supervised streams from the registry."""

import dataclasses
import json
import os

import keras
import numpy as np
import pytest

from ssl_zoo.data import load_arrays
from ssl_zoo.models import get_method
from ssl_zoo.optimizers import CoupledSGD, make_optimizer
from ssl_zoo.training import (PeriodicEvaluation, TrainConfig, make_train_stream,
                              resolve_backbone,
                              resolve_recipe, semi_supervised_split, train_and_evaluate)


def test_coupled_sgd_matches_pytorch_sgd_with_weight_decay():
    """Reference: torch.optim.SGD(lr, momentum, nesterov, weight_decay) written in numpy."""
    lr, m, wd = 0.1, 0.9, 5e-4
    rng = np.random.RandomState(0)
    w0 = rng.normal(size=4)
    grads = [rng.normal(size=4) for _ in range(3)]
    for nesterov in (False, True):
        w, buf = w0.copy(), None
        for g in grads:
            d = g + wd * w
            buf = d if buf is None else m * buf + d
            w = w - lr * (d + m * buf if nesterov else buf)
        var = keras.Variable(w0.astype("float32"))
        opt = CoupledSGD(lr, momentum=m, nesterov=nesterov, l2=wd)
        for g in grads:
            opt.apply_gradients([(keras.ops.convert_to_tensor(g.astype("float32")), var)])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(var), w, rtol=1e-5)


def test_coupled_decay_is_about_ten_times_the_decoupled_one():
    """DESIGN.md: at lr 0.1, momentum 0.9 a zero-gradient step shrinks weights by
    ~1e-4 (coupled, once the momentum has built up: lr wd / (1 - m)) vs 1e-5."""
    step = {}
    for mode in ("coupled", "decoupled"):
        var = keras.Variable([1.0])
        opt = make_optimizer(0.1, 200, "constant", weight_decay=1e-4,
                             weight_decay_mode=mode, nesterov=False)
        for _ in range(200):   # zero gradients: only the decay moves the weight
            before = float(var[0])
            opt.apply_gradients([(keras.ops.zeros((1,)), var)])
        step[mode] = (before - float(var[0])) / before
    assert step["decoupled"] == pytest.approx(1e-5, rel=0.05)
    assert step["coupled"] == pytest.approx(1e-4, rel=0.05)


def test_recipes_resolve_defaults_method_then_caller():
    daso = get_method("daso")
    recipe = resolve_recipe(TrainConfig(method="daso"), daso)
    assert recipe["learning_rate"] == 0.03 and recipe["weight_decay_mode"] == "coupled"
    assert recipe["schedule"] == "constant"
    assert resolve_recipe(TrainConfig(weight_decay=0.0), daso)["weight_decay"] == 0.0
    authors = {"learning_rate": 0.1, "momentum": 0.9, "nesterov": False,
               "weight_decay": 1e-4, "weight_decay_mode": "coupled", "schedule": "step"}
    for name in ("supervised", "sla", "sla_no_sd", "da", "mt"):   # the SLA authors'
        spec = get_method(name)
        recipe = resolve_recipe(TrainConfig(method=name), spec)
        assert {k: recipe[k] for k in authors} == authors, name
        assert resolve_backbone(TrainConfig(method=name), spec) == "resnet32_cifar_a"
        assert spec.data_kwargs == {"pad_mode": "constant"}
    for name in ("supcon", "simclr"):   # the SupCon authors' main_supcon.py
        recipe = resolve_recipe(TrainConfig(method=name), get_method(name))
        assert (recipe["nesterov"], recipe["weight_decay_mode"], recipe["schedule"]) == \
            (False, "coupled", "cosine")
    assert resolve_backbone(TrainConfig(), get_method("fixmatch")) == "wrn28_2"
    assert resolve_backbone(TrainConfig(), get_method("supcon")) == "resnet32_cifar"
    assert resolve_backbone(TrainConfig(backbone="wrn28_2"), get_method("sla")) == "wrn28_2"


def test_the_authors_zero_padded_crop_reaches_the_labeled_stream():
    """The SLA family's stream crops from zero padding (the authors' RandomCrop(32,
    padding=4)); `pad_mode="reflect"` from the caller restores reflection; an option the
    view does not take is a named error, a method's own is left out for such a view."""
    from ssl_zoo.data.sources.arrays import from_arrays
    images = np.full((8, 8, 8, 3), 200, np.uint8)
    data = from_arrays(images, np.arange(8) % 2, num_classes=2)
    sla = get_method("sla")

    def batch(**kw):
        ds = make_train_stream(sla, data, 8, seed=3, **kw)
        return next(iter(ds))[0].numpy()

    zero = batch()
    assert (zero == 0).any() and set(np.unique(zero)) <= {0.0, 200.0}
    assert (batch(pad_mode="reflect") == 200).all()   # reflect of a constant image
    assert (make_train_stream(sla, data, 8, view="none").take(1).get_single_element()[0]
            .numpy() == 200).all()       # "none" takes no pad_mode: the method's is left out
    with pytest.raises(ValueError, match=r"Unknown data options \['pad'\] for the 'supcon'"):
        make_train_stream(sla, data, 8, view="supcon", pad=2)


class FixedModel(keras.Model):
    """Predicts class `self.k` for every image."""

    def __init__(self, num_classes=3):
        super().__init__()
        self.num_classes = num_classes
        self.k = self.add_weight(shape=(), dtype="int32", initializer="zeros",
                                 trainable=False)

    def call(self, images, training=False):
        n = keras.ops.shape(images)[0]
        return keras.ops.one_hot(keras.ops.full((n,), self.k, "int32"), self.num_classes)


def test_periodic_evaluation_median_best_and_resume(tmp_path):
    labels = np.array([0, 0, 1, 2])
    test = (np.zeros((4, 2, 2, 3), "float32"), labels)
    model = FixedModel()
    model.compile(optimizer=keras.optimizers.SGD())
    path = os.path.join(tmp_path, "evaluations.json")
    callback = PeriodicEvaluation(test, 3, every=2, keep=2, path=path)
    callback.set_model(model)
    accuracies = []
    for step, k in ((2, 0), (4, 1), (6, 2)):
        model.optimizer.iterations.assign(step)
        model.k.assign(k)
        callback.on_train_batch_end(0)
        accuracies.append(float(np.mean(labels == k)))
    model.optimizer.iterations.assign(7)
    callback.on_train_batch_end(0)                      # not a multiple of 2: no eval
    summary = callback.summary()
    assert summary["evaluations"] == 3
    assert summary["median2_accuracy"] == pytest.approx(np.median(accuracies[-2:]))
    assert summary["best_accuracy"] == pytest.approx(max(accuracies))
    # a resumed run reads the evaluations back and forgets those past its step
    assert [row["step"] for row in json.load(open(path))] == [2, 4, 6]
    resumed = PeriodicEvaluation(test, 3, every=2, keep=2, path=path)
    resumed.set_model(model)
    model.optimizer.iterations.assign(4)
    resumed.on_train_begin()
    assert [row["step"] for row in resumed.history] == [2, 4]


def test_periodic_knn_evaluation_of_an_encoder(tmp_path):
    """protocol='knn' scores an encoder's features by weighted kNN against the training
    images, under knn_-prefixed names (the evaluator's k and temperature are not
    metrics), equal to `knn_evaluate` on the same model."""
    from ssl_zoo.evaluation import knn_evaluate
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1, 2], 6)
    images = (np.eye(3)[labels][:, None, None, :] * 200 + rng.uniform(0, 80, (18, 2, 2, 3))
              ).astype("float32")
    train, test = (images[::2], labels[::2]), (images[1::2], labels[1::2])
    model = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.GlobalAveragePooling2D(),
                              keras.layers.Dense(4)])
    model.compile(optimizer=keras.optimizers.SGD())
    callback = PeriodicEvaluation(test, 3, every=1, train=train, protocol="knn",
                                  path=os.path.join(tmp_path, "evaluations.json"))
    callback.set_model(model)
    model.optimizer.iterations.assign(1)
    callback.on_train_batch_end(0)
    row = callback.history[0]
    reference = knn_evaluate(model, train, test, 3)
    assert row["knn_accuracy"] == pytest.approx(reference["accuracy"], abs=1e-12)
    assert row["knn_balanced_accuracy"] == pytest.approx(reference["balanced_accuracy"])
    assert "accuracy" not in row and "knn_k" not in row and "knn_temperature" not in row
    assert callback.summary()["best_knn_accuracy"] == row["knn_accuracy"]
    with pytest.raises(ValueError, match="Unknown evaluator 'nope'; known evaluators:"):
        PeriodicEvaluation(test, 3, every=1, train=train, protocol="nope")
    with pytest.raises(ValueError, match="the 'knn' evaluation needs the training data"):
        PeriodicEvaluation(test, 3, every=1, protocol="knn")


def test_an_encoder_run_gets_a_knn_learning_curve(tmp_path):
    """eval_every on SupCon (no classifier) records the kNN monitor every N steps;
    asking it for the 'direct' protocol is a named error."""
    cfg = TrainConfig(method="supcon", dataset="digits", backbone="vgg_tile",
                      width=0.0625, epochs=2, steps_per_epoch=2, batch_size=16,
                      max_train_examples=64, max_test_examples=32, verbose=0,
                      eval_every=2, eval_keep=1, cache_dir=str(tmp_path / "cache"),
                      method_kwargs={"projection_dim": 8})
    logs = []
    out = train_and_evaluate(cfg, log=logs.append)
    rows = out["details"]["periodic_evaluations"]
    assert [r["step"] for r in rows] == [2, 4]
    assert all(0.0 <= r["knn_accuracy"] <= 1.0 for r in rows)
    assert out["metrics"]["median1_knn_accuracy"] == rows[-1]["knn_accuracy"]
    assert any(line.startswith("step 4: knn accuracy") for line in logs), logs
    with pytest.raises(ValueError, match="eval_protocol='direct' scores the model's own "
                                         "predictions; supcon has none"):
        train_and_evaluate(dataclasses.replace(cfg, eval_protocol="direct"),
                           log=lambda *_: None)


def test_semi_supervised_split_and_stream_from_the_registry():
    train = load_arrays("digits", "train")
    lab, unl = semi_supervised_split(train, num_labeled_head=40, imbalance_ratio=10,
                                     num_unlabeled_head=80,
                                     unlabeled_distribution="reversed")
    lab_counts = np.bincount(lab.labels, minlength=10)
    unl_counts = np.bincount(unl.labels, minlength=10)
    assert lab_counts[0] == 40 and lab_counts[-1] == 4
    assert unl_counts[-1] == 80 and unl_counts[0] == 8        # reversed
    ds = make_train_stream(get_method("daso"), train, 8, seed=0)
    x, y = next(iter(ds))
    assert x["unlabeled_weak"].shape[0] == 16 == x["unlabeled_strong"].shape[0]  # mu=2
    assert "unlabeled_labels" in x and y.shape == (8,)


def test_daso_trains_from_the_cli_plumbing_on_a_long_tailed_split(tmp_path):
    out = train_and_evaluate(TrainConfig(
        method="daso", dataset="digits", backbone="vgg_tile", width=0.0625, epochs=2,
        steps_per_epoch=3, batch_size=8, eval_every=3, eval_keep=2, verbose=0,
        model_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"),
        max_test_examples=64,
        method_kwargs={"warmup_steps": 2, "count_window": 2, "queue_size": 8},
        data_kwargs={"num_labeled_head": 40, "imbalance_ratio": 10,
                     "num_unlabeled_head": 80}), log=lambda *_: None)
    m, details = out["metrics"], out["details"]
    for key in ("accuracy", "balanced_accuracy", "few_shot_accuracy",
                "median2_accuracy", "best_balanced_accuracy"):
        assert 0.0 <= m[key] <= 1.0, key
    assert len(details["periodic_evaluations"]) == 2
    for name in ("pseudo_label", "linear_pseudo_label", "semantic_pseudo_label"):
        assert len(details[name]["recall"]) == 10
    saved = json.load(open(tmp_path / "metrics.json"))
    assert saved["optimizer"]["weight_decay_mode"] == "coupled"
    assert saved["details"]["recall_per_class"] == details["recall_per_class"]
    model = keras.models.load_model(tmp_path / "model.keras")
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(model.labeler.counts),
                                  keras.ops.convert_to_numpy(out["model"].labeler.counts))


def test_a_labeled_batch_larger_than_the_labeled_split_is_logged(tmp_path):
    logs = []
    train_and_evaluate(TrainConfig(
        method="fixmatch", dataset="digits", backbone="vgg_tile", width=0.0625, epochs=1,
        steps_per_epoch=1, batch_size=16, verbose=0, max_test_examples=16,
        cache_dir=str(tmp_path / "cache"),
        data_kwargs={"labeled_per_class": 1, "mu": 1}), log=logs.append)
    assert any("labeled split: 10 images" in line for line in logs), logs
    assert any("the labeled batch (16) is larger than the labeled split (10 images)"
               in line for line in logs), logs


def test_a_run_that_failed_after_training_is_evaluated_not_retrained(tmp_path,
                                                                      monkeypatch):
    """The backup is dropped once training ends: a failure in evaluation must not
    throw the finished training away. A rerun of the same config evaluates the
    model it trained; another config trains anew."""
    import ssl_zoo.training as training
    cfg = TrainConfig(method="supervised", dataset="digits", backbone="vgg_tile",
                      width=0.0625, epochs=1, steps_per_epoch=2, batch_size=16,
                      max_train_examples=64, max_test_examples=32, verbose=0,
                      eval_every=1, model_dir=str(tmp_path),
                      cache_dir=str(tmp_path / "cache"))

    def broken(*args, **kwargs):
        raise RuntimeError("evaluation crashed")

    real = training.evaluate
    monkeypatch.setattr(training, "evaluate", broken)
    with pytest.raises(RuntimeError, match="evaluation crashed"):
        train_and_evaluate(cfg, log=lambda *_: None)
    assert (tmp_path / "trained.keras").exists() and not (tmp_path / "model.keras").exists()
    trained = keras.models.load_model(tmp_path / "trained.keras")

    monkeypatch.setattr(training, "evaluate", real)
    logs = []
    out = train_and_evaluate(cfg, log=logs.append)
    assert any("training finished earlier" in line for line in logs), logs
    assert int(out["model"].optimizer.iterations) == 2
    for a, b in zip(out["model"].weights, trained.weights):
        np.testing.assert_array_equal(keras.ops.convert_to_numpy(a),
                                      keras.ops.convert_to_numpy(b))
    assert 0.0 <= out["metrics"]["accuracy"] <= 1.0 and len(out["history"]["loss"]) == 1
    # what training recorded comes back with it: the evaluations made during
    # training (steps 1 and 2) and the training time, not this call's
    assert [e["step"] for e in out["details"]["periodic_evaluations"]] == [1, 2]
    assert out["metrics"]["evaluations"] == 2.0
    record = json.load(open(tmp_path / "trained.json"))
    assert out["train_seconds"] == record["train_seconds"] > 0
    assert json.load(open(tmp_path / "metrics.json"))["train_seconds"] == out["train_seconds"]

    # the same run named by a relative path, reported otherwise, is still finished
    monkeypatch.chdir(tmp_path.parent)
    logs.clear()
    train_and_evaluate(dataclasses.replace(cfg, model_dir=tmp_path.name, verbose=2,
                                           backup_every=5), log=logs.append)
    assert any("training finished earlier" in line for line in logs), logs

    logs.clear()
    train_and_evaluate(dataclasses.replace(cfg, steps_per_epoch=3), log=logs.append)
    assert not any("training finished earlier" in line for line in logs)
    assert any("holds a model trained with other settings (steps_per_epoch: 2 there, 3 "
               "here): training anew" in line for line in logs), logs


def test_a_model_dir_in_use_is_refused_and_a_killed_holder_leaves_no_lock(tmp_path):
    import subprocess
    import sys
    import time
    from ssl_zoo.utils.io import DirectoryInUseError, directory_lock
    cfg = TrainConfig(method="supervised", dataset="digits", backbone="vgg_tile",
                      width=0.0625, epochs=1, steps_per_epoch=1, batch_size=8,
                      max_train_examples=16, max_test_examples=8, verbose=0,
                      model_dir=str(tmp_path), cache_dir=str(tmp_path / "cache"))
    with directory_lock(str(tmp_path)):
        with pytest.raises(DirectoryInUseError, match=r"is in use by another run \(pid"):
            train_and_evaluate(cfg, log=lambda *_: None)
    assert not (tmp_path / "model.keras").exists()
    # Another process takes the lock (the real helper, loaded without TensorFlow) and
    # is killed with SIGKILL: the lock goes with it.
    io_path = os.path.join(os.path.dirname(__file__), "..", "ssl_zoo", "utils", "io.py")
    script = (
        "import importlib.util, sys, time\n"
        f"spec = importlib.util.spec_from_file_location('io_mod', {io_path!r})\n"
        "io = importlib.util.module_from_spec(spec); spec.loader.exec_module(io)\n"
        f"with io.directory_lock({str(tmp_path)!r}):\n"
        "    print('locked', flush=True); time.sleep(60)\n")
    holder = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(DirectoryInUseError, match=f"pid {holder.pid}"):
            with directory_lock(str(tmp_path)):
                pass
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    out = train_and_evaluate(cfg, log=lambda *_: None)
    assert (tmp_path / "model.keras").exists() and out["metrics"]
    with directory_lock(str(tmp_path)):   # released after the run
        pass


def test_a_nan_input_stops_training_naming_the_step_and_saves_nothing(tmp_path):
    from ssl_zoo.models import SupervisedModel
    from ssl_zoo.training import (AtomicModelCheckpoint, NonFiniteError, StopOnNonFinite,
                                  check_finite_weights)
    rng = np.random.RandomState(0)
    x = rng.uniform(0, 255, (12, 8, 8, 3)).astype("float32")
    y = np.arange(12) % 3
    x[9, 2, 3, 1] = np.nan                       # in the 3rd batch of 4
    model = SupervisedModel("vgg_tile", num_classes=3, width=0.0625)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    path = tmp_path / "checkpoint.keras"
    with pytest.raises(NonFiniteError, match=r"became nan at step 3 \(batch 2 of"):
        model.fit(x, y, batch_size=4, epochs=2, shuffle=False, verbose=0,
                  callbacks=[StopOnNonFinite(), AtomicModelCheckpoint(str(path))])
    assert not path.exists()
    with pytest.raises(NonFiniteError, match="holds NaN/Inf at the end"):
        check_finite_weights(model, "the end of epoch 1")


def test_bfloat16_runs_and_the_callers_policy_is_restored(tmp_path):
    keras.mixed_precision.set_global_policy("float32")
    out = train_and_evaluate(TrainConfig(
        method="supervised", dataset="digits", backbone="vgg_tile", width=0.0625,
        epochs=1, steps_per_epoch=2, batch_size=16, max_train_examples=64,
        max_test_examples=32, verbose=0, mixed_precision="bfloat16",
        cache_dir=str(tmp_path / "cache")), log=lambda *_: None)
    assert out["model"].dtype_policy.name == "mixed_bfloat16"
    assert np.isfinite(out["history"]["loss"]).all()
    assert keras.mixed_precision.global_policy().name == "float32"
    with pytest.raises(ValueError, match="mixed_precision must be"):
        train_and_evaluate(TrainConfig(mixed_precision="int8"))


def test_a_run_that_fails_before_writing_leaves_no_model_dir(tmp_path):
    model_dir = tmp_path / "new_run"
    with pytest.raises(ValueError, match="Unknown data options"):
        train_and_evaluate(TrainConfig(
            method="supervised", dataset="digits", backbone="vgg_tile", width=0.0625,
            epochs=1, steps_per_epoch=1, batch_size=8, verbose=0,
            model_dir=str(model_dir), cache_dir=str(tmp_path / "cache"),
            data_kwargs={"mu": 2}), log=lambda *_: None)
    assert not model_dir.exists()
