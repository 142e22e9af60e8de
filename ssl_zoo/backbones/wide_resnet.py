"""Wide ResNet WRN-28-k (Zagoruyko & Komodakis 2016) in the FixMatch flavour (LeakyReLU 0.1).

WRN-28-2 has ~1.47M parameters; it is the backbone of FixMatch and DASO.
"""

import keras
from keras import layers

_BN = dict(momentum=0.999, epsilon=1e-3)


def _wrn_block(x, filters, strides, name, activate_before_residual):
    pre = layers.BatchNormalization(name=f"{name}_bn1", **_BN)(x)
    pre = layers.LeakyReLU(0.1, name=f"{name}_act1")(pre)
    shortcut = pre if activate_before_residual else x
    y = layers.Conv2D(filters, 3, strides=strides, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv1")(pre)
    y = layers.BatchNormalization(name=f"{name}_bn2", **_BN)(y)
    y = layers.LeakyReLU(0.1, name=f"{name}_act2")(y)
    y = layers.Conv2D(filters, 3, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name=f"{name}_conv2")(y)
    if strides != 1 or x.shape[-1] != filters:
        shortcut = layers.Conv2D(filters, 1, strides=strides, use_bias=False,
                                 kernel_initializer="he_normal", name=f"{name}_proj")(pre)
    return layers.Add(name=f"{name}_add")([y, shortcut])


def wide_resnet(depth=28, widen=2, width=1.0, input_shape=(None, None, 3), name=None):
    """WRN-depth-widen with pre-activation blocks; returns pooled features.

    Example:
    >>> net = wide_resnet(28, 2, width=0.25)
    >>> net.output_shape
    (None, 32)
    """
    if (depth - 4) % 6:
        raise ValueError(f"WRN depth must be 6n+4, got {depth}.")
    n = (depth - 4) // 6
    chans = [max(1, int(round(c * width))) for c in (16, 16 * widen, 32 * widen, 64 * widen)]
    inputs = keras.Input(shape=input_shape, name="images")
    x = layers.Conv2D(chans[0], 3, padding="same", use_bias=False,
                      kernel_initializer="he_normal", name="stem_conv")(inputs)
    for s in range(3):
        for b in range(n):
            strides = 2 if (s > 0 and b == 0) else 1
            x = _wrn_block(x, chans[s + 1], strides, f"stage{s + 1}_block{b + 1}",
                           activate_before_residual=(s == 0 and b == 0))
    x = layers.BatchNormalization(name="final_bn", **_BN)(x)
    x = layers.LeakyReLU(0.1, name="final_act")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name=name or f"wrn{depth}_{widen}")


def wrn28_2(width=1.0, input_shape=(None, None, 3)):
    """WRN-28-2 (~1.47M params), the FixMatch/DASO backbone."""
    return wide_resnet(28, 2, width=width, input_shape=input_shape, name="wrn28_2")
