"""Plain supervised classifier: the baseline every method is compared with."""

import keras

from ssl_zoo.models.base import BackboneModel, LinearClassifierMixin
from ssl_zoo.models.registry import MethodSpec, register_method

# The CIFAR ResNet recipe of the SLA authors' code (He et al.'s): SGD lr 0.1, momentum
# 0.9 without Nesterov, weight decay 1e-4 as PyTorch applies it (coupled L2: wd * w is
# added to the gradient before momentum), lr x0.1 at 50 % and 75 % of training
# (their 40k / 60k of 80k iterations), batch 128; the option-A ResNet-32 and a crop
# that pads with zeros. The supervised baseline and the whole SLA family use it, so
# their comparison differs in the method only.
CIFAR_RESNET_RECIPE = {"learning_rate": 0.1, "momentum": 0.9, "nesterov": False,
                       "weight_decay": 1e-4, "weight_decay_mode": "coupled",
                       "schedule": "step", "warmup_steps": 0}
CIFAR_RESNET_BACKBONE = "resnet32_cifar_a"
CIFAR_RESNET_DATA = {"pad_mode": "constant"}


@keras.saving.register_keras_serializable(package="ssl_zoo")
class SupervisedModel(LinearClassifierMixin, BackboneModel):
    """Backbone + linear classifier trained with cross-entropy.

    Args:
        backbone: see `BackboneModel`; by default the authors' option-A ResNet-32
            ("resnet32_cifar_a"), the network of the SLA comparison.
        num_classes, width, mean, std, sync_batchnorm: see `BackboneModel`.

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

    def __init__(self, backbone=CIFAR_RESNET_BACKBONE, num_classes=10, **kwargs):
        super().__init__(backbone=backbone, num_classes=num_classes, **kwargs)
        self.add_classifier()


register_method("supervised", MethodSpec(
    SupervisedModel, "Plain cross-entropy classifier (the baseline).",
    recipe=CIFAR_RESNET_RECIPE, data_kwargs=CIFAR_RESNET_DATA))
