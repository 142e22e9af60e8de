"""Pipelines: tf.data streams that shuffle, batch and apply a method's views.

One labeled stream, an unlabeled weak/strong stream, and both zipped for FixMatch/DASO.
"""

import numpy as np
import tensorflow as tf

from ssl_zoo.data.dataset import ArrayDataset
from ssl_zoo.data.errors import EmptyDatasetError, ImageShapeError, LabelError
from ssl_zoo.data.ops import to_float
from ssl_zoo.data.seeds import INT31
from ssl_zoo.data.views import resolve_view, strong_view, weak_view

__all__ = ["make_pipeline", "make_unlabeled_pipeline", "make_semi_supervised_pipeline"]

AUTOTUNE = tf.data.AUTOTUNE


def _check_fills_a_batch(data, batch_size):
    """EmptyDatasetError when drop_remainder would drop every example (known sizes)."""
    if isinstance(data, ArrayDataset):
        n = len(data)
    elif isinstance(data, tf.data.Dataset):
        n = int(data.cardinality())
        if n < 0:   # infinite or unknown: nothing to check before iterating
            return
    else:
        return
    if n == 0:
        raise EmptyDatasetError("The data set is empty (0 examples): no batch can be "
                                "made; check the source, split or subset it came from.")
    if n < batch_size:
        raise EmptyDatasetError(
            f"batch_size={batch_size} is larger than the data set ({n} examples), so "
            f"drop_remainder=True leaves no batch at all; use batch_size <= {n} or "
            f"drop_remainder=False (or repeat=True).")


def _batched_source(data, batch_size, *, shuffle, seed, drop_remainder, repeat, cache,
                    shuffle_buffer, skip_batches=0):
    """Batches of (uint8 images, labels or None), shuffled/repeated as asked, from the
    `skip_batches`-th on (an ArrayDataset's skipped batches are not even gathered)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if drop_remainder and not repeat:
        _check_fills_a_batch(data, batch_size)
    if isinstance(data, ArrayDataset):
        # Shuffle indices and gather whole batches: no per-image tf.data overhead.
        images = tf.convert_to_tensor(data.images)
        labels = tf.convert_to_tensor(data.labels)
        ds = tf.data.Dataset.range(len(data))
        if shuffle:
            ds = ds.shuffle(max(len(data), 1), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = _skip(ds.batch(batch_size, drop_remainder=drop_remainder), skip_batches)
        return ds.map(lambda i: (tf.gather(images, i), tf.gather(labels, i)),
                      num_parallel_calls=AUTOTUNE, deterministic=True), True
    if not isinstance(data, tf.data.Dataset):
        raise TypeError(f"data must be an ArrayDataset or a tf.data.Dataset, got "
                        f"{type(data).__name__}.")
    spec = data.element_spec
    has_labels = isinstance(spec, tuple) and len(spec) == 2
    if not has_labels and not isinstance(spec, tf.TensorSpec):
        raise ValueError(f"tf.data input must yield image or (image, label); got {spec}.")
    ds = data.cache() if cache else data
    if shuffle:
        if shuffle_buffer is None:
            n = int(ds.cardinality())
            shuffle_buffer = n if 0 < n <= 100_000 else 10_000
        ds = ds.shuffle(shuffle_buffer, seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    ds = _skip(ds.batch(batch_size, drop_remainder=drop_remainder), skip_batches)
    if not has_labels:
        ds = ds.map(lambda x: (x, tf.zeros(tf.shape(x)[:1], tf.int64)))
    return ds, has_labels


def _check_skip(skip_batches):
    if isinstance(skip_batches, bool) or not isinstance(skip_batches, (int, np.integer)) \
            or skip_batches < 0:
        raise ValueError(f"skip_batches must be an int >= 0, got {skip_batches!r}.")


def _skip(ds, skip_batches):
    """`ds` without its first `skip_batches` elements."""
    return ds.skip(int(skip_batches)) if skip_batches else ds


def _with_batch_seeds(ds, seed, skip_batches=0):
    """Zip each batch with a stateless seed: deterministic per (seed, epoch, batch).
    `ds` starts at batch `skip_batches` of its stream; so do the seeds."""
    randoms = _skip(tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True),
                    skip_batches)
    base = tf.constant(0 if seed is None else int(seed) & INT31, tf.int64)
    return tf.data.Dataset.zip(ds, randoms.map(lambda r: tf.stack([base, r])))


def _image_views(*views):
    """Resolve views that must return images only (the unlabeled streams' views)."""
    fns = []
    for view in views:
        fn, emits_labels = resolve_view(view)
        if emits_labels:
            raise ValueError(f"View {view!r} emits labels; weak and strong views of "
                             f"unlabeled images must return images only.")
        fns.append(fn)
    return fns


def make_pipeline(data, batch_size, *, view="none", num_views=1, shuffle=True, seed=None,
                  drop_remainder=False, repeat=False, cache=True, prefetch=True,
                  shuffle_buffer=None, skip_batches=0):
    """Batch, shuffle and augment a labeled data set into (images, labels) batches.

    Order: (cache) -> shuffle -> (repeat) -> batch -> view on the whole batch (each
    image and each view with its own random draw) -> prefetch. With a `seed`, the
    shuffle order and every augmentation are reproducible (stateless ops seeded from
    (seed, epoch, batch index)); later epochs still differ from the first.

    Args:
        data: `ArrayDataset`, or a `tf.data.Dataset` of (uint8 image (H, W, 3), label)
            (or of images alone; labels are then zeros).
        batch_size: images per batch.
        view: a registered view name ("none" (float cast only), "weak", "strong",
            "supcon", ... see `list_views()`), or a function
            f(images (B, H, W, 3), seed) -> images. A view registered with
            `emits_labels=True` returns (images, labels), and its labels replace the
            data set's.
        num_views: views per image; > 1 stacks them as (B, V, H, W, 3) (not with a
            view that emits labels).
        shuffle: shuffle every epoch.
        seed: None (non-deterministic) or an int.
        drop_remainder: drop the last partial batch.
        repeat: repeat forever.
        cache: cache the decoded tf.data input in memory (ArrayDataset is already in
            memory, so this is a no-op there).
        prefetch: prefetch batches (AUTOTUNE).
        shuffle_buffer: buffer for tf.data input (default: its size up to 100k, else
            10k); an ArrayDataset is always shuffled in full.
        skip_batches: start after this many batches; the stream is the one
            `.skip(skip_batches)` would give, but the skipped batches are neither
            augmented nor converted (a resumed run reaches its place in seconds).

    Returns:
        tf.data.Dataset of (images float32 (B, H, W, 3) or (B, V, H, W, 3) in 0..255,
        labels int64 (B,)).

    Raises:
        ValueError: unknown view (the message lists the registered ones), num_views
            < 1, batch_size < 1, skip_batches < 0, or num_views > 1 with a view that
            emits labels.
        EmptyDatasetError: `drop_remainder=True` (without `repeat`) and a data set of
            known size smaller than `batch_size`: no batch would be made.

    Example:
    >>> from ssl_zoo.data import load_arrays
    >>> ds = make_pipeline(load_arrays("digits", "test"), 32, view="supcon", num_views=2,
    ...                    seed=0)
    >>> [t.shape for t in next(iter(ds))]
    [TensorShape([32, 2, 16, 16, 3]), TensorShape([32])]
    """
    fn, emits_labels = resolve_view(view)
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}.")
    if emits_labels and num_views > 1:
        raise ValueError(f"View {view!r} emits labels, so it supports num_views=1 only; "
                         f"got num_views={num_views}.")
    _check_skip(skip_batches)
    ds, _ = _batched_source(data, batch_size, shuffle=shuffle, seed=seed,
                            drop_remainder=drop_remainder, repeat=repeat, cache=cache,
                            shuffle_buffer=shuffle_buffer, skip_batches=skip_batches)
    deterministic = True if seed is not None else None
    if isinstance(view, str) and view == "none":
        def apply(images, labels):
            x = to_float(images)
            x = tf.stack([x] * num_views, axis=1) if num_views > 1 else x
            return x, tf.cast(labels, tf.int64)
        ds = ds.map(apply, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    else:
        def apply(batch, batch_seed):
            images, labels = batch
            views = [fn(images, tf.random.experimental.stateless_fold_in(batch_seed, v))
                     for v in range(num_views)]
            if emits_labels:
                x, labels = views[0]
            else:
                x = views[0] if num_views == 1 else tf.stack(views, axis=1)
            return x, tf.cast(labels, tf.int64)
        ds = _with_batch_seeds(ds, seed, skip_batches).map(
            apply, num_parallel_calls=AUTOTUNE, deterministic=deterministic)
    return ds.prefetch(AUTOTUNE) if prefetch else ds


def _weak_strong_stream(data, batch_size, seed, weak, strong, *, with_labels,
                        skip_batches=0, **source):
    """Batches of (weak, strong[, labels]) views of the same images."""
    weak, strong = _image_views(weak, strong)
    ds, _ = _batched_source(data, batch_size, seed=seed, skip_batches=skip_batches,
                            **source)

    def apply(batch, batch_seed):
        images = batch[0]
        fold = tf.random.experimental.stateless_fold_in
        views = weak(images, fold(batch_seed, 0)), strong(images, fold(batch_seed, 1))
        return (*views, tf.cast(batch[1], tf.int64)) if with_labels else views

    return _with_batch_seeds(ds, seed, skip_batches).map(
        apply, num_parallel_calls=AUTOTUNE,
        deterministic=True if seed is not None else None)


def make_unlabeled_pipeline(data, batch_size, seed=None, *, shuffle=True,
                            drop_remainder=False, repeat=False, cache=True, prefetch=True,
                            shuffle_buffer=None, weak=weak_view, strong=strong_view):
    """Batches of (weak view, strong view) of the same images, for FixMatch/DASO.

    Labels, if any, are dropped. Both views are drawn independently from the same
    uint8 images.

    Args:
        data: `ArrayDataset` or `tf.data.Dataset` of (image, label) or of images.
        batch_size: images per batch (FixMatch: mu x the labeled batch).
        seed: None or an int (reproducible shuffle and views).
        shuffle, drop_remainder, repeat, cache, prefetch, shuffle_buffer: as in
            `make_pipeline`.
        weak: weak view, a function f(images, seed) or a registered view name.
        strong: strong view, a function f(images, seed) or a registered view name.

    Returns:
        tf.data.Dataset of (weak float32 (B, H, W, 3), strong float32 (B, H, W, 3)).

    Example:
    >>> from ssl_zoo.data import load_arrays
    >>> ds = make_unlabeled_pipeline(load_arrays("digits", "train"), 16, seed=0)
    >>> [t.shape for t in next(iter(ds))]
    [TensorShape([16, 16, 16, 3]), TensorShape([16, 16, 16, 3])]
    """
    ds = _weak_strong_stream(data, batch_size, seed, weak, strong, with_labels=False,
                             shuffle=shuffle, drop_remainder=drop_remainder,
                             repeat=repeat, cache=cache, shuffle_buffer=shuffle_buffer)
    return ds.prefetch(AUTOTUNE) if prefetch else ds


def _size_and_image_shape(data, what):
    """(number of examples or None when unknown, image shape (H, W, C) or None)."""
    if isinstance(data, ArrayDataset):
        return len(data), tuple(data.images.shape[1:])
    if not isinstance(data, tf.data.Dataset):
        raise TypeError(f"The {what} set must be an ArrayDataset or a tf.data.Dataset, "
                        f"got {type(data).__name__}.")
    spec = data.element_spec
    image = spec[0] if isinstance(spec, tuple) else spec
    n = int(data.cardinality())
    shape = tuple(image.shape) if image.shape.is_fully_defined() else None
    return (n if n >= 0 else None), shape


def _has_labels(data):
    if isinstance(data, ArrayDataset):
        return True
    spec = data.element_spec
    return isinstance(spec, tuple) and len(spec) == 2


def make_semi_supervised_pipeline(labeled, unlabeled, batch_size, mu=7, *, seed=None,
                                  weak="weak", strong="strong",
                                  include_unlabeled_labels=False, cache=True,
                                  prefetch=True, shuffle_buffer=None, skip_batches=0):
    """A labeled and an unlabeled stream zipped into FixMatch/DASO training batches.

    The labeled stream gives `batch_size` images in their weak view with their labels;
    the unlabeled stream gives `mu * batch_size` images, each in a weak and a strong
    view drawn from the same uint8 image. Each stream is shuffled, reshuffled every
    epoch of its own data and repeated forever, so the result never ends (pass
    `steps_per_epoch` to `fit`). With a `seed`, everything is reproducible; the two
    streams get independent seeds derived from it.

    Args:
        labeled: `ArrayDataset` or `tf.data.Dataset` of (uint8 image, label).
        unlabeled: `ArrayDataset` or `tf.data.Dataset` of (image, label) or of images
            (labels are ignored unless `include_unlabeled_labels`).
        batch_size: labeled images per batch, B.
        mu: unlabeled images per labeled image (an int >= 1).
        seed: None (non-deterministic) or an int.
        weak: weak view, a registered view name or a function f(images, seed).
        strong: strong view, a registered view name or a function f(images, seed).
        include_unlabeled_labels: also yield the unlabeled images' true labels, for
            pseudo-label metrics only (never train on them).
        cache, prefetch, shuffle_buffer, skip_batches: as in `make_pipeline`.

    Returns:
        Endless tf.data.Dataset of ({"images": float32 (B, H, W, 3),
        "unlabeled_weak": float32 (mu*B, H, W, 3), "unlabeled_strong": float32
        (mu*B, H, W, 3)[, "unlabeled_labels": int64 (mu*B,)]}, labels int64 (B,)),
        images in 0..255.

    Raises:
        ValueError: batch_size < 1, mu not an int >= 1, an unknown view name or a
            view that emits labels.
        EmptyDatasetError: an empty labeled or unlabeled set.
        ImageShapeError: labeled and unlabeled images of different shapes.
        LabelError: a labeled set without labels, or `include_unlabeled_labels` with
            an unlabeled set without labels.

    Example:
    >>> from ssl_zoo.data import load_arrays
    >>> digits = load_arrays("digits", "train")
    >>> ds = make_semi_supervised_pipeline(digits.take_per_class(2), digits, 8, mu=2,
    ...                                    seed=0)
    >>> x, y = next(iter(ds))
    >>> sorted(x), tuple(y.shape)
    (['images', 'unlabeled_strong', 'unlabeled_weak'], (8,))
    >>> x["images"].shape, x["unlabeled_strong"].shape
    (TensorShape([8, 16, 16, 3]), TensorShape([16, 16, 16, 3]))
    """
    if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or (
            batch_size < 1):
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}.")
    if isinstance(mu, bool) or not isinstance(mu, (int, np.integer)) or mu < 1:
        raise ValueError(f"mu (unlabeled images per labeled image) must be an int >= 1, "
                         f"got {mu!r}.")
    _image_views(weak, strong)  # unknown names and label-emitting views fail here
    sizes = {}
    for what, data in (("labeled", labeled), ("unlabeled", unlabeled)):
        n, shape = _size_and_image_shape(data, what)
        if n == 0:
            raise EmptyDatasetError(f"The {what} set is empty; a semi-supervised "
                                    f"pipeline needs at least one {what} image.")
        sizes[what] = shape
    if None not in sizes.values() and sizes["labeled"] != sizes["unlabeled"]:
        raise ImageShapeError(
            f"Labeled images have shape {sizes['labeled']} but unlabeled images "
            f"{sizes['unlabeled']}; load both at the same image_size.")
    if not _has_labels(labeled):
        raise LabelError("The labeled set yields images without labels; give an "
                         "ArrayDataset or a tf.data.Dataset of (image, label).")
    if include_unlabeled_labels and not _has_labels(unlabeled):
        raise LabelError("include_unlabeled_labels=True needs an unlabeled set with "
                         "labels: an ArrayDataset or a tf.data.Dataset of (image, label).")
    if seed is None:
        labeled_seed = unlabeled_seed = None
    else:
        labeled_seed, unlabeled_seed = (
            int(s) for s in np.random.SeedSequence(int(seed)).generate_state(2))
    source = dict(shuffle=True, drop_remainder=True, repeat=True, cache=cache,
                  shuffle_buffer=shuffle_buffer)
    _check_skip(skip_batches)
    labeled_ds = make_pipeline(labeled, batch_size, view=weak, seed=labeled_seed,
                               prefetch=False, skip_batches=skip_batches, **source)
    unlabeled_ds = _weak_strong_stream(unlabeled, mu * batch_size, unlabeled_seed, weak,
                                       strong, with_labels=include_unlabeled_labels,
                                       skip_batches=skip_batches, **source)

    def join(lab, unl):
        features = {"images": lab[0], "unlabeled_weak": unl[0], "unlabeled_strong": unl[1]}
        if include_unlabeled_labels:
            features["unlabeled_labels"] = unl[2]
        return features, lab[1]

    ds = tf.data.Dataset.zip(labeled_ds, unlabeled_ds).map(
        join, num_parallel_calls=AUTOTUNE, deterministic=True if seed is not None else None)
    return ds.prefetch(AUTOTUNE) if prefetch else ds
