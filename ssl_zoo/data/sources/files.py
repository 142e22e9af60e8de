"""Source "files": image folders and zip archives, read in place (never extracted).

Lays out <class>/ or <split>/<class>/ trees, decodes with tf.io, caches the arrays.
"""

import collections
import os
import zipfile

import numpy as np
import tensorflow as tf

from ssl_zoo.data.cache import CacheEntry, file_digest, folder_digest
from ssl_zoo.data.dataset import make_array_dataset, resolve_split
from ssl_zoo.data.errors import (
    CorruptArchiveError,
    CorruptImageError,
    EmptyClassError,
    EmptyDatasetError,
    LayoutError,
    SplitNotFoundError,
)
from ssl_zoo.data.sources.images import collect_decoded

__all__ = ["IMAGE_EXTENSIONS", "load_files", "looks_like_zip", "open_zip"]

AUTOTUNE = tf.data.AUTOTUNE

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif")
_SPLIT_DIR_NAMES = frozenset(
    {"train", "training", "test", "val", "validation", "valid", "unlabeled",
     "unlabelled", "extra", "all"})


_ZIP_MAGIC = (b"PK\x03\x04", b"PK\x05\x06")  # first entry / empty archive


def looks_like_zip(path):
    """Whether a file is meant to be a zip archive: a .zip name or zip magic bytes
    (even when it is too damaged for `zipfile.is_zipfile`)."""
    if path.lower().endswith(".zip") or zipfile.is_zipfile(path):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(4) in _ZIP_MAGIC
    except OSError:
        return False


def open_zip(path, where=None):
    """`zipfile.ZipFile(path)`, or CorruptArchiveError naming a truncated or non-zip file.

    Example:
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "cut.zip")
    >>> _ = open(p, "wb").write(b"PK\x03\x04 cut short")
    >>> open_zip(p)
    Traceback (most recent call last):
    ...
    ssl_zoo.data.errors.CorruptArchiveError: ...cut.zip is truncated or not a zip archive...
    """
    where = where or os.path.abspath(path)
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError) as e:
        raise _corrupt_archive(where, e) from None


def _corrupt_archive(where, reason):
    return CorruptArchiveError(
        f"{where} is truncated or not a zip archive ({reason}); re-download or "
        f"re-create it (e.g. `zip -r data.zip <folder>`), or give the image folder "
        f"itself.")


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
        chosen, candidates = resolve_split(split, available)
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


def load_files(path, split, image_size, cache_dir):
    """Read an image folder or a zip archive in place into an `ArrayDataset`.

    The layout is <class>/<image> or <split>/<class>/<image>, below any shared wrapper
    folders; hidden files and __MACOSX are skipped. Decoded splits are cached.

    Args:
        path: a folder, or a zip archive (read without extracting).
        split: requested split (aliases as in `SPLIT_ALIASES`); a single-split folder
            accepts "train", "all" or its own name.
        image_size: (H, W), or None for the most common size.
        cache_dir: cache directory (see `ssl_zoo.data.cache`); falsy disables it.

    Returns:
        `ArrayDataset` named after the top folder or the archive.

    Raises:
        EmptyDatasetError, EmptyClassError, LayoutError, SplitNotFoundError,
        CorruptImageError, CorruptArchiveError (a truncated or non-zip archive).

    Example:
    >>> import os, tempfile
    >>> import tensorflow as tf
    >>> root = tempfile.mkdtemp()
    >>> for c in ("cat", "dog"):
    ...     os.makedirs(os.path.join(root, c))
    ...     png = tf.io.encode_png(tf.zeros([4, 4, 3], tf.uint8)).numpy()
    ...     _ = open(os.path.join(root, c, "0.png"), "wb").write(png)
    >>> d = load_files(root, "train", None, False)
    >>> d.info.class_names, d.images.shape
    (['cat', 'dog'], (2, 4, 4, 3))
    """
    is_zip = os.path.isfile(path)
    where = os.path.abspath(path)
    if is_zip and not zipfile.is_zipfile(path):
        # Checked before hashing it for the cache (cheap: reads the end of the file).
        raise _corrupt_archive(where, "no zip central directory at its end")
    entry = None
    if cache_dir and is_zip:
        # An archive is keyed by its bytes, so the cache is checked before listing it.
        entry = CacheEntry.locate(cache_dir, os.path.splitext(os.path.basename(where))[0],
                                  split, image_size, file_digest(path, cache_dir))
        cached = entry.read()
        if cached is not None:
            return cached
    zf = open_zip(path, where) if is_zip else None
    try:
        files, dirs = _scan_zip(zf) if is_zip else _scan_folder(path)
        top, chosen, class_names, entries = _resolve_layout(files, dirs, split, where)
        name = top or os.path.splitext(os.path.basename(where.rstrip("/\\")))[0]
        rel_paths = [p for p, _ in entries]
        labels = np.array([y for _, y in entries], np.int64)
        if cache_dir and not is_zip:
            entry = CacheEntry.locate(cache_dir, name, split, image_size,
                                      folder_digest(path, rel_paths))
            cached = entry.read()
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
        images, missing = collect_decoded(_decode_dataset(sources, not is_zip),
                                          len(rel_paths), image_size)
        if missing.size:
            shown = [(f"{where}:{rel_paths[i]}" if is_zip else str(sources[i]))
                     for i in missing]
            _raise_corrupt(shown, _decode_error(sources[missing[0]], not is_zip), where)
    finally:
        if zf is not None:
            zf.close()
    data = make_array_dataset(images, labels, name=name, split=chosen,
                              class_names=class_names, source=where)
    if entry is not None:
        entry.write(data)
    return data
