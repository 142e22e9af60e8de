"""Backbones: image -> pooled feature networks, built by name with `get_backbone`.

"resnet32_cifar" has 1x1-projection shortcuts; "resnet32_cifar_a" is the authors'
ResNet-32 with parameter-free option-A shortcuts (`ZeroPadShortcut`), 0.46M parameters.
"""

import keras

from ssl_zoo.backbones.resnet_cifar import (
    ZeroPadShortcut,
    resnet18_cifar,
    resnet32_cifar,
    resnet32_cifar_a,
    resnet50_cifar,
)
from ssl_zoo.backbones.tile_encoder import vgg_tile
from ssl_zoo.backbones.wide_resnet import wide_resnet, wrn28_2

BACKBONES = {
    "resnet32_cifar": resnet32_cifar,
    "resnet32_cifar_a": resnet32_cifar_a,
    "resnet18_cifar": resnet18_cifar,
    "resnet50_cifar": resnet50_cifar,
    "wrn28_2": wrn28_2,
    "vgg_tile": vgg_tile,
}


def list_backbones():
    """Names accepted by `get_backbone`, sorted.

    Returns:
        list of str.

    Example:
    >>> [n for n in list_backbones() if n.startswith("resnet32")]
    ['resnet32_cifar', 'resnet32_cifar_a']
    """
    return sorted(BACKBONES)


def get_backbone(name, width=1.0, input_shape=(None, None, 3), sync_batchnorm=False):
    """Build a backbone by name; it maps images (B, H, W, C) to features (B, D).

    Args:
        name: one of `list_backbones()`, a `keras.Model` (returned unchanged), or the
            `arch.tag` name of a preset: its pretrained encoder (`width` is then the
            preset's and the argument is ignored).
        width: channel multiplier (1.0 = the published architecture).
        input_shape: (H, W, C); spatial dims may be None.
        sync_batchnorm: compute batch-norm statistics over the global batch
            under a `tf.distribute` strategy (needed for results that do not
            depend on the number of replicas).

    Example:
    >>> net = get_backbone("resnet32_cifar", width=0.25)
    >>> net.output_shape
    (None, 16)
    >>> get_backbone("resnet32_cifar_a", width=0.25).name  # option-A shortcuts
    'resnet32_cifar_a'
    >>> get_backbone("resnet32_cifar.supcon_cifar10").output_shape  # a preset's encoder
    (None, 64)
    """
    if isinstance(name, keras.Model):
        return _set_sync_batchnorm(name, sync_batchnorm) if sync_batchnorm else name
    if isinstance(name, str) and name not in BACKBONES:
        from ssl_zoo.presets import is_preset_name, load_backbone
        if is_preset_name(name):
            net = load_backbone(name)
            return _set_sync_batchnorm(net, sync_batchnorm) if sync_batchnorm else net
    if not isinstance(name, str) or name not in BACKBONES:
        raise ValueError(
            f"Unknown backbone {name!r}. Known backbones: {', '.join(list_backbones())} "
            f"(or a preset's encoder: ssl_zoo.list_presets()).")
    if not width > 0:
        raise ValueError(f"Backbone width multiplier must be > 0, got {width}.")
    net = BACKBONES[name](width=width, input_shape=tuple(input_shape))
    return _set_sync_batchnorm(net, sync_batchnorm) if sync_batchnorm else net


def _set_sync_batchnorm(model, value=True):
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.synchronized = value
    return model


__all__ = ["BACKBONES", "ZeroPadShortcut", "get_backbone", "list_backbones",
           "resnet18_cifar", "resnet32_cifar", "resnet32_cifar_a", "resnet50_cifar",
           "wide_resnet", "wrn28_2", "vgg_tile"]
