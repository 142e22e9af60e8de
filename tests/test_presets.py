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
    assert {"resnet32_cifar.supervised_cifar10", "resnet32_cifar.sla_rotation_cifar10",
            "resnet32_cifar.supcon_cifar10",
            "resnet32_cifar_a.supervised_cifar10",
            "resnet32_cifar_a.sla_rotation_cifar10"} <= set(names), names
    for name in names:
        meta = get_metadata(name)
        for key in ("method", "backbone", "dataset", "preprocessing", "training_command",
                    "budget", "metrics_test", "metrics_slice", "weights_sha256", "paper",
                    "ssl_zoo_version", "params", "trainable_params", "weight_decay"):
            assert key in meta, (name, key)
        assert name == f"{meta['arch']}.{meta['tag']}" and meta["arch"] == meta["backbone"]
        assert meta["weight_decay"]["mode"] in ("coupled", "decoupled")


# The authors' ResNet-32 (option A) has 464,154 trainable parameters with its 10-way
# head (64·10 + 10 = 650); SLA swaps that head for the 40-way joint head (64·40 + 40)
# and adds the 10-way self-distillation head.
@pytest.mark.parametrize("name,trainable", [
    ("resnet32_cifar_a.supervised_cifar10", 464_154),
    ("resnet32_cifar_a.sla_rotation_cifar10", 464_154 - 650 + 2_600 + 650)])
def test_the_authors_recipe_presets_record_their_recipe_and_curve(name, trainable):
    meta = get_metadata(name)
    assert meta["trainable_params"] == trainable
    assert meta["weight_decay"] == {"mode": "coupled", "value": 1e-4}
    assert (meta["recipe"]["schedule"], meta["recipe"]["nesterov"]) == ("step", False)
    curve = meta["learning_curve"]
    assert len(curve["train_per_epoch"]["loss"]) == 30 == 3 * len(curve["test"])
    # the last periodic score (bfloat16, the model's default inference: SLA's is the
    # self-distilled head) is the saved float32 preset's, to bf16 rounding
    final = meta["metrics_test"].get("top1", meta["metrics_test"].get("self_distill"))
    assert curve["test"][-1]["accuracy"] == pytest.approx(final, abs=0.002)


def test_the_supcon_preset_records_the_authors_recipe_and_knn_curve():
    """SupCon's preset: the authors' optimizer (their lr 0.5 at batch 1024 scaled
    linearly, 10 warm-up epochs above batch 256, cosine, coupled L2), a linear probe
    (64·10 + 10 trainable) on the frozen full-width encoder, and the kNN curve."""
    meta = get_metadata("resnet32_cifar.supcon_cifar10")
    flags = dict(arg[2:].split("=", 1) for arg in meta["training_command"].split()
                 if arg.startswith("--"))
    batch, epochs = int(flags["batch_size"]), int(flags["epochs"])
    steps = int(flags["train_examples"]) // batch
    assert batch >= 256 and meta["width"] == 1.0 and meta["trainable_params"] == 650
    assert meta["weight_decay"] == {"mode": "coupled", "value": 1e-4}
    recipe = meta["recipe"]
    assert (recipe["schedule"], recipe["nesterov"]) == ("cosine", False)
    assert recipe["learning_rate"] == pytest.approx(0.5 * batch / 1024)
    assert recipe["warmup_steps"] == 10 * steps
    curve = meta["learning_curve"]
    assert len(curve["train_per_epoch"]["loss"]) == epochs
    every = int(flags["eval_epochs"])
    assert [e["step"] for e in curve["test"]] == [
        k * every * steps for k in range(1, epochs // every + 1)]
    assert all(0.1 < e["knn_accuracy"] <= 1 for e in curve["test"])


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


@pytest.mark.parametrize("name", _shipped())
def test_docs_quote_each_shipped_presets_metadata(name):
    """docs/pretrained.md has a row per shipped preset quoting its metadata: every
    test accuracy, the parameter counts and the weight decay."""
    import re

    from harness import read_doc
    meta = get_metadata(name)
    text = read_doc("pretrained.md")
    row = re.search(rf"^\| `{re.escape(name)}` \|.*$", text, re.M)
    assert row, f"docs/pretrained.md has no row for {name}"
    for metric, value in meta["metrics_test"].items():
        assert f"{100 * value:.2f}" in row[0], (name, metric, value)
    assert f"{meta['params']:,} ({meta['trainable_params']:,} trainable)" in row[0]
    assert meta["weight_decay"]["mode"] in row[0]


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
    name = "resnet32_cifar.supervised_cifar10"
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


def test_old_preset_names_load_with_a_deprecation_warning(tmp_path):
    with pytest.warns(DeprecationWarning, match="now named 'resnet32_cifar.supervised"):
        old = load_preset("supervised_resnet32_cifar10", cache_dir=tmp_path)
    new = load_preset("resnet32_cifar.supervised_cifar10", cache_dir=tmp_path)
    for a, b in zip(old.weights, new.weights):
        np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_presets_are_listed_per_class(tiny_preset):
    from ssl_zoo import LinearProbe
    from ssl_zoo.models.base import BackboneModel
    _, root, _ = tiny_preset
    assert list(list_presets(root, cls=SLAModel)) == ["tiny"]
    assert list(list_presets(root, cls=BackboneModel)) == ["tiny"]   # a subclass
    assert list_presets(root, cls=SupervisedModel) == {}
    assert set(SLAModel.presets) == {"resnet32_cifar.sla_rotation_cifar10",
                                     "resnet32_cifar_a.sla_rotation_cifar10"}
    assert set(LinearProbe.presets) == {"resnet32_cifar.supcon_cifar10"}
    assert "resnet32_cifar.sla_rotation_cifar10" not in SupervisedModel.presets


def test_a_preset_holds_no_optimizer(tiny_preset):
    import h5py
    model, root, cache = tiny_preset
    model.compile(optimizer="sgd")
    model.fit(np.zeros((4, 16, 16, 3)), np.arange(4), verbose=0)   # optimizer built
    save_preset(model, "trained", {"num_classes": 4, "input_shape": [16, 16, 3]},
                root=root)
    assert "compile_config" not in (root / "trained" / "config.json").read_text()
    with h5py.File(root / "trained" / WEIGHTS_FILE) as f:
        assert "optimizer" not in f and len(f.keys()) > 0
    loaded = load_preset("trained", root=root, cache_dir=cache)
    assert not loaded.compiled
    meta = get_metadata("trained", root)
    assert meta["params"] == model.count_params()
    assert meta["trainable_params"] == sum(int(np.prod(w.shape))
                                           for w in model.trainable_weights)
    assert (meta["arch"], meta["tag"]) == ("trained", "")


def test_a_model_trained_in_mixed_bfloat16_is_saved_as_a_float32_preset(tmp_path):
    """A preset computes in float32 whatever policy trained it: its config names no
    mixed policy, it loads with float32 layers, and its outputs are the bf16 model's
    up to bf16 rounding (its weights are the same float32 variables)."""
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        keras.utils.set_random_seed(1)
        model = SLAModel("resnet32_cifar", num_classes=4, width=0.125)
        model.compile(optimizer="sgd")
        x = np.random.default_rng(0).uniform(0, 255, (4, 16, 16, 3)).astype("float32")
        model.fit(x, np.arange(4), verbose=0)
        bf16 = keras.ops.convert_to_numpy(keras.ops.cast(model(x, training=False),
                                                         "float32"))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    save_preset(model, "bf16", {"num_classes": 4, "input_shape": [16, 16, 3]},
                root=tmp_path)
    assert "mixed_" not in (tmp_path / "bf16" / "config.json").read_text()
    loaded = load_preset("bf16", root=tmp_path, cache_dir=tmp_path / "cache")
    assert {layer.dtype_policy.name for layer in loaded._flatten_layers()} == {"float32"}
    for a, b in zip(loaded.get_weights(), model.get_weights()):
        np.testing.assert_array_equal(a, b)
    out = keras.ops.convert_to_numpy(loaded(x, training=False))
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, bf16, atol=0.1 * np.abs(bf16).max() + 1e-3)


def test_from_preset_with_other_classes_keeps_the_trunk_and_renews_the_heads(tiny_preset):
    model, root, cache = tiny_preset
    new = SLAModel.from_preset("tiny", num_classes=7, root=root, cache_dir=cache)
    assert new.num_classes == 7 and not new.compiled
    x = np.random.default_rng(1).uniform(0, 255, (3, 16, 16, 3)).astype("float32")
    np.testing.assert_allclose(new.backbone(new.normalizer(x), training=False),
                               model.backbone(model.normalizer(x), training=False),
                               atol=1e-6)
    assert tuple(new(x, inference="single").shape) == (3, 7)
    assert tuple(new(x, inference="self_distill").shape) == (3, 7)
    renewed = [w for w, old in zip(new.weights, model.weights) if w.shape != old.shape]
    assert renewed and all("head" in w.path or "dense" in w.path for w in renewed), \
        [w.path for w in renewed]
    new.compile(optimizer="sgd")   # and it fine-tunes on 7 classes
    new.fit(x, np.array([0, 3, 6]), verbose=0)
    with pytest.raises(Exception, match=r"labels must be in \[0, 7\)"):
        new.fit(x, np.array([0, 3, 7]), verbose=0)


def test_a_presets_encoder_starts_another_method(tmp_path, monkeypatch):
    from ssl_zoo import LinearProbe
    from ssl_zoo.backbones import get_backbone
    from ssl_zoo.presets import load_backbone
    monkeypatch.setenv("SSL_ZOO_CACHE", str(tmp_path))
    name = "resnet32_cifar.supcon_cifar10"
    probe = LinearProbe.from_preset(name)
    x = np.random.default_rng(2).uniform(0, 255, (2, 32, 32, 3)).astype("float32")
    want = probe.encoder.backbone(probe.encoder.normalizer(x), training=False)
    for net in (load_backbone(name), get_backbone(name)):
        np.testing.assert_allclose(net(probe.encoder.normalizer(x), training=False),
                                   want, atol=1e-5)
    # a supervised classifier starting from the SupCon encoder
    clf = SupervisedModel(backbone=name, num_classes=3)   # with the preset's mean/std
    np.testing.assert_allclose(clf.normalizer.mean, probe.encoder.normalizer.mean)
    np.testing.assert_allclose(clf.backbone(clf.normalizer(x), training=False), want,
                               atol=1e-5)
    clf.compile(optimizer="sgd")
    clf.fit(x, np.array([0, 2]), verbose=0)
    path = tmp_path / "clf.keras"
    clf.save(path)
    reloaded = keras.saving.load_model(path)
    np.testing.assert_allclose(reloaded(x), clf(x), atol=1e-5)
    with pytest.raises(ValueError, match="Unknown backbone 'resnet32_cifar.nope'.*preset"):
        get_backbone("resnet32_cifar.nope")
