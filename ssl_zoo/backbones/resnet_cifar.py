"""CIFAR-style ResNets (3x3 stem, no max-pool): ResNet-32 (He et al. 2016) and ResNet-18/50.

Every constructor returns a functional `keras.Model` mapping images to pooled features.
"""

import keras
from keras import layers

_BN = dict(momentum=0.9, epsilon=1e-5)


def _channels(c, width):
    return max(1, int(round(c * width)))


def _conv(filters, kernel, strides, name):
    return layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=name)


def _basic_block(x, filters, strides, name):
    shortcut = x
    y = _conv(filters, 3, strides, f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1", **_BN)(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, 1, f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2", **_BN)(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = _conv(filters, 1, strides, f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn", **_BN)(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def _bottleneck_block(x, filters, strides, name, expansion=4):
    shortcut = x
    y = _conv(filters, 1, 1, f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1", **_BN)(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, strides, f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2", **_BN)(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv(filters * expansion, 1, 1, f"{name}_conv3")(y)
    y = layers.BatchNormalization(name=f"{name}_bn3", **_BN)(y)
    if strides != 1 or x.shape[-1] != filters * expansion:
        shortcut = _conv(filters * expansion, 1, strides, f"{name}_proj")(x)
        shortcut = layers.BatchNormalization(name=f"{name}_proj_bn", **_BN)(shortcut)
    y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.ReLU(name=f"{name}_out")(y)


def _resnet(stage_filters, blocks_per_stage, block, stem_filters, width,
            input_shape, name):
    inputs = keras.Input(shape=input_shape, name="images")
    x = _conv(_channels(stem_filters, width), 3, 1, "stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn", **_BN)(x)
    x = layers.ReLU(name="stem_relu")(x)
    for s, (filters, n) in enumerate(zip(stage_filters, blocks_per_stage)):
        for b in range(n):
            strides = 2 if (s > 0 and b == 0) else 1
            x = block(x, _channels(filters, width), strides, f"stage{s + 1}_block{b + 1}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name=name)


def resnet32_cifar(width=1.0, input_shape=(None, None, 3)):
    """CIFAR ResNet-32: 3 stages of 5 basic blocks with 16/32/64 channels (~0.46M params).

    Example:
    >>> net = resnet32_cifar(width=0.5)
    >>> net.output_shape
    (None, 32)
    """
    return _resnet((16, 32, 64), (5, 5, 5), _basic_block, 16, width,
                   input_shape, "resnet32_cifar")


def resnet18_cifar(width=1.0, input_shape=(None, None, 3)):
    """CIFAR ResNet-18: 3x3 stem, no max-pool, 4 stages of 2 basic blocks (~11.2M params)."""
    return _resnet((64, 128, 256, 512), (2, 2, 2, 2), _basic_block, 64, width,
                   input_shape, "resnet18_cifar")


def resnet50_cifar(width=1.0, input_shape=(None, None, 3)):
    """CIFAR ResNet-50: 3x3 stem, no max-pool, bottleneck blocks 3/4/6/3 (~23.5M params)."""
    return _resnet((64, 128, 256, 512), (3, 4, 6, 3), _bottleneck_block, 64, width,
                   input_shape, "resnet50_cifar")
