"""Input normalisation inside the model, so exported models take raw 0..255 images."""

import keras
from keras import ops

# Per-channel statistics of the CIFAR-10 training images on the 0..255 scale.
CIFAR10_MEAN = (125.307, 122.950, 113.865)
CIFAR10_STD = (62.993, 62.089, 66.705)


@keras.saving.register_keras_serializable(package="ssl_zoo")
class ImageNormalization(keras.layers.Layer):
    """Casts images (uint8 or float, 0..255 scale) and standardises each channel.

    Args:
        mean: per-channel mean on the 0..255 scale (length C).
        std: per-channel standard deviation on the 0..255 scale (length C).

    Call args:
        images: (..., H, W, C) tensor; C must equal `len(mean)`.

    Returns:
        (images - mean) / std in the layer's compute dtype.

    Example:
    >>> layer = ImageNormalization(mean=(127.5,) * 3, std=(127.5,) * 3)
    >>> float(layer(ops.full((1, 2, 2, 3), 255.0))[0, 0, 0, 0])
    1.0
    """

    # build() only checks the input shape: a model may mark it built (see
    # BackboneModel._maybe_symbolic_build).
    builds_no_weights = True

    def __init__(self, mean=CIFAR10_MEAN, std=CIFAR10_STD, **kwargs):
        super().__init__(**kwargs)
        self.mean = tuple(float(m) for m in mean)
        self.std = tuple(float(s) for s in std)
        if len(self.mean) != len(self.std):
            raise ValueError(f"mean and std must have the same length, got "
                             f"{len(self.mean)} and {len(self.std)}.")
        if any(s <= 0 for s in self.std):
            raise ValueError(f"std must be positive, got {self.std}.")

    def build(self, input_shape):
        channels = input_shape[-1]
        if channels is not None and channels != len(self.mean):
            raise ValueError(
                f"ImageNormalization expects {len(self.mean)} channels, got images of "
                f"shape {tuple(input_shape)}.")
        self.built = True

    def call(self, images):
        x = ops.cast(images, self.compute_dtype)
        mean = ops.cast(ops.convert_to_tensor(self.mean), self.compute_dtype)
        inv_std = ops.cast(1.0 / ops.convert_to_tensor(self.std), self.compute_dtype)
        return (x - mean) * inv_std

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "mean": self.mean, "std": self.std}
