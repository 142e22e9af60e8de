"""EMATeacher and ClassFeatureQueue against numpy / deque references: EMA of weights and
batch-norm statistics, FIFO contents and wrap-around, prototypes, label handling,
serialisation, XLA, and 1-vs-2-replica parity of the state on every replica."""

import collections

import keras
import numpy as np
import pytest
import tensorflow as tf

from harness import (assert_close_to_reference, assert_weights_close,
                     run_layer_serialization_test, run_model_saving_test)
from ssl_zoo.backbones import get_backbone
from ssl_zoo.layers import ClassFeatureQueue, EMATeacher, fifo_write_rows

IMAGE = (8, 8, 3)


def small_backbone():
    """A real backbone with batch norm (CIFAR ResNet-32 at width 0.25, 16 features)."""
    return get_backbone("resnet32_cifar", width=0.25, input_shape=IMAGE)


def images(batch=4, seed=0):
    return np.random.default_rng(seed).uniform(0, 1, (batch,) + IMAGE).astype("float32")


def perturbed_weights(student, rng):
    """New values for every student weight: trainable ones moved by noise, BN
    statistics (non-trainable) redrawn positive (valid means and variances)."""
    return [w.numpy() + rng.normal(scale=0.1, size=w.shape).astype(w.dtype) if w.trainable
            else rng.uniform(0.5, 1.5, w.shape).astype(w.dtype)
            for w in student.weights]


def reference_ema(teacher, student, trainable, decay, statistics):
    """teacher <- decay*teacher + (1-decay)*student (float64), per the brief's rules."""
    return [decay * t + (1 - decay) * s if (train or statistics == "average") else s
            for t, s, train in zip(teacher, student, trainable)]


def per_replica(strategy, variable):
    return [np.asarray(v) for v in strategy.experimental_local_results(variable.value)]


# =================================================================== EMATeacher
@pytest.mark.parametrize("statistics", ["average", "copy"])
def test_ema_of_weights_and_bn_statistics_matches_numpy(statistics):
    rng = np.random.default_rng(0)
    student = small_backbone()
    trainable = [w.trainable for w in student.weights]
    assert sum(trainable) and not all(trainable)   # has BN statistics
    ema = EMATeacher(student, decay=0.8, statistics=statistics)
    ema.build((None,) + IMAGE)
    student.set_weights(perturbed_weights(student, rng))
    ema.initialize(student)
    expected = [w.numpy().astype(np.float64) for w in student.weights]
    for _ in range(3):
        student.set_weights(perturbed_weights(student, rng))
        ema.update(student)
        expected = reference_ema(expected, [w.numpy() for w in student.weights], trainable,
                                 0.8, statistics)
    assert_weights_close(ema.teacher.get_weights(), expected, atol=1e-6, rtol=1e-5,
                         names=[w.path for w in student.weights], name="teacher")
    # The two modes really differ on the BN statistics (and only there).
    statistic = [i for i, t in enumerate(trainable) if not t][0]
    copied = np.allclose(ema.teacher.weights[statistic].numpy(),
                         student.weights[statistic].numpy())
    assert copied == (statistics == "copy")


def test_teacher_output_equals_students_after_initialize():
    student = small_backbone()
    student.set_weights(perturbed_weights(student, np.random.default_rng(1)))
    ema = EMATeacher(student)
    x = images()
    expected = student(x, training=False).numpy()
    assert not np.allclose(ema(x).numpy(), expected, atol=1e-4)   # fresh clone differs
    ema.initialize(student)
    assert_close_to_reference(ema(x), expected, atol=1e-5, name="teacher output")
    # The teacher runs in inference mode even when called with training=True.
    assert_close_to_reference(ema(x, training=True), expected, atol=1e-5,
                              name="teacher output (training=True)")


def test_teacher_gets_no_gradient_and_is_never_trainable():
    student = small_backbone()
    ema = EMATeacher(student, name="ema")
    inputs = keras.Input(IMAGE)
    outer = keras.Model(inputs, keras.layers.Dense(3, name="head")(ema(inputs)))
    outer.trainable = True                       # propagates to sublayers, not to ema
    ema.trainable = True
    assert ema.trainable is False and ema.trainable_weights == []
    assert len(ema.non_trainable_weights) == len(student.weights)
    assert {id(w) for w in outer.trainable_weights} == {
        id(w) for w in outer.get_layer("head").trainable_weights}

    x = tf.constant(images())
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        loss = tf.reduce_sum(outer(x, training=True) ** 2)
    assert all(g is None for g in tape.gradient(loss, [w.value for w in ema.weights]))
    assert tape.gradient(loss, x) is None

    before = ema.teacher.get_weights()
    outer.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    outer.fit(images(), np.ones((4, 3), "float32"), epochs=1, verbose=0)
    assert_weights_close(ema.teacher.get_weights(), before, atol=0, rtol=0,
                         name="teacher after fit")


def test_ema_update_inside_an_xla_train_step():
    student = keras.Sequential([keras.Input(IMAGE), keras.layers.Conv2D(4, 3),
                                keras.layers.BatchNormalization(),
                                keras.layers.GlobalAveragePooling2D()])
    ema = EMATeacher(student, decay=0.5)
    ema.build((None,) + IMAGE)
    ema.initialize(student)
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(student.trainable_variables)
    trainable = [w.trainable for w in student.weights]
    expected = [w.numpy().astype(np.float64) for w in student.weights]

    @tf.function(jit_compile=True)
    def train_step(x):
        with tf.GradientTape() as tape:
            loss = tf.reduce_mean(student(x, training=True) ** 2)
        grads = tape.gradient(loss, student.trainable_variables)
        optimizer.apply_gradients(zip(grads, student.trainable_variables))
        ema.update(student)
        return loss

    for step in range(2):
        before = [w.numpy() for w in student.weights]
        train_step(tf.constant(images(seed=step)))
        after = [w.numpy() for w in student.weights]
        moved = [not np.array_equal(b, a) for b, a in zip(before, after)]
        assert any(m for m, t in zip(moved, trainable) if not t)   # BN stats updated
        expected = reference_ema(expected, after, trainable, 0.5, "average")
    assert_weights_close(ema.teacher.get_weights(), expected, atol=1e-6, rtol=1e-5,
                         name="teacher after XLA steps")


@pytest.mark.parametrize("kwargs,match", [
    (dict(decay=-0.1), "decay"), (dict(decay=1.5), "decay"), (dict(decay="0.9"), "decay"),
    (dict(statistics="median"), "statistics"),
])
def test_ema_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        EMATeacher(keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)]), **kwargs)


def test_ema_needs_a_network_and_a_matching_student():
    with pytest.raises(ValueError, match="keras.Model or its serialised config"):
        EMATeacher(keras.layers.Dense(2))
    ema = EMATeacher(small_backbone())
    wider = get_backbone("resnet32_cifar", width=0.5, input_shape=IMAGE)
    with pytest.raises(ValueError, match=r"weight 0 'stem_conv/kernel' has shape"):
        ema.update(wider)
    short = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
    longer = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1),
                               keras.layers.BatchNormalization()])
    with pytest.raises(ValueError, match="the student has 6 weights but the teacher has 2"):
        EMATeacher(short).initialize(longer)


def test_ema_serialisation_round_trip_and_config_dict():
    student = small_backbone()
    ema = EMATeacher(student, decay=0.99, statistics="copy", name="teacher")
    student.set_weights(perturbed_weights(student, np.random.default_rng(2)))
    ema.initialize(student)
    revived = run_layer_serialization_test(ema, images())
    assert (revived.decay, revived.statistics) == (0.99, "copy")
    from_dict = EMATeacher(keras.saving.serialize_keras_object(student))
    from_dict.initialize(student)
    assert_close_to_reference(from_dict(images()), ema(images()), atol=1e-6)


# ============================================================ ClassFeatureQueue
class DequeReference:
    """Per-class FIFO queues of bounded length, one sample at a time."""

    def __init__(self, num_classes, size):
        self.size = size
        self.queues = [collections.deque(maxlen=size) for _ in range(num_classes)]
        self.seen = np.zeros(num_classes, int)

    def enqueue(self, features, labels):
        for f, y in zip(features, labels):
            self.queues[y].append(np.asarray(f, np.float64))
            self.seen[y] += 1

    def check(self, queue, dim):
        for k, q in enumerate(self.queues):
            expected = np.array(list(q)).reshape(len(q), dim)
            assert_close_to_reference(queue.contents(k), expected, name=f"contents({k})")
        np.testing.assert_array_equal(queue.count.numpy(), [len(q) for q in self.queues])
        np.testing.assert_array_equal(queue.pointer.numpy(), self.seen % self.size)
        means, valid = queue.prototypes()
        expected_means = [np.mean(list(q), axis=0) if q else np.zeros(dim)
                          for q in self.queues]
        assert_close_to_reference(means, np.array(expected_means), atol=1e-6,
                                  name="prototypes")
        np.testing.assert_array_equal(valid.numpy(), [len(q) > 0 for q in self.queues])


def random_batches(num_classes_used, dim, seed=0, big_class_batch=6):
    """Batches of random sizes and labels, one holding `big_class_batch` samples of
    class 0; the labels never reach the last classes of the queue."""
    rng = np.random.default_rng(seed)
    batches = []
    for size in (3, 1, 5, 4, 2, 6):
        batches.append((rng.normal(size=(size, dim)).astype("float32"),
                        rng.integers(0, num_classes_used, size).astype("int32")))
    labels = np.array([0] * big_class_batch + [1, 2], "int32")
    batches.insert(3, (rng.normal(size=(len(labels), dim)).astype("float32"),
                       rng.permutation(labels)))
    return batches


@pytest.mark.parametrize("mode", ["eager", "graph", "xla"])
def test_queue_fifo_and_prototypes_match_a_deque_reference(mode):
    k, s, d = 5, 3, 2                 # classes 3 and 4 are never enqueued
    queue = ClassFeatureQueue(k, s)
    reference = DequeReference(k, s)
    enqueue = {"eager": queue.enqueue, "graph": tf.function(queue.enqueue),
               "xla": tf.function(queue.enqueue, jit_compile=True)}[mode]
    for features, labels in random_batches(3, d):
        enqueue(features, labels)
        reference.enqueue(features, labels)
        reference.check(queue, d)
    assert queue.feature_dim == d and max(reference.seen) > 2 * s   # wrapped around
    means, valid = queue.prototypes()
    assert np.all(np.isfinite(means.numpy()))
    assert not valid.numpy()[3:].any() and not means.numpy()[3:].any()


def test_batch_with_more_than_queue_size_samples_of_a_class_keeps_its_last():
    queue = ClassFeatureQueue(2, 3, feature_dim=1)
    queue.enqueue([[0.0]], [0])                          # pointer 1
    features = np.arange(1, 8, dtype="float32")[:, None]  # 7 samples of class 0
    queue.enqueue(features, np.zeros(7, "int32"))
    np.testing.assert_array_equal(queue.contents(0)[:, 0], [5, 6, 7])
    assert queue.pointer.numpy().tolist() == [(1 + 7) % 3, 0]
    assert queue.count.numpy().tolist() == [3, 0]


def test_written_rows_are_distinct_and_the_last_queue_size_of_each_class():
    """No duplicate scatter index (a CPU scatter applies duplicates in order and would
    hide a race that parallel hardware has), each class in its own rows."""
    rng = np.random.default_rng(9)
    k, s = 4, 3
    for _ in range(5):
        labels = rng.integers(-1, k + 1, 20).astype("int32")    # includes -1 and K
        pointer = rng.integers(0, s, k).astype("int32")
        rows, per_class = (np.asarray(v) for v in fifo_write_rows(labels, pointer, k, s))
        written = rows < k * s
        assert np.all(rows <= k * s)
        assert len(set(rows[written])) == written.sum()
        for c in range(k):
            members = np.flatnonzero(labels == c)
            assert per_class[c] == len(members)
            np.testing.assert_array_equal(np.flatnonzero(written & (labels == c)),
                                          members[-s:])
            expected = c * s + (pointer[c] + np.arange(len(members))) % s
            np.testing.assert_array_equal(rows[members[-s:]], expected[-s:])
        assert not written[(labels < 0) | (labels >= k)].any()


def test_empty_queue_gives_zero_prototypes_and_no_valid_class():
    queue = ClassFeatureQueue(3, 4, feature_dim=2)
    means, valid = queue.prototypes()
    np.testing.assert_array_equal(means.numpy(), np.zeros((3, 2)))
    np.testing.assert_array_equal(valid.numpy(), [False] * 3)
    assert queue.contents(1).shape == (0, 2)


def test_labels_out_of_range_raise_eagerly_and_are_ignored_under_xla():
    features = np.array([[1.0], [2.0], [3.0], [4.0]], "float32")
    labels = np.array([0, -1, 2, 1], "int32")          # K = 2: -1 and 2 are invalid
    queue = ClassFeatureQueue(2, 2, feature_dim=1)
    for enqueue in (queue.enqueue, tf.function(queue.enqueue)):
        with pytest.raises(tf.errors.InvalidArgumentError, match=r"in \[0, 2\)"):
            enqueue(features, labels)
        assert queue.count.numpy().tolist() == [0, 0]   # nothing written
    tf.function(queue.enqueue, jit_compile=True)(features, labels)
    assert queue.contents(0).tolist() == [[1.0]] and queue.contents(1).tolist() == [[4.0]]
    assert queue.pointer.numpy().tolist() == [1, 1]


def test_features_are_stored_as_float32_without_gradient():
    queue = ClassFeatureQueue(2, 2)
    x = tf.constant([[1.5, 2.0]], tf.float16)
    with tf.GradientTape() as tape:
        tape.watch(x)
        queue.enqueue(x, [1])
        means, _ = queue.prototypes()
    assert queue.queue.dtype == "float32"
    assert tape.gradient(means, x) is None
    np.testing.assert_array_equal(means.numpy()[1], [1.5, 2.0])


@pytest.mark.parametrize("args,kwargs,match", [
    ((0, 4), {}, "num_classes must be >= 1"),
    ((3, 0), {}, "queue_size must be >= 1"),
    ((3, 2.5), {}, "queue_size must be >= 1"),
    ((3, 4), dict(feature_dim=0), "feature_dim must be >= 1"),
])
def test_queue_bad_arguments(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        ClassFeatureQueue(*args, **kwargs)


def test_queue_bad_inputs_raise_named_errors():
    queue = ClassFeatureQueue(3, 2, feature_dim=4)
    with pytest.raises(ValueError, match="rank 2"):
        queue.enqueue(np.zeros((2, 2, 4), "float32"), [0, 1])
    with pytest.raises(ValueError, match="dimension 4"):
        queue.enqueue(np.zeros((2, 5), "float32"), [0, 1])
    with pytest.raises(ValueError, match=r"shape \(batch,\)"):
        queue.enqueue(np.zeros((2, 4), "float32"), np.zeros((2, 2), "int32"))
    with pytest.raises(ValueError, match="labels length 3 does not match"):
        queue.enqueue(np.zeros((2, 4), "float32"), [0, 1, 2])
    dynamic = tf.function(queue.enqueue, input_signature=[
        tf.TensorSpec([None, 4], tf.float32), tf.TensorSpec([None], tf.int32)])
    with pytest.raises(tf.errors.InvalidArgumentError, match="labels length"):
        dynamic(np.zeros((2, 4), "float32"), np.array([0, 1, 2], "int32"))
    with pytest.raises(ValueError, match="class index"):
        queue.contents(3)
    queue.enqueue(np.ones((2, 4), "float32"), np.array([[2], [2]]))   # (B, 1) labels
    assert queue.count.numpy().tolist() == [0, 0, 2]
    with pytest.raises(ValueError, match="feature dimension"):
        ClassFeatureQueue(2, 2).build((None, None))


def test_queue_serialisation_round_trip_keeps_state():
    queue = ClassFeatureQueue(4, 3, name="queue")
    for features, labels in random_batches(3, 2, seed=3):
        queue.enqueue(features, labels)
    revived = run_layer_serialization_test(queue, np.zeros((1, 2), "float32"))
    assert revived.get_config()["feature_dim"] == 2
    for k in range(4):
        np.testing.assert_array_equal(revived.contents(k), queue.contents(k))


def test_keras_file_keeps_teacher_weights_and_queue_state(tmp_path):
    student = small_backbone()
    student.set_weights(perturbed_weights(student, np.random.default_rng(4)))
    ema = EMATeacher(student, decay=0.9, name="ema")
    queue = ClassFeatureQueue(3, 4, name="queue")
    inputs = keras.Input(IMAGE)
    features = ema(inputs)
    means, valid = queue(features)
    model = keras.Model(inputs, [features, means])
    ema.initialize(student)
    queue.enqueue(ema(images(6, seed=5)), np.array([0, 1, 0, 0, 1, 0]))
    loaded = run_model_saving_test(model, images(2, seed=6), tmp_path)
    loaded_queue = loaded.get_layer("queue")
    for name in ("queue", "pointer", "count"):
        np.testing.assert_array_equal(getattr(loaded_queue, name).numpy(),
                                      getattr(queue, name).numpy())
    assert_weights_close(loaded.get_layer("ema").teacher.get_weights(),
                         student.get_weights(), atol=0, rtol=0, name="loaded teacher")


# ============================================================ 1 vs 2 replicas
def split(strategy, array, first):
    """Replica 0 gets the first `first` rows, replica 1 the rest."""
    return strategy.experimental_distribute_values_from_function(
        lambda ctx: tf.constant(array[:first] if ctx.replica_id_in_sync_group == 0
                                else array[first:]))


def test_queue_two_replicas_equal_one_replica_on_the_global_batch(two_replica_strategy):
    strategy = two_replica_strategy
    k, s, d = 4, 3, 2
    single = ClassFeatureQueue(k, s, feature_dim=d)
    with strategy.scope():
        gathered = ClassFeatureQueue(k, s, feature_dim=d)
        local = ClassFeatureQueue(k, s, feature_dim=d, gather_replicas=False)
    steps = [tf.function(queue.enqueue, reduce_retracing=True) for queue in (gathered, local)]
    for features, labels in random_batches(3, d, seed=7):
        if len(labels) < 2:
            continue
        first = len(labels) // 2 + 1 if len(labels) > 2 else 1   # unequal halves
        single.enqueue(features, labels)
        for step in steps:
            strategy.run(step, args=(split(strategy, features, first),
                                     split(strategy, labels, first)))
    for name in ("queue", "pointer", "count"):
        values = per_replica(strategy, getattr(gathered, name))
        assert len(values) == 2
        for value in values:
            np.testing.assert_array_equal(value, getattr(single, name).numpy(),
                                          err_msg=name)
    # Control: without the all-gather the replicas only enqueue their own part.
    assert not np.array_equal(per_replica(strategy, local.queue)[0], single.queue.numpy())


@pytest.mark.parametrize("statistics", ["average", "copy"])
def test_ema_two_replicas_equal_one_replica(two_replica_strategy, statistics):
    strategy = two_replica_strategy
    rng = np.random.default_rng(8)
    single_student = small_backbone()
    single = EMATeacher(single_student, decay=0.7, statistics=statistics)
    with strategy.scope():
        student = small_backbone()
        mirrored = EMATeacher(student, decay=0.7, statistics=statistics)
    values = perturbed_weights(single_student, rng)
    for net in (student, single_student):
        net.set_weights(values)
    single.initialize(single_student)
    strategy.run(tf.function(lambda: mirrored.initialize(student)))
    update = tf.function(lambda: mirrored.update(student))
    for _ in range(2):
        values = perturbed_weights(single_student, rng)
        for net in (student, single_student):
            net.set_weights(values)
        single.update(single_student)
        strategy.run(update)
    for weight, expected in zip(mirrored.teacher.weights, single.teacher.weights):
        assert weight.value.aggregation == tf.VariableAggregation.ONLY_FIRST_REPLICA
        copies = per_replica(strategy, weight)
        assert len(copies) == 2
        for copy in copies:
            assert_close_to_reference(copy, expected.numpy(), atol=1e-6,
                                      name=weight.path)
