"""Tests of the long-tailed semi-supervised split and of the strong-view flavours."""

import os

import numpy as np
import pytest
import tensorflow as tf

from ssl_zoo.data import (
    STRONG_FLAVOUR_FACTOR,
    STRONG_FLAVOURS,
    cutout,
    get_view,
    load_arrays,
    long_tailed_semi_supervised_split,
    make_semi_supervised_pipeline,
    rand_augment,
    strong_view,
)
from ssl_zoo.data import views as views_module


# ------------------------------------------------------------------ numpy reference
def _lt_reference(head, gamma, num_classes):
    """N_k = floor(N_1 gamma^(-(k-1)/(K-1))), k = 1..K (1e-9: exact integers survive)."""
    k = np.arange(num_classes)
    counts = head * np.power(float(gamma), -k / (num_classes - 1))
    return np.floor(counts + 1e-9).astype(int)


def _expected_unlabeled(head, gamma, distribution, num_classes, gamma_u=None):
    if distribution == "uniform":
        return np.full(num_classes, head)
    counts = _lt_reference(head, gamma if gamma_u is None else gamma_u, num_classes)
    return counts[::-1] if distribution == "reversed" else counts


def _balanced_labels(num_classes=10, per_class=5000, seed=0):
    return np.random.default_rng(seed).permutation(np.repeat(np.arange(num_classes),
                                                             per_class))


def _check_split(labels, lab, unl, n_lab, n_unl, num_classes):
    for idx in (lab, unl):
        assert idx.dtype == np.int64 and np.all(np.diff(idx) > 0)
    assert np.intersect1d(lab, unl).size == 0
    np.testing.assert_array_equal(np.bincount(labels[lab], minlength=num_classes), n_lab)
    np.testing.assert_array_equal(np.bincount(labels[unl], minlength=num_classes), n_unl)


# ------------------------------------------------------------------------- LT splits
@pytest.mark.parametrize("distribution", ["consistent", "uniform", "reversed"])
@pytest.mark.parametrize("head, unl_head, gamma", [(500, 4000, 100), (1500, 3000, 100),
                                                   (400, 2000, 10)])
def test_lt_split_counts_match_formula(distribution, head, unl_head, gamma):
    y = _balanced_labels()
    lab, unl = long_tailed_semi_supervised_split(y, head, gamma, unl_head, distribution,
                                                 seed=3)
    _check_split(y, lab, unl, _lt_reference(head, gamma, 10),
                 _expected_unlabeled(unl_head, gamma, distribution, 10), 10)


def test_lt_split_known_cifar10_lt_counts_and_reversed_is_mirrored():
    y = _balanced_labels()
    lab, unl = long_tailed_semi_supervised_split(y, 500, 100, 4000, "reversed")
    assert np.bincount(y[lab]).tolist() == [500, 299, 179, 107, 64, 38, 23, 13, 8, 5]
    assert np.bincount(y[unl]).tolist() == [40, 66, 111, 185, 309, 516, 861, 1437, 2397,
                                            4000]


@pytest.mark.parametrize("distribution", ["consistent", "reversed"])
def test_lt_split_unlabeled_imbalance_ratio(distribution):
    y = _balanced_labels()
    lab, unl = long_tailed_semi_supervised_split(y, 500, 100, 4000, distribution,
                                                 unlabeled_imbalance_ratio=10, seed=1)
    _check_split(y, lab, unl, _lt_reference(500, 100, 10),
                 _expected_unlabeled(4000, 100, distribution, 10, gamma_u=10), 10)


def test_lt_split_rest_unlabeled_with_none():
    y = _balanced_labels(per_class=600)
    lab, unl = long_tailed_semi_supervised_split(y, 500, 100, None, None)
    n_lab = _lt_reference(500, 100, 10)
    _check_split(y, lab, unl, n_lab, 600 - n_lab, 10)
    assert lab.size + unl.size == y.size


def test_lt_split_deterministic_per_seed_and_seeds_differ():
    y = _balanced_labels(per_class=1000)
    a = long_tailed_semi_supervised_split(y, 500, 100, 400, "uniform", seed=5)
    b = long_tailed_semi_supervised_split(y, 500, 100, 400, "uniform", seed=5)
    c = long_tailed_semi_supervised_split(y, 500, 100, 400, "uniform", seed=6)
    for x, z in zip(a, b):
        np.testing.assert_array_equal(x, z)
    assert not np.array_equal(a[0], c[0]) and not np.array_equal(a[1], c[1])


def test_lt_split_num_classes_beyond_labels():
    y = np.repeat(np.arange(3), 50)
    with pytest.raises(ValueError, match="class 3 has 0 examples"):
        long_tailed_semi_supervised_split(y, 20, 2, 10, "uniform", num_classes=4)


@pytest.mark.parametrize("kwargs, message", [
    # class 9 needs 5 labeled + 4000 unlabeled but has 3000
    (dict(num_labeled_head=500, imbalance_ratio=100, num_unlabeled_head=4000,
          unlabeled_distribution="reversed"),
     r"class 9 has 3000 examples, fewer than the 5 labeled \+ 4000 unlabeled"),
    (dict(num_labeled_head=50, imbalance_ratio=100, num_unlabeled_head=10),
     "class 8 gets 0 labeled images .* cannot be learned"),
    (dict(num_labeled_head=500, imbalance_ratio=100, num_unlabeled_head=10,
          unlabeled_distribution="inverse"),
     "unlabeled_distribution must be one of .*'inverse'"),
    (dict(num_labeled_head=500, imbalance_ratio=0.5, num_unlabeled_head=10),
     r"imbalance_ratio \(gamma\) must be >= 1, got 0.5"),
    (dict(num_labeled_head=500, imbalance_ratio=10, num_unlabeled_head=10,
          unlabeled_imbalance_ratio=0.1),
     r"unlabeled_imbalance_ratio \(gamma\) must be >= 1, got 0.1"),
    (dict(num_labeled_head=500, imbalance_ratio=10),
     "num_unlabeled_head=None .* unlabeled_distribution=None"),
    (dict(num_labeled_head=500, imbalance_ratio=10, num_unlabeled_head=10,
          unlabeled_distribution=None),
     "num_unlabeled_head=None .* unlabeled_distribution=None"),
    (dict(num_labeled_head=500, imbalance_ratio=10, num_unlabeled_head=10,
          unlabeled_distribution="uniform", unlabeled_imbalance_ratio=5),
     "applies to 'consistent' and 'reversed' only"),
])
def test_lt_split_errors(kwargs, message):
    y = _balanced_labels(per_class=3000)
    with pytest.raises(ValueError, match=message):
        long_tailed_semi_supervised_split(y, **kwargs)


@pytest.mark.real_data
@pytest.mark.parametrize("distribution", ["consistent", "uniform", "reversed"])
def test_lt_split_on_cifar10_train(shared_data, distribution):
    y = load_arrays(os.path.join(shared_data, "cifar10-jpeg.zip"), "train").labels
    for head, unl_head in ((500, 4000), (1500, 3000)):
        lab, unl = long_tailed_semi_supervised_split(y, head, 100, unl_head, distribution,
                                                     seed=0)
        _check_split(y, lab, unl, _lt_reference(head, 100, 10),
                     _expected_unlabeled(unl_head, 100, distribution, 10), 10)


# ---------------------------------------------------------------- rand_augment prob.
def _structured(n, size=32, seed=0):
    """Images in 40..200 with a gradient, so every RandAugment op changes them."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)[None, :, None, None] * rng.uniform(0, 1, (n, 1, 1, 3))
    noise = rng.uniform(0, 1, (n, size, size, 3))
    return tf.constant(40 + 160 * (0.7 * ramp + 0.3 * noise), tf.float32)


def _changed(a, b):
    return tf.reduce_max(tf.abs(a - b), axis=[1, 2, 3]).numpy() > 0.5


def test_rand_augment_default_is_apply_prob_one():
    x = _structured(16)
    for seed in (0, 11, [3, 4]):
        np.testing.assert_array_equal(rand_augment(x, seed=seed).numpy(),
                                      rand_augment(x, seed=seed, apply_prob=1.0).numpy())


def test_rand_augment_apply_prob_zero_returns_input_clipped():
    x = tf.concat([_structured(4), tf.fill([1, 32, 32, 3], 300.0)], 0)
    np.testing.assert_array_equal(rand_augment(x, seed=0, num_ops=3, apply_prob=0.0),
                                  tf.clip_by_value(x, 0.0, 255.0))


def test_rand_augment_apply_prob_half_skips_about_half_the_ops():
    x = _structured(400, size=16)
    always = _changed(rand_augment(x, seed=1, num_ops=1, apply_prob=1.0), x).mean()
    half = _changed(rand_augment(x, seed=1, num_ops=1, apply_prob=0.5), x).mean()
    assert always > 0.9
    assert 0.4 < half / always < 0.6


def test_rand_augment_rejects_bad_apply_prob():
    with pytest.raises(ValueError, match="apply_prob must be in"):
        rand_augment(_structured(1), seed=0, apply_prob=1.5)


# ------------------------------------------------------------------ strong flavours
FLAVOURS = sorted(STRONG_FLAVOURS.values())


def test_strong_flavours_are_registered():
    assert STRONG_FLAVOURS == {"daso": "strong_daso", "fixmatch": "strong_fixmatch",
                               "usb": "strong_usb"}
    assert get_view("strong") is strong_view


@pytest.mark.parametrize("name", FLAVOURS)
def test_strong_flavour_eager_and_tf_data(name):
    view = get_view(name)
    x = tf.constant(np.random.default_rng(0).integers(0, 256, (8, 32, 32, 3)), tf.uint8)
    eager = view(x, seed=9)
    np.testing.assert_array_equal(eager.numpy(), view(x, seed=9).numpy())
    assert eager.shape == x.shape and eager.dtype == tf.float32
    assert 0.0 <= float(tf.reduce_min(eager)) and float(tf.reduce_max(eager)) <= 255.0
    ds = tf.data.Dataset.from_tensors((x, tf.constant([9, 0], tf.int64)))
    mapped = next(iter(ds.map(lambda t, s: view(t, seed=s))))
    # Graph and eager kernels may round differently in the last bits.
    np.testing.assert_allclose(eager.numpy(), mapped.numpy(), atol=1e-2)
    assert not np.array_equal(eager.numpy(), view(x, seed=10).numpy())


def _grey_area(name, monkeypatch, size, n=400):
    """Mid-grey pixels per image of a flavour on black images, RandAugment disabled."""
    seen = {}

    def no_rand_augment(images, seed=None, **kwargs):
        seen.update(kwargs)
        return images

    monkeypatch.setattr(views_module, "rand_augment", no_rand_augment)
    out = get_view(name)(tf.zeros([n, size, size, 3], tf.uint8), seed=2)
    return tf.reduce_sum(tf.cast(out[..., 0] == 127.5, tf.int32), [1, 2]).numpy(), seen


@pytest.mark.parametrize("name, num_ops, apply_prob", [
    ("strong_daso", 2, 0.5), ("strong_fixmatch", 2, 1.0), ("strong_usb", 3, 1.0)])
def test_strong_flavour_rand_augment_settings(name, num_ops, apply_prob, monkeypatch):
    _, seen = _grey_area(name, monkeypatch, 32, n=2)
    assert seen == {"num_ops": num_ops, "factor": STRONG_FLAVOUR_FACTOR,
                    "apply_prob": apply_prob}


@pytest.mark.parametrize("name", ["strong_daso", "strong_fixmatch"])
@pytest.mark.parametrize("size", [32, 64])
def test_fixed_cutout_is_half_the_side(name, size, monkeypatch):
    area, _ = _grey_area(name, monkeypatch, size)
    side = size // 2  # 16 px on 32 px images
    assert area.max() == side * side and area.min() > 0
    # The centre is uniform, the square clipped at the borders: whole in
    # ((size - side + 1) / size)^2 of the images.
    whole = ((size - side + 1) / size) ** 2
    assert abs((area == side * side).mean() - whole) < 0.08


def test_usb_cutout_side_is_random_up_to_half(monkeypatch):
    area, _ = _grey_area("strong_usb", monkeypatch, 32)
    fixed, _ = _grey_area("strong_fixmatch", monkeypatch, 32)
    assert area.max() <= 256 and (area > 200).any() and (area < 30).any()
    assert len(np.unique(area)) > 30
    assert area.mean() < 0.5 * fixed.mean()


def test_cutout_random_size_sides_are_uniform():
    # side = round(u * 16), u ~ U(0, 1): sides 0..16 with mean 8. A square clipped at a
    # border still shows its side along the other axis (clipped on both: rare here).
    x = cutout(tf.zeros([2000, 64, 64, 3]), seed=4, size=0.25, random_size=True)
    mask = x[..., 0].numpy() == 127.5
    side = np.maximum(mask.any(2).sum(1), mask.any(1).sum(1))
    assert side.max() == 16 and (side <= 16).all()
    assert 7.5 < side.mean() < 8.5
    assert 0.4 < (side <= 8).mean() < 0.65


def test_daso_flavour_leaves_a_quarter_without_rand_augment():
    x = _structured(400)
    daso = get_view("strong_daso")(x, seed=5)
    # The same seed with RandAugment disabled: the weak view and Cutout alone.
    bare = strong_view(x, seed=5, num_ops=2, factor=STRONG_FLAVOUR_FACTOR, apply_prob=0.0)
    untouched = (~_changed(daso, bare)).mean()
    assert 0.17 < untouched < 0.33
    fixmatch = get_view("strong_fixmatch")(x, seed=5)
    assert (~_changed(fixmatch, bare)).mean() < 0.05


def test_strong_flavour_by_name_in_semi_supervised_pipeline():
    train = load_arrays("digits", "train")
    ds = make_semi_supervised_pipeline(train.take_per_class(2), train, 4, mu=2, seed=0,
                                       strong=STRONG_FLAVOURS["daso"])
    x, _ = next(iter(ds))
    assert x["unlabeled_strong"].shape == (8, 16, 16, 3)
