"""The decoded-array cache: folders and archives decoded once, kept as `.npy` files.

Entries are keyed by a content hash and written atomically (via `ssl_zoo.utils.io`).
"""

import dataclasses
import hashlib
import json
import os

import numpy as np

from ssl_zoo.data.dataset import ArrayDataset, DatasetInfo
from ssl_zoo.utils.io import atomic_save_npy, atomic_write_json, default_cache_dir, sha256_file

__all__ = ["CacheEntry", "default_cache_dir", "file_digest", "folder_digest"]

_CACHE_VERSION = 1
_RESIZE_METHOD = "bilinear-antialias"


def folder_digest(root, rel_paths):
    """Hex sha256 of a folder listing: each file's relative path, size and mtime.

    Args:
        root: the folder.
        rel_paths: '/'-joined paths below `root` (the order counts).

    Returns:
        64-character hex string; it changes when a file is added, removed or rewritten.

    Example:
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> _ = open(os.path.join(root, "a.png"), "wb").write(b"x")
    >>> len(folder_digest(root, ["a.png"]))
    64
    """
    h = hashlib.sha256()
    for rel in rel_paths:
        st = os.stat(os.path.join(root, rel))
        h.update(f"{rel}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


def file_digest(path, cache_dir):
    """Hex sha256 of a file's bytes, memoised in `cache_dir` by (path, size, mtime).

    Args:
        path: the file (e.g. a .zip archive).
        cache_dir: directory of the memo `sha256_index.json`; falsy disables the memo.

    Returns:
        64-character hex string.

    Example:
    >>> import tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "e.zip")
    >>> _ = open(p, "wb").close()
    >>> file_digest(p, os.path.dirname(p))[:12]
    'e3b0c44298fc'
    """
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


@dataclasses.dataclass(frozen=True)
class CacheEntry:
    """One cached split: `<name>-<split>-<size>-<key[:16]>.{images.npy,labels.npy,json}`.

    Attributes:
        key: hex sha256 of (content digest, split, size, cache version, resize method).
        images_path: uint8 images (N, H, W, 3).
        labels_path: int64 labels (N,).
        meta_path: JSON with the key and the `DatasetInfo`; written last, so its
            presence marks a complete entry.
    """

    key: str
    images_path: str
    labels_path: str
    meta_path: str

    @classmethod
    def locate(cls, cache_dir, name, split, size, content_digest):
        """The entry of a split of some content.

        Args:
            cache_dir: the cache directory.
            name: data set name (unsafe characters become "_" in the file names).
            split: requested split.
            size: (H, W) target size, or None for the native size.
            content_digest: hex digest of the source (`file_digest`, `folder_digest`).

        Returns:
            `CacheEntry` (nothing is read or written).

        Example:
        >>> e = CacheEntry.locate("/c", "pets", "train", (8, 8), "0" * 64)
        >>> os.path.basename(e.meta_path)
        'pets-train-8x8-005b5f67deebd702.json'
        """
        key = hashlib.sha256(
            f"{content_digest}|{split}|{size}|{_CACHE_VERSION}|{_RESIZE_METHOD}".encode()
        ).hexdigest()
        size_tag = "native" if size is None else f"{size[0]}x{size[1]}"
        safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in name)
        base = os.path.join(cache_dir, f"{safe}-{split}-{size_tag}-{key[:16]}")
        return cls(key, base + ".images.npy", base + ".labels.npy", base + ".json")

    def read(self):
        """The cached `ArrayDataset`, or None when absent, stale or damaged.

        Returns:
            `ArrayDataset` or None (a damaged entry is simply rebuilt by the caller).

        Example:
        >>> CacheEntry.locate("/nonexistent", "pets", "train", None, "0" * 64).read() is None
        True
        """
        if not os.path.exists(self.meta_path):
            return None
        try:
            with open(self.meta_path) as f:
                meta = json.load(f)
            if meta.get("key") != self.key:
                return None
            images = np.load(self.images_path, allow_pickle=False)
            labels = np.load(self.labels_path, allow_pickle=False)
            info = DatasetInfo.from_dict(meta["info"])
            if images.shape[0] != info.num_examples or labels.shape != (info.num_examples,):
                return None
            return ArrayDataset(images, labels, info)
        except (OSError, ValueError, KeyError, TypeError):
            return None  # a damaged cache entry is rebuilt

    def write(self, data):
        """Store `data` (an `ArrayDataset`) atomically, the metadata last.

        Args:
            data: `ArrayDataset`.

        Returns:
            None.

        Example:
        >>> import tempfile
        >>> from ssl_zoo.data import load_arrays
        >>> e = CacheEntry.locate(tempfile.mkdtemp(), "digits", "test", None, "0" * 64)
        >>> e.write(load_arrays("digits", "test"))
        >>> e.read().images.shape
        (359, 16, 16, 3)
        """
        atomic_save_npy(self.images_path, data.images)
        atomic_save_npy(self.labels_path, data.labels)
        # The metadata goes last: its presence marks a complete entry.
        atomic_write_json(self.meta_path, {"key": self.key, "version": _CACHE_VERSION,
                                           "info": data.info.to_dict()})
