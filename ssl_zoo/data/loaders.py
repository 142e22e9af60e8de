"""Loaders: turn a data source into uint8 image arrays with labels and metadata.

Sources: the embedded offline `"digits"` set, prepared tensorflow-datasets names,
image folders, zip archives read in place, and numpy arrays / `.npz` files. Decoded
folders and archives are cached as `.npy` files keyed by a content hash.
"""

import collections
import dataclasses
import hashlib
import json
import os
import zipfile

import numpy as np
import tensorflow as tf

from ssl_zoo.utils.io import atomic_save_npy, atomic_write_json, sha256_file

AUTOTUNE = tf.data.AUTOTUNE

EMBEDDED_NAME = "digits"
#: Default side of the embedded digits images (native 8x8, upsampled bilinearly so
#: that rotations, crops and strided convolutions have room).
DIGITS_IMAGE_SIZE = 16
#: Fraction of each digits class held out as the "test" split (fixed seed below).
DIGITS_TEST_FRACTION = 0.2
DIGITS_SPLIT_SEED = 20240531

#: tensorflow-datasets names this loader knows; each is used only when already
#: prepared under `data_dir` (ssl_zoo never downloads). Any other registered tfds
#: name can be given as "tfds:<name>".
TFDS_NAMES = (
    "cifar10", "cifar100", "stl10", "svhn_cropped", "mnist", "fashion_mnist",
    "kmnist", "emnist", "imagenette", "imagenet2012", "imagenet_resized/32x32",
    "imagenet_resized/64x64", "tf_flowers", "oxford_flowers102", "oxford_iiit_pet",
    "food101", "caltech101", "eurosat/rgb",
)

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
#: Requested split -> folder names tried in order ("test" falls back to "val" ...).
SPLIT_ALIASES = {
    "train": ("train", "training"),
    "test": ("test", "val", "validation", "valid"),
    "val": ("val", "validation", "valid", "test"),
    "validation": ("validation", "val", "valid", "test"),
    "valid": ("valid", "val", "validation", "test"),
}
_SPLIT_DIR_NAMES = frozenset(
    {"train", "training", "test", "val", "validation", "valid", "unlabeled",
     "unlabelled", "extra", "all"})
_CACHE_VERSION = 1
_RESIZE_METHOD = "bilinear-antialias"
_DECODE_BATCH = 1024


# --------------------------------------------------------------------------- errors
class DataError(ValueError):
    """Base class of the data errors raised by `ssl_zoo.data` (a `ValueError`)."""


class UnknownDatasetError(DataError):
    """A source string that is neither a known data set name nor an existing path."""


class DatasetNotFoundError(DataError):
    """A known tensorflow-datasets name that is not prepared locally."""


class MissingPathError(DataError):
    """A source path (folder, archive, .npz) that does not exist."""


class EmptyDatasetError(DataError):
    """A folder or archive without any image file."""


class EmptyClassError(DataError):
    """A class folder that holds no image file."""


class LayoutError(DataError):
    """A folder or archive whose images are not laid out as <class>/ or <split>/<class>/."""


class SplitNotFoundError(DataError):
    """The requested split does not exist in the source."""


class CorruptImageError(DataError):
    """One or more image files could not be read or decoded; `.paths` lists them."""

    def __init__(self, message, paths=()):
        super().__init__(message)
        self.paths = list(paths)


class LabelError(DataError):
    """Labels of numpy input with the wrong length, type or range."""


class ImageShapeError(DataError):
    """Images of numpy input with the wrong rank, channels, dtype or value range."""


# ------------------------------------------------------------------------ containers
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


def _channel_stats(images):
    """Exact per-channel mean/std of uint8 images via 256-bin histograms."""
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
        >>> d = load_arrays("digits", "test")
        >>> len(d.subset([0, 1, 2]))
        3
        """
        indices = np.asarray(indices)
        images, labels = self.images[indices], self.labels[indices]
        mean, std = _channel_stats(images)
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
        >>> d = load_arrays("digits", "train").take_per_class(5, seed=0)
        >>> np.bincount(d.labels).tolist()
        [5, 5, 5, 5, 5, 5, 5, 5, 5, 5]
        """
        from ssl_zoo.data.splits import labeled_unlabeled_split

        k = self.info.num_classes
        counts = [int(n)] * k if np.ndim(n) == 0 else list(n)
        idx, _ = labeled_unlabeled_split(self.labels, counts, [0] * k, seed=seed)
        return self.subset(idx)


# -------------------------------------------------------------------------- helpers
def list_datasets():
    """Names `load_arrays` accepts besides paths and arrays.

    Returns:
        List: the embedded "digits" first, then `TFDS_NAMES` (usable when prepared).

    Example:
    >>> list_datasets()[:3]
    ['digits', 'cifar10', 'cifar100']
    """
    return [EMBEDDED_NAME, *TFDS_NAMES]


def default_cache_dir():
    """`$SSL_ZOO_CACHE`, else `~/.cache/ssl_zoo`."""
    return os.environ.get("SSL_ZOO_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "ssl_zoo")


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


def _resize_uint8(images, size, chunk=2048):
    """Resize uint8 (N, h, w, 3) to `size` with antialiased bilinear, rounding back."""
    if size is None or tuple(images.shape[1:3]) == tuple(size):
        return images
    out = np.empty((images.shape[0], size[0], size[1], images.shape[-1]), np.uint8)
    for start in range(0, images.shape[0], chunk):
        x = tf.image.resize(tf.cast(images[start:start + chunk], tf.float32), size,
                            method="bilinear", antialias=True)
        out[start:start + chunk] = tf.cast(
            tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8).numpy()
    return out


def _make(images, labels, *, name, split, class_names, source):
    mean, std = _channel_stats(images)
    info = DatasetInfo(name=name, split=split, class_names=list(class_names),
                       num_classes=len(class_names), image_shape=tuple(images.shape[1:]),
                       num_examples=int(images.shape[0]), mean=mean, std=std,
                       source=source)
    return ArrayDataset(images, labels, info)


# ---------------------------------------------------------------------------- digits
def _stratified_holdout(labels, fraction, seed):
    rng = np.random.default_rng(seed)
    test = []
    for k in np.unique(labels):
        pool = rng.permutation(np.flatnonzero(labels == k))
        test.append(pool[:int(round(fraction * pool.size))])
    test = np.sort(np.concatenate(test))
    train = np.setdiff1d(np.arange(labels.size), test)
    return train, test


def _load_digits(split, image_size):
    from sklearn.datasets import load_digits

    digits = load_digits()
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
    images = _resize_uint8(images[idx], image_size or (DIGITS_IMAGE_SIZE,) * 2)
    return _make(images, labels[idx], name=EMBEDDED_NAME, split=key,
                 class_names=[str(i) for i in range(10)], source="sklearn:load_digits")


# ----------------------------------------------------------------------------- numpy
def _from_arrays(images, labels, *, num_classes=None, name="arrays", split="train",
                 image_size=None, class_names=None, source="numpy"):
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        hint = (" For (N, H, W) grayscale arrays add a channel axis: images[..., None]."
                if images.ndim == 3 else "")
        raise ImageShapeError(
            f"{source}: images must have shape (N, H, W, 3) or (N, H, W, 1), got "
            f"{images.shape}.{hint}")
    if images.dtype != np.uint8:
        if images.dtype == bool or not (np.issubdtype(images.dtype, np.integer)
                                        or np.issubdtype(images.dtype, np.floating)):
            raise ImageShapeError(f"{source}: unsupported image dtype {images.dtype}.")
        lo, hi = (float(images.min()), float(images.max())) if images.size else (0, 0)
        if not (np.isfinite(lo) and np.isfinite(hi)) or lo < 0 or hi > 255:
            raise ImageShapeError(
                f"{source}: image values must lie in 0..255 (or 0..1 for floats), got "
                f"[{lo}, {hi}].")
        if np.issubdtype(images.dtype, np.floating) and hi <= 1.0:
            images = images * 255.0  # floats in 0..1 are read as a 0..1 scale
        images = np.round(images).astype(np.uint8)
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)
    labels = np.asarray(labels)
    if labels.ndim == 2 and labels.shape[1] == 1:
        labels = labels[:, 0]
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise LabelError(
            f"{source}: labels must have shape ({images.shape[0]},) to match the "
            f"images, got {labels.shape}.")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or np.any(
                labels != np.round(labels)):
            raise LabelError(
                f"{source}: labels must be integers, got dtype {labels.dtype}.")
    labels = labels.astype(np.int64)
    if class_names is not None:
        class_names = [str(c) for c in class_names]
        if num_classes is None:
            num_classes = len(class_names)
    if num_classes is None:
        num_classes = int(labels.max()) + 1 if labels.size else 0
    num_classes = int(num_classes)
    bad = np.flatnonzero((labels < 0) | (labels >= num_classes))
    if bad.size:
        raise LabelError(
            f"{source}: label {labels[bad[0]]} at index {bad[0]} is out of range "
            f"[0, {num_classes}) ({bad.size} labels out of range).")
    if class_names is None or len(class_names) != num_classes:
        class_names = [str(i) for i in range(num_classes)]
    images = _resize_uint8(np.ascontiguousarray(images), image_size)
    return _make(images, labels, name=name, split=split, class_names=class_names,
                 source=source)


def _load_npz(path, split, image_size, num_classes):
    with np.load(path, allow_pickle=False) as f:
        keys = set(f.files)
        for xk, yk in (("x", "y"), ("images", "labels")):
            if xk in keys and yk in keys:
                names = f["class_names"].tolist() if "class_names" in keys else None
                name = os.path.splitext(os.path.basename(path))[0]
                return _from_arrays(f[xk], f[yk], num_classes=num_classes, name=name,
                                    split=split, image_size=image_size,
                                    class_names=names, source=os.path.abspath(path))
    raise DataError(
        f"{path}: an .npz source needs keys 'x'/'y' or 'images'/'labels'; found "
        f"{sorted(keys)}.")


# --------------------------------------------------------------------------- folders
def _is_image(name):
    return name.lower().endswith(IMAGE_EXTENSIONS)


def _hidden(parts):
    return any(p.startswith(".") or p == "__MACOSX" for p in parts)


def _scan_folder(root):
    """All visible files and folders under `root`, as '/'-joined relative paths."""
    files, dirs = [], []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if not _hidden([d]))
        rel = os.path.relpath(dirpath, root)
        rel = "" if rel == "." else rel.replace(os.sep, "/") + "/"
        if rel:
            dirs.append(rel.rstrip("/"))
        files.extend(rel + f for f in sorted(filenames) if not _hidden([f]))
    return files, dirs


def _scan_zip(zf):
    files, dirs = [], set()
    for info in zf.infolist():
        parts = info.filename.rstrip("/").split("/")
        if _hidden(parts) or not info.filename.strip("/"):
            continue
        for i in range(1, len(parts)):
            dirs.add("/".join(parts[:i]))
        if info.is_dir():
            dirs.add("/".join(parts))
        else:
            files.append(info.filename)
    return sorted(files), sorted(dirs)


def _resolve_layout(files, dirs, split, where):
    """Pick the split and classes of a folder/archive listing.

    Returns (top_name, split_name, class_names, [(relative_path, label)]).
    """
    images = [f.split("/") for f in files if _is_image(f)]
    if not images:
        raise EmptyDatasetError(
            f"{where}: no image files ({', '.join(IMAGE_EXTENSIONS)}) found. Expected "
            f"<class>/<image> or <split>/<class>/<image>.")
    # Strip shared wrapper folders (e.g. "cifar10/" in cifar10-jpeg.zip).
    prefix = []
    while True:
        depth = min(len(p) for p in images) - len(prefix)
        firsts = {p[len(prefix)] for p in images}
        if depth < 3 or len(firsts) != 1:
            break
        first = firsts.pop()
        if first.lower() in _SPLIT_DIR_NAMES:
            break
        prefix.append(first)
    depths = collections.Counter(len(p) - len(prefix) for p in images)
    if set(depths) not in ({2}, {3}):
        examples = {d: next("/".join(p) for p in images if len(p) - len(prefix) == d)
                    for d in depths}
        raise LayoutError(
            f"{where}: images must all sit at <class>/<image> or all at "
            f"<split>/<class>/<image>; found depths {dict(depths)}, e.g. "
            + "; ".join(examples.values()))
    n = len(prefix)
    top = prefix[-1] if prefix else None
    if 3 in depths:
        available = sorted({p[n] for p in images})
        candidates = SPLIT_ALIASES.get(split, (split,))
        chosen = next((s for s in candidates if s in available), None)
        if chosen is None:
            raise SplitNotFoundError(
                f"{where}: no split {split!r} (tried {', '.join(candidates)}); available "
                f"splits: {', '.join(available)}.")
        base = prefix + [chosen]
    else:
        own = prefix[-1] if prefix else os.path.basename(where.rstrip("/\\"))
        if split not in (None, "train", "all", own):
            raise SplitNotFoundError(
                f"{where}: this folder has a single split (<class>/<image> layout), so "
                f"split={split!r} does not exist; use split='train' or 'all', or lay the "
                f"images out as <split>/<class>/<image>. "
                f"(ssl_zoo.data.labeled_unlabeled_split can carve out a hold-out set.)")
        chosen = "all"
        base = prefix
    b = len(base)
    class_dirs = {d.split("/")[b] for d in dirs
                  if d.split("/")[:b] == base and len(d.split("/")) > b}
    class_dirs |= {f.split("/")[b] for f in files
                   if f.split("/")[:b] == base and len(f.split("/")) > b + 1}
    class_names = sorted(class_dirs)
    entries = [("/".join(p), p[b]) for p in images if p[:b] == base]
    counts = collections.Counter(c for _, c in entries)
    empty = [c for c in class_names if counts[c] == 0]
    if empty:
        shown = ", ".join(where.rstrip("/") + "/" + "/".join(base + [c]) for c in empty[:5])
        raise EmptyClassError(
            f"{where}: {len(empty)} class folder(s) hold no image file "
            f"({', '.join(IMAGE_EXTENSIONS)}): {shown}. Remove them or add images.")
    index = {c: i for i, c in enumerate(class_names)}
    entries = [(path, index[c]) for path, c in sorted(entries)]
    return top, chosen, class_names, entries


def _decode_dataset(blobs, is_path):
    """tf.data pipeline: (index, shape, flat pixels) per decodable image."""
    ds = tf.data.Dataset.from_tensor_slices(blobs)
    ds = tf.data.Dataset.zip(tf.data.Dataset.range(len(blobs)), ds)

    def decode(i, blob):
        data = tf.io.read_file(blob) if is_path else blob
        image = tf.io.decode_image(data, channels=3, expand_animations=False)
        return i, tf.shape(image)[:2], tf.reshape(image, [-1])

    ds = ds.map(decode, num_parallel_calls=AUTOTUNE, deterministic=True)
    return ds.ignore_errors(log_warning=False)


def _collect_decoded(ds, n, image_size, batch=_DECODE_BATCH, labels=None):
    """Gather (index, shape, flat[, label]) elements into one uint8 array.

    Images of another size than the target (`image_size`, else the most common
    size) are resized. When the elements carry labels they are written into `labels`
    (an int64 array of length n) at their index.

    Returns (images or None, missing_indices).
    """
    groups = collections.defaultdict(list)  # (h, w) -> [(indices, array (k,h,w,3))]
    counts = collections.Counter()
    for element in ds.ragged_batch(batch).prefetch(2):
        idx, shapes, flat = element[0].numpy(), element[1].numpy(), element[2]
        if labels is not None:
            labels[idx] = element[3].numpy()
        if isinstance(flat, tf.RaggedTensor):
            values, splits = flat.flat_values.numpy(), flat.row_splits.numpy()
        else:
            values = flat.numpy().reshape(-1)
            splits = np.arange(idx.size + 1) * (values.size // max(idx.size, 1))
        if idx.size and (shapes == shapes[0]).all():
            h, w = shapes[0]
            groups[(h, w)].append((idx, values.reshape(idx.size, h, w, 3)))
            counts[(h, w)] += idx.size
            continue
        for j in range(idx.size):
            h, w = shapes[j]
            groups[(h, w)].append(
                (idx[j:j + 1], values[splits[j]:splits[j + 1]].reshape(1, h, w, 3)))
            counts[(h, w)] += 1
    seen = np.zeros(n, bool)
    for parts in groups.values():
        for idx, _ in parts:
            seen[idx] = True
    missing = np.flatnonzero(~seen)
    if missing.size or not counts:
        return None, missing
    target = image_size or counts.most_common(1)[0][0]
    if len(groups) == 1 and tuple(target) == next(iter(groups)):
        arrays = [a for _, a in next(iter(groups.values()))]
        return np.concatenate(arrays) if len(arrays) > 1 else arrays[0], missing
    out = np.empty((n, target[0], target[1], 3), np.uint8)
    for parts in groups.values():
        idx = np.concatenate([i for i, _ in parts])
        out[idx] = _resize_uint8(np.concatenate([a for _, a in parts]), target)
    return out, missing


def _decode_error(blob_or_path, is_path):
    try:
        data = tf.io.read_file(blob_or_path) if is_path else blob_or_path
        tf.io.decode_image(data, channels=3, expand_animations=False)
    except Exception as e:  # noqa: BLE001 - only used to word the message
        return str(getattr(e, "message", e)).strip().splitlines()[0]
    return "unreadable"


def _raise_corrupt(names, first_reason, where):
    shown = ", ".join(names[:5]) + (f" and {len(names) - 5} more" if len(names) > 5 else "")
    raise CorruptImageError(
        f"{where}: {len(names)} image file(s) could not be read or decoded: {shown}. "
        f"First error: {first_reason}. Remove or replace the file(s).", names)


def _hash_folder(root, rel_paths):
    h = hashlib.sha256()
    for rel in rel_paths:
        st = os.stat(os.path.join(root, rel))
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def _memo_sha256(path, cache_dir):
    """sha256 of a file, memoised in `cache_dir` by (path, size, mtime)."""
    st = os.stat(path)
    key = f"{os.path.abspath(path)}|{st.st_size}|{st.st_mtime_ns}"
    index_path = os.path.join(cache_dir, "sha256_index.json") if cache_dir else None
    index = {}
    if index_path and os.path.exists(index_path):
        try:
            with open(index_path) as f:
                index = json.load(f)
        except (OSError, ValueError):
            index = {}
    if key in index:
        return index[key]
    digest = sha256_file(path)
    if index_path:
        index[key] = digest
        atomic_write_json(index_path, index)
    return digest


def _cache_paths(cache_dir, name, split, size, digest):
    size_tag = "native" if size is None else f"{size[0]}x{size[1]}"
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
    base = os.path.join(cache_dir, f"{safe}-{split}-{size_tag}-{digest[:16]}")
    return base + ".images.npy", base + ".labels.npy", base + ".json"


def _cache_key(digest, split, size):
    return hashlib.sha256(
        f"{digest}|{split}|{size}|{_CACHE_VERSION}|{_RESIZE_METHOD}".encode()).hexdigest()


def _read_cache(paths, key):
    img_path, lab_path, meta_path = paths
    if not os.path.exists(meta_path):
        return None
    try:
        with open(meta_path) as f:
            meta = json.load(f)
        if meta.get("key") != key:
            return None
        images = np.load(img_path, allow_pickle=False)
        labels = np.load(lab_path, allow_pickle=False)
        info = DatasetInfo.from_dict(meta["info"])
        if images.shape[0] != info.num_examples or labels.shape != (info.num_examples,):
            return None
        return ArrayDataset(images, labels, info)
    except (OSError, ValueError, KeyError, TypeError):
        return None  # a damaged cache entry is rebuilt


def _write_cache(paths, key, data):
    img_path, lab_path, meta_path = paths
    atomic_save_npy(img_path, data.images)
    atomic_save_npy(lab_path, data.labels)
    # The metadata goes last: its presence marks a complete entry.
    atomic_write_json(meta_path, {"key": key, "version": _CACHE_VERSION,
                                  "info": data.info.to_dict()})


def _load_files(path, split, image_size, cache_dir):
    """Folder or zip archive -> ArrayDataset (with the .npy cache)."""
    is_zip = os.path.isfile(path)
    where = os.path.abspath(path)
    key = paths = None
    if cache_dir and is_zip:
        # An archive is keyed by its bytes, so the cache is checked before listing it.
        key = _cache_key(_memo_sha256(path, cache_dir), split, image_size)
        paths = _cache_paths(cache_dir, os.path.splitext(os.path.basename(where))[0],
                             split, image_size, key)
        cached = _read_cache(paths, key)
        if cached is not None:
            return cached
    zf = zipfile.ZipFile(path) if is_zip else None
    try:
        files, dirs = _scan_zip(zf) if is_zip else _scan_folder(path)
        top, chosen, class_names, entries = _resolve_layout(files, dirs, split, where)
        name = top or os.path.splitext(os.path.basename(where.rstrip("/\\")))[0]
        rel_paths = [p for p, _ in entries]
        labels = np.array([y for _, y in entries], np.int64)
        if cache_dir and not is_zip:
            key = _cache_key(_hash_folder(path, rel_paths), split, image_size)
            paths = _cache_paths(cache_dir, name, split, image_size, key)
            cached = _read_cache(paths, key)
            if cached is not None:
                return cached
        if is_zip:
            blobs = []
            for rel in rel_paths:
                try:
                    blobs.append(zf.read(rel))
                except (zipfile.BadZipFile, OSError, NotImplementedError, EOFError):
                    blobs.append(b"")  # reported below with the undecodable ones
            sources = np.array(blobs, dtype=object)
        else:
            sources = np.array([os.path.join(path, *p.split("/")) for p in rel_paths])
        images, missing = _collect_decoded(_decode_dataset(sources, not is_zip),
                                           len(rel_paths), image_size)
        if missing.size:
            shown = [(f"{where}:{rel_paths[i]}" if is_zip else str(sources[i]))
                     for i in missing]
            _raise_corrupt(shown, _decode_error(sources[missing[0]], not is_zip), where)
    finally:
        if zf is not None:
            zf.close()
    data = _make(images, labels, name=name, split=chosen, class_names=class_names,
                 source=where)
    if cache_dir:
        _write_cache(paths, key, data)
    return data


# ------------------------------------------------------------------------------ tfds
def _not_prepared_message(name, data_dir, extra=""):
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return (
        f"tensorflow-datasets {name!r} is not prepared under {where}{extra}, and ssl_zoo "
        f"never downloads. Either prepare it where a network is available "
        f"(`tfds build {name} --data_dir DIR`) and pass data_dir=DIR, or point source at "
        f"local images instead: an image folder laid out <split>/<class>/<image> (or "
        f"<class>/<image>), a .zip archive with that layout (read in place), or an .npz "
        f"with x/y arrays, e.g. load_arrays('/path/to/cifar10-jpeg.zip', 'test').")


def _load_tfds(name, split, data_dir, image_size):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DatasetNotFoundError(_not_prepared_message(
            name, data_dir, " (tensorflow-datasets is not installed)")) from e
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - tfds raises several types here
        if "not found" in str(e).lower() or type(e).__name__ == "DatasetNotFoundError":
            raise UnknownDatasetError(
                f"tensorflow-datasets has no data set {name!r}. Known names: "
                f"{', '.join(list_datasets())}.") from e
        raise DatasetNotFoundError(_not_prepared_message(name, data_dir)) from e
    prepared = getattr(builder, "is_prepared", None)
    ok = prepared() if callable(prepared) else tf.io.gfile.exists(
        os.path.join(builder.data_dir, "dataset_info.json"))
    if not ok:
        raise DatasetNotFoundError(_not_prepared_message(name, data_dir))
    available = list(builder.info.splits.keys())
    candidates = SPLIT_ALIASES.get(split, (split,))
    chosen = next((s for s in candidates if s in available), None)
    if chosen is None:
        raise SplitNotFoundError(
            f"tfds {name!r} has no split {split!r}; available: {', '.join(available)}.")
    feature = builder.info.features["label"]
    class_names = list(getattr(feature, "names", None) or
                       [str(i) for i in range(feature.num_classes)])
    n = builder.info.splits[chosen].num_examples
    ds = builder.as_dataset(split=chosen, as_supervised=True, shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False))

    def prepare(i, xy):
        image, label = xy
        image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.image.grayscale_to_rgb(image),
                        lambda: image[..., :3])
        return i, tf.shape(image)[:2], tf.reshape(image, [-1]), tf.cast(label, tf.int64)

    labels = np.zeros(n, np.int64)
    images, missing = _collect_decoded(
        ds.enumerate().map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True),
        n, image_size, labels=labels)
    if missing.size:
        raise CorruptImageError(f"tfds {name!r}/{chosen}: {missing.size} examples could "
                                f"not be read.", [str(i) for i in missing])
    return _make(images, labels, name=name, split=chosen, class_names=class_names,
                 source=f"tfds:{name}")


# ------------------------------------------------------------------------ public API
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
        CorruptImageError, LabelError, ImageShapeError (all `ValueError`s).

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
        return _make(_resize_uint8(source.images, size), source.labels,
                     name=source.info.name, split=source.info.split,
                     class_names=source.info.class_names, source=source.info.source)
    if isinstance(source, (tuple, list)):
        if len(source) != 2:
            raise DataError(
                f"A sequence source must be (images, labels); got {len(source)} items.")
        return _from_arrays(source[0], source[1], num_classes=num_classes, split=split,
                            image_size=size)
    if not isinstance(source, (str, os.PathLike)):
        raise DataError(
            f"Unsupported source type {type(source).__name__}; give a data set name, a "
            f"path, or an (images, labels) tuple.")
    source = os.fspath(source)
    if source == EMBEDDED_NAME:
        return _load_digits(split, size)
    if source.startswith("tfds:"):
        return _load_tfds(source[5:], split, data_dir, size)
    if source in TFDS_NAMES:
        return _load_tfds(source, split, data_dir, size)
    path = os.path.expanduser(source)
    if not os.path.exists(path) and data_dir and not os.path.isabs(path):
        alt = os.path.join(os.fspath(data_dir), path)
        path = alt if os.path.exists(alt) else path
    if os.path.isdir(path):
        return _load_files(path, split, size, cache_dir)
    if os.path.isfile(path):
        if path.lower().endswith(".npz"):
            return _load_npz(path, split, size, num_classes)
        if zipfile.is_zipfile(path):
            return _load_files(path, split, size, cache_dir)
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
