"""Method views: what a method sees of a batch of images, registered by name.

A view is f(images (B, H, W, 3) uint8/float 0..255, seed) -> float32 images; a view
registered with `emits_labels=True` returns (images, labels) that replace the batch's.
"""

import tensorflow as tf

from ssl_zoo.data.ops import (
    color_jitter,
    cutout,
    rand_augment,
    random_flip,
    random_grayscale,
    random_pad_crop,
    random_resized_crop,
    to_float,
)
from ssl_zoo.data.registry import Registry
from ssl_zoo.data.seeds import split_seed

__all__ = ["VIEWS", "STRONG_FLAVOURS", "STRONG_FLAVOUR_FACTOR", "register_view", "get_view",
           "list_views", "view_emits_labels", "weak_view", "strong_view", "supcon_view",
           "strong_daso_view", "strong_fixmatch_view", "strong_usb_view"]

_VIEWS = Registry("view", hint="Or pass a function f(images, seed) -> images.")


def register_view(name, fn=None, *, emits_labels=False, replace=False):
    """Register a method view under `name`; usable as a decorator.

    A view is f(images, seed) -> images: images (B, H, W, 3) uint8 or float in the
    0..255 scale, seed None / an int / a shape-[2] int tensor (stateless: same seed,
    same output), result float32 0..255. With `emits_labels=True` the view returns
    (images, labels) instead, and `make_pipeline` yields those labels in place of the
    data set's (a Jigsaw puzzle view emits its permutation index this way).

    Args:
        name: unique name (what `make_pipeline(view=...)` accepts).
        fn: the view, or None to return a decorator.
        emits_labels: the view returns (images, int labels).
        replace: allow replacing a view of the same name.

    Returns:
        `fn` itself (or the decorator).

    Example:
    >>> @register_view("flip_example", emits_labels=True)
    ... def flipped(images, seed=None):
    ...     x = tf.reverse(to_float(images), [2])
    ...     return x, tf.ones(tf.shape(x)[:1], tf.int64)
    >>> view_emits_labels("flip_example"), "flip_example" in list_views()
    (True, True)
    >>> _VIEWS.unregister("flip_example")
    """
    return _VIEWS.register(name, fn, replace=replace, emits_labels=bool(emits_labels))


def get_view(name):
    """The view registered as `name`.

    Args:
        name: a name from `list_views()`.

    Returns:
        The view function f(images, seed).

    Raises:
        ValueError: for an unknown name, listing the registered ones.

    Example:
    >>> get_view("weak") is weak_view
    True
    """
    return _VIEWS.get(name)


def list_views():
    """Names of the registered views, in registration order (built-ins first).

    Returns:
        tuple of str.

    Example:
    >>> list_views()[:4]
    ('none', 'weak', 'strong', 'supcon')
    """
    return _VIEWS.names()


def view_emits_labels(view):
    """Whether a view (a registered name or function) returns (images, labels).

    A function that is not registered is taken to return images only unless it has
    an attribute `emits_labels = True` (as `make_puzzle_view`'s views do).

    Args:
        view: a registered name or a function.

    Returns:
        bool.

    Raises:
        ValueError: for an unknown name.

    Example:
    >>> view_emits_labels("weak"), view_emits_labels(lambda x, seed=None: x)
    (False, False)
    """
    return resolve_view(view)[1]


def resolve_view(view):
    """The function of a view and whether it emits labels.

    Args:
        view: a registered name, or a function f(images, seed) (registered or not).

    Returns:
        (function, emits_labels).

    Raises:
        ValueError: for an unknown name, listing the registered ones.

    Example:
    >>> resolve_view("strong") == (strong_view, False)
    True
    """
    if callable(view):
        name = _VIEWS.name_of(view)
        if name is not None:
            return view, _VIEWS.metadata(name)["emits_labels"]
        # An unregistered view (e.g. a model's puzzle view) says so by an attribute.
        return view, bool(getattr(view, "emits_labels", False))
    return _VIEWS.get(view), _VIEWS.metadata(view)["emits_labels"]


@register_view("none")
def _float_view(images, seed=None):  # pylint: disable=unused-argument
    """No augmentation: the images cast to float32 (0..255)."""
    return to_float(images)


@register_view("weak")
def weak_view(image, seed=None, pad=4, pad_mode="reflect"):
    """FixMatch weak view: random horizontal flip, pad by `pad`, random crop.

    The registered "weak" view reflect-pads (FixMatch); `pad_mode="constant"` pads
    with zeros like torchvision's `RandomCrop(32, padding=4)` (the SLA and SupCon
    authors' code); pass e.g. `functools.partial(weak_view, pad_mode="constant")`
    as a view to use it in a pipeline.

    Args:
        image: uint8 or float (H, W, 3) or a batch (B, H, W, 3), 0..255 scale.
        seed: None (ordinary random ops), an int, or a shape-[2] int tensor
            (stateless: same seed, same output).
        pad: padding in pixels before the crop back to (H, W).
        pad_mode: "reflect" or "constant" (zeros), see `random_pad_crop`.

    Returns:
        float32 tensor of the same shape, 0..255.

    Raises:
        ValueError: for another `pad_mode`.

    Example:
    >>> import numpy as np
    >>> x = tf.constant(np.full((32, 32, 3), 7, np.uint8))
    >>> float(tf.reduce_max(tf.abs(weak_view(x, seed=0) - 7.0)))
    0.0
    >>> y = weak_view(tf.fill([8, 32, 32, 3], 7.0), seed=0, pad_mode="constant")
    >>> sorted(set(y.numpy().ravel().tolist()))
    [0.0, 7.0]
    """
    s = split_seed(seed, 2)
    return random_pad_crop(random_flip(image, s[0]), s[1], pad=pad, mode=pad_mode)


@register_view("strong")
def strong_view(image, seed=None, pad=4, num_ops=2, factor=0.5, cutout_size=0.5,
                apply_prob=1.0, cutout_random_size=False, pad_mode="reflect"):
    """FixMatch strong view: weak view + Keras RandAugment (0..255) + Cutout.

    The registered "strong" view uses the defaults; the flavours of the FixMatch and
    DASO codebases ("strong_daso", "strong_fixmatch", "strong_usb") are this view
    with other arguments.

    Args:
        image: (H, W, 3) or (B, H, W, 3), 0..255 scale.
        seed: None, an int, or a shape-[2] int tensor.
        pad: weak-view padding.
        num_ops: RandAugment operations per image.
        factor: RandAugment strength (Keras `factor`).
        cutout_size: Cutout square side as a fraction of the image side (0 disables);
            the largest fraction when `cutout_random_size`.
        apply_prob: probability that each RandAugment operation is applied.
        cutout_random_size: draw the Cutout side per image, uniformly up to
            `cutout_size`.
        pad_mode: weak-view padding mode, "reflect" or "constant" (zeros).

    Returns:
        float32 tensor of the same shape, 0..255.

    Raises:
        ValueError: for another `pad_mode`.

    Example:
    >>> strong_view(tf.zeros([2, 32, 32, 3], tf.uint8), seed=0).shape
    TensorShape([2, 32, 32, 3])
    >>> strong_view(tf.zeros([2, 32, 32, 3], tf.uint8), seed=0, pad_mode="constant").shape
    TensorShape([2, 32, 32, 3])
    """
    s = split_seed(seed, 3)
    x = rand_augment(weak_view(image, s[0], pad=pad, pad_mode=pad_mode), s[1],
                     num_ops=num_ops, factor=factor, apply_prob=apply_prob)
    if cutout_size <= 0:
        return x
    return cutout(x, s[2], size=cutout_size, random_size=cutout_random_size)


@register_view("supcon")
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
    s = split_seed(seed, 4)
    x = random_flip(random_resized_crop(image, s[0], scale=scale), s[1])
    x = color_jitter(x, s[2], *jitter, p=jitter_p)
    return random_grayscale(x, s[3], p=grayscale_p)


#: Keras RandAugment `factor` of the flavoured strong views. Keras' sub-layers read
#: one factor f as the one-sided range (0, f) of each operation's own unit: rotation
#: by up to f x 360 degrees, shear and translation by up to f (of the side),
#: brightness by up to f x 255 added, and posterization to randint(1, int(8 f)) bits
#: (1 bit for f < 0.375). FixMatch's PIL pool instead rotates by up to +-30 degrees,
#: shears and translates by up to +-0.3 and posterizes to 4..8 bits, so no single f
#: reproduces it: f = 0.3 matches the shear and translation ranges, rotates by up to
#: 108 degrees (3.6x FixMatch's) and posterizes to 1 bit. It is a moderate middle,
#: used for all three flavours so that they differ only where their codebases
#: differ: op count, apply probability and Cutout.
STRONG_FLAVOUR_FACTOR = 0.3


_FLAVOUR_DOC = """{summary}

    Same as `strong_view(image, seed, factor=factor, {settings})`.

    Args:
        image: (H, W, 3) or (B, H, W, 3), 0..255 scale.
        seed: None, an int, or a shape-[2] int tensor.
        factor: Keras RandAugment strength (see `STRONG_FLAVOUR_FACTOR`).

    Returns:
        float32 tensor of the same shape, 0..255.

    Example:
    >>> {fn}(tf.zeros([2, 32, 32, 3], tf.uint8), seed=0).shape
    TensorShape([2, 32, 32, 3])
    """


def _strong_flavour(name, summary, **settings):
    """Register `strong_view` with the fixed `settings` of one codebase as `name`."""

    def view(image, seed=None, factor=STRONG_FLAVOUR_FACTOR):
        return strong_view(image, seed, factor=factor, **settings)

    view.__name__ = view.__qualname__ = f"{name}_view"
    view.__doc__ = _FLAVOUR_DOC.format(
        summary=summary, fn=view.__name__,
        settings=", ".join(f"{k}={v}" for k, v in settings.items()))
    return register_view(name, view)


strong_daso_view = _strong_flavour(
    "strong_daso", num_ops=2, apply_prob=0.5, cutout_size=0.5, summary="""\
DASO / kekmodel strong view: weak view, 2 RandAugment ops each applied with
    probability 0.5 (`RandAugmentMC`), then Cutout of half the side (16 px on 32 px).

    A quarter of the images (0.5^2) get no RandAugment operation, only Cutout.
    Magnitudes are drawn per image by Keras' sub-layers (DASO draws 1..9 of 10).""")

strong_fixmatch_view = _strong_flavour(
    "strong_fixmatch", num_ops=2, apply_prob=1.0, cutout_size=0.5, summary="""\
FixMatch (TF) strong view: weak view, 2 RandAugment ops always applied at a
    random magnitude, then Cutout of half the side.""")

strong_usb_view = _strong_flavour(
    "strong_usb", num_ops=3, apply_prob=1.0, cutout_size=0.5, cutout_random_size=True,
    summary="""\
USB strong view: weak view, 3 RandAugment ops always applied, then Cutout whose
    side is drawn per image uniformly in [0, 1/2] of the image side.""")


#: Strong-view flavour of each codebase -> registered view name (DASO's is the
#: default for DASO, see DESIGN.md section 3).
STRONG_FLAVOURS = {"daso": "strong_daso", "fixmatch": "strong_fixmatch",
                   "usb": "strong_usb"}


#: The built-in view names; `list_views()` also lists views registered later.
VIEWS = list_views()
