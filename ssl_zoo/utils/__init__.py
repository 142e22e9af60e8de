"""Small helpers shared by the package: atomic file writes, file hashing, checked model
loading, cache dir."""

from ssl_zoo.utils.io import (
    atomic_directory,
    atomic_path,
    atomic_save_npy,
    atomic_write,
    atomic_write_json,
    default_cache_dir,
    load_model_file,
    sha256_file,
)

__all__ = ["atomic_directory", "atomic_path", "atomic_write", "atomic_save_npy",
           "atomic_write_json", "default_cache_dir", "load_model_file", "sha256_file"]
