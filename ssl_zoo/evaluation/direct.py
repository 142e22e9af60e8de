"""Direct evaluation of a classifier: its own logits on the test set, predicted in
batches with `call` (no `model.evaluate`), scored by `classification_metrics`."""

import numpy as np
import tensorflow as tf
from keras import ops

from ssl_zoo.evaluation.features import apply_in_batches, labels_of
from ssl_zoo.evaluation.metrics import class_counts, classification_metrics
from ssl_zoo.evaluation.registry import register_evaluator


def predict_logits(model, data, batch_size=256, progress=False, **call_kwargs):
    """Inference-mode outputs of `model(images, training=False)` over a data set.

    Args:
        model: a classifier returning (B, C) logits (or probabilities).
        data: (images, labels) arrays, an object with `.images`/`.labels`, or a
            batched `tf.data.Dataset` of (images, labels).
        batch_size: batch size when `data` holds arrays.
        progress: show a `keras.utils.Progbar`.
        **call_kwargs: passed to the model's call, e.g. `inference="aggregated"`
            for an `SLAModel`.

    Returns:
        (logits (N, C) float32 numpy, labels (N,) int64 numpy).

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    >>> logits, y = predict_logits(model, (np.ones((3, 2, 2, 3)), [0, 1, 2]))
    >>> logits.shape, y.tolist()
    ((3, 3), [0, 1, 2])
    """
    call = tf.function(lambda images: ops.cast(
        model(images, training=False, **call_kwargs), "float32"), reduce_retracing=True)
    return apply_in_batches(call, data, batch_size, progress)


@register_evaluator("direct")
def direct_evaluate(model, train, test, num_classes, batch_size=256, progress=False,
                    **call_kwargs):
    """Scores a classifier's own predictions (argmax of its logits) on `test`.

    Args:
        model: a classifier whose call returns (B, num_classes) logits
            (`SupervisedModel`, `SLAModel`, a `LinearProbe`, ...).
        train: the training data, read only for its labels (the long-tail groups'
            counts); None to leave the groups out.
        test: (images, labels) arrays, an object with `.images`/`.labels`, or a
            batched `tf.data.Dataset` of (images, labels).
        num_classes: C.
        batch_size: batch size when the data hold arrays.
        progress: show a progress bar.
        **call_kwargs: passed to the model's call (e.g. `inference="aggregated"`).

    Returns:
        dict of `classification_metrics`.

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    >>> labels = np.array([0, 1, 2, 2])
    >>> images = np.eye(3)[labels][:, None, None, :] * np.ones((4, 2, 2, 3))
    >>> direct_evaluate(model, None, (images, labels), 3)["accuracy"]
    1.0
    """
    logits, labels = predict_logits(model, test, batch_size, progress, **call_kwargs)
    if logits.ndim != 2 or logits.shape[1] != num_classes:
        raise ValueError(f"direct evaluation needs (N, {num_classes}) logits; the "
                         f"model returned shape {logits.shape}.")
    counts = None if train is None else class_counts(labels_of(train, "train"),
                                                     num_classes)
    return classification_metrics(labels, np.argmax(logits, axis=1), num_classes,
                                  train_counts=counts)
