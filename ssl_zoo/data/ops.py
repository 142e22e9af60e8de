"""Data ops: plain tensor functions on images, registered by name (big_vision pp style).

Images stay in the 0..255 float32 scale; every op takes one image (H, W, C) or a batch
(B, H, W, C), draws its random choices per image, runs eagerly, inside `tf.function`
and in tf.data, and with a seed uses stateless ops only (same seed, same output).
"""

import threading

import keras
import tensorflow as tf

from ssl_zoo.data.registry import Registry
from ssl_zoo.data.seeds import FoldInSeeds, seed_tensor, split_seed

__all__ = ["register_op", "get_op", "list_ops", "to_float", "normalize", "random_flip",
           "random_pad_crop", "cutout", "rand_augment", "color_jitter", "random_grayscale",
           "random_resized_crop", "random_crop_boxes"]

_OPS = Registry("op")


def register_op(name, fn=None, *, replace=False):
    """Register a data op under `name`; usable as a decorator.

    An op is a plain function of an image (H, W, C) or a batch (B, H, W, C) in the
    0..255 scale, with keyword options; a random op takes `seed` (None, an int, or a
    shape-[2] int tensor) and must give the same output for the same seed eagerly and
    inside tf.data.

    Args:
        name: unique name.
        fn: the op, or None to return a decorator.
        replace: allow replacing an op of the same name.

    Returns:
        `fn` itself (or the decorator).

    Example:
    >>> @register_op("invert_example")
    ... def invert(images):
    ...     return 255.0 - to_float(images)
    >>> get_op("invert_example")(tf.zeros([1, 1, 3])).numpy().ravel().tolist()
    [255.0, 255.0, 255.0]
    >>> _OPS.unregister("invert_example")
    """
    return _OPS.register(name, fn, replace=replace)


def get_op(name):
    """The op registered as `name`.

    Args:
        name: a name from `list_ops()`.

    Returns:
        The op function.

    Raises:
        ValueError: for an unknown name, listing the registered ones.

    Example:
    >>> get_op("random_flip") is random_flip
    True
    """
    return _OPS.get(name)


def list_ops():
    """Names of the registered ops, in registration order.

    Returns:
        tuple of str.

    Example:
    >>> list_ops()[:3]
    ('to_float', 'normalize', 'random_flip')
    """
    return _OPS.names()


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


# `random_pad_crop` mode -> `tf.pad` mode ("constant" pads with zeros).
_PAD_MODES = {"reflect": "REFLECT", "constant": "CONSTANT"}


@register_op("to_float")
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


@register_op("normalize")
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


@register_op("random_flip")
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
    flip = tf.random.stateless_uniform(tf.shape(x)[:1], seed_tensor(seed)) < 0.5
    return _restore(tf.where(flip[:, None, None, None], tf.reverse(x, [2]), x), single)


@register_op("random_pad_crop")
def random_pad_crop(images, seed=None, pad=4, mode="reflect"):
    """Pad each image by `pad` pixels and crop a random window of the original size.

    `mode="reflect"` (the default) mirrors the image into the border, as the FixMatch
    code does; `mode="constant"` pads with zeros (black), as torchvision's
    `RandomCrop(32, padding=4)` in the SLA and SupCon authors' code does.

    Args:
        images: (H, W, C) or (B, H, W, C); with `mode="reflect"`, `pad` must be
            smaller than H and W.
        seed: None, an int, or a shape-[2] int tensor.
        pad: padding in pixels (0 disables).
        mode: "reflect" or "constant" (zeros).

    Returns:
        float32 tensor of the same shape (an independent shift per image).

    Raises:
        ValueError: for another `mode`.

    Example:
    >>> float(random_pad_crop(tf.ones([2, 8, 8, 3]), seed=1).numpy().min())
    1.0
    >>> x = random_pad_crop(tf.ones([16, 8, 8, 3]), seed=1, mode="constant")
    >>> sorted(set(x.numpy().ravel().tolist()))  # some crops show the zero border
    [0.0, 1.0]
    """
    if mode not in _PAD_MODES:
        raise ValueError(f"random_pad_crop mode must be one of "
                         f"{', '.join(repr(m) for m in _PAD_MODES)}, got {mode!r}.")
    x, single = _as_batch(images)
    if pad <= 0:
        return _restore(x, single)
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    s = split_seed(seed, 2)
    xp = tf.pad(x, [[0, 0], [pad, pad], [pad, pad], [0, 0]], mode=_PAD_MODES[mode])
    oy = tf.random.stateless_uniform([b], s[0], 0, 2 * pad + 1, dtype=tf.int32)
    ox = tf.random.stateless_uniform([b], s[1], 0, 2 * pad + 1, dtype=tf.int32)
    rows = oy[:, None] + tf.range(h)[None]
    cols = ox[:, None] + tf.range(w)[None]
    out = tf.gather(tf.gather(xp, rows, axis=1, batch_dims=1), cols, axis=2, batch_dims=1)
    out.set_shape(x.shape)
    return _restore(out, single)


@register_op("cutout")
def cutout(images, seed=None, size=0.5, fill=127.5, random_size=False):
    """Fill a square of side `size` x image side with `fill`, centred at a random pixel.

    As in DeVries & Taylor (2017) and FixMatch, the centre is uniform over the image,
    so the square may be clipped at the borders. With `random_size=True`, `size` is
    the largest side instead: each image draws its own fraction uniformly in
    [0, size] (USB's Cutout: a side of up to half the image, `size=0.5`).

    Args:
        images: (H, W, C) or (B, H, W, C), 0..255 scale.
        seed: None, an int, or a shape-[2] int tensor.
        size: square side as a fraction of the image height/width (the maximum
            fraction when `random_size`).
        fill: value written inside the square (127.5 = mid-grey).
        random_size: draw the side per image, uniformly up to `size`.

    Returns:
        float32 tensor of the same shape.

    Example:
    >>> x = cutout(tf.zeros([8, 8, 3]), seed=0)
    >>> 0 < int(tf.reduce_sum(tf.cast(x[..., 0] == 127.5, tf.int32))) <= 16
    True
    >>> y = cutout(tf.zeros([64, 8, 8, 3]), seed=0, random_size=True)
    >>> int(tf.reduce_max(tf.reduce_sum(tf.cast(y[..., 0] > 0, tf.int32), [1, 2])))
    16
    """
    x, single = _as_batch(images)
    shape = tf.shape(x)
    b, h, w = shape[0], shape[1], shape[2]
    s = split_seed(seed, 3)
    fraction = tf.constant(size, tf.float32)
    if random_size:
        fraction = tf.random.stateless_uniform([b], s[2], 0.0, size)[:, None, None]
    sh = tf.cast(tf.round(fraction * tf.cast(h, tf.float32)), tf.int32)
    sw = tf.cast(tf.round(fraction * tf.cast(w, tf.float32)), tf.int32)
    cy = tf.random.stateless_uniform([b], s[0], 0, h, dtype=tf.int32)
    cx = tf.random.stateless_uniform([b], s[1], 0, w, dtype=tf.int32)
    y0 = cy[:, None, None] - sh // 2
    x0 = cx[:, None, None] - sw // 2
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


@register_op("rand_augment")
def rand_augment(images, seed=None, num_ops=2, factor=0.5, apply_prob=1.0):
    """Keras `RandAugment(value_range=(0, 255))` with the operations chosen per image.

    Keras' layer picks the same `num_ops` operations for a whole batch; here each image
    gets its own operations and magnitudes (as in the RandAugment and FixMatch papers),
    computed batch-wide with the Keras sub-layers and selected per image. Each chosen
    operation is then applied with probability `apply_prob`, independently per image
    and per operation (kekmodel's and DASO's `RandAugmentMC` use 0.5). With a seed,
    the parameters come from stateless ops, so the result is reproducible; for a given
    seed, `apply_prob=1.0` gives exactly the output of the version without it.

    Args:
        images: (H, W, 3) or (B, H, W, 3), 0..255 scale.
        seed: None, an int, or a shape-[2] int tensor.
        num_ops: operations drawn in sequence for each image.
        factor: Keras RandAugment strength in [0, 1].
        apply_prob: probability in [0, 1] that a drawn operation is applied.

    Returns:
        float32 tensor of the same shape, clipped to 0..255.

    Example:
    >>> rand_augment(tf.fill([2, 8, 8, 3], 100.0), seed=0).shape
    TensorShape([2, 8, 8, 3])
    >>> x = tf.random.uniform([4, 8, 8, 3], 0, 255)
    >>> bool(tf.reduce_all(rand_augment(x, seed=0, apply_prob=0.0) == x))
    True
    """
    if not 0.0 <= apply_prob <= 1.0:
        raise ValueError(f"apply_prob must be in [0, 1], got {apply_prob}.")
    layer = _rand_augment_layer(num_ops, factor)
    x, single = _as_batch(images)
    static_shape = x.shape
    base = seed_tensor(seed)
    names = list(layer._AUGMENT_LAYERS)  # pylint: disable=protected-access
    b = tf.shape(x)[0]
    choice = tf.random.stateless_uniform([num_ops, b], base, 0, len(names), dtype=tf.int32)
    if apply_prob < 1.0:
        # A skipped operation sends the image to one more partition, left as it is.
        # fold_in(base, 0) is used by no operation (they fold in 1, 2, ...).
        skip = tf.random.stateless_uniform(
            [num_ops, b], tf.random.experimental.stateless_fold_in(base, 0)) >= apply_prob
        choice = tf.where(skip, len(names), choice)
    positions = tf.range(b)
    for i in range(num_ops):
        # Each operation runs only on the images that drew it, then they are stitched
        # back in place: one batch worth of work per round instead of len(names).
        parts = tf.dynamic_partition(x, choice[i], len(names) + 1)
        where = tf.dynamic_partition(positions, choice[i], len(names) + 1)
        outs = []
        for j, (name, part) in enumerate(zip(names, parts)):
            sub = getattr(layer, name)
            op_seed = tf.random.experimental.stateless_fold_in(base, 1 + i * len(names) + j)

            def run(sub=sub, part=part, op_seed=op_seed):
                params = sub.get_random_transformation(part, training=True,
                                                       seed=FoldInSeeds(op_seed))
                return tf.cast(sub.transform_images(part, params, training=True),
                               tf.float32)

            # Some Keras ops refuse empty batches eagerly (e.g. AutoContrast's min).
            outs.append(tf.cond(tf.size(part) > 0, run, lambda part=part: part))
        outs.append(parts[-1])  # the skipped images
        x = tf.clip_by_value(tf.dynamic_stitch(where, outs), 0.0, 255.0)
    x.set_shape(static_shape)
    return _restore(x, single)


# ------------------------------------------------------------------- colour (SupCon)
def _gray(x):
    return tf.image.rgb_to_grayscale(x)  # ITU-R 601 weights, as torchvision


@register_op("color_jitter")
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
    s = split_seed(seed, 6)
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


@register_op("random_grayscale")
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
    apply = tf.random.stateless_uniform(tf.shape(x)[:1], seed_tensor(seed)) < p
    g = tf.tile(_gray(x), [1, 1, 1, 3])
    return _restore(tf.where(apply[:, None, None, None], g, x), single)


def random_crop_boxes(images, seed, scale=(0.2, 1.0), ratio=(3 / 4, 4 / 3)):
    """Random-resized-crop boxes, one per image, normalised (y1, x1, y2, x2) as
    `tf.image.crop_and_resize` takes them.

    Sampled with `tf.image.stateless_sample_distorted_bounding_box` (10 attempts, the
    whole image when none fits); shared by `random_resized_crop` and the Jigsaw++
    puzzle generator.

    Args:
        images: (B, H, W, C).
        seed: a shape-[2] int tensor (see `seed_tensor`).
        scale: (min, max) fraction of the image area.
        ratio: (min, max) width / height.

    Returns:
        float32 (B, 4).

    Example:
    >>> random_crop_boxes(tf.zeros([2, 8, 8, 3]), seed_tensor(0), scale=(1, 1),
    ...                   ratio=(1, 1)).numpy().tolist()
    [[0.0, 0.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]]
    """
    shape = tf.shape(images)
    h, w = shape[1], shape[2]
    per_image = tf.random.stateless_uniform([shape[0], 2], seed, minval=None, maxval=None,
                                            dtype=tf.int64)
    whole = tf.constant([[[0.0, 0.0, 1.0, 1.0]]])

    def sample(s):
        begin, size, _ = tf.image.stateless_sample_distorted_bounding_box(
            shape[1:], whole, seed=s, min_object_covered=0.0, aspect_ratio_range=ratio,
            area_range=scale, max_attempts=10, use_image_if_no_bounding_boxes=True)
        return tf.stack([begin[0], begin[1], size[0], size[1]])

    box = tf.cast(tf.map_fn(sample, per_image, fn_output_signature=tf.int32), tf.float32)
    hm1 = tf.cast(tf.maximum(h - 1, 1), tf.float32)
    wm1 = tf.cast(tf.maximum(w - 1, 1), tf.float32)
    return tf.stack([box[:, 0] / hm1, box[:, 1] / wm1, (box[:, 0] + box[:, 2] - 1) / hm1,
                     (box[:, 1] + box[:, 3] - 1) / wm1], axis=1)


@register_op("random_resized_crop")
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
    boxes = random_crop_boxes(x, seed_tensor(seed), scale, ratio)
    out = tf.image.crop_and_resize(x, boxes, tf.range(b), tf.stack([h, w]))
    out.set_shape(x.shape)
    return _restore(out, single)
