"""Image views (plain tensor functions) and the tf.data pipelines that batch and augment.

Images stay in the 0..255 float32 scale (models normalise inside themselves). Every
view takes one image (H, W, 3) or a batch (B, H, W, 3), draws its random choices per
image, runs eagerly or inside `tf.function`/tf.data, and is deterministic when given a
seed (stateless random ops).
"""

import threading

import keras
import numpy as np
import tensorflow as tf

AUTOTUNE = tf.data.AUTOTUNE
VIEWS = ("none", "weak", "strong", "supcon")
_INT31 = 2**31 - 1


# ---------------------------------------------------------------------------- seeds
def _seed_tensor(seed):
    """A shape-[2] int64 stateless seed; `None` draws one with an ordinary random op."""
    if seed is None:
        return tf.random.uniform([2], 0, _INT31, dtype=tf.int64)
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed) & (2**63 - 1), 0], tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.zeros([], tf.int64)])
    return tf.reshape(seed, [2])


def _split_seed(seed, num):
    seed = _seed_tensor(seed)
    return [tf.random.experimental.stateless_fold_in(seed, i + 1) for i in range(num)]


class _FoldInSeeds(keras.random.SeedGenerator):
    """Feeds a stateless seed tensor to Keras random ops: each `next()` folds in a count.

    Keras image layers draw their parameters from a `SeedGenerator` (a variable),
    which cannot follow a per-batch seed; this stand-in needs no variable.
    """

    def __init__(self, seed):  # pylint: disable=super-init-not-called
        self._base = _seed_tensor(seed)
        self._count = 0

    def next(self, ordered=True):
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._base, self._count)


def _as_batch(images):
    x = tf.convert_to_tensor(images)
    if x.dtype != tf.float32:
        x = tf.cast(x, tf.float32)
    rank = x.shape.rank
    if rank == 3:
        return x[None], True
    if rank == 4:
        return x, False
    raise ValueError(f"Expected an image (H, W, C) or a batch (B, H, W, C), got shape "
                     f"{x.shape}.")


def _restore(x, single):
    return x[0] if single else x


# --------------------------------------------------------------------------- basics
def to_float(image):
    """Cast an image or batch to float32, keeping the 0..255 scale.

    Args:
        image: uint8 (or any numeric) tensor.

    Returns:
        float32 tensor of the same shape.

    Example:
    >>> to_float(tf.constant([[[255, 0, 1]]], tf.uint8)).numpy().tolist()
    [[[255.0, 0.0, 1.0]]]
    """
    return tf.cast(image, tf.float32)


def normalize(images, mean, std):
    """Standardise 0..255-scale images per channel: (x - mean) / std.

    Args:
        images: tensor (..., C) in the 0..255 scale.
        mean: per-channel means in the 0..255 scale (e.g. `DatasetInfo.mean`).
        std: per-channel standard deviations in the 0..255 scale.

    Returns:
        float32 tensor of the same shape.

    Example:
    >>> normalize(tf.fill([1, 1, 3], 127.5), (127.5,) * 3, (2.0,) * 3).numpy().ravel()
    array([0., 0., 0.], dtype=float32)
    """
    mean = tf.constant(mean, tf.float32)
    std = tf.constant(std, tf.float32)
    return (to_float(images) - mean) / std


def random_flip(images, seed=None):
    """Flip each image left-right with probability 1/2.

    Args:
        images: (H, W, C) or (B, H, W, C).
        seed: None, an int, or a shape-[2] int tensor.

    Returns:
        float32 tensor of the same shape.

    Example:
    >>> random_flip(tf.zeros([2, 4, 4, 3]), seed=0).shape
    TensorShape([2, 4, 4, 3])
    """
    x, single = _as_batch(images)
    flip = tf.random.stateless_uniform(tf.shape(x)[:1], _seed_tensor(seed)) < 0.5
    return _restore(tf.where(flip[:, None, None, None], tf.reverse(x, [2]), x), single)


def random_pad_crop(images, seed=None, pad=4):
    """Reflect-pad each image by `pad` pixels and crop a random window of the original size.

    Args:
        images: (H, W, C) or (B, H, W, C); `pad` must be smaller than H and W.
        seed: None, an int, or a shape-[2] int tensor.
        pad: padding in pixels (0 disables).

    Returns:
        float32 tensor of the same shape (an independent shift per image).

    Example:
    >>> float(random_pad_crop(tf.ones([2, 8, 8, 3]), seed=1).numpy().min())
    1.0
    """
    x, single = _as_batch(images)
    if pad <= 0:
        return _restore(x, single)
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    s = _split_seed(seed, 2)
    xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode="REFLECT")
    oy = tf.random.stateless_uniform([b], s[0], 0, 2 * pad + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([b], s[1], 0, 2 * pad + 1, dtype=tf.int32)
    rows = oy[:, None] + tf.range(h)[None]
    cols = ox[:, None] + tf.range(w)[None]
    out = tf.gather(tf.gather(xp, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    out.set_shape(x.shape)
    return _restore(out, single)


def cutout(images, seed=None, size=0.5, fill=127.5):
    """Fill a square of side `size` x image side with `fill`, centred at a random pixel.

    As in DeVries & Taylor (2017) and FixMatch, the centre is uniform over the image,
    so the square may be clipped at the borders.

    Args:
        images: (H, W, C) or (B, H, W, C), 0..255 scale.
        seed: None, an int, or a shape-[2] int tensor.
        size: square side as a fraction of the image height/width.
        fill: value written inside the square (127.5 = mid-grey).

    Returns:
        float32 tensor of the same shape.

    Example:
    >>> x = cutout(tf.zeros([8, 8, 3]), seed=0)
    >>> 0 < int(tf.reduce_sum(tf.cast(x[..., 0] == 127.5, tf.int32))) <= 16
    True
    """
    x, single = _as_batch(images)
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    sh = tf.cast(tf.round(size * tf.cast(h, tf.float32)), tf.int32)
    sw = tf.cast(tf.round(size * tf.cast(w, tf.float32)), tf.int32)
    s = _split_seed(seed, 2)
    cy = tf.random.stateless_uniform([b], s[0], 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([b], s[1], 0, w, dtype=tf.int32)
    y0 = (cy - sh // 2)[:, None, None]
    x0 = (cx - sw // 2)[:, None, None]
    yy = tf.range(h)[None, :, None]
    xx = tf.range(w)[None, None, :]
    mask = (yy >= y0) & (yy < y0 + sh) & (xx >= x0) & (xx < x0 + sw)
    out = tf.where(mask[..., None], tf.cast(fill, x.dtype), x)
    return _restore(out, single)


# ---------------------------------------------------------------- keras RandAugment
_LAYERS = {}
_LAYERS_LOCK = threading.Lock()


def _rand_augment_layer(num_ops, factor):
    key = ("rand_augment", num_ops, factor)
    with _LAYERS_LOCK:
        if key not in _LAYERS:
            with tf.init_scope():  # variables (seed states) must not be made in a trace
                layer = keras.layers.RandAugment(value_range=(0, 255), num_ops=num_ops,
                                                 factor=factor)
                layer.build((None, None, None, 3))
            _LAYERS[key] = layer
        return _LAYERS[key]


def rand_augment(images, seed=None, num_ops=2, factor=0.5):
    """Keras `RandAugment(value_range=(0, 255))` with the operations chosen per image.

    Keras' layer picks the same `num_ops` operations for a whole batch; here each image
    gets its own operations and magnitudes (as in the RandAugment and FixMatch papers),
    computed batch-wide with the Keras sub-layers and selected per image. With a
    seed, the parameters come from stateless ops, so the result is reproducible.

    Args:
        images: (H, W, 3) or (B, H, W, 3), 0..255 scale.
        seed: None, an int, or a shape-[2] int tensor.
        num_ops: operations applied in sequence to each image.
        factor: Keras RandAugment strength in [0, 1].

    Returns:
        float32 tensor of the same shape, clipped to 0..255.

    Example:
    >>> rand_augment(tf.fill([2, 8, 8, 3], 100.0), seed=0).shape
    TensorShape([2, 8, 8, 3])
    """
    layer = _rand_augment_layer(num_ops, factor)
    x, single = _as_batch(images)
    static_shape = x.shape
    base = _seed_tensor(seed)
    names = list(layer._AUGMENT_LAYERS)  # pylint: disable=protected-access
    b = tf.shape(x)[0]
    choice = tf.random.stateless_uniform([num_ops, b], base, 0, len(names), dtype=tf.int32)
    positions = tf.range(b)
    for i in range(num_ops):
        # Each operation runs only on the images that drew it, then they are stitched
        # back in place: one batch worth of work per round instead of len(names).
        parts = tf.dynamic_partition(x, choice[i], len(names))
        where = tf.dynamic_partition(positions, choice[i], len(names))
        outs = []
        for j, (name, part) in enumerate(zip(names, parts)):
            sub = getattr(layer, name)
            op_seed = tf.random.experimental.stateless_fold_in(base, 1 + i * len(names) + j)

            def run(sub=sub, part=part, op_seed=op_seed):
                params = sub.get_random_transformation(part, training=True,
                                                       seed=_FoldInSeeds(op_seed))
                return tf.cast(sub.transform_images(part, params, training=True),
                               tf.float32)

            # Some Keras ops refuse empty batches eagerly (e.g. AutoContrast's min).
            outs.append(tf.cond(tf.size(part) > 0, run, lambda part=part: part))
        x = tf.clip_by_value(tf.dynamic_stitch(where, outs), 0.0, 255.0)
    x.set_shape(static_shape)
    return _restore(x, single)


# ------------------------------------------------------------------- colour (SupCon)
def _gray(x):
    return tf.image.rgb_to_grayscale(x)  # ITU-R 601 weights, as torchvision


def color_jitter(images, seed=None, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1,
                 p=0.8):
    """torchvision-style ColorJitter in the 0..255 scale, applied per image with prob. p.

    Brightness, contrast and saturation multiply by a factor in [1 - s, 1 + s] (blending
    with black, the mean grey level, and the grey image); hue shifts by a delta in
    [-hue, hue] turns; the four run in a random order per image, clipping to 0..255
    after each, as torchvision does.

    Args:
        images: (H, W, 3) or (B, H, W, 3), 0..255 scale.
        seed: None, an int, or a shape-[2] int tensor.
        brightness, contrast, saturation, hue: jitter strengths.
        p: probability that an image is jittered at all.

    Returns:
        float32 tensor of the same shape.

    Example:
    >>> color_jitter(tf.fill([4, 4, 3], 100.0), seed=0, p=1.0).shape
    TensorShape([4, 4, 3])
    """
    x, single = _as_batch(images)
    b = tf.shape(x)[0]
    s = _split_seed(seed, 6)
    shape = [b, 1, 1, 1]
    fb = tf.random.stateless_uniform(shape, s[0], 1 - brightness, 1 + brightness)
    fc = tf.random.stateless_uniform(shape, s[1], 1 - contrast, 1 + contrast)
    fs = tf.random.stateless_uniform(shape, s[2], 1 - saturation, 1 + saturation)
    dh = tf.random.stateless_uniform([b, 1, 1], s[3], -hue, hue)
    order = tf.argsort(tf.random.stateless_uniform([b, 4], s[4]), axis=1)

    def clip(t):
        return tf.clip_by_value(t, 0.0, 255.0)

    def contrast_op(t, f):
        mean = tf.reduce_mean(_gray(t), [1, 2, 3], keepdims=True)
        return clip((t - mean) * f + mean)

    def saturation_op(t, f):
        g = _gray(t)
        return clip((t - g) * f + g)

    def hue_op(t, d):
        hsv = tf.image.rgb_to_hsv(t / 255.0)
        h = tf.math.floormod(hsv[..., 0] + d, 1.0)
        return clip(tf.image.hsv_to_rgb(tf.stack([h, hsv[..., 1], hsv[..., 2]], -1)) * 255)

    ops = [lambda t, f: clip(t * f), contrast_op, saturation_op, hue_op]
    factors = [fb, fc, fs, dh]
    positions = tf.range(b)
    y = x
    for stage in range(4):
        # Each image applies its stage-th operation; only those images are computed.
        which = order[:, stage]
        parts = tf.dynamic_partition(y, which, 4)
        where = tf.dynamic_partition(positions, which, 4)
        outs = [op(part, tf.gather(f, idx))
                for op, f, part, idx in zip(ops, factors, parts, where)]
        y = tf.dynamic_stitch(where, outs)
    y = tf.reshape(y, tf.shape(x))
    y.set_shape(x.shape)
    apply = tf.random.stateless_uniform([b], s[5]) < p
    return _restore(tf.where(apply[:, None, None, None], y, x), single)


def random_grayscale(images, seed=None, p=0.2):
    """Replace each image by its grey version (3 equal channels) with probability p.

    Args:
        images: (H, W, 3) or (B, H, W, 3).
        seed: None, an int, or a shape-[2] int tensor.
        p: probability.

    Returns:
        float32 tensor of the same shape.

    Example:
    >>> x = random_grayscale(tf.random.uniform([2, 4, 4, 3]), seed=0, p=1.0)
    >>> bool(tf.reduce_all(x[..., 0] == x[..., 2]))
    True
    """
    x, single = _as_batch(images)
    apply = tf.random.stateless_uniform(tf.shape(x)[:1], _seed_tensor(seed)) < p
    g = tf.tile(_gray(x), [1, 1, 1, 3])
    return _restore(tf.where(apply[:, None, None, None], g, x), single)


def random_resized_crop(images, seed=None, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """Crop a random box of area fraction `scale` and aspect `ratio`, resize back.

    Boxes come from `tf.image.stateless_sample_distorted_bounding_box` (10 attempts,
    the whole image when none fits), one per image; the crops are resized to the
    input size with bilinear `tf.image.crop_and_resize`.

    Args:
        images: (H, W, C) or (B, H, W, C).
        seed: None, an int, or a shape-[2] int tensor.
        scale: (min, max) fraction of the image area.
        ratio: (min, max) width / height.

    Returns:
        float32 tensor of the same shape.

    Example:
    >>> random_resized_crop(tf.zeros([2, 32, 32, 3]), seed=0).shape
    TensorShape([2, 32, 32, 3])
    """
    x, single = _as_batch(images)
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    per_image = tf.random.stateless_uniform([b, 2], _seed_tensor(seed), minval=None,
                                            maxval=None, dtype=tf.int64)
    whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])

    def sample(s):
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape[1:], whole, seed=s, min_object_covered=0.0,
            aspect_ratio_range=ratio, area_range=scale, max_attempts=10,
            use_image_if_no_bounding_boxes=True)
        return tf.stack([begin[0], begin[1], size[0], size[1]])

    box = tf.cast(tf.map_fn(sample, per_image, fn_output_signature=tf.int32), tf.float32)
    hm1 = tf.cast(tf.maximum(h - 1, 1), tf.float32)
    wm1 = tf.cast(tf.maximum(w - 1, 1), tf.float32)
    boxes = tf.stack([box[:, 0] / hm1, box[:, 1] / wm1, (box[:, 0] + box[:, 2] - 1) / hm1,
                      (box[:, 1] + box[:, 3] - 1) / wm1], axis=1)
    out = tf.image.crop_and_resize(x, boxes, tf.range(b), tf.stack([h, w]))
    out.set_shape(x.shape)
    return _restore(out, single)


# ---------------------------------------------------------------------------- views
def weak_view(image, seed=None, pad=4):
    """FixMatch weak view: random horizontal flip, reflect-pad by `pad`, random crop.

    Args:
        image: uint8 or float (H, W, 3) or a batch (B, H, W, 3), 0..255 scale.
        seed: None (ordinary random ops), an int, or a shape-[2] int tensor
            (stateless: same seed, same output).
        pad: padding in pixels before the crop back to (H, W).

    Returns:
        float32 tensor of the same shape, 0..255.

    Example:
    >>> x = tf.constant(np.full((32, 32, 3), 7, np.uint8))
    >>> float(tf.reduce_max(tf.abs(weak_view(x, seed=0) - 7.0)))
    0.0
    """
    s = _split_seed(seed, 2)
    return random_pad_crop(random_flip(image, s[0]), s[1], pad=pad)


def strong_view(image, seed=None, pad=4, num_ops=2, factor=0.5, cutout_size=0.5):
    """FixMatch strong view: weak view + Keras RandAugment (0..255) + Cutout.

    Args:
        image: (H, W, 3) or (B, H, W, 3), 0..255 scale.
        seed: None, an int, or a shape-[2] int tensor.
        pad: weak-view padding.
        num_ops: RandAugment operations per image.
        factor: RandAugment strength (Keras `factor`).
        cutout_size: Cutout square side as a fraction of the image side (0 disables).

    Returns:
        float32 tensor of the same shape, 0..255.

    Example:
    >>> strong_view(tf.zeros([2, 32, 32, 3], tf.uint8), seed=0).shape
    TensorShape([2, 32, 32, 3])
    """
    s = _split_seed(seed, 3)
    x = rand_augment(weak_view(image, s[0], pad=pad), s[1], num_ops=num_ops, factor=factor)
    return cutout(x, s[2], size=cutout_size) if cutout_size > 0 else x


def supcon_view(image, seed=None, scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1),
                jitter_p=0.8, grayscale_p=0.2):
    """SupCon/SimCLR view: random resized crop, flip, colour jitter (p=0.8), grey (p=0.2).

    Args:
        image: (H, W, 3) or (B, H, W, 3), 0..255 scale.
        seed: None, an int, or a shape-[2] int tensor.
        scale: area range of the random resized crop (ratio 3/4..4/3).
        jitter: (brightness, contrast, saturation, hue) strengths.
        jitter_p: probability of colour jitter.
        grayscale_p: probability of grayscale.

    Returns:
        float32 tensor of the same shape, 0..255.

    Example:
    >>> supcon_view(tf.zeros([2, 32, 32, 3], tf.uint8), seed=0).shape
    TensorShape([2, 32, 32, 3])
    """
    s = _split_seed(seed, 4)
    x = random_flip(random_resized_crop(image, s[0], scale=scale), s[1])
    x = color_jitter(x, s[2], *jitter, p=jitter_p)
    return random_grayscale(x, s[3], p=grayscale_p)


def _view_fn(view):
    if callable(view):
        return view
    fns = {"none": lambda x, seed=None: to_float(x), "weak": weak_view,
           "strong": strong_view, "supcon": supcon_view}
    if view not in fns:
        raise ValueError(f"Unknown view {view!r}; choose one of {', '.join(VIEWS)} or pass "
                         f"a function f(images, seed).")
    return fns[view]


# ------------------------------------------------------------------------ pipelines
def _batched_source(data, batch_size, *, shuffle, seed, drop_remainder, repeat, cache,
                    shuffle_buffer):
    """Batches of (uint8 images, labels or None), shuffled/repeated as asked."""
    from ssl_zoo.data.dataset import ArrayDataset

    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}.")
    if isinstance(data, ArrayDataset):
        # Shuffle indices and gather whole batches: no per-image tf.data overhead.
        images = tf.convert_to_tensor(data.images)
        labels = tf.convert_to_tensor(data.labels)
        ds = tf.data.Dataset.range(len(data))
        if shuffle:
            ds = ds.shuffle(max(len(data), 1), seed=seed, reshuffle_each_iteration=True)
        if repeat:
            ds = ds.repeat()
        ds = ds.batch(batch_size, drop_remainder=drop_remainder)
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
    ds = ds.batch(batch_size, drop_remainder=drop_remainder)
    if not has_labels:
        ds = ds.map(lambda x: (x, tf.zeros(tf.shape(x)[:1], tf.int64)))
    return ds, has_labels


def _with_batch_seeds(ds, seed):
    """Zip each batch with a stateless seed: deterministic per (seed, epoch, batch)."""
    randoms = tf.data.Dataset.random(seed=seed, rerandomize_each_iteration=True)
    base = tf.constant(0 if seed is None else int(seed) & _INT31, tf.int64)
    return tf.data.Dataset.zip(ds, randoms.map(lambda r: tf.stack([base, r])))


def make_pipeline(data, batch_size, *, view="none", num_views=1, shuffle=True, seed=None,
                  drop_remainder=False, repeat=False, cache=True, prefetch=True,
                  shuffle_buffer=None):
    """Batch, shuffle and augment a labeled data set into (images, labels) batches.

    Order: (cache) -> shuffle -> (repeat) -> batch -> view on the whole batch (each
    image and each view with its own random draw) -> prefetch. With a `seed`, the
    shuffle order and every augmentation are reproducible (stateless ops seeded from
    (seed, epoch, batch index)); later epochs still differ from the first.

    Args:
        data: `ArrayDataset`, or a `tf.data.Dataset` of (uint8 image (H, W, 3), label)
            (or of images alone; labels are then zeros).
        batch_size: images per batch.
        view: "none" (float cast only), "weak", "strong", "supcon", or a function
            f(images (B, H, W, 3), seed) -> images.
        num_views: views per image; > 1 stacks them as (B, V, H, W, 3).
        shuffle: shuffle every epoch.
        seed: None (non-deterministic) or an int.
        drop_remainder: drop the last partial batch.
        repeat: repeat forever.
        cache: cache the decoded tf.data input in memory (ArrayDataset is already in
            memory, so this is a no-op there).
        prefetch: prefetch batches (AUTOTUNE).
        shuffle_buffer: buffer for tf.data input (default: its size up to 100k, else
            10k); an ArrayDataset is always shuffled in full.

    Returns:
        tf.data.Dataset of (images float32 (B, H, W, 3) or (B, V, H, W, 3) in 0..255,
        labels int64 (B,)).

    Example:
    >>> from ssl_zoo.data import load_arrays
    >>> ds = make_pipeline(load_arrays("digits", "test"), 32, view="supcon", num_views=2,
    ...                    seed=0)
    >>> [t.shape for t in next(iter(ds))]
    [TensorShape([32, 2, 16, 16, 3]), TensorShape([32])]
    """
    fn = _view_fn(view)
    if num_views < 1:
        raise ValueError(f"num_views must be >= 1, got {num_views}.")
    ds, _ = _batched_source(data, batch_size, shuffle=shuffle, seed=seed,
                            drop_remainder=drop_remainder, repeat=repeat, cache=cache,
                            shuffle_buffer=shuffle_buffer)
    deterministic = True if seed is not None else None
    if view == "none":
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
            x = views[0] if num_views == 1 else tf.stack(views, axis=1)
            return x, tf.cast(labels, tf.int64)
        ds = _with_batch_seeds(ds, seed).map(apply, num_parallel_calls=AUTOTUNE,
                                             deterministic=deterministic)
    return ds.prefetch(AUTOTUNE) if prefetch else ds


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
        weak: weak view function f(images, seed).
        strong: strong view function f(images, seed).

    Returns:
        tf.data.Dataset of (weak float32 (B, H, W, 3), strong float32 (B, H, W, 3)).

    Example:
    >>> from ssl_zoo.data import load_arrays
    >>> ds = make_unlabeled_pipeline(load_arrays("digits", "train"), 16, seed=0)
    >>> [t.shape for t in next(iter(ds))]
    [TensorShape([16, 16, 16, 3]), TensorShape([16, 16, 16, 3])]
    """
    ds, _ = _batched_source(data, batch_size, shuffle=shuffle, seed=seed,
                            drop_remainder=drop_remainder, repeat=repeat, cache=cache,
                            shuffle_buffer=shuffle_buffer)

    def apply(batch, batch_seed):
        images = batch[0]
        fold = tf.random.experimental.stateless_fold_in
        return weak(images, fold(batch_seed, 0)), strong(images, fold(batch_seed, 1))

    ds = _with_batch_seeds(ds, seed).map(
        apply, num_parallel_calls=AUTOTUNE,
        deterministic=True if seed is not None else None)
    return ds.prefetch(AUTOTUNE) if prefetch else ds
