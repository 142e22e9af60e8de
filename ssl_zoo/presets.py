"""Pretrained presets: name -> config, weights (sha256-verified) and metadata.

Each preset lives in `pretrained/<name>/` (installed as `ssl_zoo/pretrained/<name>/`):
`config.json` (the serialised Keras model), `model.weights.h5` and `metadata.json`
(method, backbone, data, preprocessing, training command and budget, measured
metrics, sha256 of the weights, paper, ssl_zoo version). Weights are fetched with
`keras.utils.get_file` from `metadata["weights_url"]` (default: the installed file,
as a file:// URL) into a cache and verified against their sha256; a release URL can
replace it later without code changes.
"""

import json
import os
import pathlib

import keras

from ssl_zoo.utils.io import (
    atomic_directory,
    atomic_write,
    atomic_write_json,
    default_cache_dir,
    sha256_file,
)
from ssl_zoo.version import __version__

CONFIG_FILE = "config.json"
WEIGHTS_FILE = "model.weights.h5"
METADATA_FILE = "metadata.json"


class PresetError(ValueError):
    """A preset is unknown, corrupt, or does not fit what it is asked for."""


def presets_dir():
    """Where presets are read: $SSL_ZOO_PRESETS_DIR, the installed copy, or the repo's."""
    env = os.environ.get("SSL_ZOO_PRESETS_DIR")
    if env:
        return pathlib.Path(env)
    here = pathlib.Path(__file__).resolve().parent
    for candidate in (here / "pretrained", here.parent / "pretrained"):
        if candidate.is_dir():
            return candidate
    return here / "pretrained"


def _complete(path):
    return all((path / f).is_file() for f in (CONFIG_FILE, WEIGHTS_FILE, METADATA_FILE))


def list_presets(root=None):
    """{name: one-line description} of every complete preset.

    Example:
    >>> "sla_rotation_resnet32_cifar10" in list_presets()  # doctest: +SKIP
    True
    """
    root = pathlib.Path(root) if root else presets_dir()
    if not root.is_dir():
        return {}
    out = {}
    for path in sorted(root.iterdir()):
        if path.is_dir() and _complete(path):
            meta = json.loads((path / METADATA_FILE).read_text())
            out[path.name] = meta.get("description", "")
    return out


def get_metadata(name, root=None):
    """The metadata dict of preset `name`."""
    root = pathlib.Path(root) if root else presets_dir()
    path = root / str(name)
    if not (path.is_dir() and _complete(path)):
        known = ", ".join(list_presets(root)) or "(none installed)"
        raise PresetError(f"Unknown preset {name!r}. Known presets: {known}.")
    return json.loads((path / METADATA_FILE).read_text())


# The sha256 of each shipped preset's weights, held in code: a metadata file edited
# beside altered weights (in an installed copy or a release) cannot vouch for them.
SHIPPED_WEIGHTS_SHA256 = {
    "sla_rotation_resnet32_cifar10":
        "d25fc3938c5b80618fbcd56cc5f4d1b8cb32a9acecb5ef87a706117cf2dcc20a",
    "supcon_resnet32_cifar10":
        "4479ad35d97d3d56529b9c2da1c420e2c4b295a73e51f251a00d731c807c288e",
    "supervised_resnet32_cifar10":
        "2a1b28faa9eebabd4b3594b67ba75e284c58fb3c0b8534bb4a4dcb8e39971bf2",
}


def _check_shipped_hash(name, meta, root):
    """PresetError if a shipped preset's metadata sha256 differs from the code's."""
    expected = SHIPPED_WEIGHTS_SHA256.get(name)
    if expected is None or pathlib.Path(root).resolve() != presets_dir().resolve():
        return
    if meta.get("weights_sha256") != expected:
        raise PresetError(
            f"Preset {name!r}: its metadata names weights with sha256 "
            f"{meta.get('weights_sha256')}, but this ssl_zoo ships {expected}: the preset "
            f"files were altered. Reinstall ssl_zoo, or save your own weights as a preset "
            f"under another name.")


def _fetch_weights(name, meta, root, cache_dir):
    _check_shipped_hash(name, meta, root)
    origin = meta.get("weights_url") or (root / name / WEIGHTS_FILE).resolve().as_uri()
    cache_dir = pathlib.Path(cache_dir or default_cache_dir())
    cache_dir.mkdir(parents=True, exist_ok=True)  # else Keras falls back to /tmp/.keras
    subdir = f"presets/{name}"
    target = cache_dir / subdir / WEIGHTS_FILE
    if target.exists() and sha256_file(target) != meta["weights_sha256"]:
        target.unlink()  # a stale or damaged cached copy: fetch again
    try:
        path = keras.utils.get_file(WEIGHTS_FILE, origin=origin,
                                    file_hash=meta["weights_sha256"], hash_algorithm="sha256",
                                    cache_dir=str(cache_dir), cache_subdir=subdir)
    except Exception as e:  # Keras raises ValueError/Exception on a bad download
        if target.exists() and sha256_file(target) != meta["weights_sha256"]:
            target.unlink()  # leave no unverified weights in the cache
        raise PresetError(f"Preset {name!r}: could not fetch verified weights from "
                          f"{origin}: {e}") from e
    if sha256_file(path) != meta["weights_sha256"]:
        raise PresetError(f"Preset {name!r}: the weights file {path} does not match the "
                          f"sha256 in its metadata (corrupt or truncated).")
    return path


def load_preset(name, cls=None, num_classes=None, image_size=None, root=None,
                cache_dir=None):
    """Builds the preset's model and loads its verified weights.

    Args:
        name: preset name (see `list_presets`).
        cls: if given, the preset's model must be an instance of this class.
        num_classes: if given, must equal the preset's number of classes.
        image_size: if given, must equal the preset's input size (H == W).
        root: presets directory (default `presets_dir()`).
        cache_dir: weights cache (default $SSL_ZOO_CACHE or ~/.cache/ssl_zoo).

    Returns:
        The built `keras.Model` with its weights.
    """
    root = pathlib.Path(root) if root else presets_dir()
    meta = get_metadata(name, root)
    if num_classes is not None and int(num_classes) != meta["num_classes"]:
        raise PresetError(f"Preset {name!r} has {meta['num_classes']} classes; "
                          f"{num_classes} were asked for.")
    size = tuple(meta["input_shape"][:2])
    if image_size is not None:
        want = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if want != size:
            raise PresetError(f"Preset {name!r} takes {size[0]}x{size[1]} images; "
                              f"{want[0]}x{want[1]} were asked for (resize the data).")
    config = json.loads((root / name / CONFIG_FILE).read_text())
    try:
        model = keras.saving.deserialize_keras_object(config)
    except Exception as e:
        raise PresetError(f"Preset {name!r}: its config could not be rebuilt: {e}") from e
    if cls is not None and not isinstance(model, cls):
        raise PresetError(f"Preset {name!r} holds a {type(model).__name__}, not a "
                          f"{cls.__name__}; use {type(model).__name__}.from_preset.")
    weights = _fetch_weights(name, meta, root, cache_dir)
    model.build((None,) + tuple(meta["input_shape"]))
    try:
        model.load_weights(weights)
    except Exception as e:
        raise PresetError(f"Preset {name!r}: the weights file {weights} could not be "
                          f"loaded into the model: {e}") from e
    return model


def save_preset(model, name, metadata, root=None):
    """Writes `model` as preset `name` (config, weights, metadata with sha256).

    Every file is written to a temporary directory first and the directory is moved
    into place at the end, so an interrupted save leaves no preset that loads.
    """
    root = pathlib.Path(root) if root else presets_dir()
    with atomic_directory(root / name) as tmp:
        tmp = pathlib.Path(tmp)
        with atomic_write(tmp / CONFIG_FILE, "w") as f:
            json.dump(keras.saving.serialize_keras_object(model), f, indent=1)
        model.save_weights(str(tmp / WEIGHTS_FILE))
        meta = {**metadata, "name": name, "weights_file": WEIGHTS_FILE,
                "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
                "weights_bytes": os.path.getsize(tmp / WEIGHTS_FILE),
                "ssl_zoo_version": __version__}
        atomic_write_json(tmp / METADATA_FILE, meta)
    return root / name
