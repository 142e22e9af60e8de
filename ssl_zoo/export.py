"""SavedModel export with a uint8 serving signature (resizing and normalisation inside).

The exported directory loads without ssl_zoo: `tf.saved_model.load(path).serve(images)`
or `keras.layers.TFSMLayer(path, call_endpoint="serve")`.
"""

import os

import keras
import tensorflow as tf

from ssl_zoo.models.base import inference_features
from ssl_zoo.utils.io import atomic_directory


def _trained_image_size(model):
    serving = getattr(model, "serving_image_size", None)
    if callable(serving):   # models not built on whole images (Jigsaw: puzzle tiles)
        size = serving()
        return None if size is None else tuple(int(d) for d in size)
    build = model.get_build_config() or {}
    shape = build.get("input_shape")
    if shape and shape[1] is not None and shape[2] is not None:
        return int(shape[1]), int(shape[2])
    return None


def _model_features(model):
    """`images -> features` of an ssl_zoo model, or of the encoder a probe wraps."""
    if callable(getattr(model, "features", None)):
        return lambda x: inference_features(model, x)
    encoder = getattr(model, "encoder", None)
    if encoder is not None:
        return _model_features(encoder)
    raise ValueError(f"{type(model).__name__} has no `features` method and no "
                     f"`encoder`: export needs an ssl_zoo model or a LinearProbe.")


def export_model(model, path, image_size=None, inference=None):
    """Writes `model` as a SavedModel whose `serve` signature takes uint8 images.

    Signature `serve(images: uint8 [batch, H, W, 3])` -> {"features": float32
    [batch, D]} and, for every model with a classifier, "probabilities": float32
    [batch, num_classes]. An encoder without one (`SupConModel`, `SimCLRModel`:
    `model.has_classifier` is False) exports features only — wrap it in a trained
    `LinearProbe` to export class probabilities. Images of any H, W are resized
    (bilinear) to the size the model was trained on. The write is atomic: the
    directory appears complete or not at all.

    Args:
        model: a built ssl_zoo model, or a `LinearProbe`.
        path: output directory (replaced if it exists).
        image_size: (H, W) or int to resize to; default: the model's build shape.
        inference: for SLA models, 'single', 'aggregated' or 'self_distill'.

    Returns:
        `path`.

    Example:
    >>> export_model(model, "out/sla", inference="self_distill")  # doctest: +SKIP
    >>> tf.saved_model.load("out/sla").serve(images)["probabilities"]  # doctest: +SKIP
    """
    if not model.built:
        raise ValueError("Build the model (fit it or call it on a batch) before export.")
    if isinstance(image_size, int):
        image_size = (image_size, image_size)
    image_size = image_size or _trained_image_size(model)
    if image_size is None:
        raise ValueError("The model's input size is unknown; pass image_size=(H, W).")
    call_kwargs = {}
    if inference is not None:
        if not hasattr(model, "inference"):
            raise ValueError(f"{type(model).__name__} has no inference modes.")
        call_kwargs["inference"] = model._check_mode(inference)
    height, width = image_size
    features_fn = _model_features(model)
    has_classifier = bool(getattr(model, "has_classifier", True))

    @tf.function(input_signature=[tf.TensorSpec([None, None, None, 3], tf.uint8,
                                                name="images")])
    def serve(images):
        x = tf.cast(images, tf.float32)
        x = tf.cond(tf.logical_and(tf.shape(x)[1] == height, tf.shape(x)[2] == width),
                    lambda: x, lambda: tf.image.resize(x, (height, width)))
        x = tf.ensure_shape(x, [None, height, width, 3])
        out = {"features": tf.cast(features_fn(x), tf.float32)}
        if has_classifier:
            logits = model(x, training=False, **call_kwargs)
            out["probabilities"] = tf.nn.softmax(tf.cast(logits, tf.float32))
        return out

    archive = keras.export.ExportArchive()
    archive.track(model)
    archive.add_endpoint("serve", serve)
    with atomic_directory(path) as tmp:
        archive.write_out(tmp, verbose=False)
    return os.fspath(path)
