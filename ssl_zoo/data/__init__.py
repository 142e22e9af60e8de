"""Data: sources (digits, tfds, folders, zips, numpy), registered ops and views, streams.

Example:
>>> from ssl_zoo.data import load_arrays, make_pipeline
>>> train = load_arrays("digits", "train")
>>> ds = make_pipeline(train, 64, view="weak", seed=0)
"""

from ssl_zoo.data.cache import default_cache_dir
from ssl_zoo.data.dataset import ArrayDataset, DatasetInfo
from ssl_zoo.data.errors import (
    CorruptArchiveError,
    CorruptImageError,
    DataError,
    DatasetNotFoundError,
    EmptyClassError,
    EmptyDatasetError,
    ImageShapeError,
    LabelError,
    LayoutError,
    MissingPathError,
    SplitNotFoundError,
    UnknownDatasetError,
)
from ssl_zoo.data.loaders import list_datasets, load_arrays, load_dataset
from ssl_zoo.data.sources.digits import DIGITS_IMAGE_SIZE, EMBEDDED_NAME
from ssl_zoo.data.sources.files import IMAGE_EXTENSIONS
from ssl_zoo.data.sources.tfds import TFDS_NAMES
from ssl_zoo.data.ops import (
    color_jitter,
    cutout,
    get_op,
    list_ops,
    normalize,
    rand_augment,
    random_flip,
    random_grayscale,
    random_pad_crop,
    random_resized_crop,
    register_op,
    to_float,
)
from ssl_zoo.data.pipelines import (
    make_pipeline,
    make_semi_supervised_pipeline,
    make_unlabeled_pipeline,
)
from ssl_zoo.data.jigsaw import (
    PermutationSet,
    hamming_permutations,
    jigsaw_puzzles,
    make_puzzle_view,
    reassemble,
    standardize_tiles,
)
from ssl_zoo.data.splits import (
    labeled_unlabeled_split,
    long_tailed_counts,
    long_tailed_indices,
    long_tailed_semi_supervised_split,
)
from ssl_zoo.data.views import (
    STRONG_FLAVOUR_FACTOR,
    STRONG_FLAVOURS,
    VIEWS,
    get_view,
    list_views,
    register_view,
    strong_daso_view,
    strong_fixmatch_view,
    strong_usb_view,
    strong_view,
    supcon_view,
    weak_view,
)

__all__ = [
    "DIGITS_IMAGE_SIZE", "EMBEDDED_NAME", "IMAGE_EXTENSIONS", "TFDS_NAMES", "VIEWS",
    "STRONG_FLAVOURS", "STRONG_FLAVOUR_FACTOR",
    "ArrayDataset", "DatasetInfo",
    "DataError", "UnknownDatasetError", "DatasetNotFoundError", "MissingPathError",
    "EmptyDatasetError", "EmptyClassError", "LayoutError", "SplitNotFoundError",
    "CorruptArchiveError", "CorruptImageError", "LabelError", "ImageShapeError",
    "default_cache_dir", "list_datasets", "load_arrays", "load_dataset",
    "register_op", "get_op", "list_ops",
    "to_float", "normalize", "random_flip", "random_pad_crop", "cutout", "rand_augment",
    "color_jitter", "random_grayscale", "random_resized_crop",
    "register_view", "get_view", "list_views",
    "weak_view", "strong_view", "supcon_view",
    "strong_daso_view", "strong_fixmatch_view", "strong_usb_view",
    "make_pipeline", "make_unlabeled_pipeline", "make_semi_supervised_pipeline",
    "long_tailed_counts", "long_tailed_indices", "labeled_unlabeled_split",
    "long_tailed_semi_supervised_split",
    "PermutationSet", "hamming_permutations", "jigsaw_puzzles", "make_puzzle_view",
    "reassemble", "standardize_tiles",
]
