"""Presets: listing, verified loading, named errors, atomic saves, and the shipped
presets reproducing the accuracy recorded in their metadata."""

import json
import os
import shutil

import keras
import numpy as np
import pytest

from ssl_zoo import SLAModel, SupervisedModel
from ssl_zoo.presets import (METADATA_FILE, WEIGHTS_FILE, PresetError, get_metadata,
                             list_presets, load_preset, save_preset)

SLICE_TOLERANCE = 0.01  # absolute top-1 on the 500-image slice (5 images): CPU kernels
                        # (oneDNN) may round differently from the run that recorded it


@pytest.fixture
def tiny_preset(tmp_path):
    keras.utils.set_random_seed(0)
    model = SLAModel("resnet32_cifar", num_classes=4, width=0.125)
    model.build((None, 16, 16, 3))
    meta = {"description": "tiny test preset", "num_classes": 4,
            "input_shape": [16, 16, 3]}
    save_preset(model, "tiny", meta, root=tmp_path / "presets")
    return model, tmp_path / "presets", tmp_path / "cache"


def test_round_trip_and_listing(tiny_preset):
    model, root, cache = tiny_preset
    assert list_presets(root) == {"tiny": "tiny test preset"}
    meta = get_metadata("tiny", root)
    assert len(meta["weights_sha256"]) == 64 and meta["ssl_zoo_version"]
    loaded = SLAModel.from_preset("tiny", root=root, cache_dir=cache)
    x = np.random.default_rng(0).uniform(0, 255, (2, 16, 16, 3)).astype("float32")
    for mode in ("single", "aggregated", "self_distill"):
        np.testing.assert_allclose(loaded(x, inference=mode), model(x, inference=mode),
                                   atol=1e-6)
    # the weights went through the cache
    assert (cache / "presets" / "tiny" / WEIGHTS_FILE).exists()


def test_named_errors(tiny_preset):
    _, root, cache = tiny_preset
    with pytest.raises(PresetError, match="Unknown preset 'nope'.*tiny"):
        load_preset("nope", root=root, cache_dir=cache)
    with pytest.raises(PresetError, match="4 classes; 10 were asked"):
        SLAModel.from_preset("tiny", num_classes=10, root=root, cache_dir=cache)
    with pytest.raises(PresetError, match="takes 16x16 images; 32x32"):
        SLAModel.from_preset("tiny", image_size=32, root=root, cache_dir=cache)
    with pytest.raises(PresetError, match="holds a SLAModel, not a SupervisedModel"):
        SupervisedModel.from_preset("tiny", root=root, cache_dir=cache)


@pytest.mark.parametrize("damage", ["truncate", "flip", "wrong_hash"])
def test_corrupt_weights_are_refused(tiny_preset, damage):
    _, root, cache = tiny_preset
    weights = root / "tiny" / WEIGHTS_FILE
    if damage == "truncate":
        data = weights.read_bytes()
        weights.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        data = bytearray(weights.read_bytes())
        data[len(data) // 2] ^= 0xFF
        weights.write_bytes(bytes(data))
    else:
        meta = json.loads((root / "tiny" / METADATA_FILE).read_text())
        meta["weights_sha256"] = "0" * 64
        (root / "tiny" / METADATA_FILE).write_text(json.dumps(meta))
    with pytest.raises(PresetError, match="tiny"):
        load_preset("tiny", root=root, cache_dir=cache)


def test_damaged_cache_is_refetched(tiny_preset):
    _, root, cache = tiny_preset
    load_preset("tiny", root=root, cache_dir=cache)
    cached = cache / "presets" / "tiny" / WEIGHTS_FILE
    cached.write_bytes(b"garbage")
    load_preset("tiny", root=root, cache_dir=cache)  # verified copy fetched again
    assert cached.stat().st_size > 100


def test_interrupted_save_leaves_nothing_loadable(tmp_path, monkeypatch):
    model = SupervisedModel("resnet32_cifar", num_classes=3, width=0.125)
    model.build((None, 8, 8, 3))

    def boom(*args, **kwargs):
        raise KeyboardInterrupt("interrupted")

    monkeypatch.setattr(model, "save_weights", boom)
    with pytest.raises(KeyboardInterrupt):
        save_preset(model, "half", {"num_classes": 3, "input_shape": [8, 8, 3]},
                    root=tmp_path)
    assert list_presets(tmp_path) == {}
    assert os.listdir(tmp_path) == []


def _shipped():
    return sorted(list_presets())


def test_shipped_presets_exist():
    names = _shipped()
    assert {"supervised_resnet32_cifar10", "sla_rotation_resnet32_cifar10",
            "supcon_resnet32_cifar10"} <= set(names), names
    for name in names:
        meta = get_metadata(name)
        for key in ("method", "backbone", "dataset", "preprocessing", "training_command",
                    "budget", "metrics_test", "metrics_slice", "weights_sha256", "paper",
                    "ssl_zoo_version"):
            assert key in meta, (name, key)


@pytest.mark.parametrize("name", _shipped())
def test_shipped_preset_reproduces_recorded_accuracy(name, shared_data, tmp_path):
    from ssl_zoo.data import load_arrays
    meta = get_metadata(name)
    model = load_preset(name, cache_dir=tmp_path)
    test = load_arrays(os.path.join(shared_data, "cifar10-jpeg.zip"), split="test")
    step = int(meta["slice"].split("every ")[1].split("th")[0])
    sl = test.subset(np.arange(0, len(test.labels), step))
    for mode, recorded in meta["metrics_slice"].items():
        kw = {} if mode == "top1" else {"inference": mode}
        logits = keras.ops.convert_to_numpy(
            model(sl.images.astype("float32"), training=False, **kw))
        acc = float(np.mean(logits.argmax(-1) == sl.labels))
        assert abs(acc - recorded) <= SLICE_TOLERANCE, (name, mode, acc, recorded)


def test_shipped_weights_sha256_held_in_code_match_the_files():
    from ssl_zoo.presets import SHIPPED_WEIGHTS_SHA256, get_metadata, presets_dir
    from ssl_zoo.utils.io import sha256_file
    assert set(SHIPPED_WEIGHTS_SHA256) == set(list_presets())
    for name, digest in SHIPPED_WEIGHTS_SHA256.items():
        assert get_metadata(name)["weights_sha256"] == digest
        assert sha256_file(presets_dir() / name / "model.weights.h5") == digest


def test_altered_weights_with_matching_metadata_are_refused(tmp_path, monkeypatch):
    """Weights replaced together with their metadata's sha256: the hash held in code
    still refuses them."""
    import json
    import shutil
    from ssl_zoo.presets import PresetError, load_preset, presets_dir
    from ssl_zoo.utils.io import sha256_file
    name = "supervised_resnet32_cifar10"
    root = tmp_path / "pretrained"
    shutil.copytree(presets_dir(), root)
    weights = root / name / "model.weights.h5"
    data = bytearray(weights.read_bytes())
    data[-100] ^= 0xFF                      # one flipped byte
    weights.write_bytes(bytes(data))
    meta_path = root / name / "metadata.json"
    meta = json.loads(meta_path.read_text())
    meta["weights_sha256"] = sha256_file(weights)
    meta_path.write_text(json.dumps(meta))
    monkeypatch.setenv("SSL_ZOO_PRESETS_DIR", str(root))
    with pytest.raises(PresetError, match="the preset files were altered"):
        load_preset(name, cache_dir=str(tmp_path / "cache"))
