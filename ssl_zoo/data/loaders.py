"""Loaders: pick the source of a data set and load a split as uint8 arrays with labels.

A short dispatcher over `ssl_zoo.data.sources` (digits, tfds, files, arrays).
"""

import os

import numpy as np

from ssl_zoo.data.cache import default_cache_dir
from ssl_zoo.data.dataset import ArrayDataset, make_array_dataset
from ssl_zoo.data.errors import DataError, MissingPathError, UnknownDatasetError
from ssl_zoo.data.sources.arrays import from_arrays, load_npz
from ssl_zoo.data.sources.digits import EMBEDDED_NAME, load_digits
from ssl_zoo.data.sources.files import load_files, looks_like_zip
from ssl_zoo.data.sources.images import resize_uint8
from ssl_zoo.data.sources.tfds import TFDS_NAMES, load_tfds

__all__ = ["default_cache_dir", "list_datasets", "load_arrays", "load_dataset"]


def list_datasets():
    """Names `load_arrays` accepts besides paths and arrays.

    Returns:
        List: the embedded "digits" first, then `TFDS_NAMES` (usable when prepared).

    Example:
    >>> list_datasets()[:3]
    ['digits', 'cifar10', 'cifar100']
    """
    return [EMBEDDED_NAME, *TFDS_NAMES]


def _normalize_size(image_size):
    if image_size is None:
        return None
    if isinstance(image_size, (int, np.integer)):
        size = (int(image_size), int(image_size))
    else:
        size = tuple(int(s) for s in image_size)
        if len(size) == 3 and size[2] == 3:
            size = size[:2]
        if len(size) != 2:
            raise ValueError(f"image_size must be an int or (H, W), got {image_size!r}.")
    if min(size) < 1:
        raise ValueError(f"image_size must be positive, got {image_size!r}.")
    return size


def load_arrays(source, split="train", *, data_dir=None, image_size=None, cache_dir=None,
                num_classes=None):
    """Load a split of a data set as uint8 arrays with labels and metadata.

    Args:
        source: one of
            - "digits": the embedded offline default, scikit-learn's 1,797 real 8x8
              handwritten digits, scaled 0..16 -> 0..255, 3 channels, resized to
              16x16 (bilinear) unless `image_size` is given; a fixed stratified
              split, "train" 80% (1,438) / "test" 20% (359, round(0.2 n_k) per
              class), or "all";
            - a name in `TFDS_NAMES` (or "tfds:<name>"), used only when prepared
              under `data_dir` (never downloaded);
            - a folder laid out <class>/<image> or <split>/<class>/<image>;
            - a .zip archive with the same layouts (a wrapper folder such as
              "cifar10/" is skipped), read in place;
            - an (images, labels) tuple of arrays or an .npz path (keys x/y or
              images/labels); images (N, H, W, 3|1), uint8 0..255 or float 0..1.
        split: "train", "test", "val", "all", ... "test" falls back to "val" and
            vice versa when only one exists.
        data_dir: tensorflow-datasets directory; relative folder/archive/.npz paths
            are also looked up under it.
        image_size: int or (H, W); images of another size are resized (bilinear,
            antialiased). None keeps the native size (the most common size when
            sizes are mixed; 16 for digits).
        cache_dir: where decoded folders/archives are cached as .npy; None uses
            `$SSL_ZOO_CACHE` or ~/.cache/ssl_zoo; False disables the cache.
        num_classes: for numpy input, the number of classes (labels must be below
            it); default max(label) + 1.

    Returns:
        `ArrayDataset` (images uint8 (N, H, W, 3), labels int64 (N,), info).

    Raises:
        UnknownDatasetError, DatasetNotFoundError, MissingPathError,
        EmptyDatasetError, EmptyClassError, LayoutError, SplitNotFoundError,
        CorruptImageError, CorruptArchiveError, LabelError, ImageShapeError (all
        `ValueError`s).

    Example:
    >>> d = load_arrays("digits", "train")
    >>> d.images.shape, d.images.dtype.name, d.info.num_classes
    ((1438, 16, 16, 3), 'uint8', 10)
    """
    size = _normalize_size(image_size)
    if cache_dir is None:
        cache_dir = default_cache_dir()
    elif cache_dir is not False:
        cache_dir = os.fspath(cache_dir)
    if isinstance(source, ArrayDataset):
        if size is None or tuple(source.images.shape[1:3]) == size:
            return source
        return make_array_dataset(resize_uint8(source.images, size), source.labels,
                                  name=source.info.name, split=source.info.split,
                                  class_names=source.info.class_names,
                                  source=source.info.source)
    if isinstance(source, (tuple, list)):
        if len(source) != 2:
            raise DataError(
                f"A sequence source must be (images, labels); got {len(source)} items.")
        return from_arrays(source[0], source[1], num_classes=num_classes, split=split,
                           image_size=size)
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"Unsupported source type {type(source).__name__}; give a data set name, a "
            f"path, or an (images, labels) tuple.")
    source = os.fspath(source)
    if source == EMBEDDED_NAME:
        return load_digits(split, size)
    if source.startswith("tfds:"):
        return load_tfds(source[5:], split, data_dir, size)
    if source in TFDS_NAMES:
        return load_tfds(source, split, data_dir, size)
    path = os.path.expanduser(source)
    if not os.path.exists(path) and data_dir and not os.path.isabs(path):
        alt = os.path.join(os.fspath(data_dir), path)
        path = alt if os.path.exists(alt) else path
    if os.path.isdir(path):
        return load_files(path, split, size, cache_dir)
    if os.path.isfile(path):
        if path.lower().endswith(".npz"):
            return load_npz(path, split, size, num_classes)
        if looks_like_zip(path):   # a damaged one raises CorruptArchiveError
            return load_files(path, split, size, cache_dir)
        raise DataError(
            f"{os.path.abspath(path)}: unsupported file; give a folder, a .zip archive "
            f"or an .npz file.")
    looks_like_path = (os.sep in source or "/" in source or source.startswith((".", "~"))
                       or source.lower().endswith((".zip", ".npz")))
    if looks_like_path:
        raise MissingPathError(
            f"{os.path.abspath(path)} does not exist (source={source!r}"
            + (f", data_dir={os.fspath(data_dir)!r}" if data_dir else "") + ").")
    raise UnknownDatasetError(
        f"Unknown data set {source!r}. Known names: {', '.join(list_datasets())} "
        f"(tfds names only when prepared locally; any other tfds name as "
        f"'tfds:<name>'), or give a path to an image folder, a .zip archive or an .npz "
        f"file, or an (images, labels) tuple.")


def load_dataset(source, split="train", **kwargs):
    """Load a split as a `tf.data.Dataset` of (uint8 image, int64 label) plus its info.

    Args:
        source: as for `load_arrays`.
        split: as for `load_arrays`.
        **kwargs: `data_dir`, `image_size`, `cache_dir`, `num_classes`.

    Returns:
        (tf.data.Dataset, DatasetInfo).

    Example:
    >>> ds, info = load_dataset("digits", "test")
    >>> info.num_examples, int(ds.cardinality())
    (359, 359)
    """
    data = load_arrays(source, split, **kwargs)
    return data.to_dataset(), data.info
