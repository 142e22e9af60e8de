"""Data sets in memory: `ArrayDataset` (uint8 images, labels) and its `DatasetInfo`.

Also how a loaded split is named: requested split names and their aliases.
"""

import dataclasses

import numpy as np
import tensorflow as tf

from ssl_zoo.data.errors import ImageShapeError, LabelError

#: Requested split -> split names tried in order ("test" falls back to "val" ...).
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "test": ("test", "val", "validation", "valid"),
    "val": ("val", "validation", "valid", "test"),
    "validation": ("validation", "val", "valid", "test"),
    "valid": ("valid", "val", "validation", "test"),
}


@dataclasses.dataclass
class DatasetInfo:
    """Metadata of a loaded split.

    Attributes:
        name: data set name ("digits", "cifar10", the folder/archive name, ...).
        split: split name actually read (e.g. "val" when "test" was asked and only
            "val" exists).
        class_names: list of class names; label i is `class_names[i]`.
        num_classes: `len(class_names)`.
        image_shape: (H, W, 3).
        num_examples: N.
        mean: per-channel mean of the images in the 0..255 scale.
        std: per-channel standard deviation in the 0..255 scale.
        source: where the data came from (path, "tfds:<name>", "sklearn:load_digits").
    """

    name: str
    split: str
    class_names: list
    num_classes: int
    image_shape: tuple
    num_examples: int
    mean: tuple
    std: tuple
    source: str = ""

    def to_dict(self):
        """Return a JSON-serialisable dict of the fields.

        Returns:
            dict with lists in place of tuples.

        Example:
        >>> from ssl_zoo.data import load_arrays
        >>> info = load_arrays("digits", "test").info
        >>> info.to_dict()["image_shape"]
        [16, 16, 3]
        """
        d = dataclasses.asdict(self)
        for key in ("image_shape", "mean", "std", "class_names"):
            d[key] = list(d[key])
        return d

    @classmethod
    def from_dict(cls, d):
        """Inverse of `to_dict` (unknown keys are ignored)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        d = {k: v for k, v in d.items() if k in fields}
        for key in ("image_shape", "mean", "std"):
            d[key] = tuple(d[key])
        d["class_names"] = list(d["class_names"])
        return cls(**d)


def channel_stats(images):
    """Exact per-channel mean and std of uint8 images, via 256-bin histograms.

    Args:
        images: uint8 array (N, H, W, C).

    Returns:
        (mean, std): tuples of C floats in the 0..255 scale, rounded to 4 decimals
        (zeros for an empty array).

    Example:
    >>> channel_stats(np.array([0, 255], np.uint8).reshape(2, 1, 1, 1))
    ((127.5,), (127.5,))
    """
    if images.shape[0] == 0:
        return (0.0, 0.0, 0.0), (0.0, 0.0, 0.0)
    levels = np.arange(256, dtype=np.float64)
    means, stds = [], []
    for c in range(images.shape[-1]):
        hist = np.bincount(images[..., c].reshape(-1), minlength=256).astype(np.float64)
        total = hist.sum()
        mean = (hist * levels).sum() / total
        var = (hist * (levels - mean) ** 2).sum() / total
        means.append(round(float(mean), 4))
        stds.append(round(float(np.sqrt(var)), 4))
    return tuple(means), tuple(stds)


@dataclasses.dataclass
class ArrayDataset:
    """Images and labels held in memory, with their `DatasetInfo`.

    Attributes:
        images: uint8 array (N, H, W, 3), 0..255.
        labels: int64 array (N,).
        info: `DatasetInfo`.
    """

    images: np.ndarray
    labels: np.ndarray
    info: DatasetInfo

    def __post_init__(self):
        self.images = np.asarray(self.images)
        self.labels = np.asarray(self.labels).astype(np.int64, copy=False)
        if self.images.dtype != np.uint8 or self.images.ndim != 4 or (
                self.images.shape[-1] != 3):
            raise ImageShapeError(
                f"ArrayDataset.images must be uint8 (N, H, W, 3), got "
                f"{self.images.dtype} {self.images.shape}.")
        if self.labels.shape != (self.images.shape[0],):
            raise LabelError(
                f"ArrayDataset.labels must have shape ({self.images.shape[0]},), got "
                f"{self.labels.shape}.")

    def __len__(self):
        return int(self.images.shape[0])

    def to_dataset(self):
        """Return a `tf.data.Dataset` of (uint8 image (H, W, 3), int64 label).

        Returns:
            tf.data.Dataset, unbatched, in array order.

        Example:
        >>> from ssl_zoo.data import load_arrays
        >>> ds = load_arrays("digits", "test").to_dataset()
        >>> [x.shape for x in next(iter(ds))]
        [TensorShape([16, 16, 3]), TensorShape([])]
        """
        return tf.data.Dataset.from_tensor_slices((self.images, self.labels))

    def subset(self, indices):
        """Return a new `ArrayDataset` with the examples at `indices` (copied).

        Args:
            indices: int array or list (or a boolean mask of length N).

        Returns:
            `ArrayDataset` whose info has the new `num_examples`, mean and std.

        Example:
        >>> from ssl_zoo.data import load_arrays
        >>> d = load_arrays("digits", "test")
        >>> len(d.subset([0, 1, 2]))
        3
        """
        indices = np.asarray(indices)
        if indices.size == 0:   # np.asarray([]) is float64, which cannot index
            indices = indices.astype(np.int64)
        images, labels = self.images[indices], self.labels[indices]
        mean, std = channel_stats(images)
        info = dataclasses.replace(self.info, num_examples=int(images.shape[0]),
                                   mean=mean, std=std,
                                   class_names=list(self.info.class_names))
        return ArrayDataset(images, labels, info)

    def random_subset(self, n, seed=0):
        """Return `n` examples drawn at random without replacement (or all of them).

        Args:
            n: how many; None, 0 or >= N keeps the whole data set (returned as is).
            seed: integer seed (same seed, same subset).

        Returns:
            `ArrayDataset`, examples in their original order.

        Example:
        >>> from ssl_zoo.data import load_arrays
        >>> d = load_arrays("digits", "test")
        >>> len(d.random_subset(10, seed=1)), d.random_subset(None) is d
        (10, True)
        """
        if not n or n >= len(self.labels):
            return self
        idx = np.random.default_rng(seed).permutation(len(self.labels))[:n]
        return self.subset(np.sort(idx))

    def take_per_class(self, n, seed=0):
        """Return a subset with exactly `n` random examples of every class.

        Args:
            n: examples per class (int) or a list of per-class counts.
            seed: integer seed (same seed, same subset).

        Returns:
            `ArrayDataset`, examples in their original order.

        Example:
        >>> from ssl_zoo.data import load_arrays
        >>> d = load_arrays("digits", "train").take_per_class(5, seed=0)
        >>> np.bincount(d.labels).tolist()
        [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
        """
        from ssl_zoo.data.splits import labeled_unlabeled_split

        k = self.info.num_classes
        counts = [int(n)] * k if np.ndim(n) == 0 else list(n)
        idx, _ = labeled_unlabeled_split(self.labels, counts, [0] * k, seed=seed)
        return self.subset(idx)


def make_array_dataset(images, labels, *, name, split, class_names, source):
    """Wrap uint8 images and labels in an `ArrayDataset` whose info is computed from them.

    Args:
        images: uint8 array (N, H, W, 3).
        labels: int array (N,).
        name: data set name.
        split: split name actually read.
        class_names: list of class names (label i is `class_names[i]`).
        source: where the data came from.

    Returns:
        `ArrayDataset` with shape, size and per-channel mean/std filled in.

    Example:
    >>> d = make_array_dataset(np.zeros((2, 4, 4, 3), np.uint8), [0, 1], name="toy",
    ...                        split="train", class_names=["a", "b"], source="numpy")
    >>> d.info.num_classes, d.info.image_shape
    (2, (4, 4, 3))
    """
    mean, std = channel_stats(images)
    info = DatasetInfo(name=name, split=split, class_names=list(class_names),
                       num_classes=len(class_names), image_shape=tuple(images.shape[1:]),
                       num_examples=int(images.shape[0]), mean=mean, std=std,
                       source=source)
    return ArrayDataset(images, labels, info)


def resolve_split(split, available):
    """Pick the split to read among `available`, following `SPLIT_ALIASES`.

    Args:
        split: requested split name ("test" also accepts "val", ...).
        available: split names the source has.

    Returns:
        (chosen split name or None, the candidate names tried in order).

    Example:
    >>> resolve_split("test", ["train", "val"])
    ('val', ('test', 'val', 'validation', 'valid'))
    """
    candidates = SPLIT_ALIASES.get(split, (split,))
    return next((s for s in candidates if s in available), None), candidates
