"""The linear evaluation protocol: a `LinearProbe` (one Dense layer on standardised
features) trained on an encoder that stays as it was; top-1 and per-class metrics."""

import keras
import numpy as np
from keras import ops

from ssl_zoo.evaluation.features import FeatureExtractor, as_batches
from ssl_zoo.evaluation.metrics import class_counts, classification_metrics
from ssl_zoo.evaluation.registry import register_evaluator
from ssl_zoo.models.linear_probe import LinearProbe


def _train_probe(encoder, train_data, test_data, num_classes, epochs, batch_size,
                 learning_rate, cache_features, seed, verbose):
    """Trains a `LinearProbe`; returns it with the train and test logits and labels."""
    keras.utils.set_random_seed(seed)
    probe = LinearProbe(encoder, num_classes)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    extract = FeatureExtractor(encoder)
    train_features, train_labels = extract.extract(
        as_batches(train_data, batch_size, "train_data"))
    test_batches = as_batches(test_data, batch_size, "test_data")
    probe.set_feature_statistics(train_features.mean(0), train_features.std(0))
    if cache_features:
        # The probe's own Dense layer, trained on standardised cached features.
        standardised = (train_features - ops.convert_to_numpy(probe.feature_mean)) \
            * ops.convert_to_numpy(probe.feature_scale)
        head = keras.Sequential([keras.Input((train_features.shape[1],)),
                                 probe.classifier])
        head.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
        head.fit(standardised, train_labels, batch_size=batch_size, epochs=epochs,
                 shuffle=True, verbose=verbose)
    else:
        probe.compile(optimizer=keras.optimizers.Adam(learning_rate), loss=loss)
        probe.fit(as_batches(train_data, batch_size, "train_data", shuffle_seed=seed),
                  epochs=epochs, shuffle=False, verbose=verbose)
    test_features, test_labels = extract.extract(test_batches)
    train_logits = ops.convert_to_numpy(probe.classify(train_features))
    test_logits = ops.convert_to_numpy(probe.classify(test_features))
    return probe, (train_logits, train_labels), (test_logits, test_labels)


def _top1(logits, labels):
    return float(np.mean(np.argmax(logits, axis=-1) == labels))


def linear_probe(encoder, train_data, test_data, num_classes, epochs=30, batch_size=256,
                 learning_rate=1e-2, cache_features=True, seed=0, verbose=0,
                 return_probe=False):
    """Trains a linear classifier on frozen features; returns its top-1 accuracies.

    The standard linear evaluation of Khosla et al. (2020) / Chen et al. (2020),
    without augmentation: features are extracted once in inference mode
    (`cache_features=True`, fast on CPU), standardised with the training-set
    statistics, and a Dense layer is trained with Adam and cross-entropy. With
    `cache_features=False` the `LinearProbe` is trained on the images with `fit`
    (the encoder runs every epoch: slower, for data that do not fit in memory).
    The encoder is left exactly as it was: its weights, batch-norm statistics and
    `trainable` flags (it can be trained, saved and reloaded afterwards). Sets
    Keras' global random seed to `seed`.

    Args:
        encoder: a model whose `features(images)` or `call(images)` gives (B, D)
            features (SupConModel, SimCLRModel, SupervisedModel, SLAModel, a
            backbone).
        train_data, test_data: (images (N, H, W, 3), labels (N,)) arrays, objects
            with `.images`/`.labels` (`ssl_zoo.data.ArrayDataset`), or batched
            `tf.data.Dataset`s of (images, labels).
        num_classes: N.
        epochs: training epochs of the classifier.
        batch_size: batch size for feature extraction and training.
        learning_rate: Adam learning rate.
        cache_features: extract the features once (True) or on every step.
        seed: seed of the classifier's initialisation and shuffling.
        verbose: passed to `fit`.
        return_probe: also return the trained `LinearProbe` under "probe".

    Returns:
        dict with "top1" (test accuracy) and "train_top1" (training accuracy), as
        floats; with `return_probe=True` also "probe", the trained `LinearProbe`
        (ready for `predict` on images).

    Example:
    >>> from ssl_zoo.backbones import get_backbone
    >>> images = np.concatenate([np.zeros((8, 8, 8, 3)), np.full((8, 8, 8, 3), 255.0)])
    >>> labels = np.repeat([0, 1], 8)
    >>> result = linear_probe(get_backbone("resnet32_cifar", width=0.25),
    ...                       (images, labels), (images, labels), num_classes=2)
    >>> result["top1"]
    1.0
    """
    probe, train, test = _train_probe(encoder, train_data, test_data, num_classes,
                                      epochs, batch_size, learning_rate, cache_features,
                                      seed, verbose)
    result = {"top1": _top1(*test), "train_top1": _top1(*train)}
    if return_probe:
        result["probe"] = probe
    return result


@register_evaluator("linear_probe")
def linear_probe_evaluate(encoder, train, test, num_classes, epochs=30, batch_size=256,
                          learning_rate=1e-2, cache_features=True, seed=0, verbose=0):
    """`linear_probe`, scored with `classification_metrics` on the test set.

    Args:
        encoder, train, test, num_classes, epochs, batch_size, learning_rate,
            cache_features, seed, verbose: as for `linear_probe`.

    Returns:
        dict of `classification_metrics` of the probe's test predictions (long-tail
        groups from the training labels) plus "train_accuracy" and "probe", the
        trained `LinearProbe`.

    Example:
    >>> model = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    >>> labels = np.repeat([0, 1], 4)
    >>> images = np.eye(3)[labels][:, None, None, :] * np.ones((8, 2, 2, 3))
    >>> metrics = linear_probe_evaluate(model, (images, labels), (images, labels), 2)
    >>> metrics["accuracy"], metrics["train_accuracy"]
    (1.0, 1.0)
    """
    probe, (train_logits, train_labels), (test_logits, test_labels) = _train_probe(
        encoder, train, test, num_classes, epochs, batch_size, learning_rate,
        cache_features, seed, verbose)
    metrics = classification_metrics(
        test_labels, np.argmax(test_logits, axis=1), num_classes,
        train_counts=class_counts(train_labels, num_classes))
    return {**metrics, "train_accuracy": _top1(train_logits, train_labels),
            "probe": probe}
