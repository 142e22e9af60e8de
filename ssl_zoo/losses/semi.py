"""Semi-supervised losses: FixMatch's masked pseudo-label cross-entropy and DASO's
semantic alignment loss (keras `Loss` subclasses returning per-example values)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ssl_zoo")
class PseudoLabelCrossEntropy(keras.losses.Loss):
    """FixMatch's unlabeled loss: mask_b * CE(pseudo_label_b, logits_b).

    With the default reduction the per-example values are averaged over **all**
    unlabeled samples (masked ones count as 0), as in FixMatch and DASO, and scaled
    by 1/replicas under `tf.distribute` like every Keras loss.

    Call args:
        y_true: (pseudo_labels (B,) int, mask (B,) 0/1 float).
        y_pred: logits (B, K) of the strong view.

    Returns:
        (B,) per-example losses with `reduction=None`; their mean by default.

    Example:
    >>> loss = PseudoLabelCrossEntropy(reduction=None)
    >>> out = loss((ops.array([0, 1]), ops.array([1.0, 0.0])), ops.zeros((2, 2)))
    >>> [round(float(v), 4) for v in out]
    [0.6931, 0.0]
    """

    def __init__(self, name="pseudo_label_ce", reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        targets, mask = y_true
        logits = ops.cast(y_pred, "float32")
        ce = keras.losses.sparse_categorical_crossentropy(
            ops.cast(targets, "int32"), logits, from_logits=True)
        return ops.cast(mask, "float32") * ce


@keras.saving.register_keras_serializable(package="ssl_zoo")
class SemanticAlignmentLoss(keras.losses.Loss):
    """DASO's semantic alignment loss: CE(q_weak, softmax(sim_strong)).

    -sum_k q_k log softmax(s)_k, with q the semantic pseudo-label of the weak view
    (a distribution, under stop-gradient) and s the prototype-similarity logits
    cos(z_strong, C_k) / T_proto of the strong view; averaged over all unlabeled
    samples like the authors' code. Classes with an empty queue carry q = 0 and a
    very negative logit (see `DASOPseudoLabeler.similarity_logits`), so they add
    nothing.

    Call args:
        y_true: q (B, K), rows summing to 1.
        y_pred: similarity logits (B, K).

    Returns:
        (B,) per-example losses with `reduction=None`; their mean by default.

    Example:
    >>> loss = SemanticAlignmentLoss(reduction=None)
    >>> [round(float(v), 4) for v in loss(ops.array([[0.5, 0.5]]), ops.zeros((1, 2)))]
    [0.6931]
    """

    def __init__(self, name="semantic_alignment", reduction="sum_over_batch_size",
                 dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)

    def call(self, y_true, y_pred):
        q = ops.stop_gradient(ops.cast(y_true, "float32"))
        log_p = ops.log_softmax(ops.cast(y_pred, "float32"), axis=-1)
        return -ops.sum(q * log_p, axis=-1)
