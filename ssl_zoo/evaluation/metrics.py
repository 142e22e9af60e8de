"""Classification and clustering metrics on numpy labels: accuracy, per-class and
balanced recall, precision, confusion matrix, many/medium/few-shot accuracy and NMI."""

import numpy as np

MANY_SHOT = 100  # a class with more than this many training images is "many-shot"
FEW_SHOT = 20    # fewer than this is "few-shot"; in between (inclusive) "medium-shot"


def _class_indices(values, num_classes, name):
    values = np.asarray(values)
    if values.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of class indices, got shape "
                         f"{values.shape}.")
    if values.size and (not np.issubdtype(values.dtype, np.integer)
                        or values.min() < 0 or values.max() >= num_classes):
        raise ValueError(f"{name} must be integer class indices in [0, {num_classes}); "
                         f"got {values.dtype} values in [{values.min()}, "
                         f"{values.max()}].")
    return values.astype(np.int64)


def confusion_matrix(labels, predictions, num_classes):
    """Counts (num_classes, num_classes): row = true class, column = predicted class.

    Args:
        labels: (N,) true class indices in [0, num_classes).
        predictions: (N,) predicted class indices.
        num_classes: C.

    Returns:
        int64 numpy array (C, C).

    Example:
    >>> confusion_matrix([0, 0, 1, 2], [0, 1, 1, 1], 3).tolist()
    [[1, 1, 0], [0, 1, 0], [0, 1, 0]]
    """
    labels = _class_indices(labels, num_classes, "labels")
    predictions = _class_indices(predictions, num_classes, "predictions")
    if labels.shape != predictions.shape:
        raise ValueError(f"labels and predictions differ in shape: {labels.shape} vs "
                         f"{predictions.shape}.")
    return np.bincount(labels * num_classes + predictions,
                       minlength=num_classes * num_classes).reshape(num_classes,
                                                                    num_classes)


def class_counts(labels, num_classes):
    """Images per class (C,) int64, e.g. the training counts of the long-tail groups.

    Args:
        labels: (N,) class indices in [0, num_classes).
        num_classes: C.

    Returns:
        int64 numpy array (C,).

    Example:
    >>> class_counts([0, 2, 2], 4).tolist()
    [1, 0, 2, 0]
    """
    return np.bincount(_class_indices(labels, num_classes, "labels"),
                       minlength=num_classes)


def shot_groups(train_counts, many_shot=MANY_SHOT, few_shot=FEW_SHOT):
    """The classes of each long-tail group, by number of training images.

    Many-shot: more than `many_shot` images; few-shot: fewer than `few_shot`;
    medium-shot: the rest (`few_shot` to `many_shot` inclusive), the split of Liu et
    al. (2019, OLTR) and the long-tail literature after it.

    Args:
        train_counts: (C,) training images per class.
        many_shot, few_shot: the thresholds.

    Returns:
        dict "many", "medium", "few" -> int64 numpy arrays of class indices.

    Example:
    >>> {k: v.tolist() for k, v in shot_groups([500, 100, 20, 19]).items()}
    {'many': [0], 'medium': [1, 2], 'few': [3]}
    """
    counts = np.asarray(train_counts).reshape(-1)
    if few_shot > many_shot + 1:
        raise ValueError(f"few_shot ({few_shot}) must not exceed many_shot + 1 "
                         f"({many_shot + 1}).")
    many, few = counts > many_shot, counts < few_shot
    return {"many": np.flatnonzero(many), "medium": np.flatnonzero(~many & ~few),
            "few": np.flatnonzero(few)}


def _mean_or_none(values):
    return float(np.mean(values)) if len(values) else None


def classification_metrics(labels, predictions, num_classes, train_counts=None,
                           many_shot=MANY_SHOT, few_shot=FEW_SHOT):
    """Accuracy, balanced accuracy, per-class recall and precision, and more.

    Undefined values are `None`, never NaN: the recall of a class with no test
    image and the precision of a class never predicted. Means over classes
    (balanced accuracy = mean per-class recall, as in sklearn's
    `balanced_accuracy_score`; the geometric mean of recall; each shot group's
    accuracy) are taken over the classes present in the test set, and are `None`
    when no class qualifies (e.g. a shot group with no class). The classes absent
    from the test set are listed under "absent_classes".

    Args:
        labels: (N,) true class indices in [0, num_classes), N >= 1.
        predictions: (N,) predicted class indices.
        num_classes: C.
        train_counts: optional (C,) training images per class; adds the long-tail
            groups' accuracies (mean recall of the group's classes) and sizes.
        many_shot, few_shot: group thresholds (see `shot_groups`).

    Returns:
        dict with floats "accuracy", "balanced_accuracy", "geometric_mean_recall";
        lists "recall_per_class", "precision_per_class" (C floats or None),
        "confusion_matrix" (C lists of C ints) and "absent_classes"; with
        `train_counts` also "many_shot_accuracy", "medium_shot_accuracy",
        "few_shot_accuracy" (floats or None) and the number of classes in each
        group, "many_shot_classes", "medium_shot_classes", "few_shot_classes"
        (floats, like every scalar here).

    Example:
    >>> m = classification_metrics([0, 0, 0, 1], [0, 0, 1, 1], 3,
    ...                            train_counts=[200, 5, 50])
    >>> m["accuracy"], round(m["balanced_accuracy"], 4), m["recall_per_class"]
    (0.75, 0.8333, [0.6666666666666666, 1.0, None])
    >>> m["absent_classes"], m["many_shot_accuracy"], m["medium_shot_accuracy"]
    ([2], 0.6666666666666666, None)
    """
    matrix = confusion_matrix(labels, predictions, num_classes)
    if not matrix.sum():
        raise ValueError("classification_metrics needs at least one label.")
    correct = np.diag(matrix).astype(np.float64)
    support, predicted = matrix.sum(1), matrix.sum(0)
    present = support > 0
    recall = np.where(present, correct / np.maximum(support, 1), np.nan)
    precision = np.where(predicted > 0, correct / np.maximum(predicted, 1), np.nan)
    present_recall = recall[present]
    with np.errstate(divide="ignore"):  # log(0) = -inf -> geometric mean 0
        geometric = float(np.exp(np.mean(np.log(present_recall))))
    result = {
        "accuracy": float(correct.sum() / matrix.sum()),
        "balanced_accuracy": float(np.mean(present_recall)),
        "geometric_mean_recall": geometric,
        "recall_per_class": [None if np.isnan(r) else float(r) for r in recall],
        "precision_per_class": [None if np.isnan(p) else float(p) for p in precision],
        "confusion_matrix": matrix.tolist(),
        "absent_classes": np.flatnonzero(~present).tolist(),
    }
    if train_counts is not None:
        train_counts = np.asarray(train_counts).reshape(-1)
        if train_counts.shape != (num_classes,):
            raise ValueError(f"train_counts must hold {num_classes} counts, got "
                             f"{train_counts.shape[0]}.")
        for group, classes in shot_groups(train_counts, many_shot, few_shot).items():
            result[f"{group}_shot_accuracy"] = _mean_or_none(
                recall[classes][present[classes]])
            result[f"{group}_shot_classes"] = float(len(classes))
    return result


def _entropy(counts):
    p = counts[counts > 0] / counts.sum()
    return float(-np.sum(p * np.log(p)))


def nmi(labels_a, labels_b):
    """Normalised mutual information of two labellings (e.g. clusters vs classes).

    I(A; B) / mean(H(A), H(B)), the arithmetic normalisation (sklearn's default
    `normalized_mutual_info_score`); invariant to renaming the labels. Two
    labellings with one group each score 1.0; one with a single group against one
    with several scores 0.0.

    Args:
        labels_a, labels_b: (N,) labels of any values (ints or strings), N >= 1.

    Returns:
        float in [0, 1].

    Example:
    >>> nmi([0, 0, 1, 1], [5, 5, 3, 3]), nmi([0, 0, 1, 1], [0, 1, 0, 1])
    (1.0, 0.0)
    """
    a, b = np.asarray(labels_a).reshape(-1), np.asarray(labels_b).reshape(-1)
    if a.shape != b.shape or not a.size:
        raise ValueError(f"nmi needs two non-empty labellings of the same length, got "
                         f"{a.size} and {b.size} labels.")
    _, a = np.unique(a, return_inverse=True)
    _, b = np.unique(b, return_inverse=True)
    if a.max() == 0 and b.max() == 0:
        return 1.0
    joint = np.bincount(a * (b.max() + 1) + b, minlength=(a.max() + 1) * (b.max() + 1))
    joint = joint.reshape(a.max() + 1, b.max() + 1).astype(np.float64)
    h_a, h_b = _entropy(joint.sum(1)), _entropy(joint.sum(0))
    h_joint = _entropy(joint.reshape(-1))
    mutual = max(h_a + h_b - h_joint, 0.0)
    return float(min(mutual / ((h_a + h_b) / 2), 1.0)) if h_a + h_b > 0 else 1.0
