"""Input transformations for label augmentation (SLA): rotations, colour permutations.

A transformation set is an ordered list t_1..t_M with t_1 = identity. Rotations are
counter-clockwise (`np.rot90` order); colour permutations follow
`itertools.permutations((0, 1, 2))` order; in the product set the rotation index is
the major one (j = 6 * r + c).
"""

import itertools

import keras
import tensorflow as tf
from keras import ops

_CHANNELS = "rgb"
COLOR_PERMUTATIONS = {
    "".join(_CHANNELS[i] for i in p): p for p in itertools.permutations(range(3))}
ROTATIONS = {"rot0": 0, "rot90": 1, "rot180": 2, "rot270": 3}
TRANSFORM_SETS = {
    "none": ["rot0"],
    "rotation": list(ROTATIONS),
    "color_permutation": list(COLOR_PERMUTATIONS),
    "rotation_color": [f"{r}+{c}" for r in ROTATIONS for c in COLOR_PERMUTATIONS],
}
_IDENTITIES = {"identity", "rot0", "rgb", "rot0+rgb"}


def rotate90(images, k):
    """Rotates (B, H, W, C) images counter-clockwise by k*90 degrees (k a Python int).

    Example:
    >>> import numpy as np
    >>> x = np.arange(4.0).reshape(1, 2, 2, 1)
    >>> np.allclose(rotate90(x, 1)[0, ..., 0], np.rot90(x[0, ..., 0]))
    True
    """
    k = int(k) % 4
    x = ops.convert_to_tensor(images)
    if k == 0:
        return x
    if k == 2:
        return ops.flip(ops.flip(x, axis=1), axis=2)
    x = ops.transpose(x, (0, 2, 1, 3))
    return ops.flip(x, axis=1 if k == 1 else 2)


def permute_channels(images, order):
    """Reorders the channels: output channel c is input channel `order[c]`."""
    return ops.take(ops.convert_to_tensor(images), list(order), axis=-1)


def _parse(name):
    """Returns (rotation k, channel order or None) for a transformation name."""
    if name == "identity":
        return 0, None
    k, order = 0, None
    for part in name.split("+"):
        if part in ROTATIONS:
            k = ROTATIONS[part]
        elif part in COLOR_PERMUTATIONS:
            order = COLOR_PERMUTATIONS[part]
        else:
            raise ValueError(
                f"Unknown transformation {name!r}. Known: 'identity', "
                f"{sorted(ROTATIONS)}, {sorted(COLOR_PERMUTATIONS)} and 'rotX+perm' "
                f"products, or a set name in {sorted(TRANSFORM_SETS)}.")
    return k, order


def apply_transform(images, name):
    """Applies one named transformation ('rot90', 'gbr', 'rot180+brg', ...) to (B, H, W, C)."""
    k, order = _parse(name)
    x = rotate90(images, k)
    return permute_channels(x, order) if order is not None and order != (0, 1, 2) else x


def resolve_transforms(transforms):
    """Turns a set name or a list of transformation names into the list of names."""
    if isinstance(transforms, str):
        if transforms not in TRANSFORM_SETS:
            raise ValueError(
                f"Unknown transformation set {transforms!r}. Known sets: "
                f"{', '.join(sorted(TRANSFORM_SETS))}; or pass a list of names.")
        return list(TRANSFORM_SETS[transforms])
    names = list(transforms)
    if not names:
        raise ValueError("The transformation list is empty; t_1 must be the identity.")
    for n in names:
        if not isinstance(n, str):
            raise TypeError(f"Transformations are given by name, got {n!r}.")
        _parse(n)
    if names[0] not in _IDENTITIES:
        raise ValueError(
            f"The first transformation must be the identity (single inference reads "
            f"it), got {names[0]!r}.")
    if len(set(names)) != len(names):
        raise ValueError(f"Transformations must be distinct, got {names}.")
    return names


@keras.saving.register_keras_serializable(package="ssl_zoo")
class InputTransformations(keras.layers.Layer):
    """Expands a batch of B images into B*M transformed images, interleaved per sample.

    Row b*M + j of the output is t_j(x_b), as in the SLA authors' code, and
    `joint_labels(y)` gives the matching joint labels y*M + j.

    Args:
        transforms: a set name ('rotation' M=4, 'color_permutation' M=6,
            'rotation_color' M=24, 'none') or a list of names with the identity first.

    Call args:
        images: (B, H, W, C). Rotations need H == W.

    Returns:
        (B*M, H, W, C) tensor.

    Example:
    >>> layer = InputTransformations("rotation")
    >>> tuple(layer(ops.zeros((2, 8, 8, 3))).shape)
    (8, 8, 8, 3)
    >>> ops.convert_to_numpy(layer.joint_labels(ops.array([1, 0]))).tolist()
    [4, 5, 6, 7, 0, 1, 2, 3]
    """

    # build() only checks the input shape: a model may mark it built (see
    # BackboneModel._maybe_symbolic_build).
    builds_no_weights = True

    def __init__(self, transforms="rotation", **kwargs):
        super().__init__(**kwargs)
        self.transforms = transforms if isinstance(transforms, str) else list(transforms)
        self.names = resolve_transforms(transforms)
        self.num_transforms = len(self.names)
        self.rotates = any(_parse(n)[0] % 2 for n in self.names)

    def _check_shape(self, shape):
        if len(shape) != 4:
            raise ValueError(
                f"InputTransformations expects images of rank 4 (B, H, W, C), got shape "
                f"{tuple(shape)}.")
        if self.rotates and shape[1] is not None and shape[2] is not None \
                and shape[1] != shape[2]:
            raise ValueError(
                f"90/270-degree rotations need square images, got H={shape[1]}, "
                f"W={shape[2]}; crop or resize the images to a square first.")

    def build(self, input_shape):
        self._check_shape(tuple(input_shape))
        self.built = True

    def call(self, images):
        self._check_shape(tuple(images.shape))
        if self.rotates and (images.shape[1] is None or images.shape[2] is None):
            shape = tf.shape(images)
            with tf.control_dependencies([tf.debugging.assert_equal(
                    shape[1], shape[2],
                    message="90/270-degree rotations need square images (H == W)")]):
                images = tf.identity(images)
        if self.num_transforms == 1:
            return images
        views = ops.stack([apply_transform(images, n) for n in self.names], axis=1)
        shape = ops.shape(images)
        return ops.reshape(views, (-1, shape[1], shape[2], shape[3]))

    def joint_labels(self, labels):
        """Joint labels y*M + j for the interleaved expanded batch, shape (B*M,)."""
        labels = ops.cast(ops.reshape(labels, (-1, 1)), "int32")
        j = ops.arange(self.num_transforms, dtype="int32")[None, :]
        return ops.reshape(labels * self.num_transforms + j, (-1,))

    def transform_labels(self, batch_size):
        """Transformation indices j for the interleaved expanded batch, shape (B*M,)."""
        return ops.tile(ops.arange(self.num_transforms, dtype="int32"), (batch_size,))

    def repeat_labels(self, labels):
        """Original labels repeated per transformation (DA/MT), shape (B*M,)."""
        return ops.repeat(ops.reshape(labels, (-1,)), self.num_transforms, axis=0)

    def compute_output_shape(self, input_shape):
        b = input_shape[0]
        return (None if b is None else b * self.num_transforms,) + tuple(input_shape[1:])

    def get_config(self):
        return {**super().get_config(), "transforms": self.transforms}
