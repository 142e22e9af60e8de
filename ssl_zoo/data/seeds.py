"""Stateless seeds: how ops, views and pipelines turn `seed` arguments into tensors.

None draws a fresh seed; an int or a shape-[2] tensor gives reproducible stateless ops.
"""

import keras
import numpy as np
import tensorflow as tf

__all__ = ["INT31", "FoldInSeeds", "seed_tensor", "split_seed"]

INT31 = 2**31 - 1


def seed_tensor(seed):
    """A shape-[2] int64 stateless seed; `None` draws one with an ordinary random op.

    Args:
        seed: None, an int, or a scalar or shape-[2] int tensor.

    Returns:
        int64 tensor of shape [2].

    Example:
    >>> seed_tensor(7).numpy().tolist()
    [7, 0]
    """
    if seed is None:
        return tf.random.uniform([2], 0, INT31, dtype=tf.int64)
    if isinstance(seed, (int, np.integer)):
        return tf.constant([int(seed) & (2**63 - 1), 0], tf.int64)
    seed = tf.cast(tf.convert_to_tensor(seed), tf.int64)
    if seed.shape.rank == 0:
        return tf.stack([seed, tf.zeros([], tf.int64)])
    return tf.reshape(seed, [2])


def split_seed(seed, num):
    """`num` independent stateless seeds derived from one (folding in 1..num).

    Args:
        seed: as for `seed_tensor`.
        num: how many seeds.

    Returns:
        list of `num` int64 tensors of shape [2].

    Example:
    >>> a, b = split_seed(7, 2)
    >>> bool(tf.reduce_all(a == split_seed(7, 2)[0])), bool(tf.reduce_all(a == b))
    (True, False)
    """
    seed = seed_tensor(seed)
    return [tf.random.experimental.stateless_fold_in(seed, i + 1) for i in range(num)]


class FoldInSeeds(keras.random.SeedGenerator):
    """Feeds a stateless seed tensor to Keras random ops: each `next()` folds in a count.

    Keras image layers draw their parameters from a `SeedGenerator` (a variable),
    which cannot follow a per-batch seed; this stand-in needs no variable.

    Args:
        seed: as for `seed_tensor`.

    Example:
    >>> g = FoldInSeeds(3)
    >>> bool(tf.reduce_all(g.next() == FoldInSeeds(3).next()))
    True
    """

    def __init__(self, seed):  # pylint: disable=super-init-not-called
        self._base = seed_tensor(seed)
        self._count = 0

    def next(self, ordered=True):
        self._count += 1
        return tf.random.experimental.stateless_fold_in(self._base, self._count)
