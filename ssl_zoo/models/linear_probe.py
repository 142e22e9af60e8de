"""`LinearProbe`: one Dense layer on the standardised features of an encoder it never
trains (the protocol that fits it is `ssl_zoo.evaluation.linear_probe`)."""

import keras
import numpy as np
from keras import ops

from ssl_zoo.models.base import PresetMixin, inference_features


@keras.saving.register_keras_serializable(package="ssl_zoo")
class LinearProbe(PresetMixin, keras.Model):
    """Linear classifier on the features of an encoder that it never trains.

    Only `classifier` learns: the probe's `trainable_weights` (what `fit` hands to
    the optimizer) are the classifier's alone, the encoder's features are under
    `stop_gradient`, and the encoder always runs in inference mode, so neither its
    weights nor its batch-norm statistics change when the probe trains. The encoder
    is used as given, not modified: its `trainable` flags (and its sub-layers') stay
    as the caller set them, so it can still be trained or saved and reloaded on its
    own; `probe.trainable = False` freezes the classifier only. Features are
    standardised with fixed statistics (non-trainable weights, set by
    `linear_probe` or `set_feature_statistics`; identity until then) before the
    Dense layer; that keeps the classifier linear in the features and makes its
    optimisation easy.

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
        self.num_classes = int(num_classes)
        self.classifier = keras.layers.Dense(self.num_classes, dtype="float32",
                                             name="classifier")
        self.feature_mean = None
        self.feature_scale = None

    # Keras hands `trainable_weights` to the gradient tape and the optimizer; listing
    # the classifier alone trains only it without touching the encoder's own flags
    # (setting `encoder.trainable = False` would change the caller's model).
    @property
    def trainable(self):
        return self._trainable

    @trainable.setter
    def trainable(self, value):
        # Keras' setter would cascade into the encoder, i.e. the caller's model.
        self._trainable = bool(value)
        classifier = getattr(self, "classifier", None)
        if classifier is not None:
            classifier.trainable = value

    @property
    def trainable_weights(self):
        return list(self.classifier.trainable_weights) if self.trainable else []

    @property
    def trainable_variables(self):
        return self.trainable_weights

    @property
    def non_trainable_weights(self):
        return self._all_but_trained(self.weights)

    @property
    def non_trainable_variables(self):
        return self._all_but_trained(self.variables)

    def _all_but_trained(self, variables):
        trained = {id(v) for v in self.trainable_weights}
        return [v for v in variables if id(v) not in trained]

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
        return ops.stop_gradient(inference_features(self.encoder, images))

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
