"""The harness itself: each check passes on a correct object and fails on a broken one."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from harness import (assert_close_to_reference, run_fit_reduces_loss,
                     run_layer_serialization_test, run_replica_parity_test,
                     two_cpu_strategy)


def test_assert_close_reports_the_worst_element():
    assert_close_to_reference(np.ones(3), np.ones(3) + 1e-7, atol=1e-6)
    with pytest.raises(AssertionError, match=r"1/4 elements.*index \(1, 0\)"):
        assert_close_to_reference([[0.0, 1.0], [5.0, 3.0]], [[0.0, 1.0], [2.0, 3.0]],
                                  atol=1e-3, name="x")
    with pytest.raises(AssertionError, match="shape"):
        assert_close_to_reference(np.zeros(3), np.zeros(4))
    with pytest.raises(AssertionError, match="non-finite"):
        assert_close_to_reference([np.nan], [1.0])


class ScaledDense(keras.layers.Layer):
    """A layer whose get_config forgets `scale` when `forget=True`."""

    def __init__(self, units=2, scale=1.0, forget=False, **kwargs):
        super().__init__(**kwargs)
        self.units, self.scale, self.forget = units, scale, forget
        self.dense = keras.layers.Dense(units)

    def build(self, input_shape):
        self.dense.build(input_shape)

    def call(self, x):
        return self.dense(x) * self.scale

    def get_config(self):
        config = {**super().get_config(), "units": self.units, "forget": self.forget}
        if not self.forget:
            config["scale"] = self.scale
        return config


def test_layer_serialization_catches_a_lost_argument():
    x = np.ones((2, 3), "float32")
    with keras.saving.custom_object_scope({"ScaledDense": ScaledDense}):
        run_layer_serialization_test(ScaledDense(scale=3.0), x)
        with pytest.raises(AssertionError, match="output"):
            run_layer_serialization_test(ScaledDense(scale=3.0, forget=True), x)


class TinyClassifier(keras.Model):
    """Dense classifier with a custom train_step; `per_replica_mean=True` reproduces
    the DESIGN.md pitfall (a plain mean per replica, summed again across replicas)."""

    def __init__(self, per_replica_mean=False, **kwargs):
        super().__init__(**kwargs)
        self.per_replica_mean = per_replica_mean
        self.dense = keras.layers.Dense(3)
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.tracker = keras.metrics.Mean(name="loss")

    def call(self, x, training=False):
        return self.dense(x)

    def train_step(self, data):
        x, y = data
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        with tf.GradientTape() as tape:
            logits = self(x, training=True)
            if self.per_replica_mean:
                loss = ops.mean(keras.losses.sparse_categorical_crossentropy(
                    y, logits, from_logits=True))
                logged = loss
            else:
                loss = self.ce(y, logits)  # already scaled by 1/replicas
                logged = loss * replicas
        grads = tape.gradient(loss, self.trainable_variables)
        self.optimizer.apply_gradients(zip(grads, self.trainable_variables))
        self.tracker.update_state(logged)
        return {"loss": self.tracker.result()}


def _tiny_data():
    rng = np.random.RandomState(0)
    return rng.normal(size=(4, 5)).astype("float32"), np.array([0, 1, 2, 1])


@pytest.mark.parametrize("broken", [False, True])
def test_replica_parity_catches_a_doubled_update(broken):
    def run():
        return run_replica_parity_test(lambda: TinyClassifier(broken), _tiny_data(),
                                       lambda: keras.optimizers.SGD(0.1),
                                       strategy=two_cpu_strategy())
    if broken:
        with pytest.raises(AssertionError, match="update of"):
            run()
    else:
        loss_1, loss_2 = run()
        assert loss_1 == pytest.approx(loss_2, rel=1e-5)


def test_fit_reduces_loss_fails_when_nothing_learns():
    x, y = _tiny_data()
    run_fit_reduces_loss(TinyClassifier(), x, y, steps=3,
                         optimizer=keras.optimizers.SGD(0.5))
    with pytest.raises(AssertionError, match="did not go down"):
        run_fit_reduces_loss(TinyClassifier(), x, y, steps=3,
                             optimizer=keras.optimizers.SGD(0.0))
