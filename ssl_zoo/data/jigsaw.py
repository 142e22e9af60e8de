"""Jigsaw++ puzzles (Noroozi et al., CVPR 2018): permutation sets far apart in Hamming
distance, and the seeded, batched TensorFlow generator of puzzles and their labels.

A puzzle of an image is a grid x grid array of tiles, each cut at a random offset
inside its cell, colour-jittered, sometimes grey, standardised on its own, 0..K of them
replaced by tiles of another image of the batch, then shuffled by one of P permutations;
the label is the index of that permutation.

Conventions (used by `jigsaw_puzzles`, `reassemble` and the details they report):
- Tiles are numbered row-major: source tile k = r * grid + c is cut from cell (r, c).
- Label p means permutation `perm = permutations[p]`: output position k holds source
  tile `perm[k]` (`output = source[perm]`); the inverse is
  `source = output[argsort(perm)]` (`reassemble`).
- Positions are (y, x) integer pixels of a tile's top-left corner.
"""

import functools
import itertools
import math
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ssl_zoo.data.errors import ImageShapeError
from ssl_zoo.data.ops import random_crop_boxes
from ssl_zoo.data.seeds import split_seed

__all__ = ["PermutationSet", "hamming_permutations", "jigsaw_puzzles", "make_puzzle_view",
           "standardize_tiles", "reassemble", "default_tile_size",
           "default_channel_shift", "check_permutations", "CANDIDATE_POOL_SIZE",
           "EXHAUSTIVE_MAX_GRID"]

#: Largest grid whose permutation sets are chosen among all (grid^2)! orders (3: 9! =
#: 362,880 candidates); larger grids choose among a seeded random pool.
EXHAUSTIVE_MAX_GRID = 3

#: Default number of sampled candidate permutations for grids above
#: `EXHAUSTIVE_MAX_GRID` (16! is 2.1e13, too many to enumerate).
CANDIDATE_POOL_SIZE = 100_000

_CRITERIA = ("max_min", "max_avg")
_BLOCKED = -(2**30)  # score of candidates that may not be chosen (taken, or the identity)


# ------------------------------------------------------------------ permutation sets
class PermutationSet(NamedTuple):
    """A set of tile permutations and its pairwise Hamming distances.

    Attributes:
        permutations: int32 numpy array (P, n), each row a permutation of range(n),
            n = grid * grid; row p is the permutation of label p.
        min_distance: smallest Hamming distance between two rows (the number of
            positions where they differ); n when P == 1 (there is no pair).
        mean_distance: mean Hamming distance over the P (P - 1) / 2 distinct pairs;
            nan when P == 1.

    Example:
    >>> s = hamming_permutations(4, grid=2, seed=0)
    >>> s.permutations.shape, s.min_distance
    ((4, 4), 4)
    """

    permutations: np.ndarray
    min_distance: int
    mean_distance: float


@functools.lru_cache(maxsize=2)
def _all_permutations(n):
    """All n! permutations of range(n) as columns of a read-only (n, n!) uint8 array.

    Lexicographic order (column 0 is the identity). Stored column-wise so that the
    greedy's per-position comparisons run over contiguous rows.
    """
    count = math.factorial(n)
    flat = np.fromiter(itertools.chain.from_iterable(itertools.permutations(range(n))),
                       dtype=np.uint8, count=count * n)
    cols = np.ascontiguousarray(flat.reshape(count, n).T)
    cols.setflags(write=False)
    return cols


def _pool_permutations(n, size, rng):
    """`size` seeded random permutations of range(n) (deduplicated, sorted) as columns."""
    dtype = np.uint8 if n <= 256 else np.uint16
    rows = rng.permuted(np.tile(np.arange(n, dtype=dtype), (size, 1)), axis=1)
    return np.ascontiguousarray(np.unique(rows, axis=0).T)


def _distances_to(cols, index):
    """Hamming distance (uint8/uint16) of every candidate column to candidate `index`."""
    n = cols.shape[0]
    d = np.zeros(cols.shape[1], np.uint8 if n < 256 else np.uint16)
    for k in range(n):
        d += cols[k] != cols[k, index]
    return d


def _pairwise_stats(perms):
    """(min, mean) Hamming distance over the distinct pairs of rows of `perms`."""
    p, n = perms.shape
    if p < 2:
        return n, float("nan")
    smallest, total = n, 0
    for start in range(0, p, 1024):  # bounded memory: (1024, P) distances at a time
        block = perms[start:start + 1024]
        d = np.zeros((len(block), p), np.int32)
        for k in range(n):
            d += block[:, k, None] != perms[None, :, k]
        rows = np.arange(start, start + len(block))
        d[np.arange(len(block)), rows] = n + 1  # not a pair: exclude from the minimum
        smallest = min(smallest, int(d.min()))
        total += int(d.sum()) - (n + 1) * len(block)
    return smallest, total / (p * (p - 1))


def hamming_permutations(num_permutations, grid=3, criterion="max_min", seed=0,
                         include_identity=False, min_distance=None, *, pool_size=None):
    """Choose permutations of the grid x grid tiles far apart in Hamming distance.

    The greedy selection of Noroozi & Favaro (2016): start from one permutation, then
    repeatedly add the candidate farthest from those chosen so far. "max_min" scores a
    candidate by its smallest Hamming distance to the chosen set (what the Jigsaw++ sets
    are usually described by); "max_avg" by its summed (mean) distance, the criterion of
    the paper's pseudocode. Every candidate keeps its running score, updated with one
    vectorised comparison per added permutation; ties go to a candidate drawn by a numpy
    Generator seeded with `seed`, so a seed always gives the same set.

    Candidates: for grid <= 3 (`EXHAUSTIVE_MAX_GRID`) all (grid^2)! permutations (3x3:
    362,880, enumerated once and cached); for larger grids a pool of `pool_size`
    (default `CANDIDATE_POOL_SIZE`, 100,000) permutations sampled with the same seed,
    duplicates removed (so the set is greedy within that pool only).

    The first permutation is drawn at random (seeded), or is the identity when
    `include_identity=True`; with `include_identity=False` the identity is never chosen
    (an unshuffled puzzle would be a trivially recognisable class).

    Measured for grid=3, max_min, seed 0 (2 CPU cores, `benchmarks/jigsaw_generator.py`):
    100 permutations reach min Hamming distance 6 (mean 8.06), 701 and 1000 reach
    min 5 (mean 8.01), 1000 in about 1 s; max_avg reaches min 3 at 100 and 2 at
    701/1000, with the same means. The official Jigsaw++ set (701 permutations) has
    min 3, mean 8.0.

    Args:
        num_permutations: P, the number of permutations (classes) to choose, >= 1.
        grid: tiles per side (>= 2); permutations act on n = grid * grid tiles.
        criterion: "max_min" or "max_avg".
        seed: int (or None for a fresh random set) for the first permutation, the
            tie-breaks and, for grid > 3, the candidate pool.
        include_identity: put the identity first (else the identity is excluded).
        min_distance: if given, the smallest pairwise Hamming distance the set must
            reach; a ValueError says so when the greedy set falls short.
        pool_size: candidates sampled for grid > 3 (ignored for grid <= 3).

    Returns:
        `PermutationSet(permutations int32 (P, n), min_distance, mean_distance)`.

    Raises:
        ValueError: num_permutations < 1, grid < 2, an unknown criterion, more
            permutations than there are candidates, or a set whose smallest distance
            is below `min_distance`.

    Example:
    >>> s = hamming_permutations(10, seed=0)
    >>> s.permutations.shape, s.permutations.dtype, s.min_distance
    ((10, 9), dtype('int32'), 8)
    >>> bool((hamming_permutations(10, seed=0).permutations == s.permutations).all())
    True
    >>> hamming_permutations(3, include_identity=True).permutations[0].tolist()
    [0, 1, 2, 3, 4, 5, 6, 7, 8]
    >>> hamming_permutations(24, grid=2)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: A 2x2 grid has 4! = 24 permutations, 23 without the identity; ...
    """
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 2:
        raise ValueError(f"grid must be an integer >= 2 (a 2x2 puzzle or larger), got "
                         f"{grid!r}.")
    if isinstance(num_permutations, bool) or not isinstance(
            num_permutations, (int, np.integer)) or num_permutations < 1:
        raise ValueError(f"num_permutations must be an integer >= 1, got "
                         f"{num_permutations!r}.")
    if criterion not in _CRITERIA:
        raise ValueError(f"criterion must be one of {_CRITERIA}, got {criterion!r}.")
    if min_distance is not None and (isinstance(min_distance, bool) or not isinstance(
            min_distance, (int, np.integer)) or min_distance < 0):
        raise ValueError(f"min_distance must be None or an integer >= 0, got "
                         f"{min_distance!r}.")
    grid, num = int(grid), int(num_permutations)
    n = grid * grid
    rng = np.random.default_rng(seed)
    if grid <= EXHAUSTIVE_MAX_GRID:
        cols = _all_permutations(n)
        identity = 0  # lexicographic order
        available = cols.shape[1] - (0 if include_identity else 1)
        if num > available:
            raise ValueError(
                f"A {grid}x{grid} grid has {n}! = {cols.shape[1]} permutations, "
                f"{cols.shape[1] - 1} without the identity; cannot choose {num}. Ask for "
                f"at most {available}"
                + ("." if include_identity else ", or pass include_identity=True."))
    else:
        size = CANDIDATE_POOL_SIZE if pool_size is None else int(pool_size)
        if size < 1:
            raise ValueError(f"pool_size must be >= 1, got {pool_size!r}.")
        cols = _pool_permutations(n, size, rng)
        is_identity = (cols == np.arange(n, dtype=cols.dtype)[:, None]).all(axis=0)
        cols = cols[:, ~is_identity]
        if include_identity:
            cols = np.concatenate([np.arange(n, dtype=cols.dtype)[:, None], cols], axis=1)
        identity = 0 if include_identity else None
        available = cols.shape[1]
        if num > available:
            raise ValueError(
                f"A {grid}x{grid} grid chooses among a pool of {available} sampled "
                f"permutations (pool_size={size}); cannot choose {num}. Ask for fewer "
                f"permutations or pass a larger pool_size.")
    count = cols.shape[1]
    score = np.full(count, n + 1 if criterion == "max_min" else 0, np.int32)
    if include_identity:
        chosen = [identity]
    else:
        if identity is not None:
            score[identity] = _BLOCKED
        first = int(rng.integers(count - (identity is not None)))
        chosen = [first + (identity is not None and first >= identity)]
    for _ in range(num - 1):
        last = chosen[-1]
        d = _distances_to(cols, last)
        if criterion == "max_min":
            np.minimum(score, d, out=score)
        else:
            score += d
        score[last] = _BLOCKED
        ties = np.flatnonzero(score == score.max())
        chosen.append(int(ties[rng.integers(len(ties))] if len(ties) > 1 else ties[0]))
    perms = np.ascontiguousarray(cols[:, chosen].T).astype(np.int32)
    smallest, mean = _pairwise_stats(perms)
    if min_distance is not None and smallest < min_distance:
        raise ValueError(
            f"The greedy {criterion} set of {num} permutations of a {grid}x{grid} grid "
            f"reached min Hamming distance {smallest} < requested {min_distance}; ask "
            f"for fewer permutations (or try another seed or criterion).")
    return PermutationSet(perms, int(smallest), float(mean))


# ----------------------------------------------------------------- normalisation
def standardize_tiles(x, per_channel_mean=True):
    """Standardise each tile (or image) on its own over its last three axes (H, W, C).

    Subtracts the mean of each channel over the tile (or of the whole tile with
    `per_channel_mean=False`), then divides by the standard deviation over the whole
    tile, guarded as in `tf.image.per_image_standardization`: max(std, 1/sqrt(H W C)),
    so a constant tile gives zeros, not NaN. Written with `keras.ops`, so a model can
    apply the same normalisation to whole images at inference time. Computed in
    float32 (0..255 variances overflow float16), returned in the input's float dtype
    (float32 for integer input).

    Args:
        x: (..., H, W, C) tiles or images, any scale (e.g. 0..255).
        per_channel_mean: subtract a mean per channel (Jigsaw++) or one per tile.

    Returns:
        tensor of the same shape, each (H, W, C) block with zero (per-channel) mean and
        unit standard deviation (or all zeros when the block is constant).

    Example:
    >>> x = np.array([[[[0, 10, 20]], [[2, 12, 22]]]], np.float32)  # (1, 2, 1, 3)
    >>> ops.convert_to_numpy(standardize_tiles(x)).ravel().tolist()
    [-1.0, -1.0, -1.0, 1.0, 1.0, 1.0]
    >>> float(ops.convert_to_numpy(standardize_tiles(np.full((2, 3, 3, 3), 7.0))).max())
    0.0
    """
    x = ops.convert_to_tensor(x)
    dtype = keras.backend.standardize_dtype(x.dtype)
    compute = "float64" if dtype == "float64" else "float32"
    y = ops.cast(x, compute)
    # Shifted-data mean: subtracting the first pixel before averaging keeps the sum
    # small and makes a constant tile exactly zero (a float32 mean of 49 copies of c
    # is not always c, and the residue divided by the guard would not be 0).
    first = y[..., :1, :1, :] if per_channel_mean else y[..., :1, :1, :1]
    y = y - first
    mean_axes = (-3, -2) if per_channel_mean else (-3, -2, -1)
    y = y - ops.mean(y, axis=mean_axes, keepdims=True)
    std = ops.sqrt(ops.mean(ops.square(y), axis=(-3, -2, -1), keepdims=True))
    shape = ops.shape(y)
    count = ops.cast(shape[-3] * shape[-2] * shape[-1], compute)
    y = y / ops.maximum(std, ops.rsqrt(count))
    return ops.cast(y, dtype) if "float" in dtype else y


# ----------------------------------------------------------------- puzzle geometry
def default_tile_size(cell_size):
    """The tile side for a cell side: round(cell * 64 / 75), halves rounded up.

    The official Jigsaw++ tiles are 64 px in 75-px cells (a 225-px crop); the same
    ratio gives 18-px tiles in 21-px cells at 64-px Tiny-ImageNet, 73 in 85 at 255 px,
    7 in 8 at 24 px. Integer arithmetic, so it works on ints and int tensors alike.

    Args:
        cell_size: cell side in pixels (int or int tensor).

    Returns:
        tile side in pixels, of the same type.

    Example:
    >>> [default_tile_size(c) for c in (8, 21, 75, 85)]
    [7, 18, 64, 73]
    """
    return (cell_size * 128 + 75) // 150


def default_channel_shift(tile_size):
    """The largest per-channel spatial shift for a tile side: round(tile / 32).

    Each colour channel of a tile is cut up to this many pixels away from the tile's
    position (independently per channel), against the chromatic-aberration shortcut;
    that gives 2 px for the official 64-px tiles, 1 px for 18-px tiles, 0 below 16 px.

    Args:
        tile_size: tile side in pixels (int or int tensor).

    Returns:
        shift in pixels, of the same type.

    Example:
    >>> [default_channel_shift(t) for t in (7, 18, 64, 73)]
    [0, 1, 2, 2]
    """
    return (tile_size + 16) // 32


def _check_int(value, what, minimum):
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or (
            value < minimum):
        raise ValueError(f"{what} must be an integer >= {minimum}, got {value!r}.")
    return int(value)


def _puzzle_options(grid=3, cell_size=None, tile_size=None, crop_scale=(0.6, 1.0),
                    crop_ratio=(3 / 4, 4 / 3), jitter=True, channel_shift=None,
                    color_jitter=0.4, grayscale_prob=0.66, min_occluded=0,
                    max_occluded=2, normalize=True):
    """Check the image-independent options of `jigsaw_puzzles`; return them as a dict."""
    grid = _check_int(grid, "grid", 2)
    n = grid * grid
    if cell_size is not None:
        cell_size = _check_int(cell_size, "cell_size", 1)
    if tile_size is not None:
        tile_size = _check_int(tile_size, "tile_size", 1)
        if cell_size is not None and tile_size > cell_size:
            raise ValueError(f"tile_size {tile_size} is larger than the cell "
                             f"({cell_size} px); tiles are cut inside their cell: pass "
                             f"tile_size <= cell_size.")
    if channel_shift is not None:
        channel_shift = _check_int(channel_shift, "channel_shift", 0)
    lo, hi = (float(v) for v in crop_scale)
    if not 0.0 < lo <= hi <= 1.0:
        raise ValueError(f"crop_scale must be (min, max) area fractions with 0 < min <= "
                         f"max <= 1, got {tuple(crop_scale)}.")
    rlo, rhi = (float(v) for v in crop_ratio)
    if not 0.0 < rlo <= rhi:
        raise ValueError(f"crop_ratio must be (min, max) width/height ratios with "
                         f"0 < min <= max, got {tuple(crop_ratio)}.")
    if not 0.0 <= float(color_jitter) <= 1.0:
        raise ValueError(f"color_jitter must be a strength in [0, 1], got "
                         f"{color_jitter!r}.")
    if not 0.0 <= float(grayscale_prob) <= 1.0:
        raise ValueError(f"grayscale_prob must be a probability in [0, 1], got "
                         f"{grayscale_prob!r}.")
    for name, value in (("min_occluded", min_occluded), ("max_occluded", max_occluded)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
            raise ValueError(f"{name} must be an integer >= 0, got {value!r}.")
    if max_occluded > n:
        raise ValueError(f"max_occluded={max_occluded} is more than the {n} tiles of a "
                         f"{grid}x{grid} puzzle; pass max_occluded <= {n}.")
    if min_occluded > max_occluded:
        raise ValueError(f"min_occluded={min_occluded} is larger than "
                         f"max_occluded={max_occluded}; the number of occluded tiles is "
                         f"drawn uniformly in [min_occluded, max_occluded].")
    return dict(grid=grid, cell_size=cell_size, tile_size=tile_size,
                crop_scale=(lo, hi), crop_ratio=(rlo, rhi), jitter=bool(jitter),
                channel_shift=channel_shift, color_jitter=float(color_jitter),
                grayscale_prob=float(grayscale_prob), min_occluded=int(min_occluded),
                max_occluded=int(max_occluded), normalize=bool(normalize))


def check_permutations(permutations, grid):
    """Permutations as an int32 numpy array (P, n) (or a checked symbolic tensor)."""
    n = grid * grid
    if tf.is_tensor(permutations) and not tf.executing_eagerly():
        static = tf.get_static_value(permutations)
        permutations = permutations if static is None else static
    if tf.is_tensor(permutations) and not tf.executing_eagerly():
        shape = permutations.shape  # symbolic (in a trace): check what is static
        if shape.rank != 2 or shape[1] not in (None, n):
            raise ValueError(f"permutations must have shape (P, {n}) for a {grid}x{grid} "
                             f"grid, got {shape}.")
        perms = tf.cast(permutations, tf.int32)
        check = tf.debugging.assert_equal(
            tf.sort(perms, axis=1), tf.broadcast_to(tf.range(n), tf.shape(perms)),
            message=f"every row of permutations must be a permutation of range({n})")
        with tf.control_dependencies([check]):
            return tf.identity(perms)
    perms = np.asarray(permutations)
    if perms.ndim != 2 or perms.shape[1] != n or perms.shape[0] < 1:
        raise ValueError(f"permutations must have shape (P, {n}) with P >= 1 for a "
                         f"{grid}x{grid} grid, got shape {perms.shape}; make them with "
                         f"hamming_permutations(P, grid={grid}).")
    if not np.issubdtype(perms.dtype, np.integer):
        raise ValueError(f"permutations must be integers, got dtype {perms.dtype}.")
    bad = np.flatnonzero((np.sort(perms, axis=1) != np.arange(n)).any(axis=1))
    if len(bad):
        raise ValueError(f"permutations row {bad[0]} ({perms[bad[0]].tolist()}) is not a "
                         f"permutation of range({n}); {len(bad)} row(s) are not.")
    if len(np.unique(perms, axis=0)) != len(perms):
        raise ValueError("permutations has repeated rows; two labels would mean the same "
                         "shuffle. Use distinct permutations (hamming_permutations).")
    return perms.astype(np.int32)


def _as_images(images):
    x = tf.convert_to_tensor(images)
    if x.shape.rank != 4 or x.shape[-1] not in (None, 3):
        raise ImageShapeError(f"Jigsaw puzzles are cut from a batch of RGB images "
                              f"(B, H, W, 3); got shape {x.shape}.")
    return x if x.dtype == tf.float32 else tf.cast(x, tf.float32)


def _geometry(x, grid, cell_size, tile_size):
    """(cell, tile, asserts): Python ints where the image size is static, else tensors."""
    h, w = x.shape[1], x.shape[2]
    checks = []
    if h is not None and w is not None:
        side = min(h, w)
        if side < grid:
            raise ImageShapeError(
                f"images of {h}x{w} px are smaller than the {grid}x{grid} grid; a jigsaw "
                f"puzzle needs at least 1 px per cell: use images of at least {grid} px "
                f"per side (or a smaller grid).")
        cell = side // grid if cell_size is None else cell_size
        if grid * cell > side:
            raise ImageShapeError(
                f"images of {h}x{w} px are smaller than the {grid}x{grid} grid of "
                f"{cell}-px cells ({grid * cell} px); pass cell_size <= {side // grid} "
                f"or larger images.")
    else:
        shape = tf.shape(x)
        side = tf.minimum(shape[1], shape[2])
        cell = side // grid if cell_size is None else cell_size
        checks.append(tf.debugging.assert_greater_equal(
            side, grid * tf.maximum(cell, 1),
            message=f"images are smaller than the {grid}x{grid} grid (of cell_size "
                    f"{cell_size} px)" if cell_size else
                    f"images are smaller than the {grid}x{grid} grid"))
    tile = default_tile_size(cell) if tile_size is None else tile_size
    if isinstance(cell, int) and isinstance(tile, int) and tile > cell:
        raise ValueError(f"tile_size {tile} is larger than the cell ({cell} px); tiles are "
                         f"cut inside their cell: pass tile_size <= {cell}.")
    if not (isinstance(cell, int) and isinstance(tile, int)):
        checks.append(tf.debugging.assert_less_equal(
            tile, cell, message="tile_size is larger than the cell"))
    return cell, tile, checks


def _cut(crops, image, positions, tile):
    """Tiles (B, m, t, t, 3): tile (b, k) cut from `crops[image[b, k]]` ((B, S, S, 3))
    with channel c's top-left at `positions[b, k, c]` ((B, m, 3, 2)); one gather."""
    side = tf.cast(tf.shape(crops)[1], tf.int64)
    steps = tf.range(tf.cast(tile, tf.int64))
    pos = tf.cast(positions, tf.int64)
    ys = tf.transpose(pos[..., 0, None] + steps, [0, 1, 3, 2])  # (B, m, t, 3)
    xs = tf.transpose(pos[..., 1, None] + steps, [0, 1, 3, 2])
    # Flat index of crops[img, y, x, c] as row part + column part: one full-size add.
    # int64, so that large batches of large crops cannot overflow.
    rows = (tf.cast(image, tf.int64)[:, :, None, None] * side + ys) * side * 3 + tf.range(
        3, dtype=tf.int64)
    return tf.gather(tf.reshape(crops, [-1]), rows[:, :, :, None] + xs[:, :, None] * 3)


def _color(tiles, seeds, strength, grayscale_prob):
    """Per-tile colour jitter and random grayscale on (B, m, t, t, 3) in 0..255."""
    shape = tf.shape(tiles)
    per_tile = tf.stack([shape[0], shape[1], 1, 1, 1])

    def gray(t):
        return tf.image.rgb_to_grayscale(t)  # ITU-R 601 weights, as ops.color_jitter

    if strength > 0:
        def factor(s, spread, size=per_tile):
            return tf.random.stateless_uniform(size, s, 1.0 - spread, 1.0 + spread)

        def clip(t):
            return tf.clip_by_value(t, 0.0, 255.0)

        tiles = clip(tiles * factor(seeds[0], strength))  # brightness
        mean = gray(tf.reduce_mean(tiles, axis=[2, 3], keepdims=True))  # linear
        f = factor(seeds[1], strength)
        tiles = clip(tiles * f + mean * (1.0 - f))  # contrast: (t - mean) f + mean
        f = factor(seeds[2], strength)
        tiles = clip(tiles * f + gray(tiles) * (1.0 - f))  # saturation
        # Per-channel gains: a colour cast of its own per tile.
        per_channel = tf.stack([shape[0], shape[1], 1, 1, 3])
        tiles = clip(tiles * factor(seeds[3], strength / 2, per_channel))
    if grayscale_prob > 0:
        apply = tf.random.stateless_uniform(per_tile, seeds[4]) < grayscale_prob
        tiles = tf.where(apply, gray(tiles), tiles)  # (.., 1) broadcast to 3 channels
    return tiles


# No tensor-dependent Python control flow below: autograph would only spend seconds
# converting the option checks (every trace, e.g. every tf.data .map).
@tf.autograph.experimental.do_not_convert
def _generate(images, seed, perms, opt, return_details):
    """The puzzle generator on checked options and permutations (see jigsaw_puzzles)."""
    x = _as_images(images)
    grid = opt["grid"]
    n = grid * grid
    cell, tile, checks = _geometry(x, grid, opt["cell_size"], opt["tile_size"])
    if checks:
        with tf.control_dependencies(checks):
            x = tf.identity(x)
    side = grid * cell
    seeds = split_seed(seed, 16)
    b = tf.shape(x)[0]

    boxes = random_crop_boxes(x, seeds[0], opt["crop_scale"], opt["crop_ratio"])
    crops = tf.image.crop_and_resize(x, boxes, tf.range(b), tf.stack([side, side]))

    # Tile k = r * grid + c sits in cell (r, c) at an integer offset in [0, cell - tile].
    margin = cell - tile
    if opt["jitter"]:
        offsets = tf.random.stateless_uniform([b, n, 2], seeds[1], 0, margin + 1, tf.int32)
    else:
        offsets = tf.fill([b, n, 2], margin // 2)
    rc = tf.range(n)
    origins = tf.stack([rc // grid, rc % grid], axis=1) * cell  # (n, 2)
    positions = origins[None] + offsets

    # Occluders: from partner j = (i + r) mod B, r uniform in [1, B - 1] (j = i if B == 1),
    # cut at uniform integer positions anywhere in the partner's crop.
    shift = tf.random.stateless_uniform([b], seeds[2], 0, tf.maximum(b - 1, 1), tf.int32)
    partner = (tf.range(b) + shift + 1) % b
    occ_positions = tf.random.stateless_uniform([b, n, 2], seeds[3], 0, side - tile + 1,
                                                tf.int32)

    # Per-channel spatial jitter (chromatic aberration), kept inside the cell for source
    # tiles and inside the crop for occluders.
    cs = opt["channel_shift"]
    if cs is None:
        cs = default_channel_shift(tile) if opt["jitter"] else 0
    channel = tf.random.stateless_uniform([b, 2 * n, 3, 2], seeds[4], -cs, cs + 1,
                                          tf.int32)
    src_channels = origins[None, :, None] + tf.clip_by_value(
        offsets[:, :, None] + channel[:, :n], 0, margin)
    occ_channels = tf.clip_by_value(occ_positions[:, :, None] + channel[:, n:], 0,
                                    side - tile)

    count = tf.random.stateless_uniform([b], seeds[10], opt["min_occluded"],
                                        opt["max_occluded"] + 1, tf.int32)
    rank = tf.argsort(tf.argsort(tf.random.stateless_uniform([b, n], seeds[11]), axis=1),
                      axis=1)
    occluded = rank < count[:, None]  # a uniform random subset of `count` tiles

    def process(raw):
        # Draws per position k (same shapes, same seeds): an occluder at k gets k's.
        out = _color(raw, seeds[5:10], opt["color_jitter"], opt["grayscale_prob"])
        return standardize_tiles(out) if opt["normalize"] else out

    own = tf.broadcast_to(tf.range(b)[:, None], [b, n])
    # Each position is cut once, from the image or the partner: no tile is cut or
    # coloured in vain (only 0..max_occluded of the n occluders are used).
    mixed = process(_cut(crops, tf.where(occluded, partner[:, None], own),
                         tf.where(occluded[:, :, None, None], occ_channels, src_channels),
                         tile))

    num_perms = tf.shape(perms, out_type=tf.int64)[0]
    labels = tf.random.stateless_uniform([b], seeds[12], 0, num_perms, tf.int64)
    rows = tf.gather(perms, labels)  # (B, n): output k holds source rows[k]
    tiles = tf.gather(mixed, rows, axis=1, batch_dims=1)
    static_tile = tile if isinstance(tile, int) else None
    tiles.set_shape([x.shape[0], n, static_tile, static_tile, 3])
    if not return_details:
        return tiles, labels
    details = {
        "source_tiles": process(_cut(crops, own, src_channels, tile)),
        "occluder_tiles": process(_cut(crops, tf.broadcast_to(partner[:, None], [b, n]),
                                       occ_channels, tile)),
        "occluded": occluded,
        "num_occluded": count, "partner": partner, "cell_offsets": offsets,
        "tile_positions": positions, "channel_positions": src_channels,
        "occluder_positions": occ_positions, "occluder_channel_positions": occ_channels,
        "crops": crops, "crop_boxes": boxes, "permutations": rows,
    }
    return tiles, labels, details


@tf.autograph.experimental.do_not_convert
def jigsaw_puzzles(images, seed, permutations, *, grid=3, cell_size=None, tile_size=None,
                   crop_scale=(0.6, 1.0), crop_ratio=(3 / 4, 4 / 3), jitter=True,
                   channel_shift=None, color_jitter=0.4, grayscale_prob=0.66,
                   min_occluded=0, max_occluded=2, normalize=True, return_details=False):
    """Jigsaw++ puzzles of a batch of images and their permutation labels.

    TensorFlow ops on the whole batch (no per-image Python), stateless: the same seed
    gives the same puzzles, eagerly, in `tf.function` and in `tf.data` (`.map` on
    batches). For each image i:

    1. a random resized crop (area fraction in `crop_scale`, width/height in
       `crop_ratio`, as `ssl_zoo.data.ops.random_resized_crop`), resized (bilinear) to
       S x S, S = grid * cell_size;
    2. from each cell (r, c) one tile of side t at an integer offset in
       [0, cell_size - t] (uniform with `jitter`, else centred, floor), numbered
       k = r * grid + c; each colour channel may be cut up to `channel_shift` px from
       that position (independently, kept inside the cell), against the
       chromatic-aberration shortcut;
    3. `count` tiles, uniform in [min_occluded, max_occluded], chosen uniformly, are
       replaced by tiles cut at uniform integer positions of the crop of a partner
       image j = (i + r) mod B, r uniform in [1, B - 1]: always another image of the
       batch, except with B == 1, where the partner is the image itself;
    4. every tile of the puzzle, occluders included, gets its own colour jitter
       (drawn per position: an occluder at k gets k's draws) (brightness,
       contrast and saturation factors in [1 - s, 1 + s], then per-channel gains in
       [1 - s/2, 1 + s/2], clipping to 0..255 after each; s = `color_jitter`), is
       made grey with probability `grayscale_prob` (VISSL's 0.66), and with
       `normalize` is standardised on its own (`standardize_tiles`: zero mean per
       channel, unit std over the tile). Per-tile standardisation cancels most of the
       brightness and contrast factors (all but their clipping); saturation, the
       per-channel gains and grey tiles remain;
    5. label p uniform in [0, P); output position k holds source tile
       `permutations[p][k]`, so `source = output[argsort(permutations[p])]`
       (`reassemble`).

    Defaults: cell_size = min(H, W) // grid; tile_size = `default_tile_size(cell)` =
    round(cell * 64 / 75) (the official 64-px tiles in 75-px cells): 64-px images give
    21-px cells and 18-px tiles, 255-px images 85 and 73; channel_shift =
    `default_channel_shift(tile)` = round(tile / 32) (1 px at 18-px tiles, 2 at 64).

    Args:
        images: (B, H, W, 3) uint8 or float, 0..255 scale.
        seed: None (a fresh draw), an int, or a shape-[2] int tensor.
        permutations: (P, grid * grid) integer array, rows permutations of range(n)
            (e.g. `hamming_permutations(P).permutations`).
        grid: tiles per side.
        cell_size: cell side in px (default min(H, W) // grid); the images must be at
            least grid * cell_size px on each side.
        tile_size: tile side in px, 1 <= tile_size <= cell_size (default above).
        crop_scale: (min, max) area fraction of the random crop; (1, 1) keeps the whole
            image.
        crop_ratio: (min, max) width / height of the crop box (the crop is resized to a
            square).
        jitter: random tile offsets inside the cells (False: centred, and no
            per-channel shift unless `channel_shift` is given).
        channel_shift: largest per-channel spatial shift in px (0 disables; default
            above with `jitter`, 0 without).
        color_jitter: colour jitter strength s in [0, 1] (0 disables).
        grayscale_prob: probability that a tile is made grey.
        min_occluded, max_occluded: range of the number of tiles per puzzle taken from
            the partner image (0 <= min <= max <= grid * grid).
        normalize: standardise each tile (else tiles stay in the 0..255 scale).
        return_details: also return a dict of what was drawn (below).

    Returns:
        (tiles float32 (B, n, t, t, 3), labels int64 (B,)), n = grid * grid; with
        `return_details`, also a dict of tensors, tiles in SOURCE order:
        "source_tiles" (B, n, t, t, 3) the image's own tiles, processed like the
        output; "occluder_tiles" (B, n, t, t, 3) the tiles cut from the partner,
        processed with position k's draws (occluder k replaces source tile k where
        "occluded" is True: the output is exactly one of the two);
        "occluded" bool (B, n); "num_occluded" int32 (B,); "partner" int32 (B,);
        "cell_offsets" int32 (B, n, 2) (y, x) offset of tile k in its cell;
        "tile_positions" int32 (B, n, 2) its top-left in the crop;
        "channel_positions" int32 (B, n, 3, 2) the top-left of each channel;
        "occluder_positions" int32 (B, n, 2) and "occluder_channel_positions"
        (B, n, 3, 2) in the partner's crop; "crops" float32 (B, S, S, 3) the resized
        crops (before colour); "crop_boxes" float32 (B, 4) normalised (y1, x1, y2, x2)
        boxes of `tf.image.crop_and_resize`; "permutations" int32 (B, n) the rows
        `permutations[labels]`.

    Raises:
        ImageShapeError (a ValueError): images not (B, H, W, 3), or smaller than the
            grid (of `cell_size` cells).
        ValueError: tile_size > cell_size or < 1; occlusion counts negative, reversed
            or above n; permutations not (P, n) distinct permutations of range(n); other
            options out of range. Sizes unknown until run time (None dims in tf.data)
            are checked by `tf.debugging` assertions instead.

    Example:
    >>> perms = hamming_permutations(10, seed=0).permutations
    >>> images = tf.random.uniform([2, 24, 24, 3], 0, 255, seed=0)
    >>> tiles, labels = jigsaw_puzzles(images, 0, perms)
    >>> tiles.shape, labels.dtype
    (TensorShape([2, 9, 7, 7, 3]), tf.int64)
    >>> same = jigsaw_puzzles(images, 0, perms)[0]
    >>> bool(tf.reduce_all(tiles == same))
    True
    >>> source = reassemble(tiles, perms, labels)  # back to source order
    >>> jigsaw_puzzles(tf.zeros([1, 2, 2, 3]), 0, perms)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ssl_zoo.data.errors.ImageShapeError: images of 2x2 px are smaller than the 3x3 grid; ...
    """
    opt = _puzzle_options(grid=grid, cell_size=cell_size, tile_size=tile_size,
                          crop_scale=crop_scale, crop_ratio=crop_ratio, jitter=jitter,
                          channel_shift=channel_shift, color_jitter=color_jitter,
                          grayscale_prob=grayscale_prob, min_occluded=min_occluded,
                          max_occluded=max_occluded, normalize=normalize)
    perms = check_permutations(permutations, opt["grid"])
    return _generate(images, seed, tf.convert_to_tensor(perms, tf.int32), opt,
                     return_details)


def make_puzzle_view(permutations, **options):
    """A view f(images, seed=None) -> (tiles, labels) with `jigsaw_puzzles` options bound.

    How a model turns its own permutation set into its training stream's view: the
    permutations and options are checked once, here; the view emits labels (the
    permutation indices replace the data set's labels). It is not registered in the
    view registry (each model has its own permutations); it carries
    `emits_labels = True`, `permutations` and `options` as attributes.

    Args:
        permutations: (P, grid * grid) permutations (see `jigsaw_puzzles`).
        **options: keyword options of `jigsaw_puzzles` (not `return_details`).

    Returns:
        f(images (B, H, W, 3), seed=None) -> (tiles float32 (B, n, t, t, 3),
        labels int64 (B,)).

    Raises:
        ValueError: invalid permutations or options (as `jigsaw_puzzles`), or
            `return_details` among the options.
        TypeError: an unknown option.

    Example:
    >>> view = make_puzzle_view(hamming_permutations(8, seed=0).permutations,
    ...                         max_occluded=1)
    >>> ds = tf.data.Dataset.from_tensor_slices(tf.zeros([8, 32, 32, 3], tf.uint8))
    >>> tiles, labels = next(iter(ds.batch(4).map(view)))
    >>> tiles.shape, labels.shape
    (TensorShape([4, 9, 9, 9, 3]), TensorShape([4]))
    """
    if "return_details" in options:
        raise ValueError("make_puzzle_view makes a view that returns (tiles, labels); "
                         "call jigsaw_puzzles(..., return_details=True) for details.")
    opt = _puzzle_options(**options)
    perms = check_permutations(permutations, opt["grid"])
    if tf.is_tensor(perms):
        raise TypeError("make_puzzle_view needs concrete permutations (a numpy array or "
                        "list), not a symbolic tensor.")

    @tf.autograph.experimental.do_not_convert
    def puzzle_view(images, seed=None):
        return _generate(images, seed, tf.constant(perms, tf.int32), opt, False)

    puzzle_view.emits_labels = True
    puzzle_view.permutations = perms
    puzzle_view.options = dict(options)
    return puzzle_view


@tf.autograph.experimental.do_not_convert
def reassemble(tiles, permutations, labels):
    """Undo the permutation of puzzles: tiles back in source (row-major cell) order.

    Output position k holds source tile `perm[k]` (perm = permutations[label]), so
    source tile m is output position argsort(perm)[m]. Occluded tiles stay occluders.

    Args:
        tiles: (B, n, ...) puzzle tiles.
        permutations: (P, n) the permutation set the puzzles were made with.
        labels: (B,) permutation indices.

    Returns:
        tensor of the shape of `tiles`, in source order.

    Example:
    >>> perms = np.array([[2, 0, 1, 3], [0, 1, 2, 3]])
    >>> reassemble(tf.constant([[10, 11, 12, 13]]), perms, tf.constant([0])).numpy()
    array([[11, 12, 10, 13]], dtype=int32)
    """
    tiles = tf.convert_to_tensor(tiles)
    rows = tf.gather(tf.convert_to_tensor(permutations, tf.int32), labels)
    return tf.gather(tiles, tf.argsort(rows, axis=1), axis=1, batch_dims=1)
