"""Linear evaluation of a learned representation: a frozen encoder, feature
standardisation and one Dense layer (`LinearProbe`), and `linear_probe` to train it."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ssl_zoo.models.base import PresetMixin


def encoder_features(encoder, images):
    """Inference-mode features (B, D), float32, of a model or backbone.

    Uses `encoder.features(images, training=False)` when the encoder has it (every
    ssl_zoo `BackboneModel`: SupConModel, SupervisedModel, SLAModel, ...), else
    `encoder(images, training=False)`; extra axes are flattened.

    Example:
    >>> from ssl_zoo.models.supervised import SupervisedModel
    >>> model = SupervisedModel("resnet32_cifar", num_classes=10, width=0.25)
    >>> tuple(encoder_features(model, ops.zeros((2, 16, 16, 3))).shape)
    (2, 16)
    """
    features_fn = getattr(encoder, "features", None)
    if callable(features_fn):
        features = features_fn(images, training=False)
    else:
        features = encoder(images, training=False)
    features = ops.cast(features, "float32")
    if len(features.shape) != 2:
        features = ops.reshape(features, (ops.shape(features)[0], -1))
    return features


@keras.saving.register_keras_serializable(package="ssl_zoo")
class LinearProbe(PresetMixin, keras.Model):
    """Linear classifier on the features of a frozen encoder.

    The encoder is frozen in place (`encoder.trainable = False`; set it back to
    fine-tune) and always runs in inference mode, so neither its weights nor its
    batch-norm statistics change when the probe trains. Features are standardised
    with fixed statistics (non-trainable weights, set by `linear_probe` or
    `set_feature_statistics`; identity until then) before the Dense layer; that
    keeps the classifier linear in the features and makes its optimisation easy.

    Args:
        encoder: any model whose `features(images)` or `call(images)` returns
            features (B, D): a `SupConModel`, `SupervisedModel`, `SLAModel`, a
            backbone from `get_backbone`, ... (or its serialised config).
        num_classes: N.

    Call args:
        images: what the encoder takes, e.g. (B, H, W, 3) raw 0..255 images.

    Returns:
        (B, N) float32 logits.

    Example:
    >>> from ssl_zoo.models.supcon import SupConModel
    >>> encoder = SupConModel("resnet32_cifar", width=0.25)
    >>> probe = LinearProbe(encoder, num_classes=10)
    >>> probe.compile(optimizer="adam", metrics=["accuracy"],
    ...               loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> tuple(probe(ops.zeros((2, 16, 16, 3))).shape)
    (2, 10)
    """

    def __init__(self, encoder, num_classes, **kwargs):
        super().__init__(**kwargs)
        if isinstance(encoder, dict):
            encoder = keras.saving.deserialize_keras_object(encoder)
        if not callable(encoder):
            raise ValueError(f"LinearProbe encoder must be a model mapping images to "
                             f"features, got {type(encoder).__name__}.")
        if isinstance(num_classes, bool) or int(num_classes) != num_classes \
                or int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        self.encoder = encoder
        self._freeze_encoder()
        self.num_classes = int(num_classes)
        self.classifier = keras.layers.Dense(self.num_classes, dtype="float32",
                                             name="classifier")
        self.feature_mean = None
        self.feature_scale = None

    def _freeze_encoder(self):
        # Keras' `trainable` setter does not reach sub-layers when the flag is already
        # False (an encoder deserialised with trainable=False, whose sub-layers were
        # created after the flag): go through True so that False propagates.
        self.encoder.trainable = True
        self.encoder.trainable = False

    def _feature_dim(self, input_shape):
        dim = getattr(self.encoder, "feature_dim", None)
        if dim is None:
            try:
                dim = self.encoder.compute_output_shape(tuple(input_shape))[-1]
            except Exception:  # noqa: BLE001 - encoders without shape inference
                dim = None
        return None if dim is None else int(dim)

    def build_head(self, feature_dim):
        """Creates the standardisation weights and the classifier for D features."""
        if self.feature_mean is None:
            self.feature_mean = self.add_weight(
                shape=(feature_dim,), initializer="zeros", trainable=False,
                name="feature_mean")
            self.feature_scale = self.add_weight(
                shape=(feature_dim,), initializer="ones", trainable=False,
                name="feature_scale")
        if not self.classifier.built:
            self.classifier.build((None, feature_dim))

    def build(self, input_shape):
        if hasattr(self.encoder, "built") and not self.encoder.built:
            self.encoder.build(tuple(input_shape))
            self._freeze_encoder()   # also the layers made in build()
        dim = self._feature_dim(input_shape)
        if dim is not None:
            self.build_head(dim)
        self.built = True

    def set_feature_statistics(self, mean, std, epsilon=1e-6):
        """Standardise features as (f - mean) / max(std, epsilon) before the classifier.

        Example:
        >>> probe = LinearProbe(keras.Sequential([keras.layers.Flatten()]), 2)
        >>> probe.build_head(3)
        >>> probe.set_feature_statistics(np.ones(3), np.full(3, 2.0))
        """
        mean = np.asarray(mean, np.float32).reshape(-1)
        std = np.asarray(std, np.float32).reshape(-1)
        self.build_head(int(mean.shape[0]))
        self.feature_mean.assign(mean)
        self.feature_scale.assign(1.0 / np.maximum(std, epsilon))

    def encode(self, images):
        """Frozen, inference-mode encoder features (B, D), float32."""
        return ops.stop_gradient(encoder_features(self.encoder, images))

    def classify(self, features):
        """Logits (B, N) of features (B, D): standardise, then the Dense layer."""
        features = ops.cast(features, "float32")
        if self.feature_mean is None:
            self.build_head(int(features.shape[-1]))
        return self.classifier((features - self.feature_mean) * self.feature_scale)

    def call(self, images, training=False):
        return self.classify(self.encode(images))

    def get_config(self):
        return {**super().get_config(),
                "encoder": keras.saving.serialize_keras_object(self.encoder),
                "num_classes": self.num_classes}

    @classmethod
    def from_config(cls, config):
        return cls(**config)


# ---------------------------------------------------------------- the protocol
def _as_arrays_or_dataset(data, what):
    """(images, labels) numpy/tensors, an object with .images/.labels, or a tf.data set."""
    if isinstance(data, tf.data.Dataset):
        return data
    if hasattr(data, "images") and hasattr(data, "labels"):
        return data.images, np.asarray(data.labels)
    if isinstance(data, (tuple, list)) and len(data) == 2:
        return data[0], np.asarray(data[1])
    raise ValueError(f"linear_probe {what} must be an (images, labels) pair, an object "
                     f"with .images and .labels (e.g. ssl_zoo.data.ArrayDataset), or a "
                     f"batched tf.data.Dataset of (images, labels); got "
                     f"{type(data).__name__}.")


def _batches(data, batch_size):
    if isinstance(data, tf.data.Dataset):
        return data
    images, labels = data
    if len(images) != len(labels):
        raise ValueError(f"linear_probe got {len(images)} images and {len(labels)} "
                         f"labels.")
    return tf.data.Dataset.from_tensor_slices((images, labels)).batch(batch_size)


def extract_features(encoder, data, batch_size=256, encode=None):
    """Features (N, D) float32 and labels (N,) int of a data set, in inference mode.

    Args:
        encoder: a model (see `encoder_features`) or a `LinearProbe`.
        data: (images, labels) arrays, an object with `.images`/`.labels`, or a
            batched `tf.data.Dataset` of (images, labels).
        batch_size: batch size when `data` holds arrays.
        encode: optional compiled `images -> features` function to reuse.

    Returns:
        (features (N, D) float32 numpy, labels (N,) int64 numpy).

    Example:
    >>> from ssl_zoo.backbones import get_backbone
    >>> f, y = extract_features(get_backbone("resnet32_cifar", width=0.25),
    ...                         (np.zeros((3, 8, 8, 3)), np.arange(3)))
    >>> f.shape, y.tolist()
    ((3, 16), [0, 1, 2])
    """
    if isinstance(encoder, LinearProbe):
        encoder = encoder.encoder
    if encode is None:
        encode = tf.function(lambda x: encoder_features(encoder, x),
                             reduce_retracing=True)
    features, labels = [], []
    for images, y in _batches(_as_arrays_or_dataset(data, "data"), batch_size):
        features.append(encode(images).numpy())
        labels.append(np.asarray(y).reshape(-1))
    if not features:
        raise ValueError("linear_probe got an empty data set.")
    return np.concatenate(features), np.concatenate(labels).astype(np.int64)


def _top1(logits, labels):
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def linear_probe(encoder, train_data, test_data, num_classes, epochs=30, batch_size=256,
                 learning_rate=1e-2, cache_features=True, seed=0, verbose=0,
                 return_probe=False):
    """Trains a linear classifier on frozen features; returns its top-1 accuracies.

    The standard linear evaluation of Khosla et al. (2020) / Chen et al. (2020),
    without augmentation: features are extracted once in inference mode
    (`cache_features=True`, fast on CPU), standardised with the training-set
    statistics, and a Dense layer is trained with Adam and cross-entropy. With
    `cache_features=False` the `LinearProbe` is trained on the images with `fit`
    (the encoder runs every epoch: slower, for data that do not fit in memory).
    The encoder's weights are never changed (it is frozen in place).

    Args:
        encoder: a model whose `features(images)` or `call(images)` gives (B, D)
            features (SupConModel, SimCLRModel, SupervisedModel, SLAModel, a
            backbone).
        train_data, test_data: (images (N, H, W, 3), labels (N,)) arrays, objects
            with `.images`/`.labels` (`ssl_zoo.data.ArrayDataset`), or batched
            `tf.data.Dataset`s of (images, labels).
        num_classes: N.
        epochs: training epochs of the classifier.
        batch_size: batch size for feature extraction and training.
        learning_rate: Adam learning rate.
        cache_features: extract the features once (True) or on every step.
        seed: seed of the classifier's initialisation and shuffling.
        verbose: passed to `fit`.
        return_probe: also return the trained `LinearProbe` under "probe".

    Returns:
        dict with "top1" (test accuracy) and "train_top1" (training accuracy), as
        floats; with `return_probe=True` also "probe", the trained `LinearProbe`
        (ready for `predict` on images).

    Example:
    >>> from ssl_zoo.backbones import get_backbone
    >>> images = np.concatenate([np.zeros((8, 8, 8, 3)), np.full((8, 8, 8, 3), 255.0)])
    >>> labels = np.repeat([0, 1], 8)
    >>> result = linear_probe(get_backbone("resnet32_cifar", width=0.25),
    ...                       (images, labels), (images, labels), num_classes=2)
    >>> result["top1"]
    1.0
    """
    keras.utils.set_random_seed(seed)
    probe = LinearProbe(encoder, num_classes)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    train = _as_arrays_or_dataset(train_data, "train_data")
    test = _as_arrays_or_dataset(test_data, "test_data")
    encode = tf.function(lambda x: encoder_features(encoder, x), reduce_retracing=True)
    train_features, train_labels = extract_features(encoder, train, batch_size, encode)
    probe.set_feature_statistics(train_features.mean(0), train_features.std(0))
    if cache_features:
        # The probe's own Dense layer, trained on standardised cached features.
        standardised = (train_features - ops.convert_to_numpy(probe.feature_mean)) \
            * ops.convert_to_numpy(probe.feature_scale)
        head = keras.Sequential([keras.Input((train_features.shape[1],)),
                                 probe.classifier])
        head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
        head.fit(standardised, train_labels, batch_size=batch_size, epochs=epochs,
                 shuffle=True, verbose=verbose)
        test_features, test_labels = extract_features(encoder, test, batch_size, encode)
        train_logits = ops.convert_to_numpy(probe.classify(train_features))
        test_logits = ops.convert_to_numpy(probe.classify(test_features))
    else:
        probe.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
        batches = _batches(train, batch_size)
        if not isinstance(train, tf.data.Dataset):
            batches = tf.data.Dataset.from_tensor_slices(train).shuffle(
                len(train_labels), seed=seed).batch(batch_size)
        probe.fit(batches, epochs=epochs, shuffle=False, verbose=verbose)
        train_logits = ops.convert_to_numpy(probe.classify(
            extract_features(encoder, train, batch_size, encode)[0]))
        test_features, test_labels = extract_features(encoder, test, batch_size, encode)
        test_logits = ops.convert_to_numpy(probe.classify(test_features))
    result = {"top1": _top1(test_logits, test_labels),
              "train_top1": _top1(train_logits, train_labels)}
    if return_probe:
        result["probe"] = probe
    return result
