"""Supervised contrastive learning (Khosla et al., NeurIPS 2020) and SimCLR (Chen et al.,
ICML 2020): a backbone + projection head trained with `SupConLoss` on multi-view batches."""

import keras
import tensorflow as tf
from keras import ops

from ssl_zoo.layers.projection import ProjectionHead
from ssl_zoo.losses.supcon import CONTRAST_MODES, SupConLoss
from ssl_zoo.models.base import BackboneModel
from ssl_zoo.models.registry import MethodSpec, register_method


@keras.saving.register_keras_serializable(package="ssl_zoo")
class SupConModel(BackboneModel):
    """Backbone + projection head trained with the supervised contrastive loss.

    Stage 1 of SupCon: `fit` on batches of V >= 2 augmented views per image (made by
    the data pipeline, e.g. `ssl_zoo.data.make_pipeline(data, 256, view="supcon",
    num_views=2)`). All B*V views go through the network as one batch (batch norm
    sees them together, as in the authors' code), are projected to unit vectors
    and contrasted with `SupConLoss`; under a `tf.distribute` strategy the negatives
    come from every replica. Stage 2 is a linear probe on the backbone features
    (`ssl_zoo.evaluation.linear_probe`). The projection head is used only in training.

    Args:
        backbone: backbone name, `keras.Model` or config (see `BackboneModel`).
        projection_dim: output width of the projection head (128 in the paper).
        hidden_dims: hidden widths of the projection head; None = one hidden layer
            as wide as the backbone features (the paper's head).
        temperature: tau of the loss.
        base_temperature: tau_base; the loss is multiplied by tau / tau_base.
        supervised: True for SupCon (labels needed); False for SimCLR (labels
            ignored, may be absent).
        num_classes: optional; when given, labels are checked to lie in
            [0, num_classes). Labels may be any integers otherwise.
        contrast_mode: "all" (every view is an anchor) or "one" (view 0 only).
        width, mean, std, sync_batchnorm: see `BackboneModel`.

    Call args:
        images: (B, H, W, 3) raw images on the 0..255 scale, or (B, V, H, W, 3)
            views.

    Returns:
        Backbone features, float32: (B, D) for (B, H, W, 3) input, (B, V, D) for
        views. The representation, not the projection (see `project`).

    Example:
    >>> model = SupConModel("resnet32_cifar", projection_dim=32, width=0.25)
    >>> model.compile(optimizer="sgd")
    >>> tuple(model(ops.zeros((2, 32, 32, 3))).shape)
    (2, 16)
    >>> views = ops.zeros((4, 2, 32, 32, 3))      # (batch, views, H, W, 3)
    >>> history = model.fit(views, ops.array([0, 1, 0, 1]), epochs=1, verbose=0)
    """

    has_classifier = False  # an encoder: evaluated by linear probe, exports features

    def __init__(self, backbone="resnet32_cifar", projection_dim=128, hidden_dims=None,
                 temperature=0.1, base_temperature=0.07, supervised=True,
                 num_classes=None, contrast_mode="all", **kwargs):
        super().__init__(backbone=backbone, num_classes=num_classes, **kwargs)
        self.supervised = bool(supervised)
        self.contrast_mode = contrast_mode
        if contrast_mode not in CONTRAST_MODES:
            raise ValueError(f"contrast_mode must be one of {CONTRAST_MODES}, got "
                             f"{contrast_mode!r}.")
        self.projection = ProjectionHead(projection_dim, hidden_dims, name="projection")
        self.projection_dim = self.projection.output_dim
        self.hidden_dims = self.projection.hidden_dims
        self.contrastive_loss = SupConLoss(temperature, base_temperature,
                                           contrast_mode=contrast_mode,
                                           supervised=supervised)
        self.temperature = self.contrastive_loss.temperature
        self.base_temperature = self.contrastive_loss.base_temperature

    # ----------------------------------------------------------------- building
    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if len(input_shape) == 5:
            input_shape = (None,) + input_shape[2:]
        super().build(input_shape)

    def build_heads(self, feature_shape):
        self.build_layers(feature_shape, self.projection)

    # ------------------------------------------------------------------ checks
    def check_views(self, views):
        """Checks a multi-view batch (B, V, H, W, C) with V >= 2; returns it as a tensor."""
        name = type(self).__name__
        if isinstance(views, (dict, list, tuple)):
            raise ValueError(f"{name} expects one tensor of views (batch, views, height, "
                             f"width, channels), got a {type(views).__name__}; stack "
                             f"the views on axis 1.")
        views = ops.convert_to_tensor(views)
        if views.shape.rank is None:   # a relaxed retrace: check the rank in the graph
            with tf.control_dependencies([tf.debugging.assert_rank(
                    views, 5, message=f"{name} expects views (batch, views, height, "
                                      f"width, channels) with views >= 2")]):
                views = tf.identity(views)
            views.set_shape((None,) * 5)
        shape = tuple(views.shape)
        if len(shape) == 4:
            raise ValueError(
                f"{name} trains on at least two augmented views of each image: feed "
                f"images of shape (batch, views, height, width, channels) with views "
                f">= 2, e.g. from ssl_zoo.data.make_pipeline(data, batch_size, "
                f"view='supcon', num_views=2); got single images of shape {shape}.")
        if len(shape) != 5:
            raise ValueError(f"{name} expects views of rank 5 (batch, views, height, "
                             f"width, channels), got shape {shape}.")
        if shape[1] is not None and shape[1] < 2:
            raise ValueError(f"{name} needs at least two views per image (axis 1), got "
                             f"shape {shape}.")
        self.check_images(ops.reshape(views, (-1,) + tuple(ops.shape(views)[2:])))
        return views

    @property
    def checks_label_range(self):
        return self.supervised and self.num_classes is not None

    def check_labels(self, labels, images=None):
        """Labels (B,) int32; range-checked only when `num_classes` is set."""
        if labels is None:
            raise ValueError(f"{type(self).__name__}(supervised=True) needs labels: feed "
                             f"(views, labels) pairs, or use SimCLRModel / "
                             f"supervised=False without labels.")
        return super().check_labels(labels, images)

    def unpack(self, data, training=True):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} does not support sample weights.")
        x = self.check_views(x)
        return x, (self.check_labels(y, x) if self.supervised else None)

    # ----------------------------------------------------------------- forward
    def _flat_views(self, views):
        shape = ops.shape(views)
        return ops.reshape(views, (-1,) + tuple(shape[2:])), shape[0], shape[1]

    def call(self, images, training=False):
        if not isinstance(images, (dict, list, tuple)) and len(ops.shape(images)) == 5:
            images = self.check_views(images)
            flat, batch, num_views = self._flat_views(images)
            features = ops.cast(self.features(flat, training), "float32")
            return ops.reshape(features, (batch, num_views, self.feature_dim))
        images = self.check_images(images)
        return ops.cast(self.features(images, training), "float32")

    def project(self, views, training=False):
        """Unit-norm projections (B, V, projection_dim), float32, of views (B, V, H, W, C).

        Example:
        >>> model = SupConModel("resnet32_cifar", projection_dim=8, width=0.25)
        >>> tuple(model.project(ops.zeros((2, 2, 16, 16, 3))).shape)
        (2, 2, 8)
        """
        views = self.check_views(views)
        if not self.built:
            self.build(tuple(views.shape))
        flat, batch, num_views = self._flat_views(views)
        z = self.projection(self.features(flat, training))
        return ops.reshape(z, (batch, num_views, self.projection_dim))

    # ---------------------------------------------------------------- training
    def forward(self, batch, training):
        views, _ = batch
        return {"projections": self.project(views, training=training)}

    def compute_losses(self, batch, outputs):
        return {"supcon": self.contrastive_loss(batch[1], outputs["projections"])}

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {**super().get_config(), "projection_dim": self.projection_dim,
                "hidden_dims": None if self.hidden_dims is None else list(self.hidden_dims),
                "temperature": self.temperature, "base_temperature": self.base_temperature,
                "supervised": self.supervised, "contrast_mode": self.contrast_mode}


@keras.saving.register_keras_serializable(package="ssl_zoo")
class SimCLRModel(SupConModel):
    """SimCLR: `SupConModel(supervised=False)`, the NT-Xent loss over views.

    Each view's only positives are the other views of the same image; labels in the
    data are ignored (feed views alone or (views, labels) pairs). Arguments as in
    `SupConModel`, without `supervised`.

    Example:
    >>> model = SimCLRModel("resnet32_cifar", projection_dim=32, width=0.25)
    >>> model.compile(optimizer="sgd")
    >>> history = model.fit(ops.zeros((4, 2, 16, 16, 3)), epochs=1, verbose=0)
    """

    def __init__(self, backbone="resnet32_cifar", projection_dim=128, hidden_dims=None,
                 temperature=0.1, base_temperature=0.07, **kwargs):
        if kwargs.pop("supervised", False):
            raise ValueError("SimCLRModel is unsupervised; use SupConModel for "
                             "supervised=True.")
        super().__init__(backbone=backbone, projection_dim=projection_dim,
                         hidden_dims=hidden_dims, temperature=temperature,
                         base_temperature=base_temperature, supervised=False, **kwargs)

    def get_config(self):
        config = super().get_config()
        config.pop("supervised")
        return config


# The optimizer of the SupCon authors' code (main_supcon.py): SGD momentum 0.9 without
# Nesterov, weight decay 1e-4 as PyTorch applies it (coupled L2), cosine decay; its
# default lr 0.05 is for its default batch of 256 (the paper's 1024-image runs use 0.5
# with a 10-epoch warm-up, which the code turns on above a batch of 256: set
# `warmup_steps` and `learning_rate` for large batches).
SUPCON_RECIPE = {"learning_rate": 0.05, "momentum": 0.9, "nesterov": False,
                 "weight_decay": 1e-4, "weight_decay_mode": "coupled",
                 "schedule": "cosine", "warmup_steps": 0}

register_method("supcon", MethodSpec(
    SupConModel, "SupCon: supervised contrastive loss on two views, exact across "
                 "replicas; evaluated by linear probe (Khosla et al. 2020).",
    view="supcon", num_views=2, evaluation="linear_probe", recipe=SUPCON_RECIPE,
    test_kwargs={"projection_dim": 8}))
register_method("simclr", MethodSpec(
    SimCLRModel, "SimCLR / NT-Xent: SupCon without labels; evaluated by linear probe.",
    view="supcon", num_views=2, evaluation="linear_probe", recipe=SUPCON_RECIPE,
    test_kwargs={"projection_dim": 8}))
