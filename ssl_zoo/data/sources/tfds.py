"""Source "tfds": tensorflow-datasets data sets, used only when already prepared locally.

ssl_zoo never downloads; a missing data set raises an error that says what to do.
"""

import os

import numpy as np
import tensorflow as tf

from ssl_zoo.data.dataset import make_array_dataset, resolve_split
from ssl_zoo.data.errors import (
    CorruptImageError,
    DatasetNotFoundError,
    SplitNotFoundError,
    UnknownDatasetError,
)
from ssl_zoo.data.sources.images import collect_decoded

__all__ = ["TFDS_NAMES", "load_tfds"]

AUTOTUNE = tf.data.AUTOTUNE

#: tensorflow-datasets names this loader knows; each is used only when already
#: prepared under `data_dir` (ssl_zoo never downloads). Any other registered tfds
#: name can be given as "tfds:<name>".
TFDS_NAMES = (
    "cifar10", "cifar100", "stl10", "svhn_cropped", "mnist", "fashion_mnist",
    "kmnist", "emnist", "imagenette", "imagenet2012", "imagenet_resized/32x32",
    "imagenet_resized/64x64", "tf_flowers", "oxford_flowers102", "oxford_iiit_pet",
    "food101", "caltech101", "eurosat/rgb",
)


def _not_prepared_message(name, data_dir, extra=""):
    where = data_dir or os.environ.get("TFDS_DATA_DIR") or "~/tensorflow_datasets"
    return (
        f"tensorflow-datasets {name!r} is not prepared under {where}{extra}, and ssl_zoo "
        f"never downloads. Either prepare it where a network is available "
        f"(`tfds build {name} --data_dir DIR`) and pass data_dir=DIR, or point source at "
        f"local images instead: an image folder laid out <split>/<class>/<image> (or "
        f"<class>/<image>), a .zip archive with that layout (read in place), or an .npz "
        f"with x/y arrays, e.g. load_arrays('/path/to/cifar10-jpeg.zip', 'test').")


def load_tfds(name, split, data_dir, image_size):
    """Read a split of a tensorflow-datasets data set that is already prepared locally.

    ssl_zoo never downloads: a data set that is not prepared under `data_dir` raises
    `DatasetNotFoundError` saying how to prepare it or which local files to use.
    Grey images are repeated over 3 channels, RGBA loses its alpha.

    Args:
        name: a tfds name (e.g. "cifar10", "imagenet_resized/32x32").
        split: requested split (aliases as in `SPLIT_ALIASES`).
        data_dir: the tfds data directory (None: $TFDS_DATA_DIR or
            ~/tensorflow_datasets).
        image_size: (H, W), or None for the most common size.

    Returns:
        `ArrayDataset` with the tfds class names.

    Raises:
        UnknownDatasetError, DatasetNotFoundError, SplitNotFoundError,
        CorruptImageError.

    Example:
    >>> import tempfile
    >>> try:
    ...     load_tfds("mnist", "train", tempfile.mkdtemp(), None)
    ... except DatasetNotFoundError as e:
    ...     print("never downloads" in str(e))
    True
    """
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:
        raise DatasetNotFoundError(_not_prepared_message(
            name, data_dir, " (tensorflow-datasets is not installed)")) from e
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # noqa: BLE001 - tfds raises several types here
        if "not found" in str(e).lower() or type(e).__name__ == "DatasetNotFoundError":
            # Imported here: the dispatcher imports this module to list the names.
            from ssl_zoo.data.loaders import list_datasets

            raise UnknownDatasetError(
                f"tensorflow-datasets has no data set {name!r}. Known names: "
                f"{', '.join(list_datasets())}.") from e
        raise DatasetNotFoundError(_not_prepared_message(name, data_dir)) from e
    prepared = getattr(builder, "is_prepared", None)
    ok = prepared() if callable(prepared) else tf.io.gfile.exists(
        os.path.join(builder.data_dir, "dataset_info.json"))
    if not ok:
        raise DatasetNotFoundError(_not_prepared_message(name, data_dir))
    available = list(builder.info.splits.keys())
    chosen, _ = resolve_split(split, available)
    if chosen is None:
        raise SplitNotFoundError(
            f"tfds {name!r} has no split {split!r}; available: {', '.join(available)}.")
    feature = builder.info.features["label"]
    class_names = list(getattr(feature, "names", None) or
                       [str(i) for i in range(feature.num_classes)])
    n = builder.info.splits[chosen].num_examples
    ds = builder.as_dataset(split=chosen, as_supervised=True, shuffle_files=False,
                            read_config=tfds.ReadConfig(try_autocache=False))

    def prepare(i, xy):
        image, label = xy
        image = tf.cond(tf.shape(image)[-1] == 1, lambda: tf.image.grayscale_to_rgb(image),
                        lambda: image[..., :3])
        return i, tf.shape(image)[:2], tf.reshape(image, [-1]), tf.cast(label, tf.int64)

    labels = np.zeros(n, np.int64)
    images, missing = collect_decoded(
        ds.enumerate().map(prepare, num_parallel_calls=AUTOTUNE, deterministic=True),
        n, image_size, labels=labels)
    if missing.size:
        raise CorruptImageError(f"tfds {name!r}/{chosen}: {missing.size} examples could "
                                f"not be read.", [str(i) for i in missing])
    return make_array_dataset(images, labels, name=name, split=chosen,
                              class_names=class_names, source=f"tfds:{name}")
