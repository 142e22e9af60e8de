"""Plain supervised classifier: the baseline every method is compared with."""

import keras

from ssl_zoo.models.base import BackboneModel, LinearClassifierMixin
from ssl_zoo.models.registry import MethodSpec, register_method


@keras.saving.register_keras_serializable(package="ssl_zoo")
class SupervisedModel(LinearClassifierMixin, BackboneModel):
    """Backbone + linear classifier trained with cross-entropy.

    Args:
        backbone, num_classes, width, mean, std, sync_batchnorm: see `BackboneModel`.

    Call args:
        images: (B, H, W, 3) raw images on the 0..255 scale (uint8 or float).

    Returns:
        (B, num_classes) float32 logits.

    Example:
    >>> from keras import ops
    >>> model = SupervisedModel("resnet32_cifar", num_classes=10, width=0.25)
    >>> model.compile(optimizer="sgd")
    >>> tuple(model(ops.zeros((2, 32, 32, 3))).shape)
    (2, 10)
    """

    def __init__(self, backbone="resnet32_cifar", num_classes=10, **kwargs):
        super().__init__(backbone=backbone, num_classes=num_classes, **kwargs)
        self.add_classifier()


register_method("supervised", MethodSpec(
    SupervisedModel, "Plain cross-entropy classifier (the baseline)."))
