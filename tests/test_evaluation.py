"""ssl_zoo.evaluation: metrics against sklearn and hand-computed values, long-tail
groups, kNN against a brute-force reference, feature extraction, every evaluator."""

import math
import warnings

import keras
import numpy as np
import pytest
import tensorflow as tf
from sklearn import metrics as skm

from ssl_zoo.evaluation import (EVALUATORS, FeatureExtractor, class_counts,
                                classification_metrics, confusion_matrix, evaluate,
                                extract_features, get_evaluator, knn_predict, nmi,
                                register_evaluator, shot_groups)
from ssl_zoo.models import LinearProbe, SupervisedModel


# ------------------------------------------------------------------------ metrics
def test_hand_computed_metrics():
    labels = [0, 0, 0, 0, 1, 1, 2]
    predictions = [0, 0, 1, 2, 1, 0, 2]
    m = classification_metrics(labels, predictions, num_classes=4)
    assert m["accuracy"] == pytest.approx(4 / 7)
    assert m["recall_per_class"] == pytest.approx([0.5, 0.5, 1.0, None])
    assert m["precision_per_class"] == pytest.approx([2 / 3, 0.5, 0.5, None])
    assert m["balanced_accuracy"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    assert m["geometric_mean_recall"] == pytest.approx((0.5 * 0.5 * 1.0) ** (1 / 3))
    assert m["confusion_matrix"] == [[2, 1, 1, 0], [1, 1, 0, 0], [0, 0, 1, 0],
                                     [0, 0, 0, 0]]
    assert m["absent_classes"] == [3]
    # a class never recognised: its recall is 0, so is the geometric mean
    assert classification_metrics([0, 1], [0, 0], 2)["geometric_mean_recall"] == 0.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_metrics_match_sklearn(seed):
    rng = np.random.default_rng(seed)
    num_classes = 6
    labels = rng.integers(0, 5, 200)                   # class 5 never in the test set
    predictions = np.where(rng.random(200) < 0.6, labels, rng.integers(0, 6, 200))
    m = classification_metrics(labels, predictions, num_classes)
    np.testing.assert_array_equal(
        m["confusion_matrix"],
        skm.confusion_matrix(labels, predictions, labels=range(num_classes)))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")       # "y_pred has classes not in y_true"
        assert m["balanced_accuracy"] == pytest.approx(
            skm.balanced_accuracy_score(labels, predictions))
    assert m["accuracy"] == pytest.approx(skm.accuracy_score(labels, predictions))
    recall = skm.recall_score(labels, predictions, labels=range(5), average=None)
    assert m["recall_per_class"][:5] == pytest.approx(recall.tolist())
    assert m["recall_per_class"][5] is None and m["absent_classes"] == [5]
    precision = skm.precision_score(labels, predictions, labels=range(num_classes),
                                    average=None, zero_division=np.nan)
    expected = [None if np.isnan(p) else p for p in precision]
    assert m["precision_per_class"] == pytest.approx(expected)
    assert m["geometric_mean_recall"] == pytest.approx(np.prod(recall) ** (1 / 5))


def test_no_nan_anywhere_with_absent_and_unpredicted_classes():
    m = classification_metrics([0, 0, 1], [0, 0, 0], 4, train_counts=[500, 50, 5, 3])
    for key, value in m.items():
        values = value if isinstance(value, list) else [value]
        for v in np.ravel(np.array(values, dtype=object)):
            assert v is None or math.isfinite(v), (key, value)
    assert m["few_shot_accuracy"] is None and m["few_shot_classes"] == 2


def test_confusion_matrix_and_class_checks():
    assert confusion_matrix([1, 1], [0, 1], 2).tolist() == [[0, 0], [1, 1]]
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        classification_metrics([0, 3], [0, 1], 3)
    with pytest.raises(ValueError, match=r"class indices in \[0, 3\)"):
        classification_metrics([0, 1], [0, -1], 3)
    with pytest.raises(ValueError, match="differ in shape"):
        confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match="at least one label"):
        classification_metrics([], [], 3)
    with pytest.raises(ValueError, match="3 counts"):
        classification_metrics([0], [0], 3, train_counts=[1, 2])


def test_many_medium_few_groups():
    counts = [101, 100, 99, 20, 19, 0, 5000]
    groups = shot_groups(counts)
    assert {k: v.tolist() for k, v in groups.items()} == {
        "many": [0, 6], "medium": [1, 2, 3], "few": [4, 5]}
    custom = shot_groups(counts, many_shot=50, few_shot=10)
    assert {k: v.tolist() for k, v in custom.items()} == {
        "many": [0, 1, 2, 6], "medium": [3, 4], "few": [5]}
    assert shot_groups(counts, many_shot=99, few_shot=100)["medium"].tolist() == []
    with pytest.raises(ValueError, match="few_shot"):
        shot_groups(counts, many_shot=10, few_shot=50)

    # per class: 0 -> 2/2, 1 -> 1/2, 2 -> 0/1, 3 -> 1/1; class 4 absent from the test
    labels = [0, 0, 1, 1, 2, 3]
    predictions = [0, 0, 1, 0, 1, 3]
    counts = [300, 150, 50, 10, 1]
    m = classification_metrics(labels, predictions, 5, train_counts=counts)
    assert m["many_shot_accuracy"] == pytest.approx((1.0 + 0.5) / 2)
    assert m["medium_shot_accuracy"] == pytest.approx(0.0)
    assert m["few_shot_accuracy"] == pytest.approx(1.0)      # class 4 has no test image
    assert (m["many_shot_classes"], m["medium_shot_classes"], m["few_shot_classes"]) \
        == (2, 1, 2)
    m = classification_metrics(labels, predictions, 5, train_counts=counts,
                               many_shot=200, few_shot=40)
    assert m["many_shot_accuracy"] == 1.0 and m["medium_shot_accuracy"] == 0.25
    assert m["few_shot_accuracy"] == 1.0
    np.testing.assert_array_equal(class_counts([0, 2, 2, 2], 3), [1, 0, 3])


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_nmi_matches_sklearn(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 1 + seed * 3, 120)
    b = np.where(rng.random(120) < 0.5, a * 7 + 3, rng.integers(0, 5, 120))
    assert nmi(a, b) == pytest.approx(skm.normalized_mutual_info_score(a, b), abs=1e-12)
    assert nmi(b, a) == pytest.approx(nmi(a, b), abs=1e-12)


def test_nmi_edge_cases():
    assert nmi([3, 3, 3], [1, 1, 1]) == 1.0 == skm.normalized_mutual_info_score(
        [3, 3, 3], [1, 1, 1])
    assert nmi([0, 0, 0, 0], [0, 1, 2, 3]) == 0.0
    assert nmi(["a", "b", "a", "b"], [1, 0, 1, 0]) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="same length"):
        nmi([0, 1], [0])


# ----------------------------------------------------------------------------- kNN
def knn_reference(train, train_labels, queries, num_classes, k, temperature):
    """Brute force, one query at a time: stable sort puts lower indices first.

    Cosine similarities in float64 rounded to float32, as `knn_predict` defines them.
    """
    train = np.asarray(train, np.float64)
    train = train / np.linalg.norm(train, axis=1, keepdims=True)
    predictions = []
    for q in np.asarray(queries, np.float64):
        sim = (train @ (q / np.linalg.norm(q))).astype(np.float32)
        nearest = np.argsort(-sim, kind="stable")[:k]
        weights = np.exp(sim[nearest].astype(np.float64) / temperature)
        scores = np.bincount(train_labels[nearest], weights=weights,
                             minlength=num_classes)
        predictions.append(np.argmax(scores))
    return np.array(predictions)


@pytest.mark.parametrize("k,temperature", [(1, 0.07), (7, 0.07), (25, 0.5), (500, 1.0)])
def test_knn_matches_brute_force(k, temperature):
    rng = np.random.default_rng(k)
    centres = rng.normal(size=(4, 8))
    train_labels = rng.integers(0, 4, 120)
    train = centres[train_labels] + rng.normal(scale=1.5, size=(120, 8))
    queries = rng.normal(size=(37, 8)) * 2
    ours = knn_predict(train, train_labels, queries, 4, k=k, temperature=temperature)
    ref = knn_reference(train, train_labels, queries, 4, min(k, 120), temperature)
    np.testing.assert_array_equal(ours, ref)
    assert ours.dtype == np.int64 and len(set(ours.tolist())) > 1
    for chunk in (1, 5, 36, 1000):           # chunking never changes the result
        np.testing.assert_array_equal(
            knn_predict(train, train_labels, queries, 4, k=k, temperature=temperature,
                        chunk_size=chunk), ours)


def test_knn_ties_are_deterministic():
    a, b = [1.0, 0.0], [0.0, 1.0]
    # three copies of `a` tie for the one neighbour: the lowest index (label 2) wins
    train = np.array([b, a, a, a], "float32")
    labels = np.array([0, 2, 1, 1])
    assert knn_predict(train, labels, [a], 3, k=1).tolist() == [2]
    # k=2 takes indices 1 and 2: labels 2 and 1 score the same, the lower class wins
    assert knn_predict(train, labels, [a], 3, k=2).tolist() == [1]
    assert knn_reference(train, labels, np.array([a]), 3, 2, 0.07).tolist() == [1]
    # k=3: class 1 has two votes
    assert knn_predict(train, labels, [a], 3, k=3).tolist() == [1]
    # many identical features and queries, chunked any way
    train = np.repeat(np.array([a, b, a, b], "float32"), 5, axis=0)
    labels = np.arange(20) % 3
    queries = np.array([a, b, a, [1.0, 1.0]] * 3, "float32")
    ref = knn_reference(train, labels, queries, 3, 7, 0.07)
    for chunk in (1, 2, 5, 12):
        np.testing.assert_array_equal(
            knn_predict(train, labels, queries, 3, k=7, chunk_size=chunk), ref)


@pytest.mark.parametrize("seed", range(4))
def test_knn_many_tied_neighbours_match_the_stable_reference(seed):
    # 3 distinct directions repeated with random labels: the k-th neighbour is tied
    # with dozens of others, and which ones are taken decides the vote.
    rng = np.random.default_rng(seed)
    directions = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]], "float32")
    train = directions[rng.integers(0, 3, 90)]
    labels = rng.integers(0, 5, 90)
    queries = np.concatenate([directions, rng.normal(size=(9, 2))]).astype("float32")
    for k in (4, 11, 40):
        ref = knn_reference(train, labels, queries, 5, k, 0.07)
        for chunk in (1, 4, 256):
            np.testing.assert_array_equal(
                knn_predict(train, labels, queries, 5, k=k, chunk_size=chunk), ref)


def test_knn_errors():
    with pytest.raises(ValueError, match="2 training features and 3 labels"):
        knn_predict(np.eye(2), [0, 1, 1], np.eye(2), 2)
    with pytest.raises(ValueError, match="dimensions"):
        knn_predict(np.eye(2), [0, 1], np.eye(3), 2)
    with pytest.raises(ValueError, match=r"labels in \[0, 2\)"):
        knn_predict(np.eye(2), [0, 2], np.eye(2), 2)
    with pytest.raises(ValueError, match="k >= 1"):
        knn_predict(np.eye(2), [0, 1], np.eye(2), 2, k=0)


# ------------------------------------------------------------------------ features
@pytest.fixture(scope="module")
def tiny():
    """A tiny supervised model and separable 16x16 images, 3 classes."""
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    labels = np.arange(24) % 3
    colours = np.array([[30, 30, 30], [220, 220, 220], [220, 30, 30]], "float32")
    images = (colours[labels][:, None, None, :]
              + rng.normal(0, 10, (24, 16, 16, 3))).clip(0, 255).astype("float32")
    model = SupervisedModel("resnet32_cifar", num_classes=3, width=0.25)
    model(images[:1])
    return model, (images[:18], labels[:18]), (images[18:], labels[18:])


def test_extract_features_from_a_named_layer(tiny):
    model, train, _ = tiny
    images, labels = train
    backbone = model.backbone
    sub = keras.Model(backbone.inputs, backbone.get_layer("stage2_block1_out").output)
    expected = keras.ops.convert_to_numpy(sub(model.normalizer(images), training=False))
    features, y = extract_features(model, train, batch_size=5,
                                   layer="stage2_block1_out")
    assert features.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(features, expected.reshape(len(images), -1), rtol=1e-4,
                               atol=1e-5)
    np.testing.assert_array_equal(y, labels)
    # the last layer of the backbone is the default features; a LinearProbe's too
    default, _ = extract_features(model, train)
    np.testing.assert_allclose(extract_features(model, train, layer="pool")[0], default,
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(
        extract_features(LinearProbe(model, 3), train, layer="pool")[0], default,
        rtol=1e-5, atol=1e-6)
    # a plain functional model: its own layers
    plain, _ = extract_features(backbone, train, layer="stage3_block5_out")
    assert plain.shape == (len(images), 4 * 4 * backbone.output_shape[-1])
    with pytest.raises(ValueError, match="has no layer 'nope'.*stage1_block1_out"):
        extract_features(model, train, layer="nope")
    with pytest.raises(ValueError, match="functional backbone"):
        FeatureExtractor(keras.Sequential([keras.layers.Flatten()]), layer="flatten")


def test_extract_features_from_tf_data_with_progress(tiny, capsys):
    model, train, _ = tiny
    ref, ref_labels = extract_features(model, train, batch_size=4)
    ds = tf.data.Dataset.from_tensor_slices(train).batch(7)
    features, labels = extract_features(model, ds, progress=True)
    np.testing.assert_allclose(features, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(labels, ref_labels)
    assert "18/Unknown" in capsys.readouterr().out
    extract_features(model, train, batch_size=5, progress=True)
    assert "18/18" in capsys.readouterr().out
    layered, _ = extract_features(model, ds, layer="stage1_block1_out")
    assert layered.shape[0] == 18
    with pytest.raises(ValueError, match="empty"):
        extract_features(model, ds.take(0))


# ---------------------------------------------------------------------- evaluators
EVALUATOR_OPTIONS = {"linear_probe": {"epochs": 3, "batch_size": 8}, "knn": {"k": 5}}


def assert_finite_metrics(metrics):
    assert metrics
    for key, value in metrics.items():
        if key == "probe":   # the linear probe's trained LinearProbe
            from ssl_zoo.models import LinearProbe
            assert isinstance(value, LinearProbe)
            continue
        if isinstance(value, list):
            flat = np.ravel(np.array(value, dtype=object))
            assert all(v is None or math.isfinite(v) for v in flat), (key, value)
        elif value is not None:
            assert isinstance(value, float) and math.isfinite(value), (key, value)


def test_the_builtin_evaluators_are_registered():
    assert {"direct", "linear_probe", "knn"} <= set(EVALUATORS)


@pytest.mark.parametrize("name", sorted(EVALUATORS))
def test_every_evaluator_runs_on_a_tiny_model(tiny, name):
    model, train, test = tiny
    before = [np.array(w) for w in model.weights]
    metrics = evaluate(name, model, train, test, 3, **EVALUATOR_OPTIONS.get(name, {}))
    assert_finite_metrics(metrics)
    assert 0.0 <= metrics["accuracy"] <= 1.0
    assert len(metrics["recall_per_class"]) == 3
    assert metrics["few_shot_classes"] == 3          # 6 training images per class
    for a, b in zip(before, model.weights):
        np.testing.assert_array_equal(a, b)
    # a batched tf.data test set gives the same metrics
    ds = tf.data.Dataset.from_tensor_slices(test).batch(4)
    again = get_evaluator(name)(model, train, ds, 3, **EVALUATOR_OPTIONS.get(name, {}))
    assert again["accuracy"] == pytest.approx(metrics["accuracy"])


def test_direct_scores_the_models_own_predictions(tiny):
    model, train, test = tiny
    logits = keras.ops.convert_to_numpy(model(test[0], training=False))
    expected = classification_metrics(test[1], logits.argmax(1), 3,
                                      train_counts=class_counts(train[1], 3))
    assert evaluate("direct", model, train, test, 3) == pytest.approx(expected)
    assert "many_shot_accuracy" not in evaluate("direct", model, None, test, 3)
    with pytest.raises(ValueError, match=r"\(N, 5\) logits"):
        evaluate("direct", model, train, test, 5)


def test_unknown_and_duplicate_evaluator_names():
    with pytest.raises(ValueError, match="Unknown evaluator 'k-nn'.*direct, .*knn"):
        get_evaluator("k-nn")
    with pytest.raises(ValueError, match="Unknown evaluator 'nope'"):
        evaluate("nope", None, None, None, 2)
    with pytest.raises(ValueError, match="'knn' is already registered"):
        register_evaluator("knn")(lambda model, train, test, num_classes: {})
