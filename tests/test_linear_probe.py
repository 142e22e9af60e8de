"""LinearProbe and linear_probe: encoders left as they were (weights, batch-norm
statistics, trainable flags), accuracy on an easy problem, every encoder kind (SupCon,
supervised, SLA, bare backbone), input formats, saving."""

import os
import types

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl_zoo.backbones import get_backbone
from ssl_zoo.evaluation import extract_features, linear_probe
from ssl_zoo.models.linear_probe import LinearProbe
from ssl_zoo.models.sla import SLAModel
from ssl_zoo.models.supcon import SupConModel
from ssl_zoo.models.supervised import SupervisedModel

SIZE = 8


def separable(n, classes=4, seed=0):
    """Images whose colour gives the class (plus noise): (n, SIZE, SIZE, 3), labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    colours = np.array([[20, 20, 20], [230, 230, 230], [230, 30, 30], [30, 30, 230],
                        [30, 230, 30]][:classes], "float32")[:, None, None, :]
    noise = rng.normal(0, 8, (n, SIZE, SIZE, 3))
    return (colours[labels] + noise).clip(0, 255).astype("float32"), labels


def weights_of(model):
    return [np.array(w) for w in model.weights]


def assert_unchanged(before, model):
    after = weights_of(model)
    assert len(before) == len(after)
    for a, b in zip(before, after):
        np.testing.assert_array_equal(a, b)


def trainable_flags(model):
    """Every sub-layer's and every variable's `trainable` flag, by path."""
    layers = {layer.path if hasattr(layer, "path") else layer.name: layer.trainable
              for layer in model._flatten_layers(include_self=True, recursive=True)}
    return layers, {v.path: v.trainable for v in model.weights}


@pytest.fixture(scope="module")
def data():
    return separable(64, seed=0), separable(32, seed=1)


def mean_colour_encoder():
    """Features = mean colour: the classes of `separable` are linearly separable."""
    return keras.Sequential([keras.Input((None, None, 3)),
                             keras.layers.GlobalAveragePooling2D()])


def test_probe_reaches_full_accuracy_on_separable_features(data):
    keras.utils.set_random_seed(0)
    result = linear_probe(mean_colour_encoder(), data[0], data[1], num_classes=4,
                          epochs=60, batch_size=16, learning_rate=1e-2)
    assert result["top1"] == 1.0 and result["train_top1"] == 1.0, result
    assert set(result) == {"top1", "train_top1"}         # plain floats, JSON-ready
    assert all(isinstance(v, float) for v in result.values())


def test_cached_probe_is_accurate_and_leaves_the_encoder_unchanged(data):
    keras.utils.set_random_seed(0)
    encoder = SupConModel("resnet32_cifar", width=0.25, projection_dim=8)
    encoder(data[0][0][:1])
    before = weights_of(encoder)
    result = linear_probe(encoder, data[0], data[1], num_classes=4, epochs=60,
                          batch_size=16, learning_rate=1e-2, return_probe=True)
    assert result["top1"] >= 0.9 and result["train_top1"] >= 0.9, result
    assert_unchanged(before, encoder)
    assert encoder.trainable
    # The returned probe classifies images like the cached-feature head did.
    probe = result["probe"]
    top1 = np.mean(np.argmax(probe.predict(data[1][0], verbose=0), -1) == data[1][1])
    assert top1 == pytest.approx(result["top1"])


def test_uncached_probe_trains_with_fit_on_images(data):
    keras.utils.set_random_seed(1)
    encoder = get_backbone("resnet32_cifar", width=0.25)
    before = weights_of(encoder)
    result = linear_probe(encoder, data[0], data[1], num_classes=4, epochs=40,
                          batch_size=16, learning_rate=1e-2, cache_features=False,
                          return_probe=True)
    assert result["top1"] >= 0.9, result
    assert_unchanged(before, encoder)
    assert len(result["probe"].trainable_weights) == 2


@pytest.mark.parametrize("make", [
    lambda: SupervisedModel("resnet32_cifar", num_classes=4, width=0.25),
    lambda: SLAModel("resnet32_cifar", num_classes=4, width=0.25),
])
def test_supervised_and_sla_encoders_use_their_features(data, make):
    keras.utils.set_random_seed(2)
    encoder = make()
    encoder(data[0][0][:1])
    before = weights_of(encoder)
    result = linear_probe(encoder, data[0], data[1], num_classes=4, epochs=60,
                          batch_size=16, learning_rate=1e-2, return_probe=True)
    probe = result["probe"]
    assert tuple(probe.classifier.kernel.shape) == (encoder.feature_dim, 4)  # not logits
    assert result["top1"] >= 0.9, result
    assert_unchanged(before, encoder)


def test_input_formats_give_the_same_features(data):
    encoder = get_backbone("resnet32_cifar", width=0.125)
    images, labels = data[0]
    ref, ref_labels = extract_features(encoder, (images, labels), batch_size=16)
    array_dataset = types.SimpleNamespace(images=images.astype("uint8"), labels=labels)
    f1, y1 = extract_features(encoder, array_dataset, batch_size=10)
    ds = tf.data.Dataset.from_tensor_slices((images, labels)).batch(7)
    f2, y2 = extract_features(encoder, ds)
    np.testing.assert_allclose(f2, ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(y1, ref_labels)
    np.testing.assert_array_equal(y2, ref_labels)
    assert f1.shape == ref.shape
    with pytest.raises(ValueError, match=r"\(images, labels\) pair"):
        linear_probe(encoder, images, data[1], num_classes=4)
    with pytest.raises(ValueError, match="64 images and 3 labels"):
        extract_features(encoder, (images, labels[:3]))


def test_linear_probe_model_fit_and_save(tmp_path, data):
    keras.utils.set_random_seed(3)
    encoder = SupConModel("vgg_tile", width=0.0625, projection_dim=8, num_classes=4)
    probe = LinearProbe(encoder, num_classes=4)
    probe.compile(optimizer=keras.optimizers.Adam(1e-2), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe(data[0][0][:1])
    assert [w.path for w in probe.trainable_weights] == [
        "linear_probe/classifier/kernel", "linear_probe/classifier/bias"]
    before = weights_of(encoder)
    probe.set_feature_statistics(*[f(extract_features(encoder, data[0])[0], 0)
                                   for f in (np.mean, np.std)])
    history = probe.fit(*data[0], batch_size=16, epochs=5, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert_unchanged(before, encoder)
    path = os.path.join(tmp_path, "probe.keras")
    probe.save(path)
    clone = keras.saving.load_model(path)
    assert type(clone) is LinearProbe and type(clone.encoder) is SupConModel
    assert len(clone.trainable_weights) == 2     # the reloaded encoder stays frozen
    np.testing.assert_allclose(clone.predict(data[1][0], verbose=0),
                               probe.predict(data[1][0], verbose=0), rtol=1e-6)


@pytest.mark.parametrize("num_classes", [0, 2.5, True])
def test_bad_num_classes(num_classes):
    with pytest.raises(ValueError, match="num_classes"):
        LinearProbe(get_backbone("resnet32_cifar", width=0.125), num_classes)


def partly_frozen_encoder():
    """A SupCon encoder whose first layers the caller froze: flags must stay so."""
    encoder = SupConModel("vgg_tile", width=0.0625, projection_dim=8)
    encoder(np.zeros((1, SIZE, SIZE, 3), "float32"))
    for layer in encoder.backbone.layers[:6]:
        layer.trainable = False
    return encoder


def test_linear_probe_leaves_the_callers_flags_as_they_were(data):
    encoder = partly_frozen_encoder()
    flags, before = trainable_flags(encoder), weights_of(encoder)
    assert any(flags[1].values()) and not all(flags[1].values())
    linear_probe(encoder, data[0], data[1], num_classes=4, epochs=2, batch_size=32)
    assert trainable_flags(encoder) == flags
    linear_probe(encoder, data[0], data[1], num_classes=4, epochs=1, batch_size=32,
                 cache_features=False)
    assert trainable_flags(encoder) == flags
    assert_unchanged(before, encoder)


def test_probe_construction_fit_and_freezing_leave_the_encoder_flags(data):
    encoder = partly_frozen_encoder()
    flags, before = trainable_flags(encoder), weights_of(encoder)
    probe = LinearProbe(encoder, num_classes=4)
    assert trainable_flags(encoder) == flags
    probe.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    probe.fit(*data[0], batch_size=16, epochs=2, verbose=0)
    assert trainable_flags(encoder) == flags
    # Batch-norm moving statistics included: the encoder runs in inference mode.
    assert any("moving_mean" in v.path for v in encoder.weights)
    assert_unchanged(before, encoder)
    assert [w.path for w in probe.trainable_weights] == [
        "linear_probe/classifier/kernel", "linear_probe/classifier/bias"]
    assert len(probe.non_trainable_weights) == len(probe.weights) - 2
    probe.trainable = False              # freezes the probe's classifier only
    assert probe.trainable_weights == [] and trainable_flags(encoder) == flags
    probe.trainable = True
    assert len(probe.trainable_weights) == 2


def test_an_encoder_saved_after_linear_probe_reloads_and_trains(tmp_path, data):
    """ssl-zoo train --method=supcon saved the probed (then frozen) model: its reload
    could not be fit any more."""
    keras.utils.set_random_seed(4)
    encoder = SupConModel("vgg_tile", width=0.0625, projection_dim=8)
    encoder.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    views = np.stack([data[0][0], data[0][0][:, ::-1]], axis=1)
    encoder.fit(views, data[0][1], batch_size=32, epochs=1, verbose=0)
    linear_probe(encoder, data[0], data[1], num_classes=4, epochs=1, batch_size=32)
    path = os.path.join(tmp_path, "model.keras")
    encoder.save(path)
    reloaded = keras.saving.load_model(path)
    reloaded.compile(optimizer=keras.optimizers.SGD(0.05, momentum=0.9))
    history = reloaded.fit(views, data[0][1], batch_size=32, epochs=4, shuffle=False,
                           verbose=0).history
    assert history["loss"][-1] < history["loss"][0], history["loss"]
    assert reloaded.trainable
    assert len(reloaded.trainable_weights) == len(encoder.trainable_weights) > 2


def test_a_reloaded_probe_trains_only_its_classifier(tmp_path, data):
    encoder = SupervisedModel("resnet32_cifar", num_classes=4, width=0.125)
    probe = LinearProbe(encoder, num_classes=4)
    probe(data[0][0][:1])
    path = os.path.join(tmp_path, "probe.keras")
    probe.save(path)
    clone = keras.saving.load_model(path)
    assert clone.encoder.trainable        # the encoder saved as it was, not frozen
    before = weights_of(clone.encoder)
    clone.compile(optimizer=keras.optimizers.SGD(0.5),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    history = clone.fit(*data[0], batch_size=16, epochs=3, verbose=0).history
    assert history["loss"][-1] < history["loss"][0]
    assert [w.path for w in clone.trainable_weights] == [
        "linear_probe/classifier/kernel", "linear_probe/classifier/bias"]
    assert_unchanged(before, clone.encoder)
