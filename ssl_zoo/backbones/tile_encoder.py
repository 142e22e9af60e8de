"""A small VGG/AlexNet-style encoder for puzzle tiles (Jigsaw++) and small images."""

import keras
from keras import layers


def vgg_tile(width=1.0, input_shape=(None, None, 3)):
    """Four conv stages (64/128/256/512 x width), BN+ReLU, max-pool between stages.

    Example:
    >>> net = vgg_tile(width=0.125)
    >>> net.output_shape
    (None, 64)
    """
    inputs = keras.Input(shape=input_shape, name="images")
    x = inputs
    for s, c in enumerate((64, 128, 256, 512)):
        c = max(1, int(round(c * width)))
        for k in range(2 if s > 0 else 1):
            x = layers.Conv2D(c, 3, padding="same", use_bias=False,
                              kernel_initializer="he_normal",
                              name=f"stage{s + 1}_conv{k + 1}")(x)
            x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5,
                                          name=f"stage{s + 1}_bn{k + 1}")(x)
            x = layers.ReLU(name=f"stage{s + 1}_relu{k + 1}")(x)
        if s < 3:
            x = layers.MaxPooling2D(2, padding="same", name=f"stage{s + 1}_pool")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return keras.Model(inputs, x, name="vgg_tile")
