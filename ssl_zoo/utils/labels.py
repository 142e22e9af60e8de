"""The one static check of integer label vectors that losses and layers share."""

import keras
from keras import ops


def label_vector(labels, batch, owner):
    """Labels of shape (B,) or (B, 1) as an int32 vector (B,), checked statically.

    Args:
        labels: a tensor of integer class ids, shape (B,) or (B, 1).
        batch: the batch size the labels must match (None when unknown).
        owner: who asks, for the error messages (e.g. "SupConLoss").

    Returns:
        The labels, shape (B,), int32.

    Raises:
        ValueError: the labels have another shape, or a known length other than `batch`.
        TypeError: string labels.

    Example:
    >>> ops.convert_to_numpy(label_vector(ops.array([[3], [1]]), 2, "Example")).tolist()
    [3, 1]
    """
    labels = ops.convert_to_tensor(labels)
    if keras.backend.standardize_dtype(labels.dtype) == "string":
        raise TypeError(f"{owner} labels must be integer class ids, got strings; map "
                        f"class names to indices first (e.g. numpy.unique(names, "
                        f"return_inverse=True)).")
    shape = tuple(labels.shape)
    if len(shape) == 2 and shape[-1] == 1:
        labels = ops.reshape(labels, (-1,))
        shape = shape[:1]
    if len(shape) != 1:
        raise ValueError(f"{owner} labels must have shape (batch,) or (batch, 1), got "
                         f"shape {tuple(labels.shape)} (one-hot labels: use argmax first).")
    if shape[0] is not None and batch is not None and shape[0] != batch:
        raise ValueError(f"{owner} labels length {shape[0]} does not match the features' "
                         f"batch size {batch}.")
    return ops.cast(labels, "int32")
