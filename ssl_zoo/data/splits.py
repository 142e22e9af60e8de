"""Class-count bookkeeping for long-tailed and labeled/unlabeled splits (pure numpy).

Every function is deterministic given its `seed` and never touches TensorFlow.
"""

import math

import numpy as np


def _as_labels(labels):
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"labels must be a 1-D array, got shape {labels.shape}.")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"labels must be integers, got dtype {labels.dtype}.")
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels must be >= 0, got minimum {labels.min()}.")
    return labels.astype(np.int64)


def _per_class(value, num_classes, what):
    if np.ndim(value) == 0:
        counts = [int(value)] * num_classes
    else:
        counts = [int(v) for v in value]
        if len(counts) != num_classes:
            raise ValueError(
                f"{what} has {len(counts)} entries but the labels have {num_classes} "
                f"classes.")
    if any(c < 0 for c in counts):
        raise ValueError(f"{what} must be >= 0, got {counts}.")
    return counts


def long_tailed_counts(n_max, imbalance_ratio, num_classes):
    """Per-class counts of an exponentially long-tailed split.

    N_k = floor(n_max * gamma^(-(k-1)/(K-1))) for k = 1..K (Cui et al. 2019; the
    CIFAR-LT protocol of DASO). The power is evaluated directly (not as mu^k), with a
    1e-9 tolerance so that exact integers such as n_max / gamma are not lost to
    floating-point round-off.

    Args:
        n_max: count of the head class (k = 1).
        imbalance_ratio: gamma = N_1 / N_K, >= 1.
        num_classes: K >= 1 (K = 1 gives [n_max]).

    Returns:
        List of K ints, non-increasing.

    Example:
    >>> long_tailed_counts(500, 100, 10)
    [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}.")
    if n_max < 0:
        raise ValueError(f"n_max must be >= 0, got {n_max}.")
    if not imbalance_ratio >= 1:
        raise ValueError(f"imbalance_ratio (gamma) must be >= 1, got {imbalance_ratio}.")
    if num_classes == 1:
        return [int(n_max)]
    return [int(math.floor(n_max * imbalance_ratio ** (-k / (num_classes - 1)) + 1e-9))
            for k in range(num_classes)]


def long_tailed_indices(labels, counts, seed=0):
    """Pick `counts[k]` random examples of each class k.

    Args:
        labels: 1-D int array of class ids 0..K-1.
        counts: list of per-class counts (length K), e.g. from `long_tailed_counts`.
        seed: integer seed; the same seed gives the same indices.

    Returns:
        Sorted int64 array of selected indices into `labels`.

    Example:
    >>> y = np.repeat(np.arange(3), 10)
    >>> idx = long_tailed_indices(y, [10, 4, 1], seed=0)
    >>> np.bincount(y[idx]).tolist()
    [10, 4, 1]
    """
    labels = _as_labels(labels)
    counts = _per_class(counts, len(counts) if np.ndim(counts) else 1, "counts")
    if labels.size and labels.max() >= len(counts):
        raise ValueError(
            f"labels contain class {labels.max()} but counts has only {len(counts)} "
            f"entries.")
    rng = np.random.default_rng(seed)
    chosen = []
    for k, n_k in enumerate(counts):
        pool = np.flatnonzero(labels == k)
        if n_k > pool.size:
            raise ValueError(
                f"class {k} has {pool.size} examples, fewer than the {n_k} requested.")
        chosen.append(rng.permutation(pool)[:n_k])
    return np.sort(np.concatenate(chosen)).astype(np.int64) if chosen else np.zeros(
        0, np.int64)


def labeled_unlabeled_split(labels, num_labeled_per_class, num_unlabeled_per_class=None,
                            seed=0):
    """Split example indices into a labeled and an unlabeled set, per class.

    Within each class the examples are permuted with `seed`; the first L_k become
    labeled and the next U_k unlabeled (all the rest when `num_unlabeled_per_class`
    is None). The two sets are disjoint and the per-class counts are exact.

    Args:
        labels: 1-D int array of class ids 0..K-1.
        num_labeled_per_class: int (same for every class) or a list of K ints.
        num_unlabeled_per_class: None (every remaining example), an int, or a list.
        seed: integer seed.

    Returns:
        (labeled_idx, unlabeled_idx): sorted int64 arrays of indices into `labels`.

    Example:
    >>> y = np.repeat(np.arange(2), 10)
    >>> lab, unl = labeled_unlabeled_split(y, [4, 1], [5, 2], seed=0)
    >>> np.bincount(y[lab]).tolist(), np.bincount(y[unl]).tolist()
    ([4, 1], [5, 2])
    """
    labels = _as_labels(labels)
    if np.ndim(num_labeled_per_class):
        num_classes = len(num_labeled_per_class)
    elif num_unlabeled_per_class is not None and np.ndim(num_unlabeled_per_class):
        num_classes = len(num_unlabeled_per_class)
    else:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    if labels.size and labels.max() >= num_classes:
        raise ValueError(
            f"labels contain class {labels.max()} but only {num_classes} per-class "
            f"counts were given.")
    n_lab = _per_class(num_labeled_per_class, num_classes, "num_labeled_per_class")
    n_unl = (None if num_unlabeled_per_class is None else
             _per_class(num_unlabeled_per_class, num_classes, "num_unlabeled_per_class"))
    rng = np.random.default_rng(seed)
    lab, unl = [], []
    for k in range(num_classes):
        pool = rng.permutation(np.flatnonzero(labels == k))
        want_u = pool.size - n_lab[k] if n_unl is None else n_unl[k]
        if n_lab[k] + max(want_u, 0) > pool.size or want_u < 0:
            raise ValueError(
                f"class {k} has {pool.size} examples, fewer than the {n_lab[k]} labeled"
                + ("" if n_unl is None else f" + {n_unl[k]} unlabeled") + " requested.")
        lab.append(pool[:n_lab[k]])
        unl.append(pool[n_lab[k]:n_lab[k] + want_u])
    cat = lambda parts: (np.sort(np.concatenate(parts)).astype(np.int64)  # noqa: E731
                         if parts else np.zeros(0, np.int64))
    return cat(lab), cat(unl)
