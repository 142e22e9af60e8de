"""Data: loaders (digits, tfds, folders, zips, numpy), views and tf.data pipelines, splits.

Example:
>>> from ssl_zoo.data import load_arrays, make_pipeline
>>> train = load_arrays("digits", "train")
>>> ds = make_pipeline(train, 64, view="weak", seed=0)
"""

from ssl_zoo.data.cache import default_cache_dir
from ssl_zoo.data.dataset import ArrayDataset, DatasetInfo
from ssl_zoo.data.errors import (
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
from ssl_zoo.data.pipelines import (
    VIEWS,
    color_jitter,
    cutout,
    make_pipeline,
    make_unlabeled_pipeline,
    normalize,
    rand_augment,
    random_flip,
    random_grayscale,
    random_pad_crop,
    random_resized_crop,
    strong_view,
    supcon_view,
    to_float,
    weak_view,
)
from ssl_zoo.data.splits import (
    labeled_unlabeled_split,
    long_tailed_counts,
    long_tailed_indices,
)

__all__ = [
    "DIGITS_IMAGE_SIZE", "EMBEDDED_NAME", "IMAGE_EXTENSIONS", "TFDS_NAMES", "VIEWS",
    "ArrayDataset", "DatasetInfo",
    "DataError", "UnknownDatasetError", "DatasetNotFoundError", "MissingPathError",
    "EmptyDatasetError", "EmptyClassError", "LayoutError", "SplitNotFoundError",
    "CorruptImageError", "LabelError", "ImageShapeError",
    "default_cache_dir", "list_datasets", "load_arrays", "load_dataset",
    "to_float", "normalize", "random_flip", "random_pad_crop", "cutout", "rand_augment",
    "color_jitter", "random_grayscale", "random_resized_crop",
    "weak_view", "strong_view", "supcon_view",
    "make_pipeline", "make_unlabeled_pipeline",
    "long_tailed_counts", "long_tailed_indices", "labeled_unlabeled_split",
]
