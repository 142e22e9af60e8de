"""JigsawModel (shared tile encoder -> concat -> fc over permutations) and knowledge
transfer by cluster classification, end to end through the training plumbing."""

import os

import keras
import numpy as np
import pytest

from harness import assert_close_to_reference, to_numpy
from ssl_zoo.data import load_arrays
from ssl_zoo.data.jigsaw import hamming_permutations
from ssl_zoo.evaluation import ClusterPseudoLabeler, cluster_pseudo_labels
from ssl_zoo.models import ClusterClassificationModel, JigsawModel, get_method
from ssl_zoo.training import TrainConfig, make_train_stream, train_and_evaluate

TINY = dict(backbone="vgg_tile", width=0.0625)


def _quiet(*_):
    pass


def _digits(n=96, seed=0):
    return load_arrays("digits", "train").random_subset(n, seed)


def test_jigsaw_logits_are_one_shared_encoder_over_the_tiles_concatenated():
    model = JigsawModel(num_permutations=5, hidden_units=(6,), **TINY)
    rng = np.random.RandomState(0)
    tiles = rng.uniform(0, 255, (2, 9, 6, 6, 3)).astype("float32")
    logits = to_numpy(model(tiles))
    # Reference: each tile through the same encoder on its own, concatenated in tile
    # order, then the dense layers in numpy.
    per_tile = [to_numpy(model.features(tiles[:, k], training=False)) for k in range(9)]
    x = np.concatenate(per_tile, axis=1)
    w1, b1 = (to_numpy(v) for v in model.hidden[0].weights)
    w2, b2 = (to_numpy(v) for v in model.classifier.weights)
    expected = np.maximum(x @ w1 + b1, 0) @ w2 + b2
    assert_close_to_reference(logits, expected, atol=1e-4, rtol=1e-4,
                              name="jigsaw logits")


def test_jigsaw_standardises_each_image_so_features_ignore_brightness_and_contrast():
    model = JigsawModel(num_permutations=3, hidden_units=(), **TINY)
    rng = np.random.RandomState(1)
    images = rng.uniform(20, 120, (3, 12, 12, 3)).astype("float32")
    a = to_numpy(model.embed(images))
    b = to_numpy(model.embed(images * 1.5 + 40.0))
    assert_close_to_reference(a, b, atol=1e-4, rtol=1e-3, name="affine-invariant embed")
    flat = to_numpy(model.embed(np.full((1, 12, 12, 3), 77.0, "float32")))
    assert np.isfinite(flat).all()


def test_permutation_set_survives_save_and_load(tmp_path):
    model = JigsawModel(num_permutations=7, permutation_seed=3, hidden_units=(4,), **TINY)
    view = model.make_view((16, 16))
    tiles, labels = view(np.random.RandomState(0).randint(0, 255, (4, 16, 16, 3)), seed=1)
    model.compile(optimizer="sgd")
    model.fit(to_numpy(tiles), to_numpy(labels), epochs=1, verbose=0)
    path = os.path.join(tmp_path, "jigsaw.keras")
    model.save(path)
    loaded = keras.saving.load_model(path)
    np.testing.assert_array_equal(loaded.permutations, model.permutations)
    np.testing.assert_array_equal(
        model.permutations, hamming_permutations(7, seed=3).permutations)
    assert loaded.image_size == (16, 16)
    assert_close_to_reference(to_numpy(loaded(tiles)), to_numpy(model(tiles)),
                              atol=1e-5, rtol=1e-5, name="reloaded logits")
    # The reloaded model's own view draws the same puzzles from the same seed.
    again, labels_again = loaded.make_view()(
        np.random.RandomState(0).randint(0, 255, (4, 16, 16, 3)), seed=1)
    np.testing.assert_array_equal(to_numpy(labels_again), to_numpy(labels))
    np.testing.assert_allclose(to_numpy(again), to_numpy(tiles))


def test_jigsaw_bad_input_is_named():
    model = JigsawModel(num_permutations=3, hidden_units=(), **TINY)
    with pytest.raises(ValueError, match="expects puzzles of shape"):
        model(np.zeros((2, 16, 16, 3), "float32"))
    with pytest.raises(ValueError, match=r"row 0 .* is not a permutation of range\(9\)"):
        JigsawModel(permutations=[[0, 1, 2, 3, 4, 5, 6, 7, 7]], **TINY)
    with pytest.raises(ValueError, match="model"):
        make_train_stream(get_method("jigsaw"), _digits(16), 4)


def test_jigsaw_stream_labels_are_permutation_indices():
    model = JigsawModel(num_permutations=4, hidden_units=(), **TINY)
    ds = make_train_stream(get_method("jigsaw"), _digits(32), 8, model=model,
                           max_occluded=0)
    tiles, labels = next(iter(ds))
    assert tuple(tiles.shape)[:2] == (8, 9)
    assert set(to_numpy(labels).tolist()) <= set(range(4))


def test_cluster_pseudo_labels_errors_are_named():
    teacher = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    images = np.random.RandomState(0).uniform(0, 255, (6, 4, 4, 3))
    with pytest.raises(ValueError, match="larger than the number of points"):
        cluster_pseudo_labels(teacher, (images, np.zeros(6)), 10, pca_dim=None)
    nan_teacher = keras.Sequential([keras.layers.GlobalAveragePooling2D(),
                                    keras.layers.Lambda(lambda x: x * np.nan)])
    with pytest.raises(ValueError, match="NaN"):
        cluster_pseudo_labels(nan_teacher, (images, np.zeros(6)), 2, pca_dim=None)


def test_pseudo_labels_of_another_data_set_are_nearest_centres():
    teacher = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    rng = np.random.RandomState(0)
    centres = np.array([[250, 0, 0], [0, 250, 0], [0, 0, 250]], "float32")
    labels = np.repeat(np.arange(3), 8)
    images = (centres[labels] + rng.normal(0, 5, (24, 3)))[:, None, None, :] \
        * np.ones((24, 3, 3, 3))
    other = labels[::-1].copy()
    other_images = (centres[other] + rng.normal(0, 5, (24, 3)))[:, None, None, :] \
        * np.ones((24, 3, 3, 3))
    pseudo, labeler = cluster_pseudo_labels(teacher, (images, labels), 3,
                                            label_data=(other_images, other), pca_dim=None)
    assert labeler.summary["nmi"] == 1.0
    # The other set is labelled by the same centres: same cluster <=> same class.
    mapping = dict(zip(labeler.assignments.tolist(), labels.tolist()))
    assert [mapping[p] for p in pseudo.tolist()] == other.tolist()


def test_transfer_end_to_end_through_the_trainer(tmp_path):
    """Jigsaw pretext -> k-means of its features -> a ResNet classifies the clusters,
    evaluated by linear probe; the way `ssl-zoo train` runs both."""
    common = dict(dataset="digits", epochs=1, steps_per_epoch=3, batch_size=16,
                  max_train_examples=96, max_test_examples=48, verbose=0,
                  cache_dir=os.path.join(tmp_path, "cache"))
    pretext_dir = os.path.join(tmp_path, "jigsaw")
    pretext = train_and_evaluate(TrainConfig(
        method="jigsaw", backbone="vgg_tile", width=0.0625, model_dir=pretext_dir,
        method_kwargs={"num_permutations": 10, "hidden_units": [16]}, **common),
        log=_quiet)
    assert "linear_probe_accuracy" in pretext["metrics"]
    assert pretext["model"].num_permutations == 10
    teacher_path = os.path.join(pretext_dir, "model.keras")
    assert os.path.exists(teacher_path)

    logs = []
    out = train_and_evaluate(TrainConfig(
        method="cluster_classification", backbone="resnet32_cifar", width=0.25,
        method_kwargs={"teacher": teacher_path, "num_clusters": 6,
                       "clustering": {"pca_dim": 8}}, **common), log=logs.append)
    model = out["model"]
    assert isinstance(model, ClusterClassificationModel)
    assert model.num_clusters == 6 and model.classifier.units == 6
    clustering = out["details"]["clustering"]
    assert clustering["num_points"] == 96 and len(clustering["cluster_sizes"]) == 6
    assert sum(clustering["cluster_sizes"]) == 96
    assert 0.0 <= clustering["nmi"] <= 1.0
    assert any("k-means: 6 clusters" in line for line in logs), logs
    # Evaluated on the true classes (10 digits), not on the clusters.
    assert 0.0 <= out["metrics"]["linear_probe_accuracy"] <= 1.0
    assert len(out["details"]["linear_probe_recall_per_class"]) == 10


def test_cluster_labeler_uses_a_named_layer():
    from ssl_zoo.backbones import get_backbone
    teacher = get_backbone("vgg_tile", width=0.0625)
    images = np.random.RandomState(0).uniform(0, 255, (12, 8, 8, 3)).astype("float32")
    labeler = ClusterPseudoLabeler(3, pca_dim=None, layer="stage2_relu2")
    labeler.fit(teacher, (images, np.zeros(12)))
    # stage 2 of vgg_tile at width 1/16: 8 channels on a 4x4 map, flattened.
    assert labeler.summary["feature_dim"] == 4 * 4 * 8
