"""ProjectionHead, SupConModel and SimCLRModel: training with fit, input errors,
serialisation, mixed precision and 1-vs-2-replica parity of a training step."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from ssl_zoo.layers.projection import ProjectionHead
from ssl_zoo.models.supcon import SimCLRModel, SupConModel

SIZE = 8


def tiny(cls=SupConModel, **kwargs):
    kwargs = {"backbone": "resnet32_cifar", "width": 0.125, "projection_dim": 8, **kwargs}
    return cls(**kwargs)


def views_data(batch=16, num_views=2, classes=4, seed=0):
    """Class-coloured noisy images: (batch, views, SIZE, SIZE, 3) on 0..255, labels."""
    rng = np.random.default_rng(seed)
    labels = np.arange(batch) % classes
    colours = rng.uniform(0, 255, (classes, 1, 1, 1, 3))
    noise = rng.normal(0, 25, (batch, num_views, SIZE, SIZE, 3))
    return (colours[labels] + noise).clip(0, 255).astype("float32"), labels


def small_convnet():
    """Conv-BN-ReLU x2 + pooling: a backbone that traces fast under MirroredStrategy."""
    inputs = keras.Input((None, None, 3))
    x = inputs
    for k, filters in enumerate((4, 8)):
        x = keras.layers.Conv2D(filters, 3, strides=1 + k, padding="same",
                                use_bias=False, name=f"conv{k}")(x)
        x = keras.layers.BatchNormalization(name=f"bn{k}")(x)
        x = keras.layers.ReLU()(x)
    return keras.Model(inputs, keras.layers.GlobalAveragePooling2D()(x))


# ------------------------------------------------------------ ProjectionHead
def test_projection_head_output_is_unit_norm_float32():
    keras.utils.set_random_seed(0)
    head = ProjectionHead(output_dim=6, hidden_dims=(32, 24))
    z = head(keras.random.uniform((3, 2, 5), seed=0))   # non-negative, like pooled features
    assert tuple(z.shape) == (3, 2, 6) and z.dtype == "float32"
    np.testing.assert_allclose(ops.convert_to_numpy(ops.norm(z, axis=-1)), 1.0, rtol=1e-5)
    assert [layer.units for layer in head.hidden] == [32, 24]


def test_projection_head_default_hidden_width_and_linear_variant():
    head = ProjectionHead(4)
    head.build((None, 12))
    assert [layer.units for layer in head.hidden] == [12]
    linear = ProjectionHead(4, hidden_dims=())
    linear.build((None, 12))
    assert linear.hidden == [] and len(linear.weights) == 2


def test_projection_head_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_float16")
    head = ProjectionHead(4, hidden_dims=(8,))
    z = head(ops.ones((2, 16)))
    assert head.hidden[0].compute_dtype == "float16"
    assert z.dtype == "float32"
    assert head.compute_output_spec(keras.KerasTensor((None, 16))).dtype == "float32"


def test_projection_head_serialisation(tmp_path):
    inputs = keras.Input((5,))
    model = keras.Model(inputs, ProjectionHead(3, name="proj")(inputs))
    path = os.path.join(tmp_path, "head.keras")
    model.save(path)
    clone = keras.saving.load_model(path)
    x = np.random.default_rng(0).normal(size=(4, 5)).astype("float32")
    np.testing.assert_array_equal(clone(x), model(x))
    config = ProjectionHead(3, hidden_dims=(4,)).get_config()
    assert ProjectionHead.from_config(config).get_config() == config


@pytest.mark.parametrize("kwargs", [dict(output_dim=0), dict(output_dim=2.5),
                                    dict(hidden_dims=(4, 0))])
def test_projection_head_bad_arguments(kwargs):
    with pytest.raises(ValueError, match="output_dim|hidden_dims"):
        ProjectionHead(**{"output_dim": 4, **kwargs})


# --------------------------------------------------------------- the model
def test_fit_reduces_the_supervised_contrastive_loss():
    keras.utils.set_random_seed(0)
    x, y = views_data()
    model = SupConModel(small_convnet(), projection_dim=8)
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, y, batch_size=16, epochs=6, verbose=0).history["loss"]
    assert all(np.isfinite(history))
    assert np.mean(history[-2:]) < 0.9 * history[0], history
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == {"loss"}


def test_simclr_fits_without_labels_and_ignores_labels():
    keras.utils.set_random_seed(1)
    x, y = views_data()
    model = SimCLRModel(small_convnet(), projection_dim=8)
    assert not model.supervised and not model.contrastive_loss.supervised
    model.compile(optimizer=keras.optimizers.Adam(1e-2))
    history = model.fit(x, batch_size=16, epochs=6, verbose=0).history["loss"]
    assert np.mean(history[-2:]) < 0.9 * history[0], history
    # Labels are ignored: identical loss with any labels.
    a = model.evaluate(x, y, verbose=0)
    b = model.evaluate(x, np.zeros_like(y), verbose=0)
    assert a == pytest.approx(b)
    with pytest.raises(ValueError, match="unsupervised"):
        SimCLRModel(supervised=True)


def test_call_returns_backbone_features():
    keras.utils.set_random_seed(6)
    model = SupConModel(small_convnet(), projection_dim=8, hidden_dims=())
    x, _ = views_data(batch=3)
    features = model(x[:, 0])
    assert tuple(features.shape) == (3, model.feature_dim) and features.dtype == "float32"
    np.testing.assert_allclose(model.features(x[:, 0]), features, rtol=1e-6)
    per_view = model(x)
    assert tuple(per_view.shape) == (3, 2, model.feature_dim)
    np.testing.assert_allclose(per_view[:, 1], model(x[:, 1]), rtol=1e-5, atol=1e-6)
    z = model.project(x)
    assert tuple(z.shape) == (3, 2, 8)
    np.testing.assert_allclose(ops.convert_to_numpy(ops.norm(z, axis=-1)), 1.0, rtol=1e-5)


def test_single_view_images_raise_a_clear_error():
    x, y = views_data(batch=4)
    model = tiny()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="at least two augmented views"):
        model.fit(x[:, 0], y, verbose=0)
    with pytest.raises(ValueError, match="at least two views"):
        model.fit(x[:, :1], y, verbose=0)
    with pytest.raises(ValueError, match="needs labels"):
        model.fit(x, verbose=0)


def test_num_classes_checks_label_range():
    x, y = views_data(batch=4)
    model = tiny(num_classes=3)
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        model.fit(x, y + 1, verbose=0)   # labels 1..4 with num_classes=3
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels must be in"):
        model.fit(tf.data.Dataset.from_tensors((x, y + 1)), verbose=0)  # in the step
    tiny(SimCLRModel).check_array_dtypes(x, y + 100)  # SimCLR reads no labels


def test_save_and_load_round_trip(tmp_path):
    keras.utils.set_random_seed(2)
    x, y = views_data(batch=8)
    model = tiny(hidden_dims=(6,), temperature=0.2, base_temperature=0.1,
                 contrast_mode="one", num_classes=4)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)
    path = os.path.join(tmp_path, "supcon.keras")
    model.save(path)
    clone = keras.saving.load_model(path)
    assert type(clone) is SupConModel
    assert clone.get_config() == model.get_config()
    np.testing.assert_array_equal(clone(x[:, 0]), model(x[:, 0]))
    np.testing.assert_array_equal(clone.project(x), model.project(x))
    simclr = tiny(SimCLRModel)
    simclr(x[:, 0])
    simclr.save(path)
    assert type(keras.saving.load_model(path)) is SimCLRModel


# Mixed precision, XLA and 1-vs-2-replica parity of SupCon and SimCLR are in the
# method battery (tests/test_method_battery.py).
