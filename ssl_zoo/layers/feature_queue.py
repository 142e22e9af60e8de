"""ClassFeatureQueue: a per-class FIFO ring buffer of feature vectors and the class
prototypes (queue means) it gives, identical on every replica (DASO's momentum queue)."""

import numbers

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ssl_zoo import distribute
from ssl_zoo.utils.checks import check_int
from ssl_zoo.utils.labels import label_vector


def fifo_write_rows(labels, pointer, num_classes, queue_size):
    """Where each sample of a batch goes in per-class ring buffers, vectorised.

    Sample i of class k goes to slot (pointer[k] + r_i) mod S, r_i its rank among the
    batch's class-k samples; of a class with n_k > S samples only the last S are
    written, so the written rows are distinct (a scatter with no duplicate index,
    hence no write race on parallel hardware).

    Args:
        labels: (N,) int32 class ids; ids outside [0, K) are not written nor counted.
        pointer: (K,) int32, each class's next slot.
        num_classes: K.
        queue_size: S.

    Returns:
        (rows, per_class): rows (N,) int32, the row k*S + slot of a written sample in
        the (K*S, D) flattened buffers, or K*S (one past the end) for a sample that is
        not written; per_class (K,) int32, n_k, the batch's samples of each class.

    Example:
    >>> rows, n = fifo_write_rows(ops.array([1, 1, 1, 0, 7], "int32"),
    ...                           ops.array([0, 1], "int32"), 2, 2)
    >>> ops.convert_to_numpy(rows).tolist(), ops.convert_to_numpy(n).tolist()
    ([4, 2, 3, 0, 4], [1, 3])
    """
    k, s = num_classes, queue_size
    # One-hot rows of out-of-range labels are all zero: they get no slot, no count.
    one_hot = ops.cast(labels[:, None] == ops.arange(k, dtype="int32")[None, :],
                       "int32")                                        # (N, K)
    rank = ops.sum((ops.cumsum(one_hot, axis=0) - one_hot) * one_hot, axis=1)
    per_class = ops.sum(one_hot, axis=0)
    class_total = ops.sum(one_hot * per_class[None, :], axis=1)
    class_pointer = ops.sum(one_hot * pointer[None, :], axis=1)
    in_range = ops.sum(one_hot, axis=1) > 0
    written = ops.logical_and(in_range, rank >= class_total - s)
    slot = ops.mod(class_pointer + rank, s)
    return ops.where(written, labels * s + slot, k * s), per_class


@keras.saving.register_keras_serializable(package="ssl_zoo")
class ClassFeatureQueue(keras.layers.Layer):
    """Per-class FIFO queues of features; prototypes are the queue means.

    State (non-trainable, replica-synchronised weights): `queue` (K, S, D) float32,
    `pointer` (K,) int32, the next slot to write for each class, and `count` (K,) int32,
    the filled slots (at most S). `enqueue(features, labels)` writes each sample of
    class k to slot (pointer[k] + its rank among the batch's class-k samples) mod S;
    when a batch holds more than S samples of a class only its last S are written
    (FIFO: the oldest of them are overwritten within the batch). Then
    pointer = (pointer + n_k) mod S and count = min(count + n_k, S).

    With `gather_replicas=True`, under a `tf.distribute` strategy, `enqueue` first
    all-gathers the features and labels (`ssl_zoo.distribute.all_gather`, no gradient),
    so every replica writes the whole global batch in the same order: the state is the
    same as one replica enqueueing the global batch, on every replica.

    Labels outside [0, K): in eager and graph mode `enqueue` raises
    `InvalidArgumentError` (a `tf.debugging` assertion) before writing anything. XLA
    drops assertions; there such samples are ignored (written nowhere, counted nowhere),
    so they never touch another class's queue.

    Args:
        num_classes: K, the number of classes (>= 1).
        queue_size: S, the slots per class (>= 1; DASO uses 256).
        feature_dim: D; None takes it from the first features the layer sees.
        gather_replicas: all-gather the batch over replicas before enqueueing.
        **kwargs: `keras.layers.Layer` arguments (`name`, ...).

    Call arguments:
        inputs: features (B, D); only used to build the layer (D). A Keras layer needs
            a call: the queue's call returns its prototypes, so a model can expose them.

    Returns (call):
        `prototypes()`: (means (K, D) float32, valid (K,) bool).

    Example:
    >>> queue = ClassFeatureQueue(num_classes=3, queue_size=2, feature_dim=2)
    >>> queue.enqueue([[1.0, 0.0], [3.0, 0.0], [5.0, 1.0], [0.0, 2.0]], [0, 0, 0, 2])
    >>> means, valid = queue.prototypes()
    >>> ops.convert_to_numpy(means).tolist(), ops.convert_to_numpy(valid).tolist()
    ([[4.0, 0.5], [0.0, 0.0], [0.0, 2.0]], [True, False, True])
    >>> queue.contents(0).tolist()
    [[3.0, 0.0], [5.0, 1.0]]
    """

    def __init__(self, num_classes, queue_size, feature_dim=None, gather_replicas=True,
                 **kwargs):
        super().__init__(**kwargs)
        self.num_classes = check_int(num_classes, "ClassFeatureQueue num_classes")
        self.queue_size = check_int(queue_size, "ClassFeatureQueue queue_size")
        self.feature_dim = (None if feature_dim is None
                            else check_int(feature_dim, "ClassFeatureQueue feature_dim"))
        self.gather_replicas = bool(gather_replicas)
        if self.feature_dim is not None:
            self.build((None, self.feature_dim))

    def build(self, input_shape):
        if self.built:
            return
        dim = self._check_features_shape(input_shape)
        if dim is None:
            raise ValueError(f"ClassFeatureQueue needs a known feature dimension, got "
                             f"features of shape {tuple(input_shape)}; pass feature_dim.")
        self.feature_dim = int(dim)
        k, s = self.num_classes, self.queue_size
        self.queue = distribute.state_weight(self, "queue", (k, s, self.feature_dim),
                                             "float32")
        self.pointer = distribute.state_weight(self, "pointer", (k,), "int32")
        self.count = distribute.state_weight(self, "count", (k,), "int32")
        self.built = True

    def _check_features_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 2:
            raise ValueError(f"ClassFeatureQueue expects features of shape (batch, "
                             f"feature_dim) (rank 2), got shape {shape}.")
        if (self.feature_dim is not None and shape[-1] is not None
                and shape[-1] != self.feature_dim):
            raise ValueError(f"ClassFeatureQueue holds features of dimension "
                             f"{self.feature_dim}, got features of shape {shape}.")
        return shape[-1]

    # -------------------------------------------------------------------- state
    def enqueue(self, features, labels):
        """Appends a batch to the queues of its classes (see the class docstring).

        Args:
            features: (B, D) features (any float dtype; stored as float32, no gradient).
            labels: (B,) or (B, 1) integer class ids in [0, K).

        Returns:
            None.

        Example:
        >>> queue = ClassFeatureQueue(num_classes=2, queue_size=2, feature_dim=1)
        >>> for step in range(3):
        ...     queue.enqueue([[float(step)]], [1])
        >>> queue.contents(1).tolist(), ops.convert_to_numpy(queue.pointer).tolist()
        ([[1.0], [2.0]], [0, 1])
        """
        features = ops.convert_to_tensor(features)
        self._check_features_shape(features.shape)
        labels = label_vector(labels, features.shape[0], "ClassFeatureQueue")
        if not self.built:
            self.build(features.shape)
        features = ops.stop_gradient(ops.cast(features, "float32"))
        if self.gather_replicas:
            features = distribute.all_gather(features)
            labels = distribute.all_gather(labels)
        k, s, d = self.num_classes, self.queue_size, self.feature_dim
        checks = [
            tf.debugging.assert_equal(
                tf.shape(labels)[0], tf.shape(features)[0],
                message="ClassFeatureQueue labels length does not match the features' "
                        "batch size"),
            tf.debugging.Assert(
                ops.all(ops.logical_and(labels >= 0, labels < k)),
                [f"ClassFeatureQueue labels must be in [0, {k}), got", labels]),
        ]
        with tf.control_dependencies(checks):
            labels = tf.identity(labels)

        pointer = ops.convert_to_tensor(self.pointer)
        row, per_class = fifo_write_rows(labels, pointer, k, s)
        rows = ops.concatenate([ops.reshape(ops.convert_to_tensor(self.queue), (k * s, d)),
                                ops.zeros((1, d), "float32")])
        rows = ops.scatter_update(rows, row[:, None], features)
        self.queue.assign(ops.reshape(rows[:k * s], (k, s, d)))
        self.pointer.assign(ops.mod(pointer + per_class, s))
        self.count.assign(ops.minimum(ops.convert_to_tensor(self.count) + per_class, s))

    def prototypes(self):
        """Class means over the filled slots, and which classes have any.

        Returns:
            (means, valid): means (K, D) float32, the mean of class k's queued
            features; valid (K,) bool, count > 0. A class never enqueued has
            valid=False and a zero prototype (masked explicitly, never NaN): mask it,
            e.g. give it a -inf similarity, wherever prototypes are compared.

        Example:
        >>> queue = ClassFeatureQueue(num_classes=2, queue_size=4, feature_dim=2)
        >>> queue.enqueue([[2.0, 0.0], [4.0, 2.0]], [0, 0])
        >>> ops.convert_to_numpy(queue.prototypes()[0]).tolist()
        [[3.0, 1.0], [0.0, 0.0]]
        """
        s = self.queue_size
        count = ops.convert_to_tensor(self.count)
        oldest = ops.convert_to_tensor(self.pointer) - count
        age = ops.mod(ops.arange(s, dtype="int32")[None, :] - oldest[:, None], s)
        filled = ops.cast(age < count[:, None], "float32")            # (K, S)
        sums = ops.sum(ops.convert_to_tensor(self.queue) * filled[:, :, None], axis=1)
        valid = count > 0
        means = sums / ops.cast(ops.maximum(count, 1), "float32")[:, None]
        return ops.where(valid[:, None], means, 0.0), valid

    def contents(self, k):
        """Class k's queued features, oldest first (eager; for tests and debugging).

        Args:
            k: a class index in [0, num_classes).

        Returns:
            A numpy array (count[k], D).

        Example:
        >>> queue = ClassFeatureQueue(num_classes=1, queue_size=3, feature_dim=1)
        >>> queue.enqueue([[1.0], [2.0]], [0, 0])
        >>> queue.contents(0).tolist()
        [[1.0], [2.0]]
        """
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or not (
                0 <= k < self.num_classes):
            raise ValueError(f"ClassFeatureQueue.contents: class index must be in "
                             f"[0, {self.num_classes}), got {k!r}.")
        if not self.built:
            raise ValueError("ClassFeatureQueue is not built: no features seen yet.")
        count = int(ops.convert_to_numpy(self.count)[k])
        pointer = int(ops.convert_to_numpy(self.pointer)[k])
        slots = (pointer - count + np.arange(count)) % self.queue_size
        return ops.convert_to_numpy(self.queue)[k][slots]

    # --------------------------------------------------------------------- call
    def call(self, inputs):
        del inputs
        return self.prototypes()

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "queue_size": self.queue_size, "feature_dim": self.feature_dim,
                "gather_replicas": self.gather_replicas}
