"""Weighted k-nearest-neighbour classification of L2-normalised features (Wu et al.,
CVPR 2018, InstDisc): cosine similarity, top-k neighbours voting with exp(sim / T)."""

import numpy as np

from ssl_zoo.evaluation.features import FeatureExtractor
from ssl_zoo.evaluation.metrics import class_counts, classification_metrics
from ssl_zoo.evaluation.registry import register_evaluator


def _l2_normalise(features, epsilon=1e-12):
    features = np.asarray(features, np.float64)
    if features.ndim != 2:
        raise ValueError(f"features must be (N, D), got shape {features.shape}.")
    norm = np.linalg.norm(features, axis=1, keepdims=True)
    return features / np.maximum(norm, epsilon)


def _top_k(similarity, k):
    """Indices (Q, k) of the k largest similarities per row, most similar first;
    among equal similarities the lower index first (and in, at the k-th place)."""
    # argpartition alone picks among equal values at the k-th place arbitrarily:
    # keep every value above the k-th largest, then the first tied ones by index.
    kth = -np.partition(-similarity, k - 1, axis=1)[:, k - 1:k]
    above = similarity > kth
    tied = similarity == kth
    needed = k - above.sum(1, keepdims=True)
    chosen = above | (tied & (np.cumsum(tied, axis=1) <= needed))
    neighbours = np.nonzero(chosen)[1].reshape(len(similarity), k)  # by index
    # A canonical order (a stable sort by similarity) makes the float sums of the
    # votes, hence exact score ties, independent of how the data were laid out.
    order = np.argsort(-np.take_along_axis(similarity, neighbours, 1), axis=1,
                       kind="stable")
    return np.take_along_axis(neighbours, order, 1)


def knn_predict(train_features, train_labels, query_features, num_classes, k=200,
                temperature=0.07, chunk_size=256):
    """Class predictions (Q,) of weighted kNN on cosine similarity.

    Features are L2-normalised; each query's k most similar training features
    vote for their labels with weights exp(similarity / temperature) (Wu et al.
    2018, the kNN monitor of InstDisc, MoCo, DINO); the class with the largest
    summed weight wins. Deterministic ties: similarities are float64 products
    rounded to float32 (equal features tie exactly, whatever BLAS kernel computed
    them); among equal similarities the lower training index is the neighbour,
    and among equal class scores the lower class index wins. Queries are processed
    `chunk_size` at a time, so memory stays at about chunk_size x N similarities
    (plus the float64 features, 8 x N x D bytes) whatever Q is; results do not
    depend on it.

    Args:
        train_features: (N, D) features of the labelled set.
        train_labels: (N,) class indices in [0, num_classes).
        query_features: (Q, D) features to classify.
        num_classes: C.
        k: neighbours per query (at most N are used).
        temperature: T of the vote weights.
        chunk_size: queries per block of the similarity matrix.

    Returns:
        int64 numpy array (Q,) of predicted classes.

    Example:
    >>> train = np.array([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0]])
    >>> knn_predict(train, [0, 0, 1], [[1.0, 0.2], [0.1, 1.0]], 2, k=2).tolist()
    [0, 1]
    """
    train = _l2_normalise(train_features)
    queries = _l2_normalise(query_features)
    labels = np.asarray(train_labels).reshape(-1).astype(np.int64)
    if labels.shape != (len(train),):
        raise ValueError(f"knn_predict got {len(train)} training features and "
                         f"{labels.size} labels.")
    if train.shape[1] != queries.shape[1]:
        raise ValueError(f"training features have {train.shape[1]} dimensions, the "
                         f"queries {queries.shape[1]}.")
    if not len(train) or labels.min() < 0 or labels.max() >= num_classes:
        raise ValueError(f"knn_predict needs training labels in [0, {num_classes}).")
    if k < 1 or temperature <= 0 or chunk_size < 1:
        raise ValueError(f"knn_predict needs k >= 1, temperature > 0 and chunk_size "
                         f">= 1; got k={k}, temperature={temperature}, "
                         f"chunk_size={chunk_size}.")
    k = min(int(k), len(train))
    predictions = np.zeros(len(queries), np.int64)
    for start in range(0, len(queries), int(chunk_size)):
        # float64 products rounded to float32: BLAS kernels (which vary with the
        # chunk's shape) differ in the last bits, and equal features must tie exactly.
        similarity = (queries[start:start + chunk_size] @ train.T).astype(np.float32)
        neighbours = _top_k(similarity, k)
        weights = np.exp(np.take_along_axis(similarity, neighbours, 1) / temperature,
                         dtype=np.float64)
        scores = np.zeros((len(similarity), num_classes))
        rows = np.repeat(np.arange(len(similarity)), k)
        np.add.at(scores, (rows, labels[neighbours].reshape(-1)), weights.reshape(-1))
        predictions[start:start + chunk_size] = np.argmax(scores, axis=1)
    return predictions


@register_evaluator("knn")
def knn_evaluate(encoder, train, test, num_classes, k=200, temperature=0.07,
                 batch_size=256, layer=None, chunk_size=256, progress=False):
    """Weighted kNN accuracy of an encoder's features (the InstDisc protocol).

    Args:
        encoder: an ssl_zoo model, a `LinearProbe` or a keras model mapping images
            to features (see `ssl_zoo.evaluation.FeatureExtractor`).
        train, test: (images, labels) arrays, objects with `.images`/`.labels`, or
            batched `tf.data.Dataset`s of (images, labels).
        num_classes: C.
        k, temperature, chunk_size: see `knn_predict`.
        batch_size: batch size of the feature extraction.
        layer: optional backbone layer to read the features from.
        progress: show progress bars while extracting.

    Returns:
        dict of `classification_metrics` (many/medium/few-shot groups from the
        training labels) plus "k" and "temperature".

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    >>> labels = np.repeat([0, 1], 4)
    >>> images = np.eye(3)[labels][:, None, None, :] * np.ones((8, 2, 2, 3))
    >>> knn_evaluate(model, (images, labels), (images, labels), 2, k=3)["accuracy"]
    1.0
    """
    extract = FeatureExtractor(encoder, layer)
    train_features, train_labels = extract.extract(train, batch_size, progress)
    test_features, test_labels = extract.extract(test, batch_size, progress)
    predictions = knn_predict(train_features, train_labels, test_features, num_classes,
                              k, temperature, chunk_size)
    metrics = classification_metrics(
        test_labels, predictions, num_classes,
        train_counts=class_counts(train_labels, num_classes))
    return {**metrics, "k": float(min(k, len(train_labels))),
            "temperature": float(temperature)}
