"""Tests of the op and view registries and of make_semi_supervised_pipeline."""

import inspect

import numpy as np
import pytest
import tensorflow as tf

from ssl_zoo.data import (
    VIEWS,
    EmptyDatasetError,
    ImageShapeError,
    LabelError,
    get_op,
    get_view,
    list_ops,
    list_views,
    load_arrays,
    make_pipeline,
    make_semi_supervised_pipeline,
    register_op,
    register_view,
    to_float,
    weak_view,
)
from ssl_zoo.data import views as views_module

SEED = 7
#: Arguments without defaults that an op needs besides its images.
OP_ARGS = {"normalize": {"mean": (120.0, 110.0, 100.0), "std": (60.0, 50.0, 40.0)}}


def _colorful(n=6, size=16, seed=0):
    return tf.constant(np.random.default_rng(seed).integers(0, 256, (n, size, size, 3)),
                       tf.uint8)


def _takes_seed(fn):
    return "seed" in inspect.signature(fn).parameters


def _in_tf_data(fn, images, seed):
    """fn(images, seed=seed) computed inside tf.data.Dataset.map, seed as a tensor."""
    ds = tf.data.Dataset.from_tensors((images, tf.constant([seed, 0], tf.int64)))
    return next(iter(ds.map(lambda x, s: fn(x, seed=s))))


def _assert_same(eager, mapped):
    # Graph and eager kernels may round differently in the last bits (as tf.function).
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_allclose(a.numpy(), b.numpy(), atol=1e-2),
        eager, mapped)


# ------------------------------------------------------------------------ registries
def test_builtin_names_registered():
    assert VIEWS == ("none", "weak", "strong", "supcon", "strong_daso", "strong_fixmatch",
                     "strong_usb")
    assert list_views()[:len(VIEWS)] == VIEWS
    assert set(list_ops()) >= {"to_float", "normalize", "random_flip", "random_pad_crop",
                               "cutout", "rand_augment", "color_jitter", "random_grayscale",
                               "random_resized_crop"}
    assert get_view("weak") is weak_view
    assert get_op("to_float") is to_float


@pytest.mark.parametrize("name", list_ops())
def test_every_op_same_output_eager_and_in_tf_data(name):
    op = get_op(name)
    x = _colorful()
    kwargs = OP_ARGS.get(name, {})
    if _takes_seed(op):
        eager = op(x, seed=SEED, **kwargs)
        np.testing.assert_array_equal(eager.numpy(), op(x, seed=SEED, **kwargs).numpy())
        mapped = _in_tf_data(lambda t, seed: op(t, seed=seed, **kwargs), x, SEED)
    else:
        eager = op(x, **kwargs)
        mapped = _in_tf_data(lambda t, seed: op(t, **kwargs), x, SEED)
    assert eager.shape == x.shape and eager.dtype == tf.float32
    _assert_same(eager, mapped)


@pytest.mark.parametrize("name", list_views())
def test_every_view_same_output_eager_and_in_tf_data(name):
    view = get_view(name)
    x = _colorful()
    eager = view(x, SEED)
    tf.nest.map_structure(
        lambda a, b: np.testing.assert_array_equal(a.numpy(), b.numpy()),
        eager, view(x, SEED))
    images = eager[0] if views_module.view_emits_labels(name) else eager
    assert images.dtype == tf.float32 and images.shape[1:] == x.shape[1:]
    _assert_same(eager, _in_tf_data(view, x, SEED))


def test_unknown_names_list_the_registered_ones():
    with pytest.raises(ValueError, match="Unknown view 'rotate'") as e:
        get_view("rotate")
    assert all(name in str(e.value) for name in list_views())
    with pytest.raises(ValueError, match="Unknown op 'blur'") as e:
        get_op("blur")
    assert all(name in str(e.value) for name in list_ops())
    small = load_arrays((np.zeros((4, 8, 8, 3), np.uint8), np.arange(4)))
    with pytest.raises(ValueError, match="registered views: none, weak, strong, supcon"):
        make_pipeline(small, 2, view="rotate")
    with pytest.raises(ValueError, match="registered views: none, weak"):
        make_semi_supervised_pipeline(small, small, 2, mu=1, strong="rotate")


def test_registration_rules():
    assert register_view("toy_identity", lambda x, seed=None: to_float(x)) is not None
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_view("toy_identity", lambda x, seed=None: x)
        replacement = register_view("toy_identity", weak_view, replace=True)
        assert replacement is weak_view and get_view("toy_identity") is weak_view
        with pytest.raises(ValueError, match="already registered"):
            register_op("cutout", lambda x: x)
        with pytest.raises(ValueError, match="non-empty string"):
            register_op("", lambda x: x)
        with pytest.raises(TypeError, match="callable"):
            register_op("not_a_function", 3)
    finally:
        views_module._VIEWS.unregister("toy_identity")
    assert "toy_identity" not in list_views() and "not_a_function" not in list_ops()


@pytest.fixture
def mirror_view():
    """A toy label-emitting view: the batch then its mirror images, labels 0 then 1."""

    @register_view("toy_mirror", emits_labels=True)
    def mirror(images, seed=None):
        x = to_float(images)
        b = tf.shape(x)[0]
        labels = tf.concat([tf.zeros([b], tf.int32), tf.ones([b], tf.int32)], 0)
        return tf.concat([x, tf.reverse(x, [2])], 0), labels

    yield mirror
    views_module._VIEWS.unregister("toy_mirror")


def test_view_emitting_labels_replaces_the_labels(mirror_view):
    images = np.random.default_rng(0).integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    data = load_arrays((images, np.full(6, 5)), num_classes=10)
    for view in ("toy_mirror", mirror_view):  # by name, and the registered function
        batches = list(make_pipeline(data, 4, view=view, seed=0, shuffle=False))
        x, y = batches[0]
        assert x.shape == (8, 8, 8, 3) and y.dtype == tf.int64
        assert y.numpy().tolist() == [0, 0, 0, 0, 1, 1, 1, 1]  # not the data set's 5s
        np.testing.assert_array_equal(x[:4].numpy(), images[:4])
        np.testing.assert_array_equal(x[4:].numpy(), images[:4, :, ::-1])
        assert [b[1].numpy().tolist() for b in batches[1:]] == [[0, 0, 1, 1]]
    with pytest.raises(ValueError, match="num_views=1 only"):
        make_pipeline(data, 4, view="toy_mirror", num_views=2)
    with pytest.raises(ValueError, match="emits labels"):
        make_semi_supervised_pipeline(data, data, 2, mu=1, weak="toy_mirror")


# ------------------------------------------------------------- semi-supervised stream
def _constant_set(values, size=8):
    """Images filled with one distinct value each, labelled with that value."""
    values = np.asarray(values)
    images = np.broadcast_to(values[:, None, None, None], (len(values), size, size, 3))
    return load_arrays((images.astype(np.uint8), values), num_classes=256)


def _identity(images, seed=None):
    return tf.cast(images, tf.float32)


def _identity_too(images, seed=None):
    return tf.cast(images, tf.float32) + 0.0


def _values(images):
    """The constant value of each image (and a check that each is constant)."""
    x = images.numpy()
    assert (x == x[:, :1, :1, :1]).all()
    return x[:, 0, 0, 0].astype(np.int64)


@pytest.fixture(scope="module")
def digits_sets():
    train = load_arrays("digits", "train")
    return train.take_per_class(2, seed=0), train.random_subset(60, seed=0)


def test_semi_supervised_structure_shapes_dtypes(digits_sets):
    labeled, unlabeled = digits_sets
    ds = make_semi_supervised_pipeline(labeled, unlabeled, 4, mu=3, seed=0)
    features_spec, label_spec = ds.element_spec
    assert sorted(features_spec) == ["images", "unlabeled_strong", "unlabeled_weak"]
    assert features_spec["images"].shape == (4, 16, 16, 3)
    assert features_spec["unlabeled_weak"].shape == (12, 16, 16, 3)
    assert features_spec["unlabeled_strong"].shape == (12, 16, 16, 3)
    assert label_spec.shape == (4,) and label_spec.dtype == tf.int64
    for x, y in ds.take(6):  # past one epoch (5 batches) of the 20 labeled images
        assert sorted(x) == ["images", "unlabeled_strong", "unlabeled_weak"]
        assert all(v.dtype == tf.float32 for v in x.values())
        assert all(0.0 <= float(tf.reduce_min(v)) and float(tf.reduce_max(v)) <= 255.0
                   for v in x.values())
        assert set(y.numpy().tolist()) <= set(labeled.labels.tolist())
    assert not np.array_equal(x["unlabeled_weak"].numpy(), x["unlabeled_strong"].numpy())
    with_labels = make_semi_supervised_pipeline(labeled, unlabeled, 4, mu=3, seed=0,
                                                include_unlabeled_labels=True)
    spec = with_labels.element_spec[0]["unlabeled_labels"]
    assert spec.shape == (12,) and spec.dtype == tf.int64


def test_semi_supervised_weak_and_strong_come_from_the_same_images():
    labeled = _constant_set(np.arange(100, 104))
    unlabeled = _constant_set(np.arange(12))
    ds = make_semi_supervised_pipeline(labeled, unlabeled, 2, mu=3, seed=1,
                                       weak=_identity, strong=_identity_too,
                                       include_unlabeled_labels=True)
    for x, y in ds.take(8):
        weak, strong = _values(x["unlabeled_weak"]), _values(x["unlabeled_strong"])
        np.testing.assert_array_equal(weak, strong)
        np.testing.assert_array_equal(weak, x["unlabeled_labels"].numpy())
        np.testing.assert_array_equal(_values(x["images"]), y.numpy())
    # Without the flag the stream never carries the unlabeled labels.
    plain = make_semi_supervised_pipeline(labeled, unlabeled, 2, mu=3, seed=1,
                                          weak=_identity, strong=_identity_too)
    assert "unlabeled_labels" not in plain.element_spec[0]
    assert all("unlabeled_labels" not in x for x, _ in plain.take(4))


def test_semi_supervised_reshuffles_each_epoch_and_is_seeded():
    labeled = _constant_set(np.arange(100, 104))
    unlabeled = _constant_set(np.arange(12))

    def epochs(seed, count=4):
        ds = make_semi_supervised_pipeline(labeled, unlabeled, 2, mu=3, seed=seed,
                                           weak=_identity, strong=_identity_too)
        lab, unl = [], []
        for x, y in ds.take(2 * count):  # 2 batches = one epoch of either set
            lab.append(y.numpy())
            unl.append(_values(x["unlabeled_weak"]))
        lab = np.concatenate(lab).reshape(count, 4)
        unl = np.concatenate(unl).reshape(count, 12)
        return lab, unl

    lab, unl = epochs(seed=3)
    for epoch in lab:
        assert sorted(epoch.tolist()) == [100, 101, 102, 103]  # each image once an epoch
    for epoch in unl:
        assert sorted(epoch.tolist()) == list(range(12))
    assert len({e.tobytes() for e in lab}) > 1 and len({e.tobytes() for e in unl}) > 1
    again = epochs(seed=3)
    np.testing.assert_array_equal(again[0], lab)
    np.testing.assert_array_equal(again[1], unl)
    assert not np.array_equal(epochs(seed=4)[1], unl)


def test_semi_supervised_views_are_reproducible(digits_sets):
    labeled, unlabeled = digits_sets

    def first_batches(seed, views="weak"):
        # "supcon" as the strong view: random like "strong", but faster to trace.
        ds = make_semi_supervised_pipeline(labeled, unlabeled, 4, mu=2, seed=seed,
                                           weak=views, strong="supcon")
        return [tf.nest.map_structure(lambda t: t.numpy(), b) for b in ds.take(2)]

    # Same seed, same batches; a view given by name or as its function is the same view.
    a, b = first_batches(5), first_batches(5, views=weak_view)
    tf.nest.map_structure(np.testing.assert_array_equal, a, b)
    other = first_batches(6)
    assert not np.array_equal(a[0][0]["unlabeled_strong"], other[0][0]["unlabeled_strong"])
    assert not np.array_equal(a[0][0]["images"], other[0][0]["images"])


def test_semi_supervised_named_errors():
    labeled = _constant_set(np.arange(4))
    unlabeled = _constant_set(np.arange(8))
    with pytest.raises(ValueError, match="mu .* must be an int >= 1, got 0"):
        make_semi_supervised_pipeline(labeled, unlabeled, 2, mu=0)
    with pytest.raises(ValueError, match="mu .* got 1.5"):
        make_semi_supervised_pipeline(labeled, unlabeled, 2, mu=1.5)
    with pytest.raises(ValueError, match="batch_size must be an int >= 1, got 0"):
        make_semi_supervised_pipeline(labeled, unlabeled, 0)
    empty = load_arrays((np.zeros((0, 8, 8, 3), np.uint8), np.zeros(0, np.int64)))
    with pytest.raises(EmptyDatasetError, match="labeled set is empty"):
        make_semi_supervised_pipeline(empty, unlabeled, 2)
    with pytest.raises(EmptyDatasetError, match="unlabeled set is empty"):
        make_semi_supervised_pipeline(labeled, empty.to_dataset(), 2)
    bigger = _constant_set(np.arange(8), size=10)
    with pytest.raises(ImageShapeError, match=r"\(8, 8, 3\).*\(10, 10, 3\)"):
        make_semi_supervised_pipeline(labeled, bigger, 2)
    images_only = unlabeled.to_dataset().map(lambda x, y: x)
    with pytest.raises(LabelError, match="labeled set yields images without labels"):
        make_semi_supervised_pipeline(images_only, unlabeled, 2)
    with pytest.raises(LabelError, match="include_unlabeled_labels"):
        make_semi_supervised_pipeline(labeled, images_only, 2, include_unlabeled_labels=True)
    # tf.data input of images only is fine as the unlabeled set.
    x, y = next(iter(make_semi_supervised_pipeline(labeled, images_only, 2, mu=2, seed=0,
                                                   weak=_identity, strong=_identity)))
    assert x["unlabeled_weak"].shape == (4, 8, 8, 3) and y.shape == (2,)
