"""Inference-mode features and predictions of a model over a whole data set, batch by
batch: the one place that reads evaluation data (arrays, ArrayDataset, tf.data)."""

import keras
import numpy as np
import tensorflow as tf

from ssl_zoo.models.base import inference_features
from ssl_zoo.models.linear_probe import LinearProbe


def _arrays(data, what):
    """(images, labels numpy) of in-memory data; None for a tf.data set."""
    if isinstance(data, tf.data.Dataset):
        return None
    if hasattr(data, "images") and hasattr(data, "labels"):
        images, labels = data.images, data.labels
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        images, labels = data
    else:
        raise ValueError(f"{what} must be an (images, labels) pair, an object with "
                         f".images and .labels (e.g. ssl_zoo.data.ArrayDataset), or a "
                         f"batched tf.data.Dataset of (images, labels); got "
                         f"{type(data).__name__}.")
    labels = np.asarray(labels)
    if len(images) != len(labels):
        raise ValueError(f"{what} has {len(images)} images and {len(labels)} labels.")
    return images, labels


def as_batches(data, batch_size=256, what="data", shuffle_seed=None):
    """A batched `tf.data.Dataset` of (images, labels) from any evaluation data.

    Args:
        data: (images (N, ...), labels (N,)) arrays, an object with `.images` and
            `.labels` (e.g. `ssl_zoo.data.ArrayDataset`), or a batched
            `tf.data.Dataset` of (images, labels) (returned as it is).
        batch_size: batch size when `data` holds arrays.
        what: the argument's name in error messages.
        shuffle_seed: None keeps the data order; an int shuffles arrays (all of
            them, reshuffled every epoch) with this seed before batching.

    Returns:
        `tf.data.Dataset` of (images, labels) batches.

    Example:
    >>> ds = as_batches((np.zeros((5, 2, 2, 3)), np.arange(5)), batch_size=2)
    >>> [int(y.shape[0]) for _, y in ds]
    [2, 2, 1]
    """
    arrays = _arrays(data, what)
    if arrays is None:
        return data
    dataset = tf.data.Dataset.from_tensor_slices(arrays)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(len(arrays[1]), seed=shuffle_seed)
    return dataset.batch(batch_size)


def labels_of(data, what="data"):
    """The labels (N,) int64 of evaluation data, without running any model.

    Args:
        data: as for `as_batches`.
        what: the argument's name in error messages.

    Returns:
        int64 numpy array (N,).

    Example:
    >>> labels_of((np.zeros((3, 2, 2, 3)), [2, 0, 1])).tolist()
    [2, 0, 1]
    """
    arrays = _arrays(data, what)
    if arrays is not None:
        return arrays[1].reshape(-1).astype(np.int64)
    labels = [np.asarray(y).reshape(-1) for _, y in data]
    return np.concatenate(labels).astype(np.int64) if labels else np.zeros(0, np.int64)


def apply_in_batches(fn, data, batch_size=256, progress=False, what="data"):
    """Runs `fn` on every batch of images; returns its outputs and the labels.

    Args:
        fn: images (B, ...) -> tensor (B, ...), e.g. a traced feature function.
        data: as for `as_batches`.
        batch_size: batch size when `data` holds arrays.
        progress: show a `keras.utils.Progbar` (counts images).
        what: the argument's name in error messages.

    Returns:
        (outputs concatenated on axis 0 as a numpy array, labels (N,) int64 numpy).

    Example:
    >>> out, y = apply_in_batches(lambda x: x[:, 0] * 2, (np.ones((3, 2)), [0, 1, 1]),
    ...                           batch_size=2)
    >>> out.tolist(), y.tolist()
    ([2.0, 2.0, 2.0], [0, 1, 1])
    """
    arrays = _arrays(data, what)
    batches = as_batches(data, batch_size, what)
    bar = None
    if progress:
        bar = keras.utils.Progbar(None if arrays is None else len(arrays[1]),
                                  unit_name="image")
    outputs, labels, seen = [], [], 0
    for images, y in batches:
        outputs.append(keras.ops.convert_to_numpy(fn(images)))
        labels.append(np.asarray(y).reshape(-1))
        seen += len(labels[-1])
        if bar is not None:
            bar.update(seen)
    if bar is not None:
        bar.update(seen, finalize=True)
    if not outputs:
        raise ValueError(f"{what} is an empty data set.")
    return np.concatenate(outputs), np.concatenate(labels).astype(np.int64)


def _layer_model(encoder, layer):
    """Images -> output of the backbone's layer named `layer` (a sub-model)."""
    backbone = getattr(encoder, "backbone", encoder)
    if not getattr(backbone, "inputs", None):
        raise ValueError(f"layer={layer!r} needs a functional backbone (a keras Model "
                         f"with inputs); {type(backbone).__name__} has none.")
    names = [sub.name for sub in backbone.layers]
    if layer not in names:
        raise ValueError(f"{type(backbone).__name__} {backbone.name!r} has no layer "
                         f"{layer!r}; its layers are {names}.")
    sub = keras.Model(backbone.inputs, backbone.get_layer(layer).output,
                      name=f"{backbone.name}_to_{layer}")
    normalize = getattr(encoder, "normalize", None)
    if backbone is encoder or not callable(normalize):
        return sub
    images = keras.Input(tuple(backbone.inputs[0].shape[1:]), name="images")
    return keras.Model(images, sub(normalize(images)), name=f"features_{layer}")


class FeatureExtractor:
    """Inference-mode features (B, D) float32 of an encoder, traced once for many sets.

    Args:
        encoder: an ssl_zoo model (its `features(images, training=False)` is used),
            a `LinearProbe` (its encoder is used), or any keras model mapping images
            to features.
        layer: optional name of a layer of the encoder's backbone (`encoder.backbone`
            when it exists, else the encoder itself, which must then be functional):
            features are that layer's output, flattened; the sub-model is built here,
            once. ssl_zoo models normalise the images first, as in `features`.

    Example:
    >>> from ssl_zoo.backbones import get_backbone
    >>> extract = FeatureExtractor(get_backbone("resnet32_cifar", width=0.25))
    >>> tuple(extract(np.zeros((2, 8, 8, 3), "float32")).shape)
    (2, 16)
    """

    def __init__(self, encoder, layer=None):
        if isinstance(encoder, LinearProbe):
            encoder = encoder.encoder
        self.model = encoder if layer is None else _layer_model(encoder, layer)
        self._traced = tf.function(self.encode, reduce_retracing=True)

    def encode(self, images):
        """Eager features (B, D) float32 of one batch of images."""
        return inference_features(self.model, images)

    def __call__(self, images):
        return self._traced(images)

    def extract(self, data, batch_size=256, progress=False):
        """Features and labels of a whole data set; see `extract_features`."""
        return apply_in_batches(self, data, batch_size, progress)


def encoder_features(encoder, images, layer=None):
    """Inference-mode features (B, D), float32, of one batch of images.

    Args:
        encoder, layer: as for `FeatureExtractor`.
        images: what the encoder takes, e.g. (B, H, W, 3) raw 0..255 images.

    Returns:
        (B, D) float32 tensor; extra axes are flattened.

    Example:
    >>> from ssl_zoo.models.supervised import SupervisedModel
    >>> model = SupervisedModel("resnet32_cifar", num_classes=10, width=0.25)
    >>> tuple(encoder_features(model, np.zeros((2, 16, 16, 3), "float32")).shape)
    (2, 16)
    """
    return FeatureExtractor(encoder, layer).encode(images)


def extract_features(encoder, data, batch_size=256, layer=None, progress=False):
    """Features (N, D) float32 and labels (N,) int64 of a data set, in inference mode.

    Args:
        encoder: an ssl_zoo model, a `LinearProbe` or a keras model (see
            `FeatureExtractor`).
        data: (images, labels) arrays, an object with `.images`/`.labels`
            (`ssl_zoo.data.ArrayDataset`), or a batched `tf.data.Dataset` of
            (images, labels).
        batch_size: batch size when `data` holds arrays.
        layer: optional name of an intermediate layer of the encoder's backbone to
            read the features from (flattened).
        progress: show a `keras.utils.Progbar`.

    Returns:
        (features (N, D) float32 numpy, labels (N,) int64 numpy).

    Example:
    >>> from ssl_zoo.backbones import get_backbone
    >>> f, y = extract_features(get_backbone("resnet32_cifar", width=0.25),
    ...                         (np.zeros((3, 8, 8, 3)), np.arange(3)))
    >>> f.shape, f.dtype, y.tolist()
    ((3, 16), dtype('float32'), [0, 1, 2])
    """
    return FeatureExtractor(encoder, layer).extract(data, batch_size, progress)
