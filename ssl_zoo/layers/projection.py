"""Projection head of contrastive methods (SupCon, SimCLR): an MLP whose L2-normalised
float32 output is what the contrastive loss compares."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ssl_zoo")
class ProjectionHead(keras.layers.Layer):
    """MLP projection: [Dense -> ReLU] per hidden width, Dense, L2-normalise.

    The head of Khosla et al. (2020) and Chen et al. (2020) is one hidden layer as
    wide as the encoder output, then a 128-d output: `hidden_dims=None` (the
    default) builds exactly that; `hidden_dims=()` is a linear projection. Hidden
    layers run in the layer's dtype policy (float16 under `mixed_float16`); the
    output is cast to float32 before the normalisation.

    Args:
        output_dim: width of the projection (128 in the paper).
        hidden_dims: widths of the hidden layers; None = one layer as wide as the
            input features.

    Call args:
        features: (..., D) encoder features.

    Returns:
        (..., output_dim) float32 projections of unit L2 norm.

    Example:
    >>> head = ProjectionHead(output_dim=4, hidden_dims=(8,))
    >>> z = head(ops.ones((2, 16)))
    >>> tuple(z.shape), round(float(ops.sum(z[0] ** 2)), 4)
    ((2, 4), 1.0)
    """

    def __init__(self, output_dim=128, hidden_dims=None, **kwargs):
        super().__init__(**kwargs)
        if isinstance(output_dim, bool) or int(output_dim) != output_dim \
                or int(output_dim) < 1:
            raise ValueError(f"output_dim must be a positive integer, got {output_dim!r}.")
        if hidden_dims is not None:
            hidden_dims = tuple(hidden_dims)
            if any(isinstance(d, bool) or int(d) != d or int(d) < 1 for d in hidden_dims):
                raise ValueError(f"hidden_dims must be positive integers, got "
                                 f"{hidden_dims!r}.")
            hidden_dims = tuple(int(d) for d in hidden_dims)
        self.output_dim = int(output_dim)
        self.hidden_dims = hidden_dims
        self.hidden = []
        if hidden_dims is not None:
            self._make_hidden(hidden_dims)
        self.output_dense = keras.layers.Dense(self.output_dim, dtype=self.dtype_policy,
                                               name="output_dense")

    def _make_hidden(self, widths):
        self.hidden = [keras.layers.Dense(w, activation="relu", dtype=self.dtype_policy,
                                          name=f"hidden_{k}")
                       for k, w in enumerate(widths)]
        for layer in self.hidden:   # created in build(): follow a frozen parent
            layer.trainable = self.trainable

    def build(self, input_shape):
        input_shape = tuple(input_shape)
        if input_shape[-1] is None:
            raise ValueError(f"ProjectionHead needs a known feature dimension, got input "
                             f"shape {input_shape}.")
        if self.hidden_dims is None and not self.hidden:
            self._make_hidden((int(input_shape[-1]),))
        shape = input_shape
        for layer in self.hidden:
            if not layer.built:
                layer.build(shape)
            shape = shape[:-1] + (layer.units,)
        if not self.output_dense.built:
            self.output_dense.build(shape)
        self.built = True

    def call(self, features):
        x = features
        for layer in self.hidden:
            x = layer(x)
        z = ops.cast(self.output_dense(x), "float32")
        return ops.normalize(z, axis=-1, order=2, epsilon=1e-6)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-1]) + (self.output_dim,)

    def compute_output_spec(self, features):
        shape = self.compute_output_shape(features.shape)
        return keras.KerasTensor(shape, dtype="float32")

    def get_config(self):
        return {**super().get_config(), "output_dim": self.output_dim,
                "hidden_dims": None if self.hidden_dims is None else list(self.hidden_dims)}
