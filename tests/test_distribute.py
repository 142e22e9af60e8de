"""ssl_zoo.distribute: identity without replicas; under the 2-CPU MirroredStrategy the
all-gather (values and gradients), sums, offsets, loss unscaling and the aggregation of
replica-synchronised state, each against the 1-replica computation."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from ssl_zoo import distribute


def per_replica(strategy, value):
    """The values of a per-replica / mirrored result, one numpy array per replica."""
    return [np.asarray(v) for v in strategy.experimental_local_results(value)]


def split(strategy, array, sizes):
    """Distributes `array` along axis 0: replica r gets `sizes[r]` consecutive rows."""
    bounds = np.cumsum([0, *sizes])
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(array[bounds[ctx.replica_id_in_sync_group]:
                                      bounds[ctx.replica_id_in_sync_group + 1]]))


# ---------------------------------------------------------------- one replica
@pytest.mark.parametrize("graph", [False, True])
def test_identity_outside_a_strategy(graph):
    x = np.random.default_rng(0).normal(size=(5, 3)).astype("float32")

    def run(t):
        return (distribute.all_gather(t), distribute.all_sum(t), distribute.all_gather(t, 1),
                distribute.replica_offset(ops.shape(t)[0]), distribute.replica_id(),
                distribute.unscale_loss(ops.sum(t)))

    fn = tf.function(run) if graph else run
    gathered, summed, gathered1, offset, rid, unscaled = fn(tf.constant(x))
    np.testing.assert_array_equal(gathered, x)
    np.testing.assert_array_equal(summed, x)
    np.testing.assert_array_equal(gathered1, x)
    assert int(offset) == 0 and int(rid) == 0
    np.testing.assert_allclose(float(unscaled), x.sum(), rtol=1e-6)
    assert distribute.replica_context() is None
    assert distribute.num_replicas() == 1


def test_identity_in_the_cross_replica_context_of_two_replicas(two_replica_strategy):
    with two_replica_strategy.scope():
        assert distribute.replica_context() is None
        assert distribute.num_replicas() == 2
        x = tf.ones((2, 2))
        assert distribute.all_gather(x) is x and distribute.all_sum(x) is x


# -------------------------------------------------------------- two replicas
def test_all_gather_sum_offset_and_ids_on_two_replicas(two_replica_strategy):
    strategy = two_replica_strategy
    x = np.arange(16, dtype="float32").reshape(8, 2)
    sizes = (3, 5)                     # unequal local batches

    @tf.function
    def step(local):
        return (distribute.all_gather(local), distribute.all_gather(tf.transpose(local), 1),
                distribute.all_sum(local[:1]),
                distribute.replica_offset(tf.shape(local)[0]), distribute.replica_id(),
                distribute.num_replicas() + tf.zeros((), tf.int32),
                distribute.unscale_loss(tf.constant(0.25)))

    gathered, gathered_t, summed, offset, rid, replicas, unscaled = strategy.run(
        step, args=(split(strategy, x, sizes),))
    for g, gt in zip(per_replica(strategy, gathered), per_replica(strategy, gathered_t)):
        np.testing.assert_array_equal(g, x)           # global batch, replica order
        np.testing.assert_array_equal(gt, x.T)
    for s in per_replica(strategy, summed):
        np.testing.assert_array_equal(s, x[:1] + x[3:4])
    assert [int(o) for o in per_replica(strategy, offset)] == [0, 3]
    assert [int(r) for r in per_replica(strategy, rid)] == [0, 1]
    assert [int(r) for r in per_replica(strategy, replicas)] == [2, 2]
    assert [float(u) for u in per_replica(strategy, unscaled)] == [0.5, 0.5]


def global_loss(features):
    """A loss that couples rows across the replica boundary (anchor i, all rows j)."""
    weights = ops.reshape(ops.arange(1, ops.size(features) + 1, dtype="float32"),
                          ops.shape(features)) / 10.0
    pairwise = ops.matmul(features, ops.transpose(features))
    return ops.sum(weights * features ** 3) + ops.sum(ops.log1p(ops.exp(pairwise)))


def anchor_loss(anchors, contrast, offset):
    """The part of a SupCon-like loss whose anchors are `anchors` (rows offset..)."""
    pairwise = ops.matmul(anchors, ops.transpose(contrast))
    rows = offset + ops.arange(ops.shape(anchors)[0])
    own = ops.take(contrast, rows, axis=0)
    return ops.sum(ops.log(ops.sum(ops.exp(pairwise), axis=1))) - ops.sum(anchors * own)


def test_gradients_reach_each_replicas_own_rows_as_on_one_replica(two_replica_strategy):
    strategy = two_replica_strategy
    x = np.random.default_rng(1).normal(size=(6, 3)).astype("float32") * 0.5
    sizes = (2, 4)
    single = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(single)
        single_global = global_loss(single)
        single_anchor = anchor_loss(single, single, 0)
    expected_global = tape.gradient(single_global, single).numpy()
    expected_anchor = tape.gradient(single_anchor, single).numpy()

    @tf.function
    def step(local):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(local)
            gathered = distribute.all_gather(local)
            # (a) every replica computes the global loss, scaled like a Keras Loss
            scaled = global_loss(gathered) / distribute.num_replicas()
            # (b) each replica's anchors against the global batch: the sum is the loss
            offset = distribute.replica_offset(tf.shape(local)[0])
            partial = anchor_loss(local, gathered, offset)
        return (scaled, partial, tape.gradient(scaled, local),
                tape.gradient(partial, local))

    scaled, partial, grad_global, grad_anchor = strategy.run(
        step, args=(split(strategy, x, sizes),))
    np.testing.assert_allclose(float(strategy.reduce("SUM", scaled, axis=None)),
                               float(single_global), rtol=1e-5)
    np.testing.assert_allclose(float(strategy.reduce("SUM", partial, axis=None)),
                               float(single_anchor), rtol=1e-5)
    got_global = per_replica(strategy, grad_global)
    got_anchor = per_replica(strategy, grad_anchor)
    assert [g.shape[0] for g in got_global] == list(sizes)
    np.testing.assert_allclose(np.concatenate(got_global), expected_global, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(np.concatenate(got_anchor), expected_anchor, rtol=1e-5,
                               atol=1e-6)


# ------------------------------------------------- replica-synchronised state
def assign_replica_dependent(variable):
    """Each replica assigns a different value: replica r writes r + 1 everywhere."""
    rid = tf.cast(tf.distribute.get_replica_context().replica_id_in_sync_group,
                  variable.dtype)
    variable.assign(tf.fill(variable.shape, rid + 1))


@pytest.mark.parametrize("dtype", ["float32", "int32"])
def test_state_weight_holds_the_first_replicas_value_everywhere(two_replica_strategy,
                                                                dtype):
    strategy = two_replica_strategy
    with strategy.scope():
        layer = keras.layers.Layer()
        state = distribute.state_weight(layer, "state", (2, 3), dtype, "ones")
    assert not state.trainable and state in layer.non_trainable_weights
    assert state.aggregation == distribute.STATE_AGGREGATION
    for value in per_replica(strategy, state.value):
        np.testing.assert_array_equal(value, np.ones((2, 3)))

    strategy.run(tf.function(lambda: assign_replica_dependent(state)))
    for value in per_replica(strategy, state.value):
        np.testing.assert_array_equal(value, np.ones((2, 3)))   # replica 0 writes 1

    # An update computed identically on every replica is stored once, not summed.
    strategy.run(tf.function(lambda: state.assign(state * 3 + 1)))
    for value in per_replica(strategy, state.value):
        np.testing.assert_array_equal(value, np.full((2, 3), 4))


def test_why_state_is_only_first_replica(two_replica_strategy):
    """Keras' default aggregation lets replicas' copies drift; "mean" refuses ints."""
    strategy = two_replica_strategy
    with strategy.scope():
        layer = keras.layers.Layer()
        drifting = layer.add_weight(name="drifting", shape=(2,), initializer="zeros",
                                    trainable=False)                    # "none"
    strategy.run(tf.function(lambda: assign_replica_dependent(drifting)))
    assert [v.tolist() for v in per_replica(strategy, drifting.value)] == [[1, 1], [2, 2]]
    with strategy.scope(), pytest.raises(ValueError, match="non-floating"):
        layer.add_weight(name="count", shape=(2,), dtype="int32", trainable=False,
                         aggregation="mean")


def test_synchronized_state_scope_synchronises_a_layers_own_weights(two_replica_strategy):
    strategy = two_replica_strategy
    with strategy.scope():
        with distribute.synchronized_state_scope():
            inside = keras.layers.BatchNormalization()
            inside.build((None, 2))
        outside = keras.layers.BatchNormalization()
        outside.build((None, 2))
    for variable in inside.weights:
        assert variable.value.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA
    assert outside.moving_mean.value.aggregation == tf.VariableAggregation.NONE
    strategy.run(tf.function(lambda: assign_replica_dependent(inside.moving_mean)))
    for value in per_replica(strategy, inside.moving_mean.value):
        np.testing.assert_array_equal(value, [1, 1])
