"""Shared plumbing of every ssl_zoo model: backbone, in-model normalisation, input
checks, the mixed-precision-safe gradient step and config serialisation."""

import keras
import tensorflow as tf
from keras import ops

from ssl_zoo.backbones import get_backbone
from ssl_zoo.layers.normalization import CIFAR10_MEAN, CIFAR10_STD, ImageNormalization


def _numpy_free_shape(shape):
    return tuple(None if d is None else int(d) for d in shape)


def inference_features(model, images):
    """Inference-mode features (B, D), float32, of any model mapping images to features.

    Uses `model.features(images, training=False)` when the model has it (every
    ssl_zoo `BackboneModel`: SupConModel, SupervisedModel, SLAModel, ...), else
    `model(images, training=False)` (a backbone, a plain keras model); extra axes are
    flattened.

    Args:
        model: an ssl_zoo model, a backbone or any keras model.
        images: what the model takes, e.g. (B, H, W, 3) raw 0..255 images.

    Returns:
        (B, D) float32 tensor.

    Example:
    >>> from ssl_zoo.models.supervised import SupervisedModel
    >>> model = SupervisedModel("resnet32_cifar", num_classes=10, width=0.25)
    >>> tuple(inference_features(model, ops.zeros((2, 16, 16, 3))).shape)
    (2, 16)
    """
    features_fn = getattr(model, "features", None)
    if callable(features_fn):
        features = features_fn(images, training=False)
    else:
        features = model(images, training=False)
    features = ops.cast(features, "float32")
    if len(features.shape) != 2:
        features = ops.reshape(features, (ops.shape(features)[0], -1))
    return features


class PresetMixin:
    """`from_preset` for every ssl_zoo model class."""

    @classmethod
    def from_preset(cls, name, num_classes=None, image_size=None, **kwargs):
        """Builds a pretrained model from `ssl_zoo.presets` (sha256-verified weights).

        Args:
            name: a name from `ssl_zoo.list_presets()`; the preset must hold this class.
            num_classes, image_size: if given, must match the preset (else PresetError).
            **kwargs: `root` (presets folder), `cache_dir` (weights cache).

        Example:
        >>> model = SLAModel.from_preset("sla_rotation_resnet32_cifar10")  # doctest: +SKIP
        """
        from ssl_zoo.presets import load_preset
        return load_preset(name, cls=cls, num_classes=num_classes, image_size=image_size,
                           **kwargs)


class BackboneModel(PresetMixin, keras.Model):
    """Base class: raw 0..255 images -> `ImageNormalization` -> backbone features.

    Subclasses add heads (`build_heads`), `call`, `train_step` and `test_step`.

    Args:
        backbone: a name from `ssl_zoo.backbones.list_backbones()`, a `keras.Model`
            mapping images to (B, D) features, or its serialised config.
        num_classes: number of classes N.
        width: channel multiplier when `backbone` is a name.
        mean, std: per-channel statistics on the 0..255 scale used inside the model.
        sync_batchnorm: global-batch batch-norm statistics under `tf.distribute`.
    """

    def __init__(self, backbone="resnet32_cifar", num_classes=10, width=1.0,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD, sync_batchnorm=False, **kwargs):
        super().__init__(**kwargs)
        if isinstance(num_classes, bool) or int(num_classes) != num_classes \
                or int(num_classes) < 1:
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        self.num_classes = int(num_classes)
        self.width = float(width)
        self.sync_batchnorm = bool(sync_batchnorm)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        self._backbone_name = backbone if isinstance(backbone, str) else None
        self.backbone = get_backbone(backbone, width=width, sync_batchnorm=sync_batchnorm)
        self.normalizer = ImageNormalization(mean, std, name="normalizer")
        self.feature_dim = int(self.backbone.output_shape[-1])
        self.loss_tracker = keras.metrics.Mean(name="loss")

    # ----------------------------------------------------------------- building
    def build(self, input_shape):
        input_shape = _numpy_free_shape(input_shape)
        self.check_image_shape(input_shape)
        self.normalizer.build(input_shape)
        self.build_heads((None, self.feature_dim))
        self.built = True

    def _ensure_built(self):
        # train/test steps call the sub-layers directly, never `self(x)`, so without
        # a strategy Keras never builds the model: it would stay unbuilt after fit(),
        # and a saved .keras file (no build config) would reload with re-initialised
        # heads. Build eagerly, before tracing: head variables created inside the
        # traced step break the next fit() once a first trace has failed.
        if not self.built:
            self.build((None, None, None, len(self.normalizer.mean)))

    def make_train_function(self, force=False):
        self._ensure_built()
        return super().make_train_function(force=force)

    def make_test_function(self, force=False):
        self._ensure_built()
        return super().make_test_function(force=force)

    def build_heads(self, feature_shape):
        """Builds the subclass' heads for features of `feature_shape`."""

    @staticmethod
    def build_layers(feature_shape, *layers):
        for layer in layers:
            if not layer.built:
                layer.build(feature_shape)

    # ------------------------------------------------------------------ checks
    def check_image_shape(self, shape):
        channels = len(self.normalizer.mean)
        if len(shape) != 4:
            raise ValueError(
                f"{type(self).__name__} expects images of rank 4 (batch, height, width, "
                f"{channels}), got shape {tuple(shape)}.")
        if shape[-1] is not None and shape[-1] != channels:
            raise ValueError(
                f"{type(self).__name__} expects images with {channels} channels "
                f"(last axis), got shape {tuple(shape)}.")

    def check_images(self, images):
        if isinstance(images, (dict, list, tuple)):
            raise ValueError(
                f"{type(self).__name__} expects a single image tensor as input, got a "
                f"{type(images).__name__}.")
        images = ops.convert_to_tensor(images)
        dtype = tf.as_dtype(images.dtype)
        if not (dtype.is_floating or dtype.is_integer):
            raise TypeError(f"Images must be numeric (uint8 or float, 0..255 scale), got "
                            f"dtype {dtype.name}.")
        self.check_image_shape(tuple(images.shape))
        return images

    def check_labels(self, labels, images=None):
        """Flattens labels to (B,) int32 and asserts 0 <= y < num_classes in the graph
        (the range check is skipped when `num_classes` is None)."""
        if labels is None:
            raise ValueError(f"{type(self).__name__}.fit/evaluate needs labels: feed "
                             f"(images, labels) pairs.")
        labels = ops.convert_to_tensor(labels)
        if len(labels.shape) == 2 and labels.shape[-1] == 1:
            labels = ops.reshape(labels, (-1,))
        if len(labels.shape) != 1:
            raise ValueError(
                f"Labels must be integer class indices of shape (batch,), got shape "
                f"{tuple(labels.shape)} (one-hot labels: use argmax first).")
        labels = ops.cast(labels, "int32")
        checks = []
        if self.num_classes is not None:  # None: labels are ids without a range
            checks += [
                tf.debugging.assert_non_negative(
                    labels, message=f"labels must be in [0, {self.num_classes})"),
                tf.debugging.assert_less(
                    labels, tf.constant(self.num_classes, tf.int32),
                    message=f"labels must be in [0, {self.num_classes}) (num_classes="
                            f"{self.num_classes})"),
            ]
        if images is not None:
            checks.append(tf.debugging.assert_equal(
                tf.shape(labels)[0], tf.shape(images)[0],
                message="labels and images must have the same batch size"))
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    def unpack(self, data, need_labels=True):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} does not support sample weights.")
        x = self.check_images(x)
        y = self.check_labels(y, x) if (need_labels or y is not None) else None
        return x, y

    # ----------------------------------------------------------------- forward
    def features(self, images, training=False):
        """Backbone features (B, D) of raw 0..255 images."""
        return self.backbone(self.normalizer(images), training=training)

    # ----------------------------------------------------------------- training
    def apply_loss(self, tape, loss):
        """Gradients of `loss` (already scaled for distribution) and an update.

        `loss` must have been produced inside `tape`; loss scaling for mixed
        precision happens here through `optimizer.scale_loss`.
        """
        with tape:
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))

    @staticmethod
    def unscale(value):
        """Undoes Keras' 1/num_replicas loss scaling, for logging."""
        replicas = tf.distribute.get_strategy().num_replicas_in_sync
        return value * replicas if replicas > 1 else value

    def metric_results(self):
        return {m.name: m.result() for m in self.metrics}

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        normalizer = self.normalizer
        config.update({
            "backbone": self._backbone_name if self._backbone_name is not None
            else keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "width": self.width,
            "mean": normalizer.mean,
            "std": normalizer.std,
            "sync_batchnorm": self.sync_batchnorm,
        })
        return config

    @classmethod
    def from_config(cls, config):
        # `trainable=False` passed to keras.Model.__init__ would be set before the
        # backbone exists and never reach its layers: apply it once they are built.
        config = dict(config)
        trainable = config.pop("trainable", True)
        model = cls(**config)
        if not trainable:
            model.trainable = True
            model.trainable = False
        return model


class LinearClassifierMixin:
    """An N-way linear classifier on the backbone features (one-pass inference).

    Mixed into `BackboneModel` subclasses (supervised, DA, MT): `add_classifier()`
    in `__init__` creates `classifier` and the `accuracy` metric; `call` returns the
    float32 logits of the untransformed images and `test_step` scores them.
    """

    def add_classifier(self):
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def classify(self, features):
        return ops.cast(self.classifier(features), "float32")

    def build_heads(self, feature_shape):
        self.build_layers(feature_shape, self.classifier)

    def call(self, images, training=False):
        images = self.check_images(images)
        return self.classify(self.features(images, training))

    def test_step(self, data):
        x, y = self.unpack(data)
        logits = self(x, training=False)
        self.loss_tracker.update_state(self.unscale(self.ce(y, logits)))
        self.accuracy.update_state(y, logits)
        return self.metric_results()
