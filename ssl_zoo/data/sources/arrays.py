"""Source "arrays": images and labels given as numpy arrays or read from an .npz file.

Checks shapes, dtypes, value ranges and labels, naming what is wrong and how to fix it.
"""

import os
import zipfile

import numpy as np

from ssl_zoo.data.dataset import make_array_dataset
from ssl_zoo.data.errors import (
    CorruptArchiveError,
    DataError,
    ImageShapeError,
    LabelError,
)
from ssl_zoo.data.sources.images import resize_uint8

__all__ = ["from_arrays", "load_npz"]


def from_arrays(images, labels, *, num_classes=None, name="arrays", split="train",
                image_size=None, class_names=None, source="numpy"):
    """Check and convert numpy images and labels into an `ArrayDataset`.

    Args:
        images: (N, H, W, 3) or (N, H, W, 1); uint8 0..255, integers 0..255, or
            floats 0..255 (floats whose maximum is <= 1 are read as 0..1).
        labels: integer (or integral float) labels (N,) or (N, 1).
        num_classes: labels must be below it; default `len(class_names)`, else
            max(label) + 1.
        name: data set name for the info.
        split: split name for the info.
        image_size: (H, W) to resize to, or None.
        class_names: optional class names.
        source: where the arrays came from (also starts every error message).

    Returns:
        `ArrayDataset` (grey images repeated over 3 channels).

    Raises:
        ImageShapeError, LabelError.

    Example:
    >>> d = from_arrays(np.ones((4, 8, 8, 1)), [0, 1, 1, 2])
    >>> d.images.shape, int(d.images.max()), d.info.num_classes
    ((4, 8, 8, 3), 255, 3)
    """
    images = np.asarray(images)
    if images.dtype == bool or not (np.issubdtype(images.dtype, np.integer)
                                    or np.issubdtype(images.dtype, np.floating)):
        hint = (" Decode image files first, or pass their folder or .zip archive to "
                "ssl_zoo.data.load_arrays." if images.dtype.kind in "USO" else "")
        raise ImageShapeError(
            f"{source}: images must be numbers (uint8 0..255, or integers/floats in "
            f"0..255 or 0..1), got dtype {images.dtype}.{hint}")
    if images.ndim != 4 or images.shape[-1] not in (1, 3):
        hint = (" For (N, H, W) grayscale arrays add a channel axis: images[..., None]."
                if images.ndim == 3 else "")
        raise ImageShapeError(
            f"{source}: images must have shape (N, H, W, 3) or (N, H, W, 1), got "
            f"{images.shape}.{hint}")
    if images.dtype != np.uint8:
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
    images = resize_uint8(np.ascontiguousarray(images), image_size)
    return make_array_dataset(images, labels, name=name, split=split,
                              class_names=class_names, source=source)


def load_npz(path, split, image_size, num_classes):
    """Read an .npz file with arrays x/y (or images/labels, optional class_names).

    Args:
        path: the .npz file.
        split: split name for the info (the file holds one split).
        image_size: (H, W) to resize to, or None.
        num_classes: as for `from_arrays`.

    Returns:
        `ArrayDataset` named after the file.

    Raises:
        DataError: when the keys are missing; CorruptArchiveError: a truncated or
        non-zip file; ImageShapeError, LabelError.

    Example:
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "toy.npz")
    >>> np.savez(p, x=np.zeros((3, 4, 4, 3), np.uint8), y=[0, 1, 0])
    >>> load_npz(p, "train", None, None).info.name
    'toy'
    """
    def corrupt(reason):
        return CorruptArchiveError(
            f"{os.path.abspath(path)} is truncated or not an .npz (zip) archive "
            f"({reason}); re-create it with numpy.savez(path, x=images, y=labels).")

    if not zipfile.is_zipfile(path):
        raise corrupt("no zip central directory")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, EOFError) as e:
        raise corrupt(e) from None
    with archive as f:
        keys = set(f.files)
        for xk, yk in (("x", "y"), ("images", "labels")):
            if xk in keys and yk in keys:
                names = f["class_names"].tolist() if "class_names" in keys else None
                name = os.path.splitext(os.path.basename(path))[0]
                return from_arrays(f[xk], f[yk], num_classes=num_classes, name=name,
                                   split=split, image_size=image_size,
                                   class_names=names, source=os.path.abspath(path))
    raise DataError(
        f"{path}: an .npz source needs keys 'x'/'y' or 'images'/'labels'; found "
        f"{sorted(keys)}.")
