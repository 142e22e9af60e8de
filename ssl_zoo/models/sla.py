"""Self-supervised label augmentation (Lee, Hwang & Shin, ICML 2020) and its baselines.

`SLAModel` learns the joint label (class, transformation) with one N*M-way head;
`DAModel` uses the transformations as label-preserving augmentation and `MTModel`
adds a separate transformation head (multi-task). All three expand each batch of B
images into B*M transformed images inside the model, so users keep plain
(image, label) pipelines.
"""

import keras
from keras import ops

from ssl_zoo.layers.heads import (AggregatedInference, JointLabelHead, SelfDistillHead,
                                  single_logits)
from ssl_zoo.layers.transforms import InputTransformations
from ssl_zoo.losses.self_distill import SelfDistillationLoss
from ssl_zoo.models.base import (BackboneModel, InferenceModeMixin,
                                 LinearClassifierMixin)
from ssl_zoo.models.registry import MethodSpec, register_method
from ssl_zoo.models.supervised import (CIFAR_RESNET_BACKBONE, CIFAR_RESNET_DATA,
                                       CIFAR_RESNET_RECIPE)

INFERENCE_MODES = ("single", "aggregated", "self_distill")


class TransformationModel(BackboneModel):
    """Base of the SLA family: owns the transformation set and the expanded forward."""

    def __init__(self, backbone=CIFAR_RESNET_BACKBONE, num_classes=10, transforms="rotation",
                 **kwargs):
        super().__init__(backbone=backbone, num_classes=num_classes, **kwargs)
        self.transformations = InputTransformations(transforms, name="transformations")
        self.num_transforms = self.transformations.num_transforms
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    def expanded_features(self, images, training):
        """Features (B*M, D) of the interleaved transformed batch."""
        return self.features(self.transformations(images), training)

    def first_view(self, tensor):
        """Rows b*M (the untransformed inputs) of an interleaved (B*M, ...) tensor."""
        m = self.num_transforms
        if m == 1:
            return tensor
        shape = ops.shape(tensor)
        return ops.reshape(tensor, (-1, m) + tuple(shape[1:]))[:, 0]

    def get_config(self):
        return {**super().get_config(), "transforms": self.transformations.transforms}


@keras.saving.register_keras_serializable(package="ssl_zoo")
class SLAModel(InferenceModeMixin, TransformationModel):
    """SLA: joint (class x transformation) classifier with aggregation and self-distillation.

    Training minimises CE over the N*M joint labels of the B*M transformed images
    (the whole expanded batch goes through the network, so batch norm sees it);
    with `self_distill=True` it adds CE(u(x), y) + T^2 KL(softmax(agg/T) ||
    softmax(u/T)) for a linear head u on the untransformed images' features, with
    the aggregated prediction as a stop-gradient teacher.

    Args:
        backbone: backbone name, `keras.Model` or config (see `BackboneModel`); by
            default the authors' option-A ResNet-32 ("resnet32_cifar_a").
        num_classes: N.
        transforms: 'rotation' (M=4), 'color_permutation' (M=6), 'rotation_color'
            (M=24) or a list of transformation names with the identity first.
        self_distill: add the self-distillation head u (SLA+SD).
        temperature: T of the distillation loss.
        inference: what `call`/`predict` return: 'single' (one pass, joint logits
            of (k, identity)), 'aggregated' (M passes, SLA+AG) or 'self_distill'
            (one pass, head u). Default: 'self_distill' if `self_distill` else
            'aggregated'.
        width, mean, std, sync_batchnorm: see `BackboneModel`.

    Call args:
        images: (B, H, W, 3) raw images on the 0..255 scale; H == W for rotations.
        inference: overrides the model's inference mode for this call.

    Returns:
        (B, N) float32 class logits.

    Example:
    >>> model = SLAModel("resnet32_cifar", num_classes=10, width=0.25)
    >>> model.compile(optimizer="sgd")
    >>> tuple(model(ops.zeros((2, 32, 32, 3)), inference="aggregated").shape)
    (2, 10)
    """

    def __init__(self, backbone=CIFAR_RESNET_BACKBONE, num_classes=10, transforms="rotation",
                 self_distill=True, temperature=1.0, inference=None, **kwargs):
        super().__init__(backbone=backbone, num_classes=num_classes,
                         transforms=transforms, **kwargs)
        self.self_distill = bool(self_distill)
        if inference is None:
            inference = "self_distill" if self.self_distill else "aggregated"
        self._inference = self._check_mode(inference)
        n, m = self.num_classes, self.num_transforms
        self.joint_head = JointLabelHead(n, m, name="joint_head")
        self.aggregate = AggregatedInference(n, m, name="aggregate")
        self.temperature = float(temperature)
        if self.self_distill:
            self.distill_head = SelfDistillHead(n, name="distill_head")
            self.distill_loss = SelfDistillationLoss(temperature=temperature)
        self.track_losses("joint_loss", *(["distill_loss"] if self.self_distill else []))
        self.joint_accuracy = keras.metrics.SparseCategoricalAccuracy(name="joint_accuracy")
        self.single_accuracy = keras.metrics.SparseCategoricalAccuracy(name="single_accuracy")
        self.aggregated_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="aggregated_accuracy")
        if self.self_distill:
            self.distill_accuracy = keras.metrics.SparseCategoricalAccuracy(
                name="self_distill_accuracy")

    def _check_mode(self, mode):
        if mode not in INFERENCE_MODES:
            raise ValueError(f"Unknown inference mode {mode!r}; choose one of "
                             f"{INFERENCE_MODES}.")
        if mode == "self_distill" and not self.self_distill:
            raise ValueError("inference='self_distill' needs a model built with "
                             "self_distill=True.")
        return mode

    def build_heads(self, feature_shape):
        self.build_layers(feature_shape, self.joint_head,
                          *([self.distill_head] if self.self_distill else []))

    def call(self, images, training=False, inference=None):
        images = self.check_images(images)
        mode = self.inference if inference is None else self._check_mode(inference)
        n, m = self.num_classes, self.num_transforms
        if mode == "aggregated":
            joint = self.joint_head(self.expanded_features(images, training))
            return self.aggregate(joint)
        features = self.features(images, training)
        if mode == "single":
            return single_logits(self.joint_head(features), n, m, interleaved=False)
        return self.distill_head(features)

    def forward_all(self, images, training=False):
        """One pass over the expanded batch; every head's output.

        Returns:
            dict with 'joint' (B*M, N*M), 'single' (B, N), 'aggregated' (B, N), and
            with self-distillation 'self_distill' (B, N) logits.
        """
        features = self.expanded_features(images, training)
        joint = self.joint_head(features)
        out = {"joint": joint,
               "single": single_logits(joint, self.num_classes, self.num_transforms),
               "aggregated": self.aggregate(joint)}
        if self.self_distill:
            out["self_distill"] = self.distill_head(self.first_view(features))
        return out

    def forward(self, batch, training):
        images, labels = batch
        out = self.forward_all(images, training)
        out["labels"] = labels
        out["joint_labels"] = self.transformations.joint_labels(labels)
        return out

    def compute_losses(self, batch, outputs):
        losses = {"joint_loss": self.ce(outputs["joint_labels"], outputs["joint"])}
        if self.self_distill:
            losses["distill_loss"] = self.distill_loss(
                (outputs["labels"], outputs["aggregated"]), outputs["self_distill"])
        return losses

    def update_metrics(self, batch, outputs, training):
        y = outputs["labels"]
        self.joint_accuracy.update_state(outputs["joint_labels"], outputs["joint"])
        self.single_accuracy.update_state(y, outputs["single"])
        self.aggregated_accuracy.update_state(y, outputs["aggregated"])
        if self.self_distill:
            self.distill_accuracy.update_state(y, outputs["self_distill"])

    def get_config(self):
        return {**super().get_config(), "self_distill": self.self_distill,
                "temperature": self.temperature, "inference": self.inference}


@keras.saving.register_keras_serializable(package="ssl_zoo")
class DAModel(LinearClassifierMixin, TransformationModel):
    """DA baseline: transformations as label-preserving augmentation.

    Trains an N-way head on all B*M transformed images with the original labels;
    inference is one pass on the untransformed image.

    Example:
    >>> model = DAModel("resnet32_cifar", num_classes=10, width=0.25)
    >>> tuple(model(ops.zeros((2, 32, 32, 3))).shape)
    (2, 10)
    """

    def __init__(self, backbone=CIFAR_RESNET_BACKBONE, num_classes=10, transforms="rotation",
                 **kwargs):
        super().__init__(backbone=backbone, num_classes=num_classes,
                         transforms=transforms, **kwargs)
        self.add_classifier()

    def forward(self, batch, training):
        if not training:  # inference is one pass on the untransformed images
            return super().forward(batch, training)
        images, labels = batch
        return {"logits": self.classify(self.expanded_features(images, True)),
                "labels": self.transformations.repeat_labels(labels)}


@keras.saving.register_keras_serializable(package="ssl_zoo")
class MTModel(LinearClassifierMixin, TransformationModel):
    """MT baseline: a class head and a separate transformation head, losses summed.

    L = CE(class head(t_j(x)), y) + CE(transform head(t_j(x)), j), averaged over the
    B*M transformed images; inference is one pass of the class head.

    Example:
    >>> model = MTModel("resnet32_cifar", num_classes=10, width=0.25)
    >>> tuple(model(ops.zeros((2, 32, 32, 3))).shape)
    (2, 10)
    """

    def __init__(self, backbone=CIFAR_RESNET_BACKBONE, num_classes=10, transforms="rotation",
                 **kwargs):
        super().__init__(backbone=backbone, num_classes=num_classes,
                         transforms=transforms, **kwargs)
        self.add_classifier()
        self.transform_head = keras.layers.Dense(self.num_transforms,
                                                 name="transform_head")
        self.transform_accuracy = keras.metrics.SparseCategoricalAccuracy(
            name="transform_accuracy")

    def build_heads(self, feature_shape):
        self.build_layers(feature_shape, self.classifier, self.transform_head)

    def forward(self, batch, training):
        images, labels = batch
        features = self.expanded_features(images, training)
        return {"logits": self.classify(features),
                "labels": self.transformations.repeat_labels(labels),
                "transform_logits": ops.cast(self.transform_head(features), "float32"),
                "transform_labels": self.transformations.transform_labels(
                    ops.shape(images)[0])}

    def compute_losses(self, batch, outputs):
        return {"ce": self.ce(outputs["labels"], outputs["logits"])
                + self.ce(outputs["transform_labels"], outputs["transform_logits"])}

    def update_metrics(self, batch, outputs, training):
        if training:
            self.accuracy.update_state(outputs["labels"], outputs["logits"])
        else:  # accuracy of the one-pass inference: the identity rows
            self.accuracy.update_state(batch[1], self.first_view(outputs["logits"]))
        self.transform_accuracy.update_state(outputs["transform_labels"],
                                             outputs["transform_logits"])


# The authors' recipe for SLA and for the baselines they compare it with.
_AUTHORS = {"recipe": CIFAR_RESNET_RECIPE, "data_kwargs": CIFAR_RESNET_DATA}
register_method("sla", MethodSpec(
    SLAModel, "SLA: joint class x transformation labels with aggregation and "
              "self-distillation (Lee et al. 2020).", **_AUTHORS))
register_method("sla_no_sd", MethodSpec(
    SLAModel, "SLA without the self-distillation head (single/aggregated inference).",
    defaults={"self_distill": False}, **_AUTHORS))
register_method("da", MethodSpec(
    DAModel, "DA baseline: transformations as label-preserving augmentation.", **_AUTHORS))
register_method("mt", MethodSpec(
    MTModel, "MT baseline: separate class and transformation heads, summed losses.",
    **_AUTHORS))
