"""Tests of ssl_zoo.data loaders, sources, cache, errors and ssl_zoo.utils.io."""

import json
import os
import zipfile

import numpy as np
import pytest
import tensorflow as tf

from ssl_zoo.data import (
    TFDS_NAMES,
    CorruptImageError,
    DatasetNotFoundError,
    EmptyClassError,
    EmptyDatasetError,
    ImageShapeError,
    LabelError,
    LayoutError,
    MissingPathError,
    SplitNotFoundError,
    UnknownDatasetError,
    list_datasets,
    load_arrays,
    load_dataset,
)
from ssl_zoo.data import loaders
from ssl_zoo.data.sources import files as file_source
from ssl_zoo.utils.io import atomic_save_npy, atomic_write, atomic_write_json, sha256_file


# ------------------------------------------------------------------------- helpers
def _image(seed, h=8, w=8, c=3):
    return np.random.default_rng(seed).integers(0, 256, (h, w, c), dtype=np.uint8)


def _png(array):
    return tf.io.encode_png(array).numpy()


def _jpeg(array):
    return tf.io.encode_jpeg(array, quality=95).numpy()


def _write(path, data):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


def _make_tree(root):
    """root/{train,val}/{cat,dog}/*.png with known pixels -> {split: {class: [arrays]}}."""
    tree = {}
    seed = 0
    for split, n in (("train", 3), ("val", 2)):
        for cls in ("dog", "cat"):  # written unsorted on purpose
            for i in range(n):
                seed += 1
                arr = _image(seed)
                _write(os.path.join(root, split, cls, f"{i:02d}.png"), _png(arr))
                tree.setdefault(split, {}).setdefault(cls, []).append(arr)
    return tree


def _make_zip(path, members, compression=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w", compression=compression) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


# -------------------------------------------------------------------------- utils.io
def test_atomic_write_success_and_modes(tmp_path):
    p = tmp_path / "sub" / "f.txt"
    with atomic_write(p, "w") as f:
        f.write("hé")
    assert p.read_text(encoding="utf-8") == "hé"
    assert os.listdir(p.parent) == ["f.txt"]
    with pytest.raises(ValueError):
        with atomic_write(p, "a"):
            pass


def test_atomic_write_exception_leaves_nothing(tmp_path):
    p = tmp_path / "out.bin"
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"partial")
            raise RuntimeError("boom")
    assert not p.exists()
    assert os.listdir(tmp_path) == []  # no temporary file left behind
    p.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_write(p) as f:
            f.write(b"new")
            raise RuntimeError("boom")
    assert p.read_bytes() == b"old"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_atomic_npy_json_and_sha256(tmp_path):
    arr = np.arange(12, dtype=np.int16).reshape(3, 4)
    atomic_save_npy(tmp_path / "a.npy", arr)
    np.testing.assert_array_equal(np.load(tmp_path / "a.npy"), arr)
    atomic_write_json(tmp_path / "m.json", {"x": np.float32(1.5), "y": np.arange(2)})
    assert json.loads((tmp_path / "m.json").read_text()) == {"x": 1.5, "y": [0, 1]}
    (tmp_path / "abc").write_bytes(b"abc")
    assert sha256_file(tmp_path / "abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad")


# ---------------------------------------------------------------------------- digits
def test_digits_splits_shapes_and_determinism():
    from sklearn.datasets import load_digits

    train = load_arrays("digits", "train")
    test = load_arrays("digits", "test")
    assert train.images.shape == (1438, 16, 16, 3) and test.images.shape == (359, 16, 16, 3)
    assert train.images.dtype == np.uint8 and train.labels.dtype == np.int64
    assert train.info.num_classes == 10
    assert train.info.class_names == [str(i) for i in range(10)]
    assert train.info.image_shape == (16, 16, 3) and train.info.num_examples == 1438
    assert train.images.max() == 255 and train.images.min() == 0
    # Stratified 80/20: every class is split round(0.2 n_k) to test.
    y_all = load_digits().target
    np.testing.assert_array_equal(np.bincount(test.labels),
                                  np.round(0.2 * np.bincount(y_all)).astype(int))
    np.testing.assert_array_equal(np.bincount(train.labels) + np.bincount(test.labels),
                                  np.bincount(y_all))
    # Disjoint and covering: train + test is exactly "all" as a multiset of images.
    full = load_arrays("digits", "all")
    rows = lambda d: sorted(x.tobytes() + bytes([y]) for x, y in zip(d.images, d.labels))
    assert sorted(rows(train) + rows(test)) == rows(full)
    again = load_arrays("digits", "train")
    np.testing.assert_array_equal(again.images, train.images)
    np.testing.assert_array_equal(again.labels, train.labels)


def test_digits_native_scale_and_channels():
    from sklearn.datasets import load_digits

    d = load_arrays("digits", "all", image_size=8)
    ref = np.round(load_digits().images * 255 / 16).astype(np.uint8)
    np.testing.assert_array_equal(d.images[..., 0], ref)
    np.testing.assert_array_equal(d.images[..., 0], d.images[..., 2])
    mean = d.images.reshape(-1, 3).mean(0)
    np.testing.assert_allclose(d.info.mean, mean, atol=1e-3)
    np.testing.assert_allclose(d.info.std, d.images.reshape(-1, 3).std(0), atol=1e-3)
    resized = load_arrays("digits", "test", image_size=(20, 24))
    assert resized.images.shape[1:] == (20, 24, 3)
    with pytest.raises(SplitNotFoundError, match="digits"):
        load_arrays("digits", "unlabeled")


def test_array_dataset_methods_and_load_dataset():
    d = load_arrays("digits", "train")
    sub = d.take_per_class(7, seed=3)
    assert np.bincount(sub.labels).tolist() == [7] * 10
    np.testing.assert_array_equal(sub.images, d.take_per_class(7, seed=3).images)
    assert not np.array_equal(sub.images, d.take_per_class(7, seed=4).images)
    s = d.subset([5, 1])
    np.testing.assert_array_equal(s.images, d.images[[5, 1]])
    assert s.info.num_examples == 2 and len(s) == 2
    ds, info = load_dataset("digits", "test")
    assert info.num_examples == 359
    assert ds.element_spec[0].shape == (16, 16, 3) and ds.element_spec[0].dtype == tf.uint8
    assert ds.element_spec[1].dtype == tf.int64
    x, y = next(iter(ds))
    np.testing.assert_array_equal(x.numpy(), load_arrays("digits", "test").images[0])
    assert json.loads(json.dumps(info.to_dict()))["class_names"][3] == "3"
    assert list_datasets()[0] == "digits" and set(TFDS_NAMES) <= set(list_datasets())


# ----------------------------------------------------------------------------- numpy
def test_numpy_input_and_npz(tmp_path):
    x = np.stack([_image(i) for i in range(6)])
    y = np.array([0, 1, 2, 0, 1, 2])
    d = load_arrays((x, y))
    np.testing.assert_array_equal(d.images, x)
    assert d.labels.dtype == np.int64 and d.info.num_classes == 3
    gray = load_arrays((x[..., :1], y), num_classes=5)
    assert gray.images.shape == (6, 8, 8, 3) and gray.info.num_classes == 5
    np.testing.assert_array_equal(gray.images[..., 2], x[..., 0])
    floats = load_arrays((x.astype(np.float32) / 255.0, y))
    np.testing.assert_array_equal(floats.images, x)
    assert load_arrays((x, y), image_size=4).images.shape == (6, 4, 4, 3)
    np.savez(tmp_path / "d.npz", images=x, labels=y)
    np.testing.assert_array_equal(load_arrays(str(tmp_path / "d.npz")).images, x)
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    assert load_arrays(tmp_path / "xy.npz").info.name == "xy"
    np.savez(tmp_path / "bad.npz", a=x)
    with pytest.raises(ValueError, match="keys"):
        load_arrays(tmp_path / "bad.npz")


def test_numpy_input_errors():
    x = np.zeros((4, 8, 8, 3), np.uint8)
    with pytest.raises(LabelError, match=r"shape \(4,\)"):
        load_arrays((x, np.zeros(3, int)))
    with pytest.raises(LabelError, match="label 7 at index 2"):
        load_arrays((x, np.array([0, 1, 7, 1])), num_classes=3)
    with pytest.raises(LabelError, match="out of range"):
        load_arrays((x, np.array([0, -1, 0, 1])))
    with pytest.raises(LabelError, match="integers"):
        load_arrays((x, np.array([0.5, 1, 0, 1])))
    with pytest.raises(ImageShapeError, match=r"images\[\.\.\., None\]"):
        load_arrays((np.zeros((4, 8, 8), np.uint8), np.zeros(4, int)))
    with pytest.raises(ImageShapeError, match=r"\(4, 8, 8, 2\)"):
        load_arrays((np.zeros((4, 8, 8, 2), np.uint8), np.zeros(4, int)))
    with pytest.raises(ImageShapeError, match="0..255"):
        load_arrays((np.full((4, 8, 8, 3), 300.0), np.zeros(4, int)))
    assert all(issubclass(e, ValueError) for e in (LabelError, ImageShapeError))


# --------------------------------------------------------------------------- folders
def test_folder_split_layout_pixels_and_aliases(tmp_path):
    tree = _make_tree(tmp_path / "pets")
    d = load_arrays(tmp_path / "pets", "train", cache_dir=False)
    assert d.info.class_names == ["cat", "dog"] and d.info.split == "train"
    assert d.images.shape == (6, 8, 8, 3) and d.labels.tolist() == [0, 0, 0, 1, 1, 1]
    np.testing.assert_array_equal(
        d.images, np.stack(tree["train"]["cat"] + tree["train"]["dog"]))
    test = load_arrays(tmp_path / "pets", "test", cache_dir=False)  # only "val" exists
    assert test.info.split == "val" and test.info.num_examples == 4
    assert test.info.name == "pets"
    with pytest.raises(SplitNotFoundError, match="available splits: train, val"):
        load_arrays(tmp_path / "pets", "unlabeled", cache_dir=False)
    flat = load_arrays(tmp_path / "pets" / "train", cache_dir=False)
    np.testing.assert_array_equal(flat.images, d.images)
    assert flat.info.split == "all"
    with pytest.raises(SplitNotFoundError, match="single split"):
        load_arrays(tmp_path / "pets" / "train", "test", cache_dir=False)


def test_folder_grayscale_jpeg_and_mixed_sizes(tmp_path):
    root = tmp_path / "mixed"
    gray = _image(1, c=1)
    _write(str(root / "a" / "gray.png"), _png(gray))
    _write(str(root / "a" / "color.jpg"), _jpeg(_image(2)))
    _write(str(root / "b" / "big.JPEG"), _jpeg(_image(3, 12, 10)))
    _write(str(root / "b" / "notes.txt"), b"ignored")
    d = load_arrays(root, cache_dir=False)
    assert d.images.shape == (3, 8, 8, 3)  # the most common size wins
    assert d.info.class_names == ["a", "b"]
    assert d.labels.tolist() == [0, 0, 1]
    g = d.images[1]  # sorted: a/color.jpg, a/gray.png, b/big.JPEG
    np.testing.assert_array_equal(g[..., 0], gray[..., 0])
    np.testing.assert_array_equal(g[..., 0], g[..., 1])
    np.testing.assert_array_equal(g[..., 1], g[..., 2])
    resized = load_arrays(root, image_size=(6, 5), cache_dir=False)
    assert resized.images.shape == (3, 6, 5, 3)


def test_folder_errors_name_the_path(tmp_path):
    root = tmp_path / "data"
    _write(str(root / "a" / "0.png"), _png(_image(0)))
    (root / "empty_class").mkdir()
    _write(str(root / "only_text" / "readme.txt"), b"x")
    with pytest.raises(EmptyClassError) as e:
        load_arrays(root, cache_dir=False)
    assert str(root / "empty_class") in str(e.value) and "only_text" in str(e.value)

    bad = tmp_path / "bad"
    _write(str(bad / "a" / "0.png"), _png(_image(0)))
    _write(str(bad / "a" / "1.png"), b"this is not a png")
    with pytest.raises(CorruptImageError) as e:
        load_arrays(bad, cache_dir=False)
    assert str(bad / "a" / "1.png") in str(e.value)
    assert e.value.paths == [str(bad / "a" / "1.png")]

    (tmp_path / "void").mkdir()
    with pytest.raises(EmptyDatasetError, match="void"):
        load_arrays(tmp_path / "void", cache_dir=False)
    with pytest.raises(MissingPathError, match="nowhere"):
        load_arrays(str(tmp_path / "nowhere"), cache_dir=False)
    _write(str(tmp_path / "deep" / "train" / "a" / "0.png"), _png(_image(0)))
    _write(str(tmp_path / "deep" / "b.png"), _png(_image(0)))
    with pytest.raises(LayoutError, match="depths"):
        load_arrays(tmp_path / "deep", cache_dir=False)


# ------------------------------------------------------------------------------- zip
def test_zip_matches_folder_and_reports_bad_member(tmp_path):
    tree = _make_tree(tmp_path / "pets")
    members = {}
    for split, classes in tree.items():
        for cls, arrays in classes.items():
            for i, arr in enumerate(arrays):
                members[f"pets/{split}/{cls}/{i:02d}.png"] = _png(arr)
    members["pets/README.txt"] = b"ignored"
    for compression in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        z = _make_zip(tmp_path / f"pets{compression}.zip", members, compression)
        d = load_arrays(z, "train", cache_dir=False)
        f = load_arrays(tmp_path / "pets", "train", cache_dir=False)
        np.testing.assert_array_equal(d.images, f.images)
        np.testing.assert_array_equal(d.labels, f.labels)
        assert d.info.class_names == ["cat", "dog"] and d.info.name == "pets"
        assert load_arrays(z, "test", cache_dir=False).info.split == "val"
    members["pets/val/cat/broken.png"] = b"\x89PNG broken"
    z = _make_zip(tmp_path / "broken.zip", members)
    with pytest.raises(CorruptImageError, match="pets/val/cat/broken.png") as e:
        load_arrays(z, "val", cache_dir=False)
    assert str(z) in str(e.value)
    load_arrays(z, "train", cache_dir=False)  # the other split is fine
    # Relative archive paths resolve under data_dir.
    rel = load_arrays("pets0.zip", "val", data_dir=tmp_path, cache_dir=False)
    assert rel.info.num_examples == 4


# ----------------------------------------------------------------------------- cache
def _forbid_decoding(monkeypatch):
    def boom(*args, **kwargs):
        raise AssertionError("decoded again instead of reading the cache")
    monkeypatch.setattr(file_source, "_decode_dataset", boom)


def test_cache_hit_for_folder_and_zip(tmp_path, monkeypatch):
    _make_tree(tmp_path / "pets")
    z = _make_zip(tmp_path / "pets.zip", {"x/a/0.png": _png(_image(0)),
                                          "x/b/1.png": _png(_image(1))})
    cache = tmp_path / "cache"
    first_dir = load_arrays(tmp_path / "pets", "train", cache_dir=cache)
    first_zip = load_arrays(z, cache_dir=cache)
    assert sorted(p.suffix for p in cache.iterdir() if p.name != "sha256_index.json") == [
        ".json", ".json", ".npy", ".npy", ".npy", ".npy"]
    with monkeypatch.context() as m:
        _forbid_decoding(m)
        again_dir = load_arrays(tmp_path / "pets", "train", cache_dir=cache)
        again_zip = load_arrays(z, cache_dir=cache)
        np.testing.assert_array_equal(again_dir.images, first_dir.images)
        assert again_dir.info == first_dir.info
        np.testing.assert_array_equal(again_zip.images, first_zip.images)
        # Another image size or split is another cache entry.
        with pytest.raises(AssertionError, match="decoded again"):
            load_arrays(z, image_size=4, cache_dir=cache)
        # A changed file changes the folder key.
        _write(str(tmp_path / "pets" / "train" / "cat" / "00.png"), _png(_image(99)))
        with pytest.raises(AssertionError, match="decoded again"):
            load_arrays(tmp_path / "pets", "train", cache_dir=cache)
    fresh = load_arrays(tmp_path / "pets", "train", cache_dir=cache)
    np.testing.assert_array_equal(fresh.images[0], _image(99))


def test_default_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SSL_ZOO_CACHE", str(tmp_path / "c"))
    assert loaders.default_cache_dir() == str(tmp_path / "c")
    monkeypatch.delenv("SSL_ZOO_CACHE")
    assert loaders.default_cache_dir().endswith(os.path.join(".cache", "ssl_zoo"))


# ------------------------------------------------------------------ names and tfds
def test_unknown_name_lists_known_ones():
    with pytest.raises(UnknownDatasetError) as e:
        load_arrays("cifar11")
    for name in ("digits", "cifar10", "svhn_cropped"):
        assert name in str(e.value)


def test_tfds_name_not_prepared_never_downloads(tmp_path):
    with pytest.raises(DatasetNotFoundError) as e:
        load_arrays("cifar10", data_dir=str(tmp_path))
    msg = str(e.value)
    assert "never downloads" in msg and ".zip" in msg and str(tmp_path) in msg
    assert isinstance(e.value, ValueError)
    assert not [f for _, _, fs in os.walk(tmp_path) for f in fs]  # nothing fetched


_TINY_TFDS = []


def _tiny_tfds_builder():
    """A 3-class grayscale tfds builder, prepared locally from a generator (no network)."""
    if not _TINY_TFDS:
        import tensorflow_datasets as tfds

        class SslZooTinyGray(tfds.core.GeneratorBasedBuilder):
            VERSION = tfds.core.Version("1.0.0")

            def _info(self):
                return tfds.core.DatasetInfo(
                    builder=self, supervised_keys=("image", "label"),
                    features=tfds.features.FeaturesDict({
                        "image": tfds.features.Image(shape=(8, 8, 1)),
                        "label": tfds.features.ClassLabel(names=["zero", "one", "two"])}))

            def _split_generators(self, dl_manager):
                return {"train": self._generate_examples(9, 0),
                        "validation": self._generate_examples(6, 1)}

            def _generate_examples(self, n, seed):
                rng = np.random.default_rng(seed)
                for i in range(n):
                    yield i, {"image": rng.integers(0, 256, (8, 8, 1), dtype=np.uint8),
                              "label": i % 3}

        _TINY_TFDS.append(SslZooTinyGray)
    return _TINY_TFDS[0]


def test_prepared_tfds_dataset_is_read(tmp_path):
    import tensorflow_datasets as tfds

    _tiny_tfds_builder()
    name = "tfds:ssl_zoo_tiny_gray"
    with pytest.raises(DatasetNotFoundError):
        load_arrays(name, data_dir=str(tmp_path))
    tfds.builder("ssl_zoo_tiny_gray", data_dir=str(tmp_path)).download_and_prepare()
    d = load_arrays(name, "test", data_dir=str(tmp_path))  # "test" -> "validation"
    assert d.info.split == "validation" and d.info.class_names == ["zero", "one", "two"]
    assert d.images.shape == (6, 8, 8, 3) and d.images.dtype == np.uint8
    np.testing.assert_array_equal(d.images[..., 0], d.images[..., 2])
    assert sorted(d.labels.tolist()) == [0, 0, 1, 1, 2, 2]
    expected = np.random.default_rng(1).integers(0, 256, (6, 8, 8, 1), dtype=np.uint8)
    assert sorted(x.tobytes() for x in d.images[..., :1]) == sorted(
        x.tobytes() for x in expected)
    resized = load_arrays(name, data_dir=str(tmp_path), image_size=4)
    assert resized.images.shape == (9, 4, 4, 3)


# --------------------------------------------------------------------- real archives
@pytest.fixture(scope="module")
def real_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("real_cache")


@pytest.mark.real_data
def test_cifar10_jpeg_test_split(shared_data, real_cache):
    path = os.path.join(shared_data, "cifar10-jpeg.zip")
    d = load_arrays(path, "test", cache_dir=real_cache)
    assert d.images.shape == (10000, 32, 32, 3) and d.images.dtype == np.uint8
    assert d.info.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog",
                                  "frog", "horse", "ship", "truck"]
    assert np.bincount(d.labels).tolist() == [1000] * 10
    assert d.info.name == "cifar10" and d.info.split == "test"
    # Real photographs: channel means near the published CIFAR-10 test statistics.
    np.testing.assert_allclose(d.info.mean, (126.0, 123.7, 114.9), atol=2.0)


@pytest.mark.real_data
def test_tiny_imagenet_val_202_classes_and_grayscale(shared_data, real_cache):
    path = os.path.join(shared_data, "tiny-imagenet-200-subset.zip")
    d = load_arrays(path, "test", cache_dir=real_cache)  # the archive has "val" only
    assert d.info.split == "val" and d.info.num_classes == 202
    assert d.images.shape == (10100, 64, 64, 3)
    assert np.bincount(d.labels).tolist() == [50] * 202
    with zipfile.ZipFile(path) as zf:
        members = sorted(n for n in zf.namelist() if "/val/" in n)
        gray_members = [n for n in members[:600]
                        if tf.io.extract_jpeg_shape(zf.read(n)).numpy()[2] == 1]
    assert d.info.class_names == sorted({n.split("/")[2] for n in members})
    assert gray_members, "expected grayscale (1-channel) JPEGs among the first val files"
    for name in gray_members:
        img = d.images[members.index(name)]
        assert img.shape == (64, 64, 3)
        np.testing.assert_array_equal(img[..., 0], img[..., 1])
        np.testing.assert_array_equal(img[..., 1], img[..., 2])
    equal = (d.images[..., 0] == d.images[..., 1]).all((1, 2)) & (
        d.images[..., 1] == d.images[..., 2]).all((1, 2))
    assert 0.005 < equal.mean() < 0.05
