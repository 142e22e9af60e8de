"""Tests of ssl_zoo.data.jigsaw: Hamming permutation sets and the puzzle generator."""

import itertools
import math

import numpy as np
import pytest
import tensorflow as tf

from ssl_zoo.data.errors import ImageShapeError
from ssl_zoo.data.jigsaw import (
    hamming_permutations,
    jigsaw_puzzles,
    make_puzzle_view,
    reassemble,
    standardize_tiles,
)

#: Everything random off: tiles are exact pixel blocks of the crops.
PLAIN = dict(color_jitter=0.0, grayscale_prob=0.0, normalize=False, channel_shift=0)


def _images(n=4, size=24, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)),
                       tf.uint8)


@pytest.fixture(scope="module")
def perms20():
    return hamming_permutations(20, seed=0).permutations


def _pairwise(perms):
    """Straightforward reference: Hamming distance of every distinct pair of rows."""
    return [int(np.sum(a != b)) for a, b in itertools.combinations(perms, 2)]


# ------------------------------------------------------------------ permutation sets
@pytest.mark.parametrize("num,grid,criterion", [(40, 3, "max_min"), (40, 3, "max_avg"),
                                                (9, 2, "max_min"), (12, 2, "max_avg")])
def test_permutation_sets_are_distinct_permutations_with_exact_stats(num, grid,
                                                                     criterion):
    s = hamming_permutations(num, grid=grid, criterion=criterion, seed=3)
    n = grid * grid
    assert s.permutations.shape == (num, n) and s.permutations.dtype == np.int32
    assert (np.sort(s.permutations, axis=1) == np.arange(n)).all()
    assert len({tuple(r) for r in s.permutations.tolist()}) == num
    distances = _pairwise(s.permutations)
    assert s.min_distance == min(distances)
    assert s.mean_distance == pytest.approx(np.mean(distances), abs=1e-12)


def test_single_permutation_set_has_no_pair():
    s = hamming_permutations(1, seed=0)
    assert s.permutations.shape == (1, 9) and s.min_distance == 9
    assert math.isnan(s.mean_distance)


def test_permutation_sets_are_seeded():
    a = hamming_permutations(30, seed=5).permutations
    assert (a == hamming_permutations(30, seed=5).permutations).all()
    assert not (a == hamming_permutations(30, seed=6).permutations).all()
    b = hamming_permutations(30, seed=5, criterion="max_avg").permutations
    assert (b == hamming_permutations(30, seed=5, criterion="max_avg").permutations).all()


def test_identity_excluded_unless_asked_and_then_first():
    identity = list(range(9))
    for seed in range(3):
        rows = hamming_permutations(50, seed=seed).permutations.tolist()
        assert identity not in rows
    # grid 2: every permutation but the identity is chosen, never the identity
    rows = hamming_permutations(23, grid=2, seed=0).permutations.tolist()
    assert [0, 1, 2, 3] not in rows
    with_id = hamming_permutations(5, seed=1, include_identity=True)
    assert with_id.permutations[0].tolist() == identity
    assert with_id.permutations[1:].tolist().count(identity) == 0


def test_max_min_beats_max_avg_on_min_distance():
    for num in (50, 100):
        best = hamming_permutations(num, seed=0, criterion="max_min")
        avg = hamming_permutations(num, seed=0, criterion="max_avg")
        assert best.min_distance >= avg.min_distance
    assert hamming_permutations(100, seed=0).min_distance > hamming_permutations(
        100, seed=0, criterion="max_avg").min_distance  # 6 > 3, measured


def test_grid2_is_exhaustive():
    everything = {tuple(p) for p in itertools.permutations(range(4))}
    got = hamming_permutations(24, grid=2, seed=0, include_identity=True).permutations
    assert {tuple(r) for r in got.tolist()} == everything
    got = hamming_permutations(23, grid=2, seed=0).permutations
    assert {tuple(r) for r in got.tolist()} == everything - {(0, 1, 2, 3)}
    # Klein four-group: 4 permutations at mutual distance 4, found from the identity
    assert hamming_permutations(4, grid=2, include_identity=True).min_distance == 4


def test_grid4_uses_a_seeded_pool():
    s = hamming_permutations(6, grid=4, seed=0, pool_size=500)
    assert s.permutations.shape == (6, 16)
    assert (np.sort(s.permutations, axis=1) == np.arange(16)).all()
    assert (s.permutations == hamming_permutations(6, grid=4, seed=0,
                                                   pool_size=500).permutations).all()
    with pytest.raises(ValueError, match="pool of 500 sampled permutations"):
        hamming_permutations(501, grid=4, pool_size=500)


def test_permutation_set_errors():
    with pytest.raises(ValueError, match="num_permutations must be an integer >= 1"):
        hamming_permutations(0)
    with pytest.raises(ValueError, match="grid must be an integer >= 2"):
        hamming_permutations(2, grid=1)
    with pytest.raises(ValueError, match="criterion must be one of"):
        hamming_permutations(2, criterion="max_sum")
    with pytest.raises(ValueError, match="24 permutations, 23 without the identity; "
                                         "cannot choose 24"):
        hamming_permutations(24, grid=2)
    with pytest.raises(ValueError, match="cannot choose 25"):
        hamming_permutations(25, grid=2, include_identity=True)
    with pytest.raises(ValueError, match=r"reached min Hamming distance 6 < requested 7; "
                                         r"ask for fewer permutations"):
        hamming_permutations(100, seed=0, min_distance=7)
    assert hamming_permutations(100, seed=0, min_distance=6).min_distance == 6


# ----------------------------------------------------------------- puzzle structure
def test_reassembled_puzzle_is_source_except_occluders_from_partner(perms20):
    images = _images(6, 32)
    tiles, labels, d = jigsaw_puzzles(images, 7, perms20, max_occluded=3,
                                      return_details=True)
    assert tiles.shape == (6, 9, 9, 9, 3) and labels.dtype == tf.int64
    assert ((labels.numpy() >= 0) & (labels.numpy() < 20)).all()
    back = reassemble(tiles, perms20, labels).numpy()
    occluded = d["occluded"].numpy()
    source, occluders = d["source_tiles"].numpy(), d["occluder_tiles"].numpy()
    np.testing.assert_array_equal(back[~occluded], source[~occluded])
    np.testing.assert_array_equal(back[occluded], occluders[occluded])
    assert occluded.any() and not np.array_equal(back, source)
    partner = d["partner"].numpy()
    assert (partner != np.arange(6)).all() and ((0 <= partner) & (partner < 6)).all()
    # the output itself is the source order permuted: output k = source perm[k]
    rows = perms20[labels.numpy()]
    np.testing.assert_array_equal(d["permutations"].numpy(), rows)
    mixed = np.where(occluded[..., None, None, None], occluders, source)
    np.testing.assert_array_equal(tiles.numpy(), np.take_along_axis(
        mixed, rows[:, :, None, None, None], axis=1))


def test_occluders_are_blocks_of_the_partner_crop(perms20):
    images = _images(5, 24, seed=1)
    kwargs = dict(max_occluded=2, crop_scale=(1.0, 1.0))
    _, labels, d = jigsaw_puzzles(images, 3, perms20, return_details=True, **kwargs,
                                  **PLAIN)
    # same seed, colour on: the same draws of geometry, occlusion, partner and label
    _, labels2, d2 = jigsaw_puzzles(images, 3, perms20, return_details=True, **kwargs)
    for key in ("occluded", "partner", "occluder_positions", "tile_positions"):
        np.testing.assert_array_equal(d[key].numpy(), d2[key].numpy())
    np.testing.assert_array_equal(labels.numpy(), labels2.numpy())
    crops = d["crops"].numpy()
    np.testing.assert_array_equal(crops, images.numpy().astype(np.float32))
    occ, pos, partner = (d[k].numpy() for k in ("occluder_tiles", "occluder_positions",
                                                "partner"))
    t = occ.shape[2]
    assert ((pos >= 0) & (pos <= 24 - t)).all()
    for i in range(5):
        assert partner[i] != i
        for k in range(9):
            y, x = pos[i, k]
            np.testing.assert_array_equal(occ[i, k], crops[partner[i], y:y + t, x:x + t])


def test_batch_of_one_takes_occluders_from_itself(perms20):
    _, _, d = jigsaw_puzzles(_images(1), 0, perms20, return_details=True, **PLAIN)
    assert d["partner"].numpy().tolist() == [0]
    y, x = d["occluder_positions"].numpy()[0, 0]
    np.testing.assert_array_equal(d["occluder_tiles"].numpy()[0, 0],
                                  d["crops"].numpy()[0, y:y + 7, x:x + 7])


def test_occlusion_counts_within_range_and_roughly_uniform(perms20):
    images = _images(600, 9, seed=2)  # 3-px cells and tiles: cheap, many puzzles
    run = tf.function(lambda x, **kw: jigsaw_puzzles(x, 11, perms20,
                                                     return_details=True, **kw))
    _, labels, d = run(images)
    counts = d["num_occluded"].numpy()
    np.testing.assert_array_equal(counts, d["occluded"].numpy().sum(1))
    assert counts.min() >= 0 and counts.max() <= 2
    share = np.bincount(counts, minlength=3) / len(counts)
    assert (np.abs(share - 1 / 3) < 0.08).all(), share
    assert d["occluded"].numpy().any(axis=0).all()  # every position gets occluded
    assert len(np.unique(labels.numpy())) == 20  # labels cover the whole set

    _, _, d = run(images, min_occluded=1, max_occluded=1)
    assert (d["occluded"].numpy().sum(1) == 1).all()
    tiles, labels, d = run(images, max_occluded=0)
    assert not d["occluded"].numpy().any()
    np.testing.assert_array_equal(reassemble(tiles, perms20, labels).numpy(),
                                  d["source_tiles"].numpy())


def test_tiles_are_exact_integer_blocks_inside_their_cells(perms20):
    images = _images(3, 24, seed=4)
    base = dict(crop_scale=(1.0, 1.0), return_details=True, **PLAIN)
    # centred: cell 8, tile round(8 * 64 / 75) = 7, offset (8 - 7) // 2 = 0
    _, _, d = jigsaw_puzzles(images, 0, perms20, jitter=False, **base)
    src = d["source_tiles"].numpy()
    assert src.shape == (3, 9, 7, 7, 3)
    for r, c in itertools.product(range(3), range(3)):
        np.testing.assert_array_equal(src[:, 3 * r + c],
                                      images.numpy()[:, 8 * r:8 * r + 7, 8 * c:8 * c + 7])
    # jittered: random integer offsets in [0, cell - tile]
    _, _, d = jigsaw_puzzles(images, 1, perms20, tile_size=5, **base)
    src, offsets, positions = (d[k].numpy() for k in ("source_tiles", "cell_offsets",
                                                      "tile_positions"))
    assert offsets.dtype == np.int32 and offsets.min() == 0 and offsets.max() == 3
    assert len(np.unique(offsets)) == 4
    grid_origin = np.array([[8 * (k // 3), 8 * (k % 3)] for k in range(9)])
    np.testing.assert_array_equal(positions, grid_origin + offsets)
    for i, k in itertools.product(range(3), range(9)):
        y, x = positions[i, k]
        np.testing.assert_array_equal(src[i, k], images.numpy()[i, y:y + 5, x:x + 5])


def test_tiles_are_blocks_of_the_resized_crop(perms20):
    images = _images(2, 29, seed=5)  # cell 9, crop resized to 27 x 27
    _, _, d = jigsaw_puzzles(images, 2, perms20, return_details=True, **PLAIN)
    crops = d["crops"].numpy()
    assert crops.shape == (2, 27, 27, 3)
    expected = tf.image.crop_and_resize(tf.cast(images, tf.float32), d["crop_boxes"],
                                        tf.range(2), [27, 27])
    np.testing.assert_array_equal(crops, expected.numpy())
    src, pos = d["source_tiles"].numpy(), d["tile_positions"].numpy()
    t = src.shape[2]
    for i, k in itertools.product(range(2), range(9)):
        y, x = pos[i, k]
        np.testing.assert_array_equal(src[i, k], crops[i, y:y + t, x:x + t])


def test_channel_shift_cuts_each_channel_inside_its_cell(perms20):
    images = _images(3, 24, seed=6)
    _, _, d = jigsaw_puzzles(images, 4, perms20, tile_size=5, crop_scale=(1.0, 1.0),
                             return_details=True,
                             **{**PLAIN, "channel_shift": 2})
    src, pos, chan = (d[k].numpy() for k in ("source_tiles", "tile_positions",
                                             "channel_positions"))
    origin = np.array([[8 * (k // 3), 8 * (k % 3)] for k in range(9)])[None, :, None]
    assert ((chan - origin >= 0) & (chan - origin <= 3)).all()  # inside the cell
    assert (np.abs(chan - pos[:, :, None]) <= 2).all()
    assert (chan != pos[:, :, None]).any()
    for i, k, c in itertools.product(range(3), range(9), range(3)):
        y, x = chan[i, k, c]
        np.testing.assert_array_equal(src[i, k, ..., c], images.numpy()[i, y:y + 5,
                                                                        x:x + 5, c])


# ----------------------------------------------------------------- colour and scale
def test_tiles_are_standardised_and_constant_images_give_zeros(perms20):
    tiles, _ = jigsaw_puzzles(_images(4, 32), 0, perms20)
    t = tiles.numpy().astype(np.float64)
    np.testing.assert_allclose(t.mean(axis=(2, 3)), 0.0, atol=1e-5)
    np.testing.assert_allclose(t.std(axis=(2, 3, 4)), 1.0, atol=1e-4)
    flat, _ = jigsaw_puzzles(tf.fill([3, 30, 30, 3], 93.0), 0, perms20)
    assert np.isfinite(flat.numpy()).all() and (flat.numpy() == 0).all()


def test_standardize_tiles_matches_numpy_reference():
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 255, (2, 3, 5, 5, 3)).astype(np.float32)
    x[0, 1] = 42.0  # a constant tile: guarded std, zeros
    centred = x - x.mean(axis=(2, 3), keepdims=True)
    std = np.maximum(centred.std(axis=(2, 3, 4), keepdims=True), 1 / np.sqrt(75))
    np.testing.assert_allclose(np.asarray(standardize_tiles(x)), centred / std,
                               atol=1e-5)
    assert (np.asarray(standardize_tiles(x))[0, 1] == 0).all()
    whole = x - x.mean(axis=(2, 3, 4), keepdims=True)
    ref = whole / np.maximum(whole.std(axis=(2, 3, 4), keepdims=True), 1 / np.sqrt(75))
    np.testing.assert_allclose(np.asarray(standardize_tiles(x, per_channel_mean=False)),
                               ref, atol=1e-5)
    half = standardize_tiles(tf.constant(x, tf.float16))
    assert half.dtype == tf.float16 and np.isfinite(half.numpy()).all()
    assert standardize_tiles(tf.constant(x.astype(np.uint8))).dtype == tf.float32


def test_colour_jitter_is_per_tile_and_grayscale_makes_grey_tiles(perms20):
    colour = tf.constant(np.broadcast_to([200, 100, 50], (2, 24, 24, 3)), tf.uint8)
    tiles, _ = jigsaw_puzzles(colour, 0, perms20, normalize=False, grayscale_prob=0.0,
                              max_occluded=0)
    t = tiles.numpy()
    assert t.min() >= 0 and t.max() <= 255
    per_tile = t.reshape(2 * 9, -1, 3)
    assert (per_tile == per_tile[:, :1]).all()  # still a constant colour per tile
    assert len({tuple(c) for c in per_tile[:, 0].tolist()}) == 18  # each its own
    plain, _ = jigsaw_puzzles(colour, 0, perms20, **PLAIN)
    assert (plain.numpy() == [200, 100, 50]).all()
    grey, _ = jigsaw_puzzles(_images(2), 0, perms20, grayscale_prob=1.0, normalize=False)
    g = grey.numpy()
    assert (g[..., 0] == g[..., 1]).all() and (g[..., 0] == g[..., 2]).all()
    some, _ = jigsaw_puzzles(_images(32, 12), 0, perms20, normalize=False)
    is_grey = (np.ptp(some.numpy(), axis=-1) == 0).all(axis=(2, 3))  # (B, n)
    assert 0.55 < is_grey.mean() < 0.77  # grayscale_prob=0.66 per tile
    mixed = is_grey.any(axis=1) & ~is_grey.all(axis=1)
    assert mixed.mean() > 0.8  # drawn per tile, not per image (0.976 expected)


def test_sizes_64_and_255():
    perms = hamming_permutations(10, seed=0).permutations
    tiles, _, d = jigsaw_puzzles(_images(3, 64), 0, perms, return_details=True)
    assert tiles.shape == (3, 9, 18, 18, 3) and d["crops"].shape == (3, 63, 63, 3)
    tiles, _, d = jigsaw_puzzles(_images(2, 255), 0, perms, return_details=True)
    assert tiles.shape == (2, 9, 73, 73, 3) and d["crops"].shape == (2, 255, 255, 3)
    assert np.isfinite(tiles.numpy()).all()


# ------------------------------------------------------------ seeds and tf.data
def test_same_seed_same_puzzles_eagerly_in_tf_function_and_tf_data(perms20):
    images = _images(8, 24)
    a, la = jigsaw_puzzles(images, 5, perms20)
    b, lb = jigsaw_puzzles(images, tf.constant([5, 0], tf.int64), perms20)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(la.numpy(), lb.numpy())
    c, lc = jigsaw_puzzles(images, 6, perms20)
    assert not np.array_equal(a.numpy(), c.numpy())
    assert not np.array_equal(la.numpy(), lc.numpy())

    # A graph may reorder float reductions (~1e-5 apart); every random draw is equal.
    view = make_puzzle_view(perms20)
    assert view.emits_labels and (view.permutations == perms20).all()
    graph = tf.function(view)(images, tf.constant(5, tf.int64))
    np.testing.assert_allclose(graph[0].numpy(), a.numpy(), atol=1e-4)
    np.testing.assert_array_equal(graph[1].numpy(), la.numpy())
    ds = tf.data.Dataset.from_tensor_slices(images).batch(4)
    seeded = ds.map(lambda x: view(x, 5))
    first, again = next(iter(seeded)), next(iter(seeded))
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())
    eager = view(images[:4], 5)
    np.testing.assert_allclose(first[0].numpy(), eager[0].numpy(), atol=1e-4)
    np.testing.assert_array_equal(first[1].numpy(), eager[1].numpy())
    seedless = ds.map(view)  # fresh draws, shapes still static
    assert seedless.element_spec[0].shape.as_list() == [None, 9, 7, 7, 3]
    assert [tuple(t.shape) for t, _ in seedless] == [(4, 9, 7, 7, 3)] * 2


def test_unknown_image_size_in_a_trace(perms20):
    run = tf.function(lambda x: jigsaw_puzzles(x, 0, perms20)[0],
                      input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8)])
    assert run(tf.zeros([2, 40, 50, 3], tf.uint8)).shape == (2, 9, 11, 11, 3)
    with pytest.raises(tf.errors.InvalidArgumentError, match="smaller than the 3x3 grid"):
        run(tf.zeros([2, 2, 2, 3], tf.uint8))
    by_tensor = tf.function(
        lambda p: jigsaw_puzzles(_images(2), 0, p)[1],
        input_signature=[tf.TensorSpec([None, 9], tf.int32)])
    assert by_tensor(tf.constant(perms20)).shape == (2,)
    with pytest.raises(tf.errors.InvalidArgumentError, match="permutation of range"):
        by_tensor(tf.zeros([3, 9], tf.int32))


# ------------------------------------------------------------------- named errors
@pytest.mark.parametrize("kwargs,match", [
    (dict(max_occluded=10), "max_occluded=10 is more than the 9 tiles"),
    (dict(min_occluded=2, max_occluded=1), "min_occluded=2 is larger than max_occluded=1"),
    (dict(min_occluded=-1), "min_occluded must be an integer >= 0"),
    (dict(tile_size=9), "tile_size 9 is larger than the cell \\(8 px\\)"),
    (dict(tile_size=0), "tile_size must be an integer >= 1"),
    (dict(cell_size=5, tile_size=6), "tile_size 6 is larger than the cell \\(5 px\\)"),
    (dict(cell_size=9), "smaller than the 3x3 grid of 9-px cells \\(27 px\\)"),
    (dict(grid=1), "grid must be an integer >= 2"),
    (dict(crop_scale=(0.0, 1.0)), "crop_scale must be"),
    (dict(grayscale_prob=1.5), "grayscale_prob must be a probability"),
])
def test_puzzle_option_errors(kwargs, match, perms20):
    with pytest.raises(ValueError, match=match):
        jigsaw_puzzles(_images(2), 0, perms20, **kwargs)


def test_image_and_permutation_errors(perms20):
    with pytest.raises(ImageShapeError, match="images of 2x2 px are smaller than the 3x3 "
                                              "grid"):
        jigsaw_puzzles(tf.zeros([1, 2, 2, 3]), 0, perms20)
    for bad in (tf.zeros([24, 24, 3]), tf.zeros([2, 24, 24, 1])):
        with pytest.raises(ImageShapeError, match=r"\(B, H, W, 3\)"):
            jigsaw_puzzles(bad, 0, perms20)
    with pytest.raises(ValueError, match=r"shape \(P, 9\)"):
        jigsaw_puzzles(_images(2), 0, perms20[:, :4])
    with pytest.raises(ValueError, match=r"shape \(P, 4\)"):
        jigsaw_puzzles(_images(2), 0, perms20, grid=2)
    broken = perms20.copy()
    broken[3, 0] = broken[3, 1]
    with pytest.raises(ValueError, match="row 3 .* is not a permutation of range\\(9\\)"):
        jigsaw_puzzles(_images(2), 0, broken)
    with pytest.raises(ValueError, match="repeated rows"):
        jigsaw_puzzles(_images(2), 0, np.concatenate([perms20, perms20[:1]]))
    with pytest.raises(ValueError, match="return_details"):
        make_puzzle_view(perms20, return_details=True)
    with pytest.raises(ValueError, match="max_occluded=12"):
        make_puzzle_view(perms20, max_occluded=12)  # checked once, when made


def test_reassemble_inverts_the_permutation():
    perms = hamming_permutations(6, grid=2, seed=0).permutations
    labels = np.array([0, 3, 5])
    source = np.arange(12).reshape(3, 4) * 10
    puzzle = np.take_along_axis(source, perms[labels], axis=1)  # output k = source[p[k]]
    np.testing.assert_array_equal(reassemble(puzzle, perms, labels).numpy(), source)


def test_puzzle_view_in_make_pipeline_replaces_the_labels(perms20):
    from ssl_zoo.data import load_arrays, make_pipeline
    images = np.random.default_rng(0).integers(0, 256, (16, 24, 24, 3)).astype(np.uint8)
    data = load_arrays((images, np.full(16, 7, np.int64)))
    view = make_puzzle_view(perms20)
    first = next(iter(make_pipeline(data, 8, view=view, seed=0)))
    again = next(iter(make_pipeline(data, 8, view=view, seed=0)))
    assert first[0].shape == (8, 9, 7, 7, 3)
    assert ((first[1].numpy() >= 0) & (first[1].numpy() < 20)).all()
    assert not (first[1].numpy() == 7).all()  # permutation labels, not the data set's
    np.testing.assert_array_equal(first[0].numpy(), again[0].numpy())
    np.testing.assert_array_equal(first[1].numpy(), again[1].numpy())
