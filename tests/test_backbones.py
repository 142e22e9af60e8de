"""Backbones: parameter counts against the published figures, shapes, width, errors,
sync batch norm and serialisation."""

import keras
import numpy as np
import pytest

from harness import run_layer_serialization_test
from ssl_zoo.backbones import BACKBONES, get_backbone, list_backbones


def _trainable(net):
    return sum(int(np.prod(w.shape)) for w in net.trainable_weights)


# -------------------------------------------------------------- parameter counts
# Independent counts from the architectures' definitions (conv kernels have no bias;
# each batch norm has 2 trainable parameters per channel). The published figures
# include a 10-way linear classifier (D*10 + 10), which the backbones do not have.
def _conv(cin, cout, k):
    return cin * cout * k * k


def _bn(c):
    return 2 * c


def _count_resnet_basic(stage_filters, blocks, stem):
    n, cin = _conv(3, stem, 3) + _bn(stem), stem
    for s, (f, nb) in enumerate(zip(stage_filters, blocks)):
        for b in range(nb):
            n += _conv(cin, f, 3) + _bn(f) + _conv(f, f, 3) + _bn(f)
            if (s > 0 and b == 0) or cin != f:
                n += _conv(cin, f, 1) + _bn(f)  # 1x1 projection shortcut
            cin = f
    return n


def _count_resnet_bottleneck(stage_filters, blocks, stem, expansion=4):
    n, cin = _conv(3, stem, 3) + _bn(stem), stem
    for s, (f, nb) in enumerate(zip(stage_filters, blocks)):
        for b in range(nb):
            n += _conv(cin, f, 1) + _bn(f) + _conv(f, f, 3) + _bn(f)
            n += _conv(f, f * expansion, 1) + _bn(f * expansion)
            if (s > 0 and b == 0) or cin != f * expansion:
                n += _conv(cin, f * expansion, 1) + _bn(f * expansion)
            cin = f * expansion
    return n


def _count_wrn(depth=28, widen=2):
    n_blocks = (depth - 4) // 6
    chans = [16, 16 * widen, 32 * widen, 64 * widen]
    n, cin = _conv(3, 16, 3), 16
    for s in range(3):
        f = chans[s + 1]
        for b in range(n_blocks):
            n += _bn(cin) + _conv(cin, f, 3) + _bn(f) + _conv(f, f, 3)
            if cin != f or (s > 0 and b == 0):
                n += _conv(cin, f, 1)
            cin = f
    return n + _bn(cin)  # final batch norm


def test_resnet32_cifar_parameter_count():
    net = get_backbone("resnet32_cifar")
    assert net.output_shape == (None, 64)
    assert _trainable(net) == _count_resnet_basic((16, 32, 64), (5, 5, 5), 16) == 466_256
    # He et al. (2016) report 0.46M for ResNet-32 with parameter-free (option A)
    # shortcuts: 463,504 + 650 (fc) = 464,154. Ours uses 1x1-conv projections at the
    # 2 down-sampling blocks (+2,560 conv +192 BN = +2,752 trainable; 468,720 with the
    # BN moving statistics), so it is 0.6% (trainable) / 1.1% (all weights) above the
    # published 0.46M: we allow 2% of 0.46M, enough for the projections and tight
    # enough to catch a wrong stage width or block count (one block is >= 4.6k = 1%,
    # a stage-3 block 74k = 16%).
    assert _trainable(net) + 64 * 10 + 10 == pytest.approx(0.46e6, rel=0.02)
    assert net.count_params() == 468_720
    assert net.count_params() == pytest.approx(0.46e6, rel=0.02)


def test_resnet18_cifar_parameter_count():
    net = get_backbone("resnet18_cifar")
    assert net.output_shape == (None, 512)
    expected = _count_resnet_basic((64, 128, 256, 512), (2, 2, 2, 2), 64)
    assert _trainable(net) == expected == 11_168_832
    # kuangliu/pytorch-cifar ResNet18 with its 10-way fc: 11,173,962 (~11.17M).
    assert _trainable(net) + 512 * 10 + 10 == 11_173_962


def test_resnet50_cifar_parameter_count():
    net = get_backbone("resnet50_cifar")
    assert net.output_shape == (None, 2048)
    expected = _count_resnet_bottleneck((64, 128, 256, 512), (3, 4, 6, 3), 64)
    assert _trainable(net) == expected == 23_500_352
    # kuangliu/pytorch-cifar ResNet50 with its 10-way fc: 23,520,842 (~23.5M).
    assert _trainable(net) + 2048 * 10 + 10 == 23_520_842


def test_wrn28_2_parameter_count():
    net = get_backbone("wrn28_2")
    assert net.output_shape == (None, 128)
    assert _trainable(net) == _count_wrn(28, 2) == 1_466_320
    # FixMatch's WRN-28-2 with a 10-way fc: 1,467,610 (~1.47M).
    assert _trainable(net) + 128 * 10 + 10 == 1_467_610


# -------------------------------------------------------------- shapes and width
SMALL = {"resnet32_cifar": 0.25, "resnet32_cifar_a": 0.25, "resnet18_cifar": 0.0625,
         "resnet50_cifar": 0.0625, "wrn28_2": 0.125, "vgg_tile": 0.0625}
FEATURE_DIM = {"resnet32_cifar": 64, "resnet32_cifar_a": 64, "resnet18_cifar": 512,
               "resnet50_cifar": 2048, "wrn28_2": 128, "vgg_tile": 512}


def test_small_table_covers_every_backbone():
    assert sorted(SMALL) == list_backbones() == sorted(BACKBONES)


@pytest.mark.parametrize("name", sorted(FEATURE_DIM))
def test_width_multiplier_scales_feature_dim(name):
    for width in (0.5, 0.125):
        net = get_backbone(name, width=width)
        assert net.output_shape == (None, int(round(FEATURE_DIM[name] * width))), width


@pytest.mark.parametrize("name", sorted(SMALL))
@pytest.mark.parametrize("size", [32, 16])
def test_output_shape_on_images(name, size):
    width = SMALL[name]
    net = get_backbone(name, width=width)
    x = np.random.RandomState(0).normal(size=(2, size, size, 3)).astype("float32")
    out = net(x, training=False)
    expected_dim = int(round(FEATURE_DIM[name] * width))
    assert tuple(out.shape) == (2, expected_dim)
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


def test_fixed_input_shape():
    net = get_backbone("resnet32_cifar", width=0.25, input_shape=(16, 16, 3))
    assert net.input_shape == (None, 16, 16, 3)
    assert net.output_shape == (None, 16)


def test_unknown_name_lists_known_names():
    with pytest.raises(ValueError) as err:
        get_backbone("resnet33_cifar")
    message = str(err.value)
    assert "resnet33_cifar" in message
    for name in list_backbones():
        assert name in message


@pytest.mark.parametrize("width", [0, -0.5])
def test_non_positive_width_raises(width):
    with pytest.raises(ValueError, match="width"):
        get_backbone("resnet32_cifar", width=width)


def test_model_passes_through():
    net = get_backbone("vgg_tile", width=0.0625)
    assert get_backbone(net) is net


# ---------------------------------------------------------------- sync batch norm
def _batch_norms(net):
    return [layer for layer in net._flatten_layers(include_self=False)
            if isinstance(layer, keras.layers.BatchNormalization)]


@pytest.mark.parametrize("name", sorted(SMALL))
def test_sync_batchnorm_sets_every_batch_norm(name):
    plain = get_backbone(name, width=SMALL[name])
    assert _batch_norms(plain) and not any(bn.synchronized for bn in _batch_norms(plain))
    synced = get_backbone(name, width=SMALL[name], sync_batchnorm=True)
    bns = _batch_norms(synced)
    assert len(bns) == len(_batch_norms(plain))
    assert all(bn.synchronized for bn in bns)
    # The flag is part of each layer's config, so it survives serialisation.
    revived = keras.saving.deserialize_keras_object(
        keras.saving.serialize_keras_object(synced))
    assert all(bn.synchronized for bn in _batch_norms(revived))


def test_sync_batchnorm_on_a_given_model():
    net = get_backbone("vgg_tile", width=0.0625)
    assert get_backbone(net, sync_batchnorm=True) is net
    assert all(bn.synchronized for bn in _batch_norms(net))


# ------------------------------------------------------------------ serialisation
@pytest.mark.parametrize("name", sorted(SMALL))
def test_backbone_serialization(name):
    net = get_backbone(name, width=SMALL[name])
    x = np.random.RandomState(1).normal(size=(2, 8, 8, 3)).astype("float32")
    run_layer_serialization_test(net, x, call_kwargs={"training": False}, atol=1e-5)


# ------------------------------------------------- option-A (zero-pad) shortcuts
def _count_resnet_basic_option_a(stage_filters, blocks, stem):
    # Parameter-free shortcuts: only the two 3x3 convs and two BNs of each block.
    n, cin = _conv(3, stem, 3) + _bn(stem), stem
    for f, nb in zip(stage_filters, blocks):
        for _ in range(nb):
            n += _conv(cin, f, 3) + _bn(f) + _conv(f, f, 3) + _bn(f)
            cin = f
    return n


def test_resnet32_cifar_a_parameter_count_is_the_published_one():
    net = get_backbone("resnet32_cifar_a")
    assert net.name == "resnet32_cifar_a" and net.output_shape == (None, 64)
    # The authors' PyTorch ResNet-32 with its 10-way fc: sum of p.numel() over
    # model.parameters() = 464,154. PyTorch's parameters() hold BN weight and bias
    # but not running_mean/var (buffers), so the match is Keras' *trainable* count.
    model = keras.Model(net.input, keras.layers.Dense(10)(net.output))
    assert _trainable(net) == _count_resnet_basic_option_a((16, 32, 64), (5, 5, 5), 16)
    assert _trainable(net) == 463_504 == 464_154 - (64 * 10 + 10)
    assert _trainable(model) == 464_154
    # count_params() also holds the BN moving mean and variance: 2 x 1,136 channels.
    n_bn_channels = 16 + 10 * 16 + 10 * 32 + 10 * 64
    assert n_bn_channels == 1_136
    assert net.count_params() == 463_504 + 2 * n_bn_channels == 465_776
    assert model.count_params() == 466_426
    assert not net.non_trainable_weights or all(
        "moving" in w.path for w in net.non_trainable_weights)
    # The only difference from "resnet32_cifar": the 2 projections (1x1 conv + BN).
    assert _trainable(get_backbone("resnet32_cifar")) - _trainable(net) == (
        _conv(16, 32, 1) + _bn(32) + _conv(32, 64, 1) + _bn(64)) == 2_752


def test_resnet32_cifar_a_has_no_projection_layers():
    from ssl_zoo.backbones import ZeroPadShortcut
    net = get_backbone("resnet32_cifar_a", width=0.25)
    names = [layer.name for layer in net.layers]
    assert not [n for n in names if "proj" in n]
    shortcuts = [layer for layer in net.layers if isinstance(layer, ZeroPadShortcut)]
    assert [s.name for s in shortcuts] == ["stage2_block1_shortcut",
                                           "stage3_block1_shortcut"]
    assert [(s.strides, s.out_channels) for s in shortcuts] == [(2, 8), (2, 16)]
    # The projection network is unchanged (saved models and presets keep loading).
    plain = [layer.name for layer in get_backbone("resnet32_cifar", width=0.25).layers]
    assert "stage2_block1_proj" in plain and "stage2_block1_shortcut" not in plain


def _zero_pad_reference(x, strides, out_channels):
    y = x[:, ::strides, ::strides, :]
    before = (out_channels - x.shape[-1]) // 2
    after = out_channels - x.shape[-1] - before
    return np.pad(y, ((0, 0), (0, 0), (0, 0), (before, after)))


@pytest.mark.parametrize("size", [(8, 8), (7, 9), (1, 5)])
@pytest.mark.parametrize("strides,cin,cout", [(2, 16, 32), (2, 3, 8), (1, 4, 6), (3, 2, 2)])
def test_zero_pad_shortcut_matches_numpy_reference(size, strides, cin, cout):
    from ssl_zoo.backbones import ZeroPadShortcut
    x = np.random.RandomState(0).normal(size=(2, *size, cin)).astype("float32")
    layer = ZeroPadShortcut(strides, cout)
    y = keras.ops.convert_to_numpy(layer(x))
    expected = _zero_pad_reference(x, strides, cout)
    assert y.shape == expected.shape == (2, -(-size[0] // strides),
                                         -(-size[1] // strides), cout)
    np.testing.assert_array_equal(y, expected)
    if (cin, cout) == (16, 32):  # the PyTorch lambda: F.pad(..., planes // 4 each side)
        np.testing.assert_array_equal(y[..., :8], 0)
        np.testing.assert_array_equal(y[..., 24:], 0)
        np.testing.assert_array_equal(y[..., 8:24], x[:, ::2, ::2, :])
    # Symbolic shapes agree with the eager ones, also for unknown spatial dims.
    assert layer.compute_output_shape((None, *size, cin)) == (None, *y.shape[1:])
    sym = layer(keras.Input((None, None, cin)))
    assert tuple(sym.shape) == (None, None, None, cout)


def test_zero_pad_shortcut_serialization_and_errors():
    from ssl_zoo.backbones import ZeroPadShortcut
    layer = ZeroPadShortcut(2, 8, name="sc")
    x = np.random.RandomState(2).normal(size=(2, 5, 5, 4)).astype("float32")
    revived = run_layer_serialization_test(layer, x)
    assert (revived.strides, revived.out_channels) == (2, 8)
    with pytest.raises(ValueError, match="cannot drop channels"):
        ZeroPadShortcut(1, 2)(x)
    with pytest.raises(ValueError, match="strides"):
        ZeroPadShortcut(0, 8)
    with pytest.raises(ValueError, match="out_channels"):
        ZeroPadShortcut(2, 2.5)


def test_zero_pad_shortcut_under_mixed_precision():
    from ssl_zoo.backbones import ZeroPadShortcut
    keras.mixed_precision.set_global_policy("mixed_float16")
    layer = ZeroPadShortcut(2, 4)
    x = np.random.RandomState(3).normal(size=(1, 5, 4, 2)).astype("float32")
    y = layer(x)
    assert keras.backend.standardize_dtype(y.dtype) == "float16"
    np.testing.assert_array_equal(keras.ops.convert_to_numpy(y).astype("float32"),
                                  _zero_pad_reference(x.astype("float16"), 2, 4))
    net = get_backbone("resnet32_cifar_a", width=0.25)
    images = np.random.RandomState(4).normal(size=(2, 9, 7, 3)).astype("float32")
    out = net(images, training=False)
    assert keras.backend.standardize_dtype(out.dtype) == "float16"
    assert np.all(np.isfinite(keras.ops.convert_to_numpy(out)))


def test_shortcut_argument_of_the_constructors():
    from ssl_zoo.backbones import resnet18_cifar, resnet32_cifar, resnet50_cifar
    a = resnet32_cifar(width=0.25, shortcut="zero_pad")
    assert a.name == "resnet32_cifar_a"
    assert a.get_config() == get_backbone("resnet32_cifar_a", width=0.25).get_config()
    assert resnet32_cifar(width=0.25).name == "resnet32_cifar"  # default: projection
    r18 = resnet18_cifar(width=0.0625, shortcut="zero_pad")
    assert _trainable(r18) == _count_resnet_basic_option_a((4, 8, 16, 32), (2, 2, 2, 2), 4)
    for fn in (resnet18_cifar, resnet32_cifar, resnet50_cifar):
        with pytest.raises(ValueError, match="'projection', 'zero_pad'"):
            fn(width=0.0625, shortcut="option_a")
    with pytest.raises(ValueError, match="resnet50_cifar.*shortcut='projection'"):
        resnet50_cifar(width=0.0625, shortcut="zero_pad")


def test_option_a_strided_conv_pads_one_pixel_on_each_side():
    # PyTorch's conv3x3(stride=2, padding=1): output pixel i is centred on input 2i,
    # the pixel the x[:, ::2, ::2] shortcut keeps (Keras' "same" would centre it on
    # 2i + 1 for even sides).
    import tensorflow as tf
    net = get_backbone("resnet32_cifar_a", width=0.25)
    conv = net.get_layer("stage2_block1_conv1")
    block_in = net.get_layer("stage1_block5_out").output
    sub = keras.Model(net.input, [block_in, conv.output])
    for size in (8, 7):
        x = np.random.RandomState(size).normal(size=(2, size, size, 3)).astype("float32")
        inp, out = sub(x, training=False)
        ref = tf.nn.conv2d(inp, conv.kernel, strides=2,
                           padding=[[0, 0], [1, 1], [1, 1], [0, 0]])
        np.testing.assert_allclose(keras.ops.convert_to_numpy(out), ref.numpy(),
                                   atol=1e-5, rtol=1e-5)
        assert out.shape[1] == -(-size // 2)


def test_resnet32_cifar_a_unknown_spatial_dims_and_keras_round_trip(tmp_path):
    net = get_backbone("resnet32_cifar_a", width=0.25)
    assert net.input_shape == (None, None, None, 3)
    rng = np.random.RandomState(4)
    # Make the batch-norm statistics non-trivial so the round trip is a real check.
    for layer in net.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(size=c).astype("float32") * 0.1)
            layer.moving_variance.assign(rng.uniform(0.5, 1.5, size=c).astype("float32"))
    inputs = [rng.normal(size=(2, 32, 32, 3)).astype("float32"),
              rng.normal(size=(2, 13, 10, 3)).astype("float32")]
    expected = [keras.ops.convert_to_numpy(net(x, training=False)) for x in inputs]
    path = str(tmp_path / "resnet32_cifar_a.keras")
    net.save(path)
    revived = keras.saving.load_model(path)  # safe mode, no custom_objects
    assert revived.name == "resnet32_cifar_a"
    assert revived.count_params() == net.count_params()
    for x, e in zip(inputs, expected):
        assert e.shape == (2, 16)
        np.testing.assert_allclose(
            keras.ops.convert_to_numpy(revived(x, training=False)), e, atol=1e-6)


def test_resnet32_cifar_a_xla_forward_matches_eager():
    import tensorflow as tf
    net = get_backbone("resnet32_cifar_a", width=0.25)
    x = np.random.RandomState(5).normal(size=(2, 15, 16, 3)).astype("float32")
    eager = keras.ops.convert_to_numpy(net(x, training=False))
    xla = tf.function(lambda t: net(t, training=False), jit_compile=True,
                      input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_allclose(xla(x).numpy(), eager, atol=1e-5, rtol=1e-5)
    # Training mode (batch statistics) under XLA too.
    train_eager = keras.ops.convert_to_numpy(net(x, training=True))
    train_xla = tf.function(lambda t: net(t, training=True), jit_compile=True)
    np.testing.assert_allclose(train_xla(x).numpy(), train_eager, atol=1e-4, rtol=1e-4)
