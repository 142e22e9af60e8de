"""Files on disk: atomic writes, file hashing, checked model loading and the project's
cache directory.

A reader never sees a half-written file: data goes to a temporary file in the same
directory, is flushed and fsync'ed, then `os.replace`d over the target.
"""

import contextlib
import hashlib
import json
import os
import tempfile
import zipfile

import numpy as np

_UMASK = os.umask(0o022)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_path(path):
    """A temporary path that replaces `path` only if the block succeeds.

    The one mechanism behind every file ssl_zoo writes: the temporary file lives in
    the directory of `path` (so `os.replace` is atomic on POSIX) and keeps its
    suffix (Keras checks `.keras` / `.weights.h5`), is fsync'ed and renamed over
    `path` when the block returns, and removed if the block raises; `path` is then
    left as it was (absent, or its old contents).

    Yields:
        The temporary path (str); the block writes it (e.g. `model.save(tmp)`).

    Example:
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_path(p) as tmp:
    ...     _ = open(tmp, "w").write("hello")
    >>> open(p).read()
    'hello'
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    name = os.path.basename(path)
    suffix = name[name.index("."):] if "." in name.lstrip(".") else ""
    fd, tmp = tempfile.mkstemp(prefix="." + name + ".", suffix=".tmp" + suffix,
                               dir=directory)
    os.close(fd)
    try:
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual mode
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.remove(tmp)
        raise


@contextlib.contextmanager
def atomic_write(path, mode="wb"):
    """Open a temporary file that replaces `path` only if the block succeeds.

    `atomic_path` with the file opened for you.

    Args:
        path: destination file path; its directory is created if missing.
        mode: "wb" (binary, default) or "w" (text, UTF-8).

    Yields:
        The open temporary file object.

    Example:
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "a.txt")
    >>> with atomic_write(p, "w") as f:
    ...     _ = f.write("hello")
    >>> open(p).read()
    'hello'
    """
    if mode not in ("wb", "w"):
        raise ValueError(f"atomic_write mode must be 'wb' or 'w', got {mode!r}.")
    kwargs = {"encoding": "utf-8", "newline": ""} if mode == "w" else {}
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as f:
            yield f
            f.flush()


@contextlib.contextmanager
def atomic_directory(path):
    """A temporary directory that replaces the directory `path` only if the block succeeds.

    The block fills the yielded directory (a sibling of `path`, so the final rename is
    atomic); on success an existing `path` is moved aside, the new one renamed into
    place and the old one deleted. On an exception the temporary directory is removed
    and `path` is left as it was. The result gets the usual 0o755 permissions
    (`mkdtemp` makes owner-only directories).

    Yields:
        The temporary directory path (str).

    Example:
    >>> import os, tempfile
    >>> target = os.path.join(tempfile.mkdtemp(), "export")
    >>> with atomic_directory(target) as tmp:
    ...     _ = open(os.path.join(tmp, "a.txt"), "w").write("x")
    >>> os.listdir(target)
    ['a.txt']
    """
    import shutil
    path = os.path.abspath(os.fspath(path))
    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix="." + os.path.basename(path) + ".", dir=parent)
    try:
        yield tmp
        os.chmod(tmp, 0o755)
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=".old-", dir=parent)
            os.replace(path, os.path.join(old, "x"))
            os.replace(tmp, path)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            shutil.rmtree(tmp, ignore_errors=True)


def atomic_save_npy(path, array):
    """Save `array` as a `.npy` file atomically (no pickles).

    Args:
        path: destination path (used verbatim: no ".npy" is appended).
        array: array-like.

    Returns:
        The path written.

    Example:
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "x.npy")
    >>> _ = atomic_save_npy(p, np.arange(3))
    >>> np.load(p).tolist()
    [0, 1, 2]
    """
    with atomic_write(path, "wb") as f:
        np.save(f, np.asarray(array), allow_pickle=False)
    return path


def atomic_write_json(path, obj, indent=2):
    """Write `obj` as JSON atomically.

    Args:
        path: destination path.
        obj: a JSON-serialisable object (numpy scalars and arrays are converted).
        indent: JSON indentation.

    Returns:
        The path written.

    Example:
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "m.json")
    >>> _ = atomic_write_json(p, {"a": 1})
    >>> json.load(open(p))
    {'a': 1}
    """
    def default(o):
        if isinstance(o, np.generic):
            return o.item()
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"Object of type {type(o).__name__} is not JSON serialisable")

    text = json.dumps(obj, indent=indent, sort_keys=False, default=default) + "\n"
    with atomic_write(path, "w") as f:
        f.write(text)
    return path


def sha256_file(path, chunk_size=1 << 20):
    """Return the hex sha256 digest of a file, read in chunks.

    Args:
        path: file to hash.
        chunk_size: bytes read at a time.

    Returns:
        64-character lowercase hex string.

    Example:
    >>> import os, tempfile
    >>> p = os.path.join(tempfile.mkdtemp(), "e")
    >>> _ = open(p, "wb").close()
    >>> sha256_file(p)[:12]
    'e3b0c44298fc'
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(chunk_size), b""):
            h.update(chunk)
    return h.hexdigest()


def default_cache_dir():
    """The project's one cache directory: `$SSL_ZOO_CACHE`, else `~/.cache/ssl_zoo`.

    Decoded data sets and preset weights are both cached below it. The directory is
    not created here.

    Returns:
        The path (str).

    Example:
    >>> from unittest import mock
    >>> with mock.patch.dict(os.environ, {"SSL_ZOO_CACHE": "/tmp/zoo_cache"}):
    ...     default_cache_dir()
    '/tmp/zoo_cache'
    """
    return os.environ.get("SSL_ZOO_CACHE") or os.path.join(
        os.path.expanduser("~"), ".cache", "ssl_zoo")


class DirectoryInUseError(RuntimeError):
    """Another live process holds the directory's lock (see `directory_lock`)."""


@contextlib.contextmanager
def directory_lock(directory, name=".lock"):
    """Holds an exclusive lock on `directory` for the block, or raises at once.

    An advisory `flock` on `directory/name`: the operating system releases it when
    the holder exits, even by SIGKILL, so a killed run never leaves a stale lock.
    The file names the holder (pid, host) for the error message. Where `fcntl` is
    missing (Windows) the block runs unlocked.

    Args:
        directory: the directory to lock (created if missing).
        name: the lock file's name inside it.

    Raises:
        DirectoryInUseError: another process (or another open of the lock in this
            process) holds it.

    Example:
    >>> import tempfile
    >>> d = tempfile.mkdtemp()
    >>> with directory_lock(d):
    ...     with directory_lock(d):
    ...         pass
    Traceback (most recent call last):
    ...
    ssl_zoo.utils.io.DirectoryInUseError: ... is in use by another run (pid ...
    """
    try:
        import fcntl
    except ImportError:   # pragma: no cover - Windows
        yield
        return
    import socket
    os.makedirs(directory, exist_ok=True)
    f = open(os.path.join(directory, name), "a+", encoding="utf-8")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.seek(0)
        holder = f.read().strip() or "unknown process"
        f.close()
        raise DirectoryInUseError(
            f"{directory} is in use by another run ({holder}): wait for it to end, or "
            f"give this run another directory. The lock goes when that process "
            f"exits, even if it is killed.") from None
    try:
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()} on {socket.gethostname()}")
        f.flush()
        yield
    finally:
        fcntl.flock(f, fcntl.LOCK_UN)
        f.close()


_H5_MAGIC = b"\x89HDF\r\n\x1a\n"


def load_model_file(path, **kwargs):
    """Loads a saved Keras model after checking the file is one.

    `keras.saving.load_model` reports a truncated or foreign `.keras` file as "File
    not found"; here a missing path raises FileNotFoundError, and a file that is not
    a complete Keras v3 archive (a zip holding `config.json`) or HDF5 file
    (legacy `.h5`) raises ValueError naming it. Loading uses `safe_mode=True` (no
    deserialised lambdas).

    Args:
        path: a `.keras` file (or a legacy `.h5` / `.hdf5` file).
        **kwargs: more `keras.saving.load_model` arguments (`custom_objects`,
            `compile`).

    Returns:
        The `keras.Model`.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is a directory, or is truncated or not a Keras archive.

    Example:
    >>> p = os.path.join(tempfile.mkdtemp(), "model.keras")
    >>> _ = open(p, "wb").write(b"PK\x03\x04 cut short")
    >>> load_model_file(p)
    Traceback (most recent call last):
    ...
    ValueError: ...model.keras is truncated or not a Keras archive (.keras)...
    """
    import keras
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"{path} does not exist; give the path of a saved "
                                f"model (.keras file).")
    if os.path.isdir(path):
        raise ValueError(f"{path} is a directory, not a Keras archive (.keras); a "
                         f"SavedModel export is loaded with tf.saved_model.load or "
                         f"keras.layers.TFSMLayer.")
    if path.lower().endswith((".h5", ".hdf5")):
        with open(path, "rb") as f:
            if f.read(len(_H5_MAGIC)) != _H5_MAGIC:
                raise ValueError(f"{path} is truncated or not an HDF5 model file (.h5).")
    else:
        problem = _keras_archive_problem(path)
        if problem:
            raise ValueError(f"{path} is truncated or not a Keras archive (.keras): "
                             f"{problem}. Save it again with model.save(path).")
    kwargs.setdefault("safe_mode", True)
    try:
        return keras.saving.load_model(path, **kwargs)
    except zipfile.BadZipFile as e:   # a damaged member (bad CRC) in a complete zip
        raise ValueError(f"{path} is truncated or not a Keras archive (.keras): {e}. "
                         f"Save it again with model.save(path).") from None


def _keras_archive_problem(path):
    """Why `path` is not a Keras v3 archive (a zip with config.json), or None."""
    if not zipfile.is_zipfile(path):
        return "it is not a complete zip archive"
    try:
        with zipfile.ZipFile(path) as zf:
            names = set(zf.namelist())
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"its zip directory is unreadable ({e})"
    if "config.json" not in names:
        return f"it has no config.json (it holds {sorted(names)[:5]})"
    return None
