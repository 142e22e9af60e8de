"""CIFAR-style ResNets (3x3 stem, no max-pool): ResNet-32 (He et al. 2016) and ResNet-18/50.

Every constructor returns a functional `keras.Model` mapping images to pooled features;
`ZeroPadShortcut` is the parameter-free (option A) shortcut of `resnet32_cifar_a`.
"""

import functools

import keras
from keras import layers, ops

_BN = dict(momentum=0.9, epsilon=1e-5)

#: Shortcut kinds of the basic-block ResNets: "projection" (1x1 conv + BN where the
#: shape changes, He et al. 2016 option B) and "zero_pad" (parameter-free, option A).
SHORTCUTS = ("projection", "zero_pad")


@keras.saving.register_keras_serializable(package="ssl_zoo")
class ZeroPadShortcut(layers.Layer):
    """Parameter-free ResNet shortcut (He et al. 2016, option A): subsample, zero-pad C.

    Keeps every `strides`-th row and column starting at 0 (`x[:, ::s, ::s, :]`, so an
    odd side H gives ceil(H / s) rows, as a "same" strided convolution does), then pads
    the channels with zeros up to `out_channels`: (out - in) // 2 zero channels before
    the input's and the rest after (an even split when out - in is even, as in the
    CIFAR ResNets of the SLA authors' PyTorch code).

    Args:
        strides: spatial subsampling factor (1 keeps the spatial size).
        out_channels: channels of the output; at least the input's channels.

    Call args:
        x: (B, H, W, C_in); H and W may be unknown (None).

    Returns:
        (B, ceil(H / strides), ceil(W / strides), out_channels) in the compute dtype.

    Example:
    >>> x = ops.reshape(ops.arange(2 * 3 * 3 * 2, dtype="float32") + 1, (2, 3, 3, 2))
    >>> y = ZeroPadShortcut(strides=2, out_channels=4)(x)
    >>> tuple(y.shape)
    (2, 2, 2, 4)
    >>> ops.convert_to_numpy(y[0, 1, 1]).tolist()  # pixel (2, 2): channels 0 | 17, 18 | 0
    [0.0, 17.0, 18.0, 0.0]
    """

    def __init__(self, strides, out_channels, **kwargs):
        super().__init__(**kwargs)
        if int(strides) != strides or int(strides) < 1:
            raise ValueError(f"ZeroPadShortcut strides must be a positive integer, got "
                             f"{strides!r}.")
        if int(out_channels) != out_channels or int(out_channels) < 1:
            raise ValueError(f"ZeroPadShortcut out_channels must be a positive integer, "
                             f"got {out_channels!r}.")
        self.strides = int(strides)
        self.out_channels = int(out_channels)

    def _channel_padding(self, input_shape):
        channels = input_shape[-1]
        if channels is None:
            raise ValueError(f"ZeroPadShortcut needs a known channel count, got input "
                             f"shape {tuple(input_shape)}.")
        if channels > self.out_channels:
            raise ValueError(f"ZeroPadShortcut pads channels {channels} up to "
                             f"out_channels={self.out_channels}; it cannot drop channels.")
        before = (self.out_channels - channels) // 2
        return before, self.out_channels - channels - before

    def build(self, input_shape):
        self._channel_padding(input_shape)
        self.built = True

    def call(self, x):
        if self.strides > 1:
            x = x[:, ::self.strides, ::self.strides, :]
        before, after = self._channel_padding(x.shape)
        if before or after:
            x = ops.pad(x, [[0, 0], [0, 0], [0, 0], [before, after]])
        return x

    def compute_output_shape(self, input_shape):
        def subsample(n):
            return None if n is None else -(-n // self.strides)

        return (input_shape[0], subsample(input_shape[1]), subsample(input_shape[2]),
                self.out_channels)

    def get_config(self):
        return {**super().get_config(), "strides": self.strides,
                "out_channels": self.out_channels}


def _channels(c, width):
    return max(1, int(round(c * width)))


def _conv(filters, kernel, strides, name):
    return layers.Conv2D(
        filters, kernel, strides=strides, padding="same", use_bias=False,
        kernel_initializer="he_normal", name=name)


def _basic_block(x, filters, strides, name, shortcut="projection"):
    residual = x
    if shortcut == "zero_pad" and strides != 1:
        # PyTorch's padding=1 on every side: the conv path then samples input pixels
        # (2i, 2j), as the x[:, ::2, ::2] shortcut does. Keras' "same" would pad only
        # the bottom/right of an even side and centre the conv on (2i + 1, 2j + 1).
        y = layers.ZeroPadding2D(1, name=f"{name}_pad1")(x)
        y = layers.Conv2D(filters, 3, strides=strides, padding="valid", use_bias=False,
                          kernel_initializer="he_normal", name=f"{name}_conv1")(y)
    else:
        y = _conv(filters, 3, strides, f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1", **_BN)(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, 1, f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2", **_BN)(y)
    if strides != 1 or x.shape[-1] != filters:
        if shortcut == "zero_pad":
            residual = ZeroPadShortcut(strides, filters, name=f"{name}_shortcut")(x)
        else:
            residual = _conv(filters, 1, strides, f"{name}_proj")(x)
            residual = layers.BatchNormalization(name=f"{name}_proj_bn", **_BN)(residual)
    y = layers.Add(name=f"{name}_add")([y, residual])
    return layers.ReLU(name=f"{name}_out")(y)


def _bottleneck_block(x, filters, strides, name, expansion=4):
    residual = x
    y = _conv(filters, 1, 1, f"{name}_conv1")(x)
    y = layers.BatchNormalization(name=f"{name}_bn1", **_BN)(y)
    y = layers.ReLU(name=f"{name}_relu1")(y)
    y = _conv(filters, 3, strides, f"{name}_conv2")(y)
    y = layers.BatchNormalization(name=f"{name}_bn2", **_BN)(y)
    y = layers.ReLU(name=f"{name}_relu2")(y)
    y = _conv(filters * expansion, 1, 1, f"{name}_conv3")(y)
    y = layers.BatchNormalization(name=f"{name}_bn3", **_BN)(y)
    if strides != 1 or x.shape[-1] != filters * expansion:
        residual = _conv(filters * expansion, 1, strides, f"{name}_proj")(x)
        residual = layers.BatchNormalization(name=f"{name}_proj_bn", **_BN)(residual)
    y = layers.Add(name=f"{name}_add")([y, residual])
    return layers.ReLU(name=f"{name}_out")(y)


def _check_shortcut(shortcut):
    if shortcut not in SHORTCUTS:
        raise ValueError(f"Unknown ResNet shortcut {shortcut!r}; expected one of "
                         f"{', '.join(repr(s) for s in SHORTCUTS)}.")


def _basic(shortcut):
    _check_shortcut(shortcut)
    return functools.partial(_basic_block, shortcut=shortcut)


def _model_name(base, shortcut):
    return base if shortcut == "projection" else f"{base}_a"


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


def resnet32_cifar(width=1.0, input_shape=(None, None, 3), shortcut="projection"):
    """CIFAR ResNet-32: 3 stages of 5 basic blocks with 16/32/64 channels.

    At width 1.0 the backbone (without a classifier) has 463,504 trainable
    parameters with `shortcut="zero_pad"` (He et al. 2016's option A, the published
    0.46M: 464,154 with a 10-way Dense head, counting as PyTorch's `parameters()` does,
    i.e. batch-norm scale and offset but not the moving mean and variance) and
    466,256 with `shortcut="projection"` (2,752 more: the 1x1 conv + BN of the two
    down-sampling blocks). Keras' `count_params()` also counts the batch-norm moving
    mean and variance (2 per batch-norm channel): 465,776 and 468,720 respectively.

    Args:
        width: channel multiplier (1.0 = 16/32/64 channels).
        input_shape: (H, W, C); H and W may be None.
        shortcut: "projection" (1x1 conv + BN where the shape changes; the default,
            which the saved presets use) or "zero_pad" (parameter-free option A, see
            `ZeroPadShortcut`; the stride-2 3x3 convolutions then pad 1 pixel on
            every side, as PyTorch's `padding=1`).

    Returns:
        A `keras.Model` mapping (B, H, W, C) images to (B, 64 x width) features, named
        "resnet32_cifar" (projection) or "resnet32_cifar_a" (zero_pad).

    Raises:
        ValueError: for an unknown `shortcut`.

    Example:
    >>> net = resnet32_cifar(width=0.5)
    >>> net.output_shape
    (None, 32)
    >>> sum(int(ops.size(w)) for w in resnet32_cifar(shortcut="zero_pad").trainable_weights)
    463504
    """
    return _resnet((16, 32, 64), (5, 5, 5), _basic(shortcut), 16, width, input_shape,
                   _model_name("resnet32_cifar", shortcut))


def resnet32_cifar_a(width=1.0, input_shape=(None, None, 3)):
    """CIFAR ResNet-32 with option-A shortcuts, as in He et al. (2016) and the SLA code.

    Same as `resnet32_cifar(width, input_shape, shortcut="zero_pad")` (both name the
    model "resnet32_cifar_a"): 463,504 trainable parameters at width 1.0 (464,154 with a
    10-way Dense head, the published 0.46M counted as PyTorch counts `parameters()`);
    `count_params()`, which adds the batch-norm moving statistics, gives 465,776.

    Args:
        width: channel multiplier (1.0 = 16/32/64 channels).
        input_shape: (H, W, C); H and W may be None.

    Returns:
        A `keras.Model` mapping (B, H, W, C) images to (B, 64 x width) features.

    Example:
    >>> net = resnet32_cifar_a(width=0.25)
    >>> net.name, net.output_shape
    ('resnet32_cifar_a', (None, 16))
    >>> net.get_layer("stage2_block1_shortcut").count_params()
    0
    """
    return resnet32_cifar(width, input_shape, shortcut="zero_pad")


def resnet18_cifar(width=1.0, input_shape=(None, None, 3), shortcut="projection"):
    """CIFAR ResNet-18: 3x3 stem, no max-pool, 4 stages of 2 basic blocks (~11.2M params).

    Args:
        width: channel multiplier (1.0 = 64/128/256/512 channels).
        input_shape: (H, W, C); H and W may be None.
        shortcut: "projection" (default) or "zero_pad" (parameter-free option A, as
            in `resnet32_cifar`; the model is then named "resnet18_cifar_a").

    Returns:
        A `keras.Model` mapping images to (B, 512 x width) features.

    Raises:
        ValueError: for an unknown `shortcut`.

    Example:
    >>> resnet18_cifar(width=0.0625, shortcut="zero_pad").output_shape
    (None, 32)
    """
    return _resnet((64, 128, 256, 512), (2, 2, 2, 2), _basic(shortcut), 64, width,
                   input_shape, _model_name("resnet18_cifar", shortcut))


def resnet50_cifar(width=1.0, input_shape=(None, None, 3), shortcut="projection"):
    """CIFAR ResNet-50: 3x3 stem, no max-pool, bottleneck blocks 3/4/6/3 (~23.5M params).

    Args:
        width: channel multiplier (1.0 = 64/128/256/512 x 4 channels).
        input_shape: (H, W, C); H and W may be None.
        shortcut: only "projection": bottleneck blocks keep He et al.'s projection
            shortcuts (option B).

    Returns:
        A `keras.Model` mapping images to (B, 2048 x width) features.

    Raises:
        ValueError: for any other `shortcut`.

    Example:
    >>> resnet50_cifar(shortcut="zero_pad")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: Bottleneck ResNets (resnet50_cifar) only support shortcut='projection', ...
    """
    _check_shortcut(shortcut)
    if shortcut != "projection":
        # He et al. (2016) give bottleneck ResNets projection shortcuts (option B);
        # zero-padding a 64 -> 256 channel change would leave 3/4 of the sum empty.
        raise ValueError(f"Bottleneck ResNets (resnet50_cifar) only support "
                         f"shortcut='projection', got shortcut={shortcut!r}.")
    return _resnet((64, 128, 256, 512), (3, 4, 6, 3), _bottleneck_block, 64, width,
                   input_shape, "resnet50_cifar")
