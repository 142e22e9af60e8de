"""Classifier heads for label augmentation: the joint (class x transformation) head,
aggregated inference over transformations, and the self-distillation head."""

import keras
from keras import ops


class _Float32Dense(keras.layers.Layer):
    """A Dense sub-layer `dense` of `units` outputs, logits cast to float32 (the
    shared body of the linear heads below)."""

    def _add_dense(self, units):
        self.dense = keras.layers.Dense(units, dtype=self.dtype_policy, name="dense")

    def build(self, input_shape):
        if not self.dense.built:
            self.dense.build(input_shape)
        self.built = True

    def call(self, features):
        return ops.cast(self.dense(features), "float32")

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.dense.units,)


@keras.saving.register_keras_serializable(package="ssl_zoo")
class JointLabelHead(_Float32Dense):
    """Linear classifier over the N*M joint labels (class k, transformation j).

    Output index k*M + j holds the logit of (k, j); logits are float32 even under
    mixed precision.

    Args:
        num_classes: N.
        num_transforms: M.

    Call args:
        features: (B, D).

    Returns:
        (B, N*M) joint logits.

    Example:
    >>> head = JointLabelHead(10, 4)
    >>> tuple(head(ops.zeros((2, 16))).shape)
    (2, 40)
    """

    def __init__(self, num_classes, num_transforms, **kwargs):
        super().__init__(**kwargs)
        if int(num_classes) < 1 or int(num_transforms) < 1:
            raise ValueError(f"num_classes and num_transforms must be >= 1, got "
                             f"{num_classes} and {num_transforms}.")
        self.num_classes = int(num_classes)
        self.num_transforms = int(num_transforms)
        self._add_dense(self.num_classes * self.num_transforms)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "num_transforms": self.num_transforms}


def single_logits(joint_logits, num_classes, num_transforms, interleaved=True):
    """Class logits z[., k*M + 0] of the untransformed inputs (single inference).

    With `interleaved=True`, `joint_logits` is the (B*M, N*M) output on an expanded
    batch and rows b*M are read; otherwise it is (B, N*M) on untransformed images.
    """
    z = ops.reshape(joint_logits, (-1, num_classes, num_transforms))[:, :, 0]
    if interleaved and num_transforms > 1:
        z = ops.reshape(z, (-1, num_transforms, num_classes))[:, 0, :]
    return z


@keras.saving.register_keras_serializable(package="ssl_zoo")
class AggregatedInference(keras.layers.Layer):
    """Aggregated class logits (1/M) * sum_j z(t_j(x))[k, j] from interleaved joint logits.

    softmax of the output is P(y | x) of SLA+AG (Lee et al. 2020, eq. 5).

    Args:
        num_classes: N.
        num_transforms: M.

    Call args:
        joint_logits: (B*M, N*M), row b*M + j being the logits of t_j(x_b).

    Returns:
        (B, N) aggregated logits.

    Raises:
        ValueError: joint logits whose width is not N*M, or whose batch is not a
            multiple of M (checked when traced; a batch size unknown until the graph
            runs is asserted there, an InvalidArgumentError with the same message).

    Example:
    >>> agg = AggregatedInference(3, 2)
    >>> tuple(agg(ops.zeros((4, 6))).shape)
    (2, 3)
    """

    # build() only checks the input shape: a model may mark it built (see
    # BackboneModel._maybe_symbolic_build).
    builds_no_weights = True

    def __init__(self, num_classes, num_transforms, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_transforms = int(num_transforms)

    def _check_shape(self, shape):
        """Raises ValueError on a static shape that is not (B*M, N*M)."""
        n, m = self.num_classes, self.num_transforms
        shape = tuple(shape)
        if len(shape) != 2:
            raise ValueError(f"AggregatedInference expects joint logits of shape "
                             f"(B*M, N*M) = (B*{m}, {n * m}), got shape {shape}.")
        b, width = shape
        if width is not None and int(width) != n * m:
            raise ValueError(
                f"AggregatedInference expects joint logits with N*M = {n}*{m} = {n * m} "
                f"columns (num_classes * num_transforms), got {int(width)} (shape "
                f"{shape}); build it with the num_classes and num_transforms of the "
                f"joint head.")
        if b is not None and int(b) % m:
            raise ValueError(self._batch_message(int(b)))

    def _batch_message(self, batch):
        m = self.num_transforms
        rows = "B rows (B follows)" if batch is None else f"B={batch} rows"
        return (f"AggregatedInference expects a batch of B*M rows, the M={m} "
                f"transformations of each image in turn, but got {rows}, not a "
                f"multiple of M={m}; feed all {m} transformed copies of every image "
                f"(e.g. InputTransformations' expanded batch).")

    def call(self, joint_logits):
        n, m = self.num_classes, self.num_transforms
        self._check_shape(joint_logits.shape)
        z = ops.cast(joint_logits, "float32")
        if (joint_logits.shape[0] is None and m > 1
                and keras.backend.backend() == "tensorflow"):
            # The batch size is known only when the graph runs: assert it there. (XLA
            # drops assertions, so a jit-compiled caller with an unknown batch size
            # gets the reshape's error instead.)
            import tensorflow as tf
            batch = tf.shape(z)[0]
            check = tf.debugging.Assert(
                tf.equal(batch % m, 0),
                [self._batch_message(None), "B =", batch])
            with tf.control_dependencies([check]):
                z = tf.identity(z)
        z = ops.reshape(z, (-1, m, n, m))
        # z[b, j, k, j]: the logit of (k, j) for the input transformed by t_j.
        mask = ops.eye(m, dtype="float32")[None, :, None, :]
        return ops.sum(z * mask, axis=(1, 3)) / m

    def compute_output_shape(self, input_shape):
        self._check_shape(input_shape)
        b = input_shape[0]
        return (None if b is None else b // self.num_transforms, self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "num_transforms": self.num_transforms}


@keras.saving.register_keras_serializable(package="ssl_zoo")
class SelfDistillHead(_Float32Dense):
    """Linear N-way head u on the shared features (SLA+SD): one-pass inference.

    Args:
        num_classes: N.

    Call args:
        features: (B, D) features of untransformed images.

    Returns:
        (B, N) float32 logits.

    Example:
    >>> tuple(SelfDistillHead(10)(ops.zeros((2, 16))).shape)
    (2, 10)
    """

    def __init__(self, num_classes, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self._add_dense(self.num_classes)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}
