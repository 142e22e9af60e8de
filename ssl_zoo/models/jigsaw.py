"""Jigsaw++ (Noroozi et al., CVPR 2018): one tile encoder shared over the 9 tiles of a
puzzle, their features concatenated, a fully connected classifier predicting which
permutation shuffled them. The encoder is what transfers (linear probe, kNN, cluster
classification into another network)."""

import keras
from keras import ops

from ssl_zoo.data.jigsaw import (check_permutations, hamming_permutations, make_puzzle_view,
                                 standardize_tiles)
from ssl_zoo.models.base import BackboneModel
from ssl_zoo.models.registry import MethodSpec, register_method

# The Jigsaw / Jigsaw++ authors' Caffe solver: SGD lr 0.01, momentum 0.9, L2 5e-4.
JIGSAW_RECIPE = {"learning_rate": 0.01, "momentum": 0.9, "nesterov": False,
                 "weight_decay": 5e-4, "weight_decay_mode": "coupled",
                 "schedule": "cosine"}


@keras.saving.register_keras_serializable(package="ssl_zoo")
class JigsawModel(BackboneModel):
    """Jigsaw++ pretext model: shared tile encoder -> concat -> MLP -> permutation logits.

    The training stream yields puzzles made by the model's own view
    (`model.make_view(...)`, `ssl_zoo.data.jigsaw.jigsaw_puzzles` with this model's
    permutation set): tiles (B, n, t, t, 3) and the index of the permutation that
    shuffled them. The permutation set is part of the model's config, so labels keep
    their meaning after save/load and export.

    Each tile (and, for `embed`, each whole image) is standardised on its own inside
    the model (per-channel mean, whole-tile std, guarded against zero variance), the
    normalisation the puzzle generator applies; so the encoder sees the same
    statistics whether it is fed puzzle tiles or whole raw 0..255 images.

    Args:
        backbone: the tile encoder: a name from `ssl_zoo.backbones.list_backbones()`
            (default "vgg_tile", a small VGG/AlexNet-style net), a `keras.Model`
            mapping images to (B, D) features, or its config.
        num_permutations: P, the number of classes of the pretext task (the authors
            use 701-1000; ignored when `permutations` is given).
        grid: tiles per side (3: 9 tiles).
        permutations: an explicit (P, grid*grid) permutation set; default: the greedy
            max-min Hamming set `hamming_permutations(num_permutations, grid,
            criterion=permutation_criterion, seed=permutation_seed)`.
        permutation_seed, permutation_criterion: how the default set is drawn.
        hidden_units: widths of the hidden fully connected layers after the concat.
        dropout: dropout rate before each hidden layer (the authors' fc layers use
            0.5).
        puzzle: default options of the model's puzzle view (`jigsaw_puzzles`
            keyword arguments: cell_size, tile_size, crop_scale, grayscale_prob,
            min_occluded, max_occluded, ...).
        image_size: (H, W) of the images the puzzles are cut from; set by
            `make_view` and used as the export size.
        width, sync_batchnorm: see `BackboneModel`.

    Call args:
        tiles: (B, n, t, t, 3) puzzle tiles.

    Returns:
        (B, P) float32 permutation logits.

    Example:
    >>> model = JigsawModel("vgg_tile", num_permutations=10, width=0.0625,
    ...                     hidden_units=(16,))
    >>> tuple(model(ops.zeros((2, 9, 8, 8, 3))).shape)
    (2, 10)
    >>> tuple(model.embed(ops.zeros((2, 24, 24, 3))).shape)   # whole images
    (2, 32)
    >>> model.permutations.shape
    (10, 9)
    """

    has_classifier = False  # permutation logits are not classes: exports features

    def __init__(self, backbone="vgg_tile", num_permutations=100, grid=3,
                 permutations=None, permutation_seed=0, permutation_criterion="max_min",
                 hidden_units=(1024,), dropout=0.0, puzzle=None, image_size=None,
                 **kwargs):
        kwargs.pop("num_classes", None)  # the classes are the permutations
        grid = int(grid)
        if permutations is None:
            perm_set = hamming_permutations(int(num_permutations), grid=grid,
                                            criterion=permutation_criterion,
                                            seed=int(permutation_seed))
            permutations = perm_set.permutations
        permutations = check_permutations(permutations, grid)  # the generator's check
        n = grid * grid
        super().__init__(backbone=backbone, num_classes=len(permutations), **kwargs)
        self.grid = grid
        self.num_tiles = n
        self.permutations = permutations
        self.num_permutations = len(permutations)
        self.permutation_seed = int(permutation_seed)
        self.permutation_criterion = permutation_criterion
        self.hidden_units = tuple(int(u) for u in (hidden_units or ()))
        self.dropout = float(dropout)
        self.puzzle = dict(puzzle or {})
        self.image_size = None if image_size is None else tuple(int(d) for d in image_size)
        self.hidden = [keras.layers.Dense(units, activation="relu", name=f"fc{i + 1}")
                       for i, units in enumerate(self.hidden_units)]
        self.dropouts = [keras.layers.Dropout(self.dropout, name=f"dropout{i + 1}")
                         for i in range(len(self.hidden_units))]
        self.classifier = keras.layers.Dense(self.num_permutations, name="classifier")
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    # ------------------------------------------------------------------- data
    def make_view(self, image_shape=None, **options):
        """The training view: f(images, seed) -> (tiles, permutation labels).

        Args:
            image_shape: (H, W) of the images puzzles are cut from (recorded as the
                model's `image_size`, the export size).
            **options: `jigsaw_puzzles` options over the model's `puzzle` defaults.

        Example:
        >>> model = JigsawModel(num_permutations=4, width=0.0625, hidden_units=())
        >>> tiles, labels = model.make_view((24, 24))(ops.zeros((2, 24, 24, 3)), seed=0)
        >>> tuple(tiles.shape), model.image_size
        ((2, 9, 7, 7, 3), (24, 24))
        """
        if image_shape is not None:
            self.image_size = tuple(int(d) for d in tuple(image_shape)[:2])
        return make_puzzle_view(self.permutations, grid=self.grid,
                                **{**self.puzzle, **options})

    def serving_image_size(self):
        """(H, W) whole images are resized to on export: the puzzles' source size."""
        return self.image_size

    # ----------------------------------------------------------------- building
    def default_input_shape(self):
        return (None, self.num_tiles, None, None, 3)

    def check_image_shape(self, shape):
        shape = tuple(shape)
        if len(shape) != 5 or (shape[1] is not None and shape[1] != self.num_tiles) \
                or (shape[-1] is not None and shape[-1] != 3):
            raise ValueError(
                f"JigsawModel expects puzzles of shape (batch, {self.num_tiles}, tile, "
                f"tile, 3) (made by model.make_view()); got shape {shape}. For "
                f"features of whole images use model.embed(images).")

    def build(self, input_shape):
        if isinstance(input_shape, dict):
            input_shape = input_shape["images"]
        input_shape = tuple(None if d is None else int(d) for d in input_shape)
        self.check_image_shape(input_shape)
        shape = (None, self.num_tiles * self.feature_dim)
        for dense in self.hidden:
            dense.build(shape)
            shape = (None, dense.units)
        self.classifier.build(shape)
        self.built = True

    # ----------------------------------------------------------------- forward
    def normalize(self, images):
        """Each image (or tile) standardised on its own, in float32 (0..255 variances
        overflow float16), then cast to the compute dtype."""
        x = standardize_tiles(ops.cast(images, "float32"))
        return ops.cast(x, self.compute_dtype)

    def puzzle_logits(self, tiles, training=False):
        """(B, P) float32 logits of (B, n, t, t, 3) tiles."""
        shape = ops.shape(tiles)
        flat = ops.reshape(tiles, (-1, shape[2], shape[3], shape[4]))
        features = self.features(flat, training=training)
        x = ops.reshape(features, (-1, self.num_tiles * self.feature_dim))
        for dropout, dense in zip(self.dropouts, self.hidden):
            x = dense(dropout(x, training=training))
        return ops.cast(self.classifier(x), "float32")

    def call(self, tiles, training=False):
        return self.puzzle_logits(self.check_images(tiles), training)

    def forward(self, batch, training):
        tiles, labels = batch
        return {"logits": self.puzzle_logits(tiles, training), "labels": labels}

    def compute_losses(self, batch, outputs):
        return {"ce": self.ce(outputs["labels"], outputs["logits"])}

    def update_metrics(self, batch, outputs, training):
        self.accuracy.update_state(outputs["labels"], outputs["logits"])

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        config.pop("num_classes", None)
        config.update({
            "num_permutations": self.num_permutations,
            "grid": self.grid,
            "permutations": self.permutations.tolist(),
            "permutation_seed": self.permutation_seed,
            "permutation_criterion": self.permutation_criterion,
            "hidden_units": list(self.hidden_units),
            "dropout": self.dropout,
            "puzzle": self.puzzle,
            "image_size": None if self.image_size is None else list(self.image_size),
        })
        return config


register_method("jigsaw", MethodSpec(
    JigsawModel, "Jigsaw++: predict which of P far-apart permutations shuffled 9 tiles, "
                 "0-2 of them from another image (Noroozi et al. 2018); evaluated by "
                 "linear probe.",
    view="model", evaluation="linear_probe", class_labels=False, recipe=JIGSAW_RECIPE,
    test_kwargs={"num_permutations": 6, "hidden_units": (8,)}))
