"""Pretrained presets: name -> config, weights (sha256-verified) and metadata.

Presets are named `arch.tag` (the timm / keras-hub convention): the backbone, then what
trained it on what, e.g. `resnet32_cifar.sla_rotation_cifar10`. `list_presets(cls=...)`
(or `SLAModel.presets`) lists them per model class; `load_preset(name, num_classes=K)`
gives a new, freshly initialised head for K classes on the pretrained weights;
`load_backbone(name)` (or `get_backbone(name)`, or a model's `backbone=name`) returns
just the pretrained encoder, to start another method from it. Presets hold no
optimizer: a loaded model is compiled by its user.

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
import warnings

import keras
import numpy as np

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


# Names of milestone 1, before the `arch.tag` convention: still load, with a warning.
PRESET_ALIASES = {
    "supervised_resnet32_cifar10": "resnet32_cifar.supervised_cifar10",
    "sla_rotation_resnet32_cifar10": "resnet32_cifar.sla_rotation_cifar10",
    "supcon_resnet32_cifar10": "resnet32_cifar.supcon_cifar10",
}


def resolve_name(name):
    """The preset's `arch.tag` name; an old alias warns (DeprecationWarning).

    Example:
    >>> resolve_name("resnet32_cifar.supervised_cifar10")
    'resnet32_cifar.supervised_cifar10'
    """
    name = str(name)
    if name in PRESET_ALIASES:
        new = PRESET_ALIASES[name]
        warnings.warn(f"Preset {name!r} is now named {new!r}; the old name will be "
                      f"removed.", DeprecationWarning, stacklevel=3)
        return new
    return name


def _holds(meta, cls):
    """Whether a preset's model is an instance of `cls` (its class or a subclass)."""
    if cls is None:
        return True
    held = keras.saving.get_registered_object(f"ssl_zoo>{meta.get('class_name')}")
    return held is not None and issubclass(held, cls)


def list_presets(root=None, cls=None):
    """{name: one-line description} of every complete preset (of class `cls`).

    Args:
        root: presets directory (default `presets_dir()`).
        cls: only presets whose model is a `cls` (e.g. `SLAModel`); what
            `SLAModel.presets` returns.

    Example:
    >>> from ssl_zoo import SLAModel
    >>> "resnet32_cifar_a.sla_rotation_cifar10" in list_presets(cls=SLAModel)
    True
    >>> "resnet32_cifar.supervised_cifar10" in SLAModel.presets
    False
    """
    root = pathlib.Path(root) if root else presets_dir()
    if not root.is_dir():
        return {}
    out = {}
    for path in sorted(root.iterdir()):
        if path.is_dir() and _complete(path):
            meta = json.loads((path / METADATA_FILE).read_text())
            if _holds(meta, cls):
                out[path.name] = meta.get("description", "")
    return out


def get_metadata(name, root=None):
    """The metadata dict of preset `name`.

    Example:
    >>> meta = get_metadata("resnet32_cifar.supervised_cifar10")
    >>> meta["arch"], meta["num_classes"], meta["weight_decay"]["mode"]
    ('resnet32_cifar', 10, 'decoupled')
    """
    root = pathlib.Path(root) if root else presets_dir()
    name = resolve_name(name)
    path = root / name
    if not (path.is_dir() and _complete(path)):
        known = ", ".join(list_presets(root)) or "(none installed)"
        raise PresetError(f"Unknown preset {name!r}. Known presets: {known}.")
    return json.loads((path / METADATA_FILE).read_text())


# The sha256 of each shipped preset's weights, held in code: a metadata file edited
# beside altered weights (in an installed copy or a release) cannot vouch for them.
SHIPPED_WEIGHTS_SHA256 = {
    "resnet32_cifar_a.supervised_cifar10":
        "84d4a784b940ffb21e80c8a14176fe2079969f277743a46292b2bc5317e93bdd",
    "resnet32_cifar_a.sla_rotation_cifar10":
        "8a7a01f81c4378d847862f277a9af91dad6f1f24cee22f5bfb7d138c790c249e",
    "resnet32_cifar.sla_rotation_cifar10":
        "8626e1286a680b6d419a833b90c71324099cd8a18026dd46f98a642f6005408c",
    "resnet32_cifar.supcon_cifar10":
        "1cc666d8e9f9ca5b055926bcee0bc669fcd8d55fcf4ab18b166948d2c6f4c8a0",
    "resnet32_cifar.supervised_cifar10":
        "451eb0eb7bf0e733534ab85d2ce0ab8e5d587bf9c776404d0519d8e3dc3300c3",
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
    quiet = origin.startswith("file:") and keras.utils.is_interactive_logging_enabled()
    if quiet:   # a local copy: no download progress bar
        keras.utils.disable_interactive_logging()
    try:
        path = keras.utils.get_file(WEIGHTS_FILE, origin=origin,
                                    file_hash=meta["weights_sha256"], hash_algorithm="sha256",
                                    cache_dir=str(cache_dir), cache_subdir=subdir)
    except Exception as e:  # Keras raises ValueError/Exception on a bad download
        if target.exists() and sha256_file(target) != meta["weights_sha256"]:
            target.unlink()  # leave no unverified weights in the cache
        raise PresetError(f"Preset {name!r}: could not fetch verified weights from "
                          f"{origin}: {e}") from e
    finally:
        if quiet:
            keras.utils.enable_interactive_logging()
    if sha256_file(path) != meta["weights_sha256"]:
        raise PresetError(f"Preset {name!r}: the weights file {path} does not match the "
                          f"sha256 in its metadata (corrupt or truncated).")
    return path


def load_preset(name, cls=None, num_classes=None, image_size=None, root=None,
                cache_dir=None):
    """Builds the preset's model and loads its verified weights (no optimizer).

    Args:
        name: preset name (see `list_presets`; old milestone-1 names warn).
        cls: if given, the preset's model must be an instance of this class.
        num_classes: if given and different from the preset's, the model is built
            for `num_classes` classes: every weight whose shape does not depend on
            the number of classes (the backbone, batch-norm statistics, projection
            and transformation heads) is the preset's, the class-dependent heads are
            freshly initialised (fine-tuning on another data set).
        image_size: if given, must equal the preset's input size (H == W).
        root: presets directory (default `presets_dir()`).
        cache_dir: weights cache (default $SSL_ZOO_CACHE or ~/.cache/ssl_zoo).

    Returns:
        The built, uncompiled `keras.Model` with its weights.

    Raises:
        PresetError: unknown preset, damaged weights, wrong class or image size, or
            a model without a `num_classes` setting asked for other classes.

    Example:
    >>> model = load_preset("resnet32_cifar.supervised_cifar10", num_classes=100)
    >>> model.num_classes, model.compiled
    (100, False)
    """
    root = pathlib.Path(root) if root else presets_dir()
    name = resolve_name(name)
    meta = get_metadata(name, root)
    size = tuple(meta["input_shape"][:2])
    if image_size is not None:
        want = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        if want != size:
            raise PresetError(f"Preset {name!r} takes {size[0]}x{size[1]} images; "
                              f"{want[0]}x{want[1]} were asked for (resize the data).")
    config = _without_compile_config(json.loads((root / name / CONFIG_FILE).read_text()))
    new_head = num_classes is not None and int(num_classes) != meta["num_classes"]
    if new_head and "num_classes" not in config.get("config", {}):
        raise PresetError(f"Preset {name!r} ({config.get('class_name')}) has no "
                          f"num_classes setting to change to {num_classes}; use "
                          f"load_backbone({name!r}) and a new model.")
    model = _rebuild(name, config)
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
    if not new_head:
        return model
    config["config"] = {**config["config"], "num_classes": int(num_classes)}
    target = _rebuild(name, config)
    target.build((None,) + tuple(meta["input_shape"]))
    transfer_matching_weights(model, target)
    return target


def _without_compile_config(config):
    """The config with every (nested) `compile_config` removed: a preset is loaded
    uncompiled, without the optimizer that trained it."""
    if isinstance(config, dict):
        return {k: _without_compile_config(v) for k, v in config.items()
                if k != "compile_config"}
    if isinstance(config, list):
        return [_without_compile_config(v) for v in config]
    return config


def _float32_config(config):
    """The config with every mixed-precision dtype policy made float32: a preset trained
    under `mixed_bfloat16` loads as a float32 model (its variables are float32 anyway)."""
    if isinstance(config, dict):
        if config.get("class_name") == "DTypePolicy" and str(
                config.get("config", {}).get("name", "")).startswith("mixed_"):
            return {**config, "config": {**config["config"], "name": "float32"}}
        return {k: _float32_config(v) for k, v in config.items()}
    if isinstance(config, list):
        return [_float32_config(v) for v in config]
    return config


def as_float32(model, input_shape=None):
    """`model` itself when it computes in float32, else a float32 copy with its weights
    (a model trained under a mixed-precision policy), built and uncompiled.

    Args:
        model: a built Keras model.
        input_shape: (H, W, C) to build the copy with (default: the model's build
            shape).

    Example:
    >>> from ssl_zoo import SupervisedModel
    >>> keras.mixed_precision.set_global_policy("mixed_bfloat16")
    >>> model = SupervisedModel("resnet32_cifar", num_classes=3, width=0.125)
    >>> model.build((None, 8, 8, 3))
    >>> keras.mixed_precision.set_global_policy("float32")
    >>> copy = as_float32(model)
    >>> copy.dtype_policy.name, copy.compute_dtype
    ('float32', 'float32')
    >>> all(np.array_equal(a, b) for a, b in zip(copy.get_weights(), model.get_weights()))
    True
    """
    if _computes_in_float32(model):
        return model
    config = _preset_config(model)
    if input_shape is None:
        input_shape = (config.get("build_config") or {}).get("input_shape", [None])[1:]
    return _rebuilt_with_weights(model, config, input_shape)


def _computes_in_float32(model):
    return all(layer.dtype_policy.name == "float32" for layer in model._flatten_layers())


def _preset_config(model):
    """`model`'s config as a preset holds it: no optimizer, float32 policies."""
    return _float32_config(_without_compile_config(keras.saving.serialize_keras_object(model)))


def _rebuilt_with_weights(model, config, input_shape):
    """A model rebuilt from `config` (its layers made under float32) and built for
    `input_shape`, holding `model`'s weights and nothing else (no optimizer)."""
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("float32")
    try:
        copy = keras.saving.deserialize_keras_object(config)
        copy.build((None,) + tuple(input_shape))
    finally:
        keras.mixed_precision.set_global_policy(previous)
    copy.set_weights(model.get_weights())
    return copy


def _rebuild(name, config):
    try:
        return keras.saving.deserialize_keras_object(config)
    except Exception as e:
        raise PresetError(f"Preset {name!r}: its config could not be rebuilt: {e}") from e


def transfer_matching_weights(source, target):
    """Copies each of `source`'s weights into the weight of `target` at the same
    position when their shapes agree (two models built from one config that differ in
    the number of classes); returns the paths of `target`'s weights left as they were.

    Example:
    >>> from ssl_zoo import SupervisedModel
    >>> a = SupervisedModel("resnet32_cifar", num_classes=10, width=0.25)
    >>> b = SupervisedModel("resnet32_cifar", num_classes=3, width=0.25)
    >>> _ = a.build((None, 8, 8, 3)), b.build((None, 8, 8, 3))
    >>> [p.split("/")[-1] for p in transfer_matching_weights(a, b)]
    ['kernel', 'bias']
    """
    if len(source.weights) != len(target.weights):
        raise PresetError(f"Cannot transfer weights between models with "
                          f"{len(source.weights)} and {len(target.weights)} variables.")
    kept = []
    for src, dst in zip(source.weights, target.weights):
        if tuple(src.shape) == tuple(dst.shape):
            dst.assign(src)
        else:
            kept.append(dst.path)
    return kept


def _encoder_of(model):
    """The backbone network of a preset's model (a LinearProbe's encoder's)."""
    for owner in (model, getattr(model, "encoder", None)):
        net = getattr(owner, "backbone", None)
        if isinstance(net, keras.Model):
            return net
    raise PresetError(f"{type(model).__name__} has no backbone network to load.")


def load_backbone(name, root=None, cache_dir=None):
    """The pretrained encoder of preset `name`: images -> features, a `keras.Model`.

    What a preset's model applies after normalising its input (the model's
    `ImageNormalization` is not part of it): a model built on it with
    `SupervisedModel(backbone=name)` normalises with the preset's mean/std unless
    given others; `ssl-zoo train --backbone=<name>` uses the training data's.

    Example:
    >>> net = load_backbone("resnet32_cifar.supcon_cifar10")
    >>> net.output_shape
    (None, 64)
    """
    model = load_preset(name, root=root, cache_dir=cache_dir)
    return _encoder_of(model)


def is_preset_name(name):
    """Whether `name` names an installed preset (or an old alias)."""
    if not isinstance(name, str) or not name or os.sep in name or name in (".", ".."):
        return False
    return name in PRESET_ALIASES or _complete(presets_dir() / name)


def save_preset(model, name, metadata, root=None):
    """Writes `model` as preset `name` (config, weights, metadata with sha256).

    Every file is written to a temporary directory first and the directory is moved
    into place at the end, so an interrupted save leaves no preset that loads. The
    preset holds no optimizer (neither its config nor its variables) and computes in
    float32 (a model trained under mixed precision is saved as `as_float32` makes it,
    so measure the metrics it records on that copy); the metadata
    gains `arch` and `tag` (from `arch.tag`), `class_name`, `params` (Keras'
    count, with batch-norm statistics) and `trainable_params`.

    Args:
        model: a built model.
        name: `arch.tag`, e.g. "resnet32_cifar_a.sla_rotation_cifar10".
        metadata: dict with at least `num_classes` and `input_shape` (H, W, C),
            plus what a user needs to trust it: data, recipe, budget, metrics.
        root: presets directory (default `presets_dir()`).

    Returns:
        The preset's directory.
    """
    root = pathlib.Path(root) if root else presets_dir()
    with atomic_directory(root / name) as tmp:
        tmp = pathlib.Path(tmp)
        config = _preset_config(model)
        with atomic_write(tmp / CONFIG_FILE, "w") as f:
            json.dump(config, f, indent=1)
        # Keras writes a compiled model's optimizer variables into its weights file:
        # a compiled or mixed-precision model is saved through a clean float32 copy.
        if getattr(model, "compiled", False) or not _computes_in_float32(model):
            model = _rebuilt_with_weights(model, config, metadata["input_shape"])
        model.save_weights(str(tmp / WEIGHTS_FILE))
        arch, _, tag = str(name).partition(".")
        meta = {"arch": arch, "tag": tag, "class_name": type(model).__name__,
                **metadata, "name": name,
                "params": int(model.count_params()),
                "trainable_params": int(sum(np.prod(w.shape)
                                            for w in model.trainable_weights)),
                "weights_file": WEIGHTS_FILE,
                "weights_sha256": sha256_file(tmp / WEIGHTS_FILE),
                "weights_bytes": os.path.getsize(tmp / WEIGHTS_FILE),
                "ssl_zoo_version": __version__}
        atomic_write_json(tmp / METADATA_FILE, meta)
    return root / name
