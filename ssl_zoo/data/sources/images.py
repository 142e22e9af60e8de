"""Images into arrays: what every source shares to end with one uint8 (N, H, W, 3) array.

Antialiased resizing to a common size, and gathering decoded images of mixed sizes.
"""

import collections

import numpy as np
import tensorflow as tf

__all__ = ["resize_uint8", "collect_decoded"]

_DECODE_BATCH = 1024


def resize_uint8(images, size, chunk=2048):
    """Resize uint8 images to `size` with antialiased bilinear, rounding back to uint8.

    Args:
        images: uint8 array (N, h, w, C).
        size: (H, W), or None to keep the images as they are.
        chunk: images resized at a time (bounds the float32 memory).

    Returns:
        uint8 array (N, H, W, C); `images` itself when no resize is needed.

    Example:
    >>> resize_uint8(np.full((2, 8, 8, 3), 9, np.uint8), (4, 4))[0, 0, 0].tolist()
    [9, 9, 9]
    """
    if size is None or tuple(images.shape[1:3]) == tuple(size):
        return images
    out = np.empty((images.shape[0], size[0], size[1], images.shape[-1]), np.uint8)
    for start in range(0, images.shape[0], chunk):
        x = tf.image.resize(tf.cast(images[start:start + chunk], tf.float32), size,
                            method="bilinear", antialias=True)
        out[start:start + chunk] = tf.cast(
            tf.clip_by_value(tf.round(x), 0.0, 255.0), tf.uint8).numpy()
    return out


def collect_decoded(ds, n, image_size, batch=_DECODE_BATCH, labels=None):
    """Gather decoded (index, shape, flat pixels[, label]) elements into one uint8 array.

    Images of another size than the target (`image_size`, else the most common
    size) are resized. When the elements carry labels they are written into `labels`
    (an int64 array of length n) at their index.

    Args:
        ds: tf.data.Dataset of (int64 index, int32 (h, w), uint8 flat pixels
            (h * w * 3,)[, int64 label]), one element per image that decoded.
        n: number of images expected (indices 0..n-1).
        image_size: (H, W) target size, or None for the most common size.
        batch: elements gathered at a time.
        labels: optional int64 array (n,) filled in place from the elements' labels.

    Returns:
        (uint8 images (n, H, W, 3), or None when any is missing; int indices of the
        images missing from `ds`).

    Example:
    >>> import tensorflow as tf
    >>> ds = tf.data.Dataset.from_tensor_slices(
    ...     (tf.range(2, dtype=tf.int64), [[2, 2], [2, 2]], tf.zeros([2, 12], tf.uint8)))
    >>> images, missing = collect_decoded(ds, 3, None)
    >>> images is None, missing.tolist()
    (True, [2])
    """
    groups = collections.defaultdict(list)  # (h, w) -> [(indices, array (k,h,w,3))]
    counts = collections.Counter()
    for element in ds.ragged_batch(batch).prefetch(2):
        idx, shapes, flat = element[0].numpy(), element[1].numpy(), element[2]
        if labels is not None:
            labels[idx] = element[3].numpy()
        if isinstance(flat, tf.RaggedTensor):
            values, splits = flat.flat_values.numpy(), flat.row_splits.numpy()
        else:
            values = flat.numpy().reshape(-1)
            splits = np.arange(idx.size + 1) * (values.size // max(idx.size, 1))
        if idx.size and (shapes == shapes[0]).all():
            h, w = shapes[0]
            groups[(h, w)].append((idx, values.reshape(idx.size, h, w, 3)))
            counts[(h, w)] += idx.size
            continue
        for j in range(idx.size):
            h, w = shapes[j]
            groups[(h, w)].append(
                (idx[j:j + 1], values[splits[j]:splits[j + 1]].reshape(1, h, w, 3)))
            counts[(h, w)] += 1
    seen = np.zeros(n, bool)
    for parts in groups.values():
        for idx, _ in parts:
            seen[idx] = True
    missing = np.flatnonzero(~seen)
    if missing.size or not counts:
        return None, missing
    target = image_size or counts.most_common(1)[0][0]
    if len(groups) == 1 and tuple(target) == next(iter(groups)):
        arrays = [a for _, a in next(iter(groups.values()))]
        return np.concatenate(arrays) if len(arrays) > 1 else arrays[0], missing
    out = np.empty((n, target[0], target[1], 3), np.uint8)
    for parts in groups.values():
        idx = np.concatenate([i for i, _ in parts])
        out[idx] = resize_uint8(np.concatenate([a for _, a in parts]), target)
    return out, missing
