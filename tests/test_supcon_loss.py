"""SupConLoss against a numpy reference written from the equation, its gradient, the
no-positive case, NT-Xent, mixed precision, replica parity, config and bad inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from ssl_zoo.losses.supcon import SupConLoss, l2_normalize


# ----------------------------------------------------------------- references
def unit(x):
    return x / np.linalg.norm(x, axis=-1, keepdims=True)


def random_features(batch, views, dim, seed=0):
    return unit(np.random.default_rng(seed).normal(size=(batch, views, dim)))


def reference_supcon(z, labels, temperature, base_temperature, contrast_mode="all"):
    """L_out from the paper's eq. 2, one anchor at a time, in float64.

    Returns (mean over anchors with a positive, per-anchor losses as {(b, v): l}).
    """
    z = np.asarray(z, np.float64)
    batch, views, _ = z.shape
    if labels is None:
        labels = np.arange(batch)
    items = [(b, v) for b in range(batch) for v in range(views)]
    anchors = items if contrast_mode == "all" else [(b, 0) for b in range(batch)]
    per_anchor = {}
    for i in anchors:
        others = [a for a in items if a != i]
        positives = [p for p in others if labels[p[0]] == labels[i[0]]]
        if not positives:
            continue
        denominator = sum(np.exp(z[i] @ z[a] / temperature) for a in others)
        terms = [np.log(np.exp(z[i] @ z[p] / temperature) / denominator)
                 for p in positives]
        per_anchor[i] = -(temperature / base_temperature) * np.mean(terms)
    mean = float(np.mean(list(per_anchor.values()))) if per_anchor else 0.0
    return mean, per_anchor


def reference_nt_xent(z1, z2, temperature):
    """SimCLR's NT-Xent (Chen et al. 2020): pairs (k, k+N) in the 2N concatenation."""
    z = np.concatenate([z1, z2]).astype(np.float64)
    n = len(z1)
    sim = z @ z.T / temperature
    losses = []
    for i in range(2 * n):
        j = (i + n) % (2 * n)
        logits = np.delete(sim[i], i)
        losses.append(-(sim[i, j] - np.log(np.sum(np.exp(logits)))))
    return float(np.mean(losses))


# ----------------------------------------------------------- the equation
@pytest.mark.parametrize("views", [2, 3])
@pytest.mark.parametrize("contrast_mode", ["all", "one"])
def test_matches_numpy_reference(views, contrast_mode):
    z = random_features(6, views, 5, seed=views)
    labels = np.array([0, 1, 0, 2, 1, 0])
    loss = SupConLoss(temperature=0.2, base_temperature=0.07, contrast_mode=contrast_mode)
    expected, _ = reference_supcon(z, labels, 0.2, 0.07, contrast_mode)
    got = float(loss(labels, z.astype("float32")))
    np.testing.assert_allclose(got, expected, rtol=1e-5)


def test_per_sample_values_average_the_anchor_views():
    z = random_features(4, 3, 6, seed=3)
    labels = np.array([1, 0, 1, 0])
    _, per_anchor = reference_supcon(z, labels, 0.3, 0.1)
    got = SupConLoss(0.3, 0.1, reduction=None)(labels, z.astype("float32"))
    expected = [np.mean([per_anchor[(b, v)] for v in range(3)]) for b in range(4)]
    assert tuple(got.shape) == (4,)
    np.testing.assert_allclose(ops.convert_to_numpy(got), expected, rtol=1e-5)


def test_labels_of_shape_batch_by_one_and_inside_tf_function():
    z = random_features(4, 2, 3, seed=4).astype("float32")
    labels = np.array([3, 3, 7, 7])
    loss = SupConLoss(0.1, 0.1)
    eager = float(loss(labels, z))
    graph = tf.function(lambda y, f: loss(y, f))
    np.testing.assert_allclose(float(graph(labels[:, None], z)), eager, rtol=1e-6)
    dynamic = tf.function(lambda y, f: loss(y, f), input_signature=[
        tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, None, 3], tf.float32)])
    np.testing.assert_allclose(float(dynamic(labels, z)), eager, rtol=1e-6)


def test_gradient_matches_finite_differences_of_reference():
    z = random_features(3, 2, 3, seed=5)
    labels = np.array([0, 1, 0])
    tau, base = 0.5, 0.25
    loss = SupConLoss(tau, base, normalize=False)
    x = tf.constant(z, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(labels, x)
    grad = tape.gradient(value, x).numpy()
    eps, fd = 1e-6, np.zeros_like(z)
    for index in np.ndindex(*z.shape):
        plus, minus = z.copy(), z.copy()
        plus[index] += eps
        minus[index] -= eps
        fd[index] = (reference_supcon(plus, labels, tau, base)[0]
                     - reference_supcon(minus, labels, tau, base)[0]) / (2 * eps)
    np.testing.assert_allclose(grad, fd, rtol=1e-3, atol=1e-5)


# ------------------------------------------------------------- no positive
def test_anchor_without_positive_is_finite_and_left_out_of_the_mean():
    z = random_features(5, 1, 4, seed=6)
    labels = np.array([0, 1, 0, 2, 3])           # labels 1, 2, 3 have no positive
    loss = SupConLoss(0.1, 0.07)
    expected, per_anchor = reference_supcon(z, labels, 0.1, 0.07)
    assert set(per_anchor) == {(0, 0), (2, 0)}
    x = tf.constant(z, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = loss(labels, x)
    assert np.isfinite(float(value))
    np.testing.assert_allclose(float(value), expected, rtol=1e-5)
    assert np.all(np.isfinite(tape.gradient(value, x).numpy()))
    per_sample = ops.convert_to_numpy(SupConLoss(0.1, 0.07, reduction=None)(labels, x))
    np.testing.assert_array_equal(per_sample[[1, 3, 4]], 0.0)


def test_batch_without_any_positive_gives_zero_loss_and_gradient():
    x = tf.constant(random_features(3, 1, 4, seed=7), tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(x)
        value = SupConLoss()(np.array([0, 1, 2]), x)
    assert float(value) == 0.0
    np.testing.assert_array_equal(tape.gradient(value, x).numpy(), 0.0)


# ------------------------------------------------------------------ NT-Xent
@pytest.mark.parametrize("labels_given", [False, True])
def test_unsupervised_mode_is_nt_xent(labels_given):
    z = random_features(5, 2, 6, seed=8)
    expected = reference_nt_xent(z[:, 0], z[:, 1], 0.5)
    if labels_given:   # supervised=False ignores labels, even all-equal ones
        got = SupConLoss(0.5, 0.5, supervised=False)(np.zeros(5), z.astype("float32"))
    else:
        got = SupConLoss(0.5, 0.5)(None, z.astype("float32"))
    np.testing.assert_allclose(float(got), expected, rtol=1e-5)


# -------------------------------------------------------- mixed precision
def test_float16_features_are_finite_and_close_to_float32():
    z = random_features(8, 2, 16, seed=9)
    labels = np.array([0, 1, 2, 3, 0, 1, 2, 3])
    for tau in (0.1, 0.01):   # 1/tau = 100: float16 exp() would overflow
        loss = SupConLoss(tau, 0.07)
        full = float(loss(labels, z.astype("float32")))
        x = tf.constant(z, tf.float16)
        with tf.GradientTape() as tape:
            tape.watch(x)
            half = loss(labels, x)
        assert half.dtype == tf.float32 and np.isfinite(float(half))
        assert np.all(np.isfinite(tape.gradient(half, x).numpy()))
        np.testing.assert_allclose(float(half), full, rtol=2e-2)


def test_under_global_mixed_float16_policy():
    keras.mixed_precision.set_global_policy("mixed_float16")
    dense = keras.layers.Dense(8)
    x = keras.random.normal((6, 2, 4), seed=1)
    features = dense(x)
    assert features.dtype == "float16"
    labels = np.array([0, 1, 0, 1, 2, 2])
    half = float(SupConLoss(0.05)(labels, features))
    full = float(SupConLoss(0.05)(labels, ops.cast(features, "float32")))
    assert np.isfinite(half)
    np.testing.assert_allclose(half, full, rtol=1e-3)


# -------------------------------------------------------------- replicas
def test_two_replicas_give_the_single_replica_loss_and_gradient(two_replica_strategy):
    strategy = two_replica_strategy
    z = random_features(8, 2, 6, seed=10).astype("float32")
    labels = np.array([0, 1, 2, 0, 1, 2, 3, 3])
    for supervised, mode in ((True, "all"), (True, "one"), (False, "all")):
        loss = SupConLoss(0.2, 0.07, contrast_mode=mode, supervised=supervised)
        x = tf.constant(z)
        with tf.GradientTape() as tape:
            tape.watch(x)
            single = loss(labels, x)
        single_grad = tape.gradient(single, x).numpy()

        def shard(array):
            return strategy.experimental_distribute_values_from_function(
                lambda ctx: tf.constant(array[4 * ctx.replica_id_in_sync_group:
                                              4 * (ctx.replica_id_in_sync_group + 1)]))

        def step(y, f):
            with tf.GradientTape() as tape:
                tape.watch(f)
                value = loss(y, f)   # Keras scales it by 1 / num_replicas
            return value, tape.gradient(value, f)

        values, grads = strategy.run(tf.function(step), args=(shard(labels), shard(z)))
        total = float(strategy.reduce("SUM", values, axis=None))
        grad = np.concatenate([g.numpy() for g in strategy.experimental_local_results(grads)])
        np.testing.assert_allclose(total, float(single), rtol=1e-5)
        np.testing.assert_allclose(grad, single_grad, rtol=1e-4, atol=1e-6)

    # Control: without the all-gather each replica only sees its own half.
    local = SupConLoss(0.2, 0.07, gather_replicas=False)
    values = strategy.run(tf.function(local), args=(shard(labels), shard(z)))
    assert abs(float(strategy.reduce("SUM", values, axis=None))
               - float(local(labels, z))) > 1e-3


# ------------------------------------------------------------------ config
def test_config_round_trip():
    loss = SupConLoss(temperature=0.3, base_temperature=0.2, contrast_mode="one",
                      supervised=False, normalize=False, gather_replicas=False,
                      reduction=None, name="my_supcon")
    config = keras.saving.serialize_keras_object(loss)
    clone = keras.saving.deserialize_keras_object(config)
    assert isinstance(clone, SupConLoss)
    assert clone.get_config() == loss.get_config()
    z = random_features(3, 2, 4, seed=11).astype("float32")
    np.testing.assert_allclose(clone(None, z), loss(None, z))


# -------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs,match", [
    (dict(temperature=0.0), "temperature"),
    (dict(temperature=-0.1), "temperature"),
    (dict(base_temperature=0), "base_temperature"),
    (dict(contrast_mode="some"), "contrast_mode"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SupConLoss(**kwargs)


def test_bad_inputs_raise_named_errors():
    loss = SupConLoss()
    z = random_features(4, 2, 3).astype("float32")
    with pytest.raises(ValueError, match="rank 3"):
        loss(np.arange(4), z[:, 0])
    with pytest.raises(ValueError, match="labels length 3 does not match"):
        loss(np.arange(3), z)
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        loss(np.zeros((4, 2)), z)
    with pytest.raises(ValueError, match="needs >= 2 views"):
        loss(None, z[:, :1])
    dynamic = tf.function(lambda y, f: loss(y, f), input_signature=[
        tf.TensorSpec([None], tf.int64), tf.TensorSpec([None, 2, 3], tf.float32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels length"):
        dynamic(np.arange(3), z)


def test_unnormalised_features_are_normalised():
    """Documented choice: the loss L2-normalises its input (normalize=True)."""
    z = random_features(4, 2, 5, seed=12)
    labels = np.array([0, 1, 1, 0])
    scaled = z * np.array([3.0, 0.2, 7.0, 1.5])[:, None, None]
    loss = SupConLoss()
    np.testing.assert_allclose(float(loss(labels, scaled.astype("float32"))),
                               float(loss(labels, z.astype("float32"))), rtol=1e-5)
    np.testing.assert_allclose(
        ops.convert_to_numpy(l2_normalize(scaled.astype("float32"))), z, rtol=1e-5)


def test_compiles_with_xla():
    z = random_features(6, 2, 4, seed=13).astype("float32")
    labels = np.array([4, 9, 4, 1, 9, 1])
    loss = SupConLoss(0.1, 0.07)
    xla = tf.function(lambda y, f: loss(y, f), jit_compile=True)
    np.testing.assert_allclose(float(xla(labels, z)), float(loss(labels, z)), rtol=1e-5)
