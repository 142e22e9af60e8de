"""Source "digits": scikit-learn's embedded 8x8 handwritten digits, the offline default.

Real images shipped with scikit-learn, so every example and test runs without a network.
"""

import numpy as np

from ssl_zoo.data.dataset import make_array_dataset
from ssl_zoo.data.errors import SplitNotFoundError
from ssl_zoo.data.sources.images import resize_uint8

EMBEDDED_NAME = "digits"
#: Default side of the embedded digits images (native 8x8, upsampled bilinearly so
#: that rotations, crops and strided convolutions have room).
DIGITS_IMAGE_SIZE = 16
#: Fraction of each digits class held out as the "test" split (fixed seed below).
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 20240531


def _stratified_holdout(labels, fraction, seed):
    rng = np.random.default_rng(seed)
    test = []
    for k in np.unique(labels):
        pool = rng.permutation(np.flatnonzero(labels == k))
        test.append(pool[:int(round(fraction * pool.size))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(labels.size), test)
    return train, test


def load_digits(split, image_size):
    """The embedded scikit-learn digits: 1,797 real 8x8 handwritten digits, offline.

    Pixels 0..16 are scaled to 0..255 and repeated over 3 channels; a fixed stratified
    split holds out 20% of each class as "test".

    Args:
        split: "train" (80%, 1,438), "test" (20%, 359; also "val", "validation") or
            "all".
        image_size: (H, W), or None for `DIGITS_IMAGE_SIZE` (bilinear, antialiased).

    Returns:
        `ArrayDataset` named "digits".

    Raises:
        SplitNotFoundError: for another split.

    Example:
    >>> load_digits("test", None).images.shape
    (359, 16, 16, 3)
    """
    from sklearn import datasets

    digits = datasets.load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).clip(0, 255).astype(np.uint8)
    images = np.repeat(images[..., None], 3, axis=-1)
    labels = digits.target.astype(np.int64)
    train, test = _stratified_holdout(labels, DIGITS_TEST_FRACTION, DIGITS_SPLIT_SEED)
    chosen = {"train": train, "test": test, "all": np.arange(labels.size)}
    key = {"val": "test", "validation": "test"}.get(split, split)
    if key not in chosen:
        raise SplitNotFoundError(
            f"The embedded 'digits' data set has splits 'train' (80%), 'test' (20%) and "
            f"'all'; got split={split!r}.")
    idx = chosen[key]
    images = resize_uint8(images[idx], image_size or (DIGITS_IMAGE_SIZE,) * 2)
    return make_array_dataset(images, labels[idx], name=EMBEDDED_NAME, split=key,
                              class_names=[str(i) for i in range(10)],
                              source="sklearn:load_digits")
