"""SLAModel (with/without self-distillation), DAModel, MTModel and SupervisedModel.

Inference modes against separate forward passes, evaluate() metrics and the training
losses against numpy references computed from the models' own heads, training in
float32 / mixed precision / XLA, saving, 1-vs-2-replica parity and input errors.

Tiny on purpose (2 shared CPU cores): vgg_tile at width 1/16 or resnet32_cifar at
width 1/8, 8x8 images, 3 classes, batch 4.
"""

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import (assert_close_to_reference, run_fit_reduces_loss,
                     run_model_saving_test, to_numpy)
from ssl_zoo import DAModel, MTModel, SLAModel, SupervisedModel

N = 3          # classes
B = 4          # batch
SIZE = 8       # image side
TINY = dict(backbone="vgg_tile", width=0.0625)
RESNET = dict(backbone="resnet32_cifar", width=0.125)

MODELS = {
    "sla_sd": lambda **kw: SLAModel(num_classes=N, transforms="rotation",
                                    self_distill=True, **{**TINY, **kw}),
    "sla": lambda **kw: SLAModel(num_classes=N, transforms="rotation",
                                 self_distill=False, **{**TINY, **kw}),
    "sla_color": lambda **kw: SLAModel(num_classes=N, transforms="color_permutation",
                                       self_distill=True, temperature=2.0,
                                       **{**TINY, **kw}),
    "da": lambda **kw: DAModel(num_classes=N, transforms="rotation", **{**TINY, **kw}),
    "mt": lambda **kw: MTModel(num_classes=N, transforms="rotation", **{**TINY, **kw}),
    "supervised": lambda **kw: SupervisedModel(num_classes=N, **{**TINY, **kw}),
}


@pytest.fixture(autouse=True)
def _seed():
    keras.utils.set_random_seed(1234)


def _data(seed=0, b=B, size=SIZE, channels=3):
    rng = np.random.RandomState(seed)
    x = rng.uniform(0, 255, size=(b, size, size, channels)).astype("float32")
    y = np.array([0, 1, 2, 1, 2, 0, 1, 0][:b])
    return x, y


def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


def np_ce(logits, labels):
    return -np_log_softmax(logits)[np.arange(len(labels)), labels]


def np_transform_views(x, transforms):
    """t_1(x)..t_M(x) as in DESIGN.md: CCW rotations, itertools channel orders."""
    if transforms == "rotation":
        return [np.rot90(x, k, axes=(1, 2)) for k in range(4)]
    orders = [(0, 1, 2), (0, 2, 1), (1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0)]
    return [x[..., list(p)] for p in orders]


def np_expand(views):
    return np.stack(views, axis=1).reshape((-1,) + views[0].shape[1:])


def _accuracy(logits, labels):
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


# --------------------------------------------------------------------- inference
@pytest.mark.parametrize("name", sorted(MODELS))
def test_call_shapes(name):
    model = MODELS[name]()
    x, _ = _data()
    modes = [None]
    if isinstance(model, SLAModel):
        modes += ["single", "aggregated"] + (["self_distill"] if model.self_distill else [])
    for mode in modes:
        kwargs = {} if mode is None else {"inference": mode}
        out = model(x, training=False, **kwargs)
        assert tuple(out.shape) == (B, N), mode
        assert keras.backend.standardize_dtype(out.dtype) == "float32", mode
    assert tuple(model.predict(x, verbose=0).shape) == (B, N)
    # Raw uint8 images (0..255) give the same logits as the same values in float32.
    x_int = np.round(x).astype("uint8")
    assert_close_to_reference(model(x_int), model(x_int.astype("float32")), atol=1e-5,
                              name="uint8 vs float32 input")


def test_default_inference_modes():
    assert MODELS["sla_sd"]().inference == "self_distill"
    assert MODELS["sla"]().inference == "aggregated"


def _randomize_batchnorm_statistics(model, seed=0):
    """Moves every batch-norm moving mean/variance away from 0/1 (cheaper than fit)."""
    rng = np.random.RandomState(seed)
    for layer in model.backbone._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[-1]
            layer.moving_mean.assign(rng.normal(0, 0.5, c).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.5, 2.0, c).astype("float32"))


@pytest.mark.parametrize("transforms,backbone", [("rotation", RESNET),
                                                 ("color_permutation", TINY)])
def test_inference_modes_match_separate_forward_passes(transforms, backbone):
    """'aggregated' = (1/M) sum_j z(t_j(x))[k*M + j] from M separate single passes;
    'single' = z(x)[k*M]; 'self_distill' = u(x). Inference mode: batch norm uses its
    moving statistics, so a pass on one transformed copy equals the same rows of the
    expanded batch (it would not with batch statistics)."""
    model = SLAModel(num_classes=N, transforms=transforms, self_distill=True, **backbone)
    x, _ = _data()
    model(x)
    _randomize_batchnorm_statistics(model)
    m = model.num_transforms

    def joint_of(images):
        return to_numpy(model.joint_head(model.features(images, training=False)))

    per_view = [joint_of(v) for v in np_transform_views(x, transforms)]
    expected_agg = np.mean([z[:, j::m] for j, z in enumerate(per_view)], axis=0)
    assert expected_agg.shape == (B, N)
    assert_close_to_reference(model(x, inference="aggregated"), expected_agg,
                              atol=1e-4, rtol=1e-4, name="aggregated logits")
    assert_close_to_reference(model(x, inference="single"), per_view[0][:, 0::m],
                              atol=1e-5, rtol=1e-5, name="single logits")
    expected_u = to_numpy(model.distill_head(model.features(x, training=False)))
    assert_close_to_reference(model(x, inference="self_distill"), expected_u,
                              atol=1e-5, rtol=1e-5, name="self-distillation logits")
    # forward_all on the expanded batch gives the same three predictions.
    out = model.forward_all(x, training=False)
    assert_close_to_reference(out["aggregated"], expected_agg, atol=1e-4, rtol=1e-4)
    assert_close_to_reference(out["single"], per_view[0][:, 0::m], atol=1e-4, rtol=1e-4)
    assert_close_to_reference(out["self_distill"], expected_u, atol=1e-4, rtol=1e-4)


def test_evaluate_reports_every_metric_consistently():
    model = MODELS["sla_sd"]()
    x, y = _data(b=8)
    model(x)
    _randomize_batchnorm_statistics(model)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    logs = model.evaluate(x, y, batch_size=8, verbose=0, return_dict=True)
    for key in ("loss", "joint_accuracy", "single_accuracy", "aggregated_accuracy",
                "self_distill_accuracy", "joint_loss", "distill_loss"):
        assert key in logs, (key, sorted(logs))
    m = model.num_transforms
    agg = to_numpy(model(x, inference="aggregated"))
    single = to_numpy(model(x, inference="single"))
    u = to_numpy(model(x, inference="self_distill"))
    joint = to_numpy(model.joint_head(model.features(
        np_expand(np_transform_views(x, "rotation")), training=False)))
    joint_labels = np.repeat(y, m) * m + np.tile(np.arange(m), len(y))
    assert logs["aggregated_accuracy"] == pytest.approx(_accuracy(agg, y))
    assert logs["single_accuracy"] == pytest.approx(_accuracy(single, y))
    assert logs["self_distill_accuracy"] == pytest.approx(_accuracy(u, y))
    assert logs["joint_accuracy"] == pytest.approx(_accuracy(joint, joint_labels))
    joint_loss = np_ce(joint, joint_labels).mean()
    assert model.temperature == 1.0  # the authors' T: KL(softmax(agg) || softmax(u))
    log_t, log_s = np_log_softmax(agg), np_log_softmax(u)
    distill = (np_ce(u, y) + np.sum(np.exp(log_t) * (log_t - log_s), axis=-1)).mean()
    assert logs["joint_loss"] == pytest.approx(joint_loss, rel=1e-4, abs=1e-4)
    assert logs["distill_loss"] == pytest.approx(distill, rel=1e-4, abs=1e-4)
    assert logs["loss"] == pytest.approx(joint_loss + distill, rel=1e-4, abs=1e-4)


def test_evaluate_without_self_distillation():
    model = MODELS["sla"]()
    x, y = _data()
    model.compile(optimizer="sgd")
    logs = model.evaluate(x, y, verbose=0, return_dict=True)
    assert {"loss", "joint_accuracy", "single_accuracy",
            "aggregated_accuracy"} <= set(logs)
    assert "self_distill_accuracy" not in logs


# ------------------------------------------------------------- training losses
def _one_step_logs(model, x, y):
    """Training logs of one step with learning rate 0 (weights unchanged)."""
    model.compile(optimizer=keras.optimizers.SGD(0.0))
    before = to_numpy(model.trainable_weights)
    logs = model.train_on_batch(x, y, return_dict=True)
    for a, b in zip(to_numpy(model.trainable_weights), before):
        np.testing.assert_array_equal(a, b)
    return logs


def _train_features(model, x, transforms="rotation"):
    """Backbone features of the expanded batch in training mode (batch statistics)."""
    views = np_transform_views(x, transforms)
    return model.features(np_expand(views), training=True), len(views)


@pytest.mark.parametrize("name", ["sla_sd", "sla_color", "sla"])
def test_sla_training_loss_matches_reference(name):
    model = MODELS[name]()
    transforms = "color_permutation" if name == "sla_color" else "rotation"
    x, y = _data()
    model(x)
    feats, m = _train_features(model, x, transforms)
    joint = to_numpy(model.joint_head(feats))
    joint_labels = np.repeat(y, m) * m + np.tile(np.arange(m), len(y))
    expected = {"joint_loss": np_ce(joint, joint_labels).mean()}
    if model.self_distill:
        t = model.temperature
        agg = np.mean([joint[j::m, j::m] for j in range(m)], axis=0)  # (B, N)
        u = to_numpy(model.distill_head(to_numpy(feats)[0::m]))
        log_t, log_s = np_log_softmax(agg / t), np_log_softmax(u / t)
        kl = np.sum(np.exp(log_t) * (log_t - log_s), axis=-1)
        expected["distill_loss"] = (np_ce(u, y) + t * t * kl).mean()
    expected["loss"] = sum(expected.values())
    logs = _one_step_logs(model, x, y)
    for key, value in expected.items():
        assert logs[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key


def test_da_loss_uses_the_original_label_for_every_copy():
    model = MODELS["da"]()
    x, y = _data()
    model(x)
    feats, m = _train_features(model, x)
    logits = to_numpy(model.classifier(feats))
    expected = np_ce(logits, np.repeat(y, m)).mean()
    wrong = np_ce(logits, np.tile(y, m)).mean()  # labels not aligned with the copies
    assert abs(expected - wrong) > 1e-3
    logs = _one_step_logs(model, x, y)
    assert logs["loss"] == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_mt_loss_is_class_ce_plus_transformation_ce():
    model = MODELS["mt"]()
    x, y = _data()
    model(x)
    feats, m = _train_features(model, x)
    class_ce = np_ce(to_numpy(model.classifier(feats)), np.repeat(y, m)).mean()
    transform_ce = np_ce(to_numpy(model.transform_head(feats)),
                         np.tile(np.arange(m), len(y))).mean()
    logs = _one_step_logs(model, x, y)
    assert logs["loss"] == pytest.approx(class_ce + transform_ce, rel=1e-4, abs=1e-5)


def test_supervised_loss_is_cross_entropy():
    model = MODELS["supervised"]()
    x, y = _data()
    model(x)
    logits = to_numpy(model.classifier(model.features(x, training=True)))
    logs = _one_step_logs(model, x, y[:, None])  # (B, 1) labels are accepted too
    assert logs["loss"] == pytest.approx(np_ce(logits, y).mean(), rel=1e-4, abs=1e-5)


# --------------------------------------------------------------------- training
# fit lowers the loss, mixed precision, XLA, saving and 1-vs-2-replica parity of
# every *registered* method (sla, sla_no_sd, da, mt, supervised) are in the method
# battery (tests/test_method_battery.py); here only the variants it does not build.
@pytest.mark.parametrize("name", ["sla_color"])
def test_fit_reduces_loss(name):
    x, y = _data(b=8)
    run_fit_reduces_loss(MODELS[name](), x, y, steps=5,
                         optimizer=keras.optimizers.SGD(0.02, momentum=0.9))


def test_jit_compile_trains_like_graph_mode():
    x, y = _data(b=2)
    graph = MODELS["sla_sd"]()
    graph(x)
    initial = graph.get_weights()
    xla = MODELS["sla_sd"]()
    xla(x)
    xla.set_weights(initial)
    graph.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=False)
    xla.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=True)
    assert xla.jit_compile is True
    logs_graph = graph.train_on_batch(x, y, return_dict=True)
    logs_xla = xla.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs_xla["loss"])
    assert logs_xla["loss"] == pytest.approx(logs_graph["loss"], rel=1e-4)
    changed = 0
    for a, b, w0 in zip(xla.get_weights(), graph.get_weights(), initial):
        assert_close_to_reference(a, b, atol=1e-4, rtol=1e-4, name="weights after XLA step")
        changed += not np.array_equal(a, w0)
    assert changed > 0


# ----------------------------------------------------------------------- saving
SAVE_CALLS = {"sla_sd": {}, "sla": {}, "sla_color": {"inference": "single"}}


@pytest.mark.parametrize("name", ["sla_color"])
def test_saving_round_trip(name, tmp_path):
    model = MODELS[name]()
    x, _ = _data()
    model(x)
    if hasattr(model, "backbone"):
        _randomize_batchnorm_statistics(model)
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    run_model_saving_test(model, x, tmp_path, call_kwargs=SAVE_CALLS.get(name), atol=1e-5)


def test_saving_backbone_given_as_a_model(tmp_path):
    """A backbone passed as a keras.Model travels as its serialised config."""
    from ssl_zoo.backbones import get_backbone
    backbone = get_backbone("vgg_tile", width=0.0625)
    model = SLAModel(backbone, num_classes=N, transforms="rotation", self_distill=False)
    assert isinstance(model.get_config()["backbone"], dict)
    run_model_saving_test(model, _data()[0], tmp_path, atol=1e-5)


# Saving after fit() alone (no call first) is the battery's `saving` check.


@pytest.mark.parametrize("name,bad_label", [("sla_sd", N), ("da", -1), ("mt", N),
                                            ("supervised", -1)])
def test_labels_out_of_range_raise(name, bad_label):
    model = MODELS[name]()
    x, y = _data()
    y = y.copy()
    y[1] = bad_label
    model.compile(optimizer="sgd")
    with pytest.raises(Exception, match=r"labels must be in") as err:
        model.fit(x, y, epochs=1, batch_size=B, verbose=0)
    assert isinstance(err.value, (tf.errors.InvalidArgumentError, ValueError)), err.type


BAD_SHAPES = [(B, SIZE, SIZE), (B, SIZE, SIZE, 1), (B, 2, SIZE, SIZE, 3)]


@pytest.mark.parametrize("name", ["sla_sd", "supervised"])
def test_bad_image_shapes_raise_value_error(name):
    built = MODELS[name]()
    built(_data()[0])
    built.compile(optimizer="sgd")
    for shape in BAD_SHAPES:
        x = np.zeros(shape, "float32")
        with pytest.raises(ValueError) as err:
            MODELS[name]()(x)  # unbuilt model
        assert str(shape) in str(err.value)
        with pytest.raises(ValueError) as err:
            built(x)
        assert str(shape) in str(err.value)
    for shape in BAD_SHAPES[:2]:
        with pytest.raises(ValueError) as err:
            built.fit(np.zeros(shape, "float32"), _data()[1], epochs=1, batch_size=B,
                      verbose=0)
        assert str((None,) + shape[1:]) in str(err.value) or str(shape) in str(err.value)


def test_one_hot_labels_and_sample_weights_raise_value_error():
    """Clear errors, and the model still trains afterwards: the failed first traces
    must not leave the train function unable to create (or skipping) the variables."""
    model = MODELS["sla_sd"]()
    x, y = _data()
    model.compile(optimizer="sgd")
    with pytest.raises(ValueError, match="one-hot"):
        model.train_on_batch(x, np.eye(N)[y])
    with pytest.raises(ValueError, match="sample weights"):
        model.train_on_batch(x, y, sample_weight=np.ones(B))
    # After the failed calls, good data trains normally (no half-built train function).
    before = to_numpy(model.trainable_weights)
    logs = model.train_on_batch(x, y, return_dict=True)
    assert np.isfinite(logs["loss"]) and logs["joint_accuracy"] >= 0
    assert any(not np.array_equal(a, b)
               for a, b in zip(to_numpy(model.trainable_weights), before))


def test_non_square_images_with_rotation_raise():
    model = MODELS["sla_sd"]()
    with pytest.raises(ValueError, match="square"):
        model(np.zeros((2, 8, 6, 3), "float32"), inference="aggregated")


def test_color_permutation_accepts_non_square_images():
    out = MODELS["sla_color"]()(np.zeros((2, 8, 6, 3), "float32"), inference="aggregated")
    assert tuple(out.shape) == (2, N)


def test_unknown_inference_mode_raises():
    with pytest.raises(ValueError, match="inference mode"):
        MODELS["sla_sd"](inference="ensemble")
    model = MODELS["sla_sd"]()
    with pytest.raises(ValueError, match="inference mode"):
        model(_data()[0], inference="ensemble")
    with pytest.raises(ValueError, match="self_distill"):
        MODELS["sla"](inference="self_distill")
    with pytest.raises(ValueError, match="self_distill"):
        MODELS["sla"]()(_data()[0], inference="self_distill")


def test_bad_constructor_arguments_raise():
    with pytest.raises(ValueError, match="num_classes"):
        SLAModel(num_classes=0, **TINY)
    with pytest.raises(ValueError, match="Unknown backbone"):
        SLAModel("resnet33", num_classes=N)
    with pytest.raises(ValueError, match="Unknown transformation"):
        SLAModel(num_classes=N, transforms="rotations", **TINY)
