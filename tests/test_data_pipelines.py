"""Tests of ssl_zoo.data.pipelines (views, pipelines) and ssl_zoo.data.splits."""

import numpy as np
import pytest
import tensorflow as tf

from ssl_zoo.data import (
    color_jitter,
    cutout,
    labeled_unlabeled_split,
    load_arrays,
    long_tailed_counts,
    long_tailed_indices,
    make_pipeline,
    make_unlabeled_pipeline,
    normalize,
    rand_augment,
    random_grayscale,
    random_pad_crop,
    strong_view,
    supcon_view,
    to_float,
    weak_view,
)
from ssl_zoo.data.seeds import split_seed

VIEW_FNS = {"weak": weak_view, "strong": strong_view, "supcon": supcon_view}


@pytest.fixture(scope="module")
def images():
    """16 real digit images (16x16 RGB uint8)."""
    return tf.constant(load_arrays("digits", "test").images[:16])


@pytest.fixture(scope="module")
def small():
    """A labeled ArrayDataset of 40 real digits (4 per class)."""
    return load_arrays("digits", "test").take_per_class(4, seed=0)


def _colorful(n=8, size=16, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)),
                       tf.uint8)


# ---------------------------------------------------------------------- basic ops
def test_to_float_and_normalize():
    x = tf.constant([[[0, 128, 255]]], tf.uint8)
    assert to_float(x).dtype == tf.float32
    np.testing.assert_allclose(to_float(x).numpy(), [[[0.0, 128.0, 255.0]]])
    out = normalize(x, (0.0, 128.0, 255.0), (1.0, 2.0, 5.0))
    np.testing.assert_allclose(out.numpy(), [[[0.0, 0.0, 0.0]]])
    np.testing.assert_allclose(normalize(x, (10.0,) * 3, (2.0,) * 3).numpy(),
                               [[[-5.0, 59.0, 122.5]]])


@pytest.mark.parametrize("name", sorted(VIEW_FNS))
def test_view_shapes_ranges_and_seeding(name, images):
    fn = VIEW_FNS[name]
    a = fn(images, seed=7)
    assert a.shape == images.shape and a.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(a)) and float(tf.reduce_max(a)) <= 255.0
    np.testing.assert_array_equal(a.numpy(), fn(images, seed=7).numpy())
    assert not np.array_equal(a.numpy(), fn(images, seed=8).numpy())
    # Unseeded calls use ordinary randomness: two calls differ.
    assert not np.array_equal(fn(images).numpy(), fn(images).numpy())
    single = fn(images[0], seed=3)
    assert single.shape == images.shape[1:] and single.dtype == tf.float32


@pytest.mark.parametrize("name", sorted(VIEW_FNS))
def test_view_inside_tf_function_matches_eager(name, images):
    fn = VIEW_FNS[name]
    graph_fn = tf.function(lambda x, s: fn(x, seed=s))
    seed = tf.constant([7, 0], tf.int64)
    g = graph_fn(images, seed)
    assert g.shape == images.shape
    np.testing.assert_allclose(g.numpy(), fn(images, seed=7).numpy(), atol=1e-2)
    np.testing.assert_array_equal(g.numpy(), graph_fn(images, seed).numpy())
    assert not np.array_equal(g.numpy(), graph_fn(images, tf.constant([8, 0], tf.int64)))
    unseeded = tf.function(lambda x: fn(x))
    assert not np.array_equal(unseeded(images).numpy(), unseeded(images).numpy())


def test_weak_view_constant_image_unchanged():
    x = tf.fill([4, 12, 12, 3], tf.constant(37, tf.uint8))
    expected = np.full((4, 12, 12, 3), 37.0)
    np.testing.assert_array_equal(weak_view(x, seed=0).numpy(), expected)


def test_weak_view_is_flip_plus_shift_per_image():
    x = _colorful(n=16, size=10)
    out = weak_view(x, seed=5, pad=4).numpy()
    shifts = set()
    for img, res in zip(x.numpy().astype(np.float32), out):
        found = None
        for flipped in (img, img[:, ::-1]):
            padded = np.pad(flipped, ((4, 4), (4, 4), (0, 0)), mode="reflect")
            for dy in range(9):
                for dx in range(9):
                    if np.array_equal(padded[dy:dy + 10, dx:dx + 10], res):
                        found = (dy, dx, flipped is not img)
        assert found is not None, "output is not a flipped/shifted crop of the input"
        shifts.add(found)
    assert len(shifts) > 4  # every image draws its own shift and flip


def test_cutout_square_and_strong_view_differs_per_image():
    x = tf.zeros([32, 16, 16, 3])
    masked = (cutout(x, seed=1).numpy() == 127.5).all(-1)
    for m in masked:
        rows, cols = np.flatnonzero(m.any(1)), np.flatnonzero(m.any(0))
        assert 0 < rows.size <= 8 and 0 < cols.size <= 8
        assert m.sum() == rows.size * cols.size  # one axis-aligned rectangle
        assert rows.size == 8 or cols.size < 8 or rows[0] == 0 or rows[-1] == 15
    same = tf.repeat(_colorful(n=1), 16, axis=0)
    ra = rand_augment(same, seed=0).numpy()
    assert len({r.tobytes() for r in ra}) > 8  # operations drawn per image, not per batch


def test_supcon_pieces():
    x = _colorful(n=64)
    g = random_grayscale(x, seed=0, p=1.0).numpy()
    np.testing.assert_array_equal(g[..., 0], g[..., 1])
    share = (lambda o: np.mean([(im[..., 0] == im[..., 1]).all() for im in o]))
    assert 0.05 < share(random_grayscale(x, seed=0, p=0.2).numpy()) < 0.4
    assert share(random_grayscale(x, seed=0, p=0.0).numpy()) == 0.0
    # Identity settings give back the image or its mirror image.
    ident = supcon_view(x, seed=3, scale=(1.0, 1.0), jitter_p=0.0, grayscale_p=0.0).numpy()
    xf = x.numpy().astype(np.float32)
    for a, b in zip(ident, xf):
        assert np.allclose(a, b, atol=1e-3) or np.allclose(a, b[:, ::-1], atol=1e-3)
    jit = color_jitter(tf.repeat(x[:1], 16, 0), seed=2, p=1.0).numpy()
    assert len({j.tobytes() for j in jit}) == 16
    assert not np.array_equal(color_jitter(x, seed=2, p=0.0).numpy(), jit[:1])
    np.testing.assert_array_equal(color_jitter(x, seed=2, p=0.0).numpy(), xf)
    crops = supcon_view(x, seed=4, jitter_p=0.0, grayscale_p=0.0).numpy()
    assert np.mean([not np.allclose(a, b) for a, b in zip(crops, xf)]) > 0.5


# ------------------------------------------------------------------------ pipelines
@pytest.mark.parametrize("view,num_views", [("none", 1), ("weak", 1), ("strong", 1),
                                            ("supcon", 2)])
def test_make_pipeline_shapes_and_epoch(view, num_views, small):
    ds = make_pipeline(small, 16, view=view, num_views=num_views, seed=0)
    batches = list(ds)
    assert [len(b[1]) for b in batches] == [16, 16, 8]
    x, y = batches[0]
    expected = (16, num_views, 16, 16, 3) if num_views > 1 else (16, 16, 16, 3)
    assert tuple(x.shape) == expected and x.dtype == tf.float32 and y.dtype == tf.int64
    assert 0.0 <= float(tf.reduce_min(x)) and float(tf.reduce_max(x)) <= 255.0
    labels = np.concatenate([b[1].numpy() for b in batches])
    assert sorted(labels.tolist()) == sorted(small.labels.tolist())
    if num_views > 1:
        assert not np.array_equal(x[:, 0].numpy(), x[:, 1].numpy())
    if view == "none":
        seen = sorted(im.tobytes() for b in batches for im in b[0].numpy().astype(np.uint8))
        assert seen == sorted(im.tobytes() for im in small.images)


def test_make_pipeline_determinism_and_epochs(small):
    def first(ds):
        return [t.numpy() for t in next(iter(ds))]

    a = make_pipeline(small, 8, view="strong", seed=11)
    b = make_pipeline(small, 8, view="strong", seed=11)
    (xa, ya), (xb, yb) = first(a), first(b)
    np.testing.assert_array_equal(xa, xb)
    np.testing.assert_array_equal(ya, yb)
    epoch2 = first(a)  # a second pass reshuffles and redraws the views
    assert not np.array_equal(epoch2[0], xa)
    c, d = (make_pipeline(small, 8, view="weak", seed=s) for s in (12, 13))
    assert not np.array_equal(first(c)[0], first(d)[0])
    u1, u2 = make_pipeline(small, 8, view="weak"), make_pipeline(small, 8, view="weak")
    assert not np.array_equal(first(u1)[0], first(u2)[0])
    ordered = make_pipeline(small, 8, shuffle=False)
    np.testing.assert_array_equal(first(ordered)[1], small.labels[:8])


def test_make_pipeline_tf_data_input_repeat_and_drop(small):
    ds = make_pipeline(small.to_dataset(), 16, view="weak", seed=0, repeat=True,
                       drop_remainder=True)
    assert ds.element_spec[0].shape == (16, 16, 16, 3)
    assert len(list(ds.take(5))) == 5  # repeats past the 40 examples
    images_only = small.to_dataset().map(lambda x, y: x)
    x, y = next(iter(make_pipeline(images_only, 4, seed=0)))
    assert x.shape == (4, 16, 16, 3) and y.dtype == tf.int64
    with pytest.raises(ValueError, match="Unknown view"):
        make_pipeline(small, 4, view="rotate")


def _batches(ds, n):
    return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.take(n)]


def _assert_same_batches(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        tf.nest.map_structure(np.testing.assert_array_equal, g, w)


@pytest.mark.parametrize("view,num_views,tf_input", [
    ("weak", 1, False), ("supcon", 2, False), ("none", 1, False), ("weak", 1, True)])
def test_skip_batches_is_skip_without_augmenting(small, view, num_views, tf_input):
    """skip_batches=k gives the batches of `.skip(k)` (across epoch boundaries:
    40 images are 5 batches of 8), and does not run the view on the skipped ones."""
    data = small.to_dataset() if tf_input else small
    kw = dict(view=view, num_views=num_views, seed=5, repeat=True, drop_remainder=True)
    for k in (3, 12):
        _assert_same_batches(_batches(make_pipeline(data, 8, skip_batches=k, **kw), 4),
                             _batches(make_pipeline(data, 8, **kw).skip(k), 4))
    calls = []

    def counting_view(images, seed):
        tf.py_function(lambda: calls.append(1) or 0, [], tf.int32)
        return weak_view(images, seed)

    next(iter(make_pipeline(small, 8, view=counting_view, seed=0, repeat=True,
                            prefetch=False, skip_batches=50)))
    assert 1 <= len(calls) < 50, len(calls)
    with pytest.raises(ValueError, match="skip_batches must be an int >= 0"):
        make_pipeline(small, 8, skip_batches=-1)


def test_semi_supervised_skip_batches_is_skip(small):
    from ssl_zoo.data import make_semi_supervised_pipeline
    labeled = small.take_per_class(1, seed=0)
    kw = dict(mu=2, seed=3, include_unlabeled_labels=True)
    _assert_same_batches(
        _batches(make_semi_supervised_pipeline(labeled, small, 4, skip_batches=7, **kw), 3),
        _batches(make_semi_supervised_pipeline(labeled, small, 4, **kw).skip(7), 3))


def test_make_unlabeled_pipeline(small):
    ds = make_unlabeled_pipeline(small, 8, seed=0, drop_remainder=True)
    pairs = list(ds)
    assert len(pairs) == 5
    weak, strong = pairs[0]
    assert weak.shape == (8, 16, 16, 3) and strong.shape == (8, 16, 16, 3)
    assert weak.dtype == tf.float32 and strong.dtype == tf.float32
    assert not np.array_equal(weak.numpy(), strong.numpy())
    again = next(iter(make_unlabeled_pipeline(small, 8, seed=0, drop_remainder=True)))
    np.testing.assert_array_equal(again[1].numpy(), strong.numpy())


# --------------------------------------------------------------------------- splits
def test_long_tailed_counts_formula():
    counts = long_tailed_counts(500, 100, 10)
    assert counts[0] == 500 and counts[-1] == 5
    assert counts == sorted(counts, reverse=True)
    for k, n in enumerate(counts):
        assert n == int(np.floor(500 * 100 ** (-k / 9) + 1e-9))
    assert long_tailed_counts(4000, 100, 10)[-1] == 40
    assert long_tailed_counts(500, 50, 10)[-1] == 10  # exact, not 9.999... -> 9
    assert long_tailed_counts(150, 10, 100)[-1] == 15
    assert long_tailed_counts(7, 3, 1) == [7]
    with pytest.raises(ValueError):
        long_tailed_counts(10, 0.5, 3)


def test_long_tailed_indices_and_splits():
    labels = np.repeat(np.arange(10), 600)
    np.random.default_rng(0).shuffle(labels)
    counts = long_tailed_counts(500, 100, 10)
    idx = long_tailed_indices(labels, counts, seed=1)
    assert np.bincount(labels[idx], minlength=10).tolist() == counts
    np.testing.assert_array_equal(idx, long_tailed_indices(labels, counts, seed=1))
    assert not np.array_equal(idx, long_tailed_indices(labels, counts, seed=2))
    with pytest.raises(ValueError, match="class 0 has 600"):
        long_tailed_indices(labels, [601] + counts[1:], seed=0)

    unl_counts = long_tailed_counts(40, 100, 10)
    lab, unl = labeled_unlabeled_split(labels, counts, unl_counts, seed=0)
    assert np.intersect1d(lab, unl).size == 0
    assert np.bincount(labels[lab], minlength=10).tolist() == counts
    assert np.bincount(labels[unl], minlength=10).tolist() == unl_counts
    lab2, rest = labeled_unlabeled_split(labels, 25, seed=3)
    assert np.bincount(labels[lab2]).tolist() == [25] * 10
    assert np.bincount(labels[rest]).tolist() == [575] * 10
    assert np.union1d(lab2, rest).size == labels.size
    with pytest.raises(ValueError, match="class 0 has 600 examples"):
        labeled_unlabeled_split(labels, 500, [200] * 10, seed=0)


def test_pipeline_under_two_replica_strategy(small, two_replica_strategy):
    ds = make_pipeline(small, 16, view="weak", seed=0, drop_remainder=True)
    x, y = next(iter(two_replica_strategy.experimental_distribute_dataset(ds)))
    assert [t.shape for t in x.values] == [(8, 16, 16, 3), (8, 16, 16, 3)]
    assert [t.dtype for t in y.values] == [tf.int64, tf.int64]


# ----------------------------------------------- zero-padded crop (torchvision style)
def _find_shift(padded, out, size):
    """The (dy, dx) windows of `padded` equal to `out`."""
    h, w = size
    return [(dy, dx) for dy in range(padded.shape[0] - h + 1)
            for dx in range(padded.shape[1] - w + 1)
            if np.array_equal(padded[dy:dy + h, dx:dx + w], out)]


def test_random_pad_crop_constant_mode_pads_with_zeros():
    pad, h, w = 3, 6, 7
    ones = tf.ones([24, h, w, 3])
    out = random_pad_crop(ones, seed=4, pad=pad, mode="constant").numpy()
    padded = np.pad(np.ones((h, w, 3), np.float32), ((pad, pad), (pad, pad), (0, 0)))
    shifts = set()
    for res in out:
        found = _find_shift(padded, res, (h, w))
        assert found, "output is not a window of the zero-padded image"
        dy, dx = found[0]
        shifts.add((dy, dx))
        # Exact zeros where the window leaves the image, exact ones elsewhere.
        inside = np.zeros((h + 2 * pad, w + 2 * pad), bool)
        inside[pad:pad + h, pad:pad + w] = True
        np.testing.assert_array_equal(res[..., 0] == 1.0, inside[dy:dy + h, dx:dx + w])
        assert set(np.unique(res).tolist()) <= {0.0, 1.0}
    assert len(shifts) > 8 and any(s != (pad, pad) for s in shifts)
    assert (out == 0.0).any()
    # Reflect mode of the same image never shows a zero.
    assert (random_pad_crop(ones, seed=4, pad=pad).numpy() == 1.0).all()


def test_random_pad_crop_constant_mode_windows_match_numpy_and_reflect_shifts():
    pad = 4
    x = _colorful(n=12, size=9, seed=3)
    xf = x.numpy().astype(np.float32)
    const = random_pad_crop(x, seed=9, pad=pad, mode="constant").numpy()
    refl = random_pad_crop(x, seed=9, pad=pad).numpy()
    for img, c, r in zip(xf, const, refl):
        zero_padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="constant")
        reflect_padded = np.pad(img, ((pad, pad), (pad, pad), (0, 0)), mode="reflect")
        found_c = _find_shift(zero_padded, c, img.shape[:2])
        found_r = _find_shift(reflect_padded, r, img.shape[:2])
        assert found_c and found_r
        # Same seed, same shift: the mode changes only what fills the border.
        assert set(found_c) & set(found_r)
    # Padding wider than the image is fine with zeros (reflect needs pad < side).
    wide = random_pad_crop(tf.ones([8, 3, 3, 1]), seed=0, pad=5, mode="constant").numpy()
    assert wide.shape == (8, 3, 3, 1) and (wide == 0).all(axis=(1, 2, 3)).any()


def test_random_pad_crop_reflect_is_the_default():
    x = _colorful(n=8, size=10, seed=5)
    default = random_pad_crop(x, seed=2).numpy()
    np.testing.assert_array_equal(default, random_pad_crop(x, seed=2, mode="reflect"))
    for img, res in zip(x.numpy().astype(np.float32), default):
        assert _find_shift(np.pad(img, ((4, 4), (4, 4), (0, 0)), mode="reflect"), res,
                           img.shape[:2])
    np.testing.assert_array_equal(weak_view(x, seed=1).numpy(),
                                  weak_view(x, seed=1, pad_mode="reflect").numpy())
    assert not np.array_equal(random_pad_crop(x, seed=2, mode="constant").numpy(), default)


@pytest.mark.parametrize("call", [
    lambda x: random_pad_crop(x, seed=0, mode="zeros"),
    lambda x: random_pad_crop(x, seed=0, pad=0, mode="REFLECT"),
    lambda x: weak_view(x, seed=0, pad_mode="symmetric"),
    lambda x: strong_view(x, seed=0, pad_mode="edge"),
])
def test_bad_pad_mode_names_the_choices(call):
    with pytest.raises(ValueError, match=r"'reflect', 'constant', got '"):
        call(tf.zeros([2, 8, 8, 3]))


def test_pad_mode_reaches_weak_and_strong_views():
    x = tf.fill([16, 8, 8, 3], 200.0)
    weak = weak_view(x, seed=6, pad_mode="constant").numpy()
    assert set(np.unique(weak).tolist()) == {0.0, 200.0}
    assert (weak_view(x, seed=6).numpy() == 200.0).all()
    # With RandAugment applying nothing and no Cutout, the strong view is its weak view.
    strong = strong_view(x, seed=6, pad_mode="constant", apply_prob=0.0,
                         cutout_size=0).numpy()
    np.testing.assert_array_equal(
        strong, weak_view(x, split_seed(6, 3)[0], pad_mode="constant").numpy())
    assert (strong == 0.0).any()


def test_constant_pad_crop_inside_tf_function_and_tf_data():
    x = _colorful(n=8, size=12, seed=7)
    eager = random_pad_crop(x, seed=tf.constant([3, 1], tf.int64), mode="constant")
    graph = tf.function(lambda t, s: random_pad_crop(t, seed=s, mode="constant"))
    np.testing.assert_array_equal(graph(x, tf.constant([3, 1], tf.int64)).numpy(),
                                  eager.numpy())
    ds = tf.data.Dataset.from_tensors(x).map(
        lambda t: weak_view(t, seed=tf.constant([3, 1], tf.int64), pad_mode="constant"))
    np.testing.assert_array_equal(
        next(iter(ds)).numpy(),
        weak_view(x, seed=tf.constant([3, 1], tf.int64), pad_mode="constant").numpy())
