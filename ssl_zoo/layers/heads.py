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

    Example:
    >>> agg = AggregatedInference(3, 2)
    >>> tuple(agg(ops.zeros((4, 6))).shape)
    (2, 3)
    """

    def __init__(self, num_classes, num_transforms, **kwargs):
        super().__init__(**kwargs)
        self.num_classes = int(num_classes)
        self.num_transforms = int(num_transforms)

    def call(self, joint_logits):
        n, m = self.num_classes, self.num_transforms
        z = ops.reshape(ops.cast(joint_logits, "float32"), (-1, m, n, m))
        # z[b, j, k, j]: the logit of (k, j) for the input transformed by t_j.
        mask = ops.eye(m, dtype="float32")[None, :, None, :]
        return ops.sum(z * mask, axis=(1, 3)) / m

    def compute_output_shape(self, input_shape):
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
