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


UNLABELED_DISTRIBUTIONS = ("consistent", "uniform", "reversed")


def long_tailed_semi_supervised_split(labels, num_labeled_head, imbalance_ratio,
                                      num_unlabeled_head=None,
                                      unlabeled_distribution="consistent",
                                      unlabeled_imbalance_ratio=None, num_classes=None,
                                      seed=0):
    """Long-tailed labeled and unlabeled sets, DASO's CIFAR-LT protocol.

    Class k = 0..K-1 (class 0 is the head) gets N_k = floor(N_1 gamma^(-k/(K-1)))
    labeled images (`long_tailed_counts`) and M_k unlabeled ones, M_1 =
    `num_unlabeled_head`, distributed as:

    - "consistent": M_k = floor(M_1 gamma_u^(-k/(K-1))), gamma_u =
      `unlabeled_imbalance_ratio`, or gamma when None;
    - "uniform": M_k = M_1 for every class;
    - "reversed": the consistent counts in reverse class order (gamma_u = 1/gamma;
      the tail classes have the most unlabeled images, DASO issue #3).

    `num_unlabeled_head=None` with `unlabeled_distribution=None` makes every image
    left after the labeled split unlabeled; those counts follow the data set, not
    a distribution, so None for one of the two needs None for the other.
    Images are drawn per class with `seed` (`labeled_unlabeled_split`).

    Args:
        labels: 1-D int array of class ids 0..K-1.
        num_labeled_head: N_1, labeled images of class 0.
        imbalance_ratio: gamma = N_1 / N_K >= 1.
        num_unlabeled_head: M_1 (DASO: 4000 with N_1 = 500, 3000 with N_1 = 1500),
            or None for every remaining image.
        unlabeled_distribution: "consistent", "uniform", "reversed", or None (with
            `num_unlabeled_head=None`).
        unlabeled_imbalance_ratio: gamma_u >= 1 for "consistent" / "reversed";
            None uses gamma.
        num_classes: K; None takes max(labels) + 1.
        seed: integer seed; the same seed gives the same split.

    Returns:
        (labeled_idx, unlabeled_idx): disjoint sorted int64 arrays of indices into
        `labels`.

    Raises:
        ValueError: an unknown distribution, gamma or gamma_u below 1, a class with
            no labeled image after the floor, a class with fewer images than it
            needs (naming the class and both counts), or a None mismatch.

    Example:
    >>> y = np.repeat(np.arange(3), 100)
    >>> lab, unl = long_tailed_semi_supervised_split(y, 20, 10, 50, "reversed")
    >>> np.bincount(y[lab]).tolist(), np.bincount(y[unl]).tolist()
    ([20, 6, 2], [5, 15, 50])
    """
    labels = _as_labels(labels)
    if unlabeled_distribution is not None and (
            unlabeled_distribution not in UNLABELED_DISTRIBUTIONS):
        raise ValueError(
            f"unlabeled_distribution must be one of {UNLABELED_DISTRIBUTIONS} (or None "
            f"with num_unlabeled_head=None), got {unlabeled_distribution!r}.")
    for name, gamma in (("imbalance_ratio", imbalance_ratio),
                        ("unlabeled_imbalance_ratio", unlabeled_imbalance_ratio)):
        if gamma is not None and not gamma >= 1:
            raise ValueError(
                f"{name} (gamma) must be >= 1, got {gamma}: it is the head-to-tail ratio "
                f"N_1 / N_K; for more unlabeled tail images use "
                f"unlabeled_distribution='reversed'.")
    if (num_unlabeled_head is None) != (unlabeled_distribution is None):
        raise ValueError(
            "num_unlabeled_head=None (every image left after the labeled split) follows "
            "the data set, not a distribution: pass it with unlabeled_distribution=None, "
            "or give num_unlabeled_head (M_1, e.g. 4000 for DASO's CIFAR-10-LT) with "
            f"a distribution; got num_unlabeled_head={num_unlabeled_head!r}, "
            f"unlabeled_distribution={unlabeled_distribution!r}.")
    if unlabeled_imbalance_ratio is not None and unlabeled_distribution not in (
            "consistent", "reversed"):
        raise ValueError(
            f"unlabeled_imbalance_ratio applies to 'consistent' and 'reversed' only, not "
            f"to unlabeled_distribution={unlabeled_distribution!r}.")
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    n_lab = long_tailed_counts(num_labeled_head, imbalance_ratio, num_classes)
    if 0 in n_lab:
        k = n_lab.index(0)
        raise ValueError(
            f"class {k} gets 0 labeled images (N_1={num_labeled_head}, "
            f"gamma={imbalance_ratio}, {num_classes} classes): a class with no labeled "
            f"samples cannot be learned; raise num_labeled_head or lower "
            f"imbalance_ratio.")
    n_unl = None
    if unlabeled_distribution == "uniform":
        n_unl = [int(num_unlabeled_head)] * num_classes
    elif unlabeled_distribution is not None:
        gamma_u = imbalance_ratio if unlabeled_imbalance_ratio is None else (
            unlabeled_imbalance_ratio)
        n_unl = long_tailed_counts(num_unlabeled_head, gamma_u, num_classes)
        if unlabeled_distribution == "reversed":
            n_unl = n_unl[::-1]
    return labeled_unlabeled_split(labels, n_lab, n_unl, seed=seed)
