"""Knowledge transfer by cluster classification (Noroozi et al., CVPR 2018): features
of a pretext-trained teacher -> PCA-whitening -> L2 normalisation -> k-means; each
image's pseudo-label is its nearest centre, and another network learns to predict it
(`ssl_zoo.models.ClusterClassificationModel`).

The authors never published this part; the clustering follows DeepCluster / VISSL
ClusterFit practice (PCA-whiten to ~256 dims, L2-normalise, re-seed empty clusters,
log the cluster sizes and the NMI against true labels where they exist).
"""

import dataclasses

import numpy as np

from ssl_zoo.evaluation.features import FeatureExtractor
from ssl_zoo.evaluation.kmeans import KMeans, PCAWhitening, l2_normalize
from ssl_zoo.evaluation.metrics import nmi
from ssl_zoo.evaluation.registry import register_evaluator


def _check_finite(features, what):
    bad = ~np.isfinite(features).all(axis=1)
    if bad.any():
        raise ValueError(f"{what} contain NaN/Inf in {int(bad.sum())} of {len(bad)} rows "
                         f"(first: row {int(np.flatnonzero(bad)[0])}); check the teacher "
                         f"model and its inputs.")


@dataclasses.dataclass
class ClusterPseudoLabeler:
    """Teacher features -> (PCA-whitening, L2) -> k-means; labels = nearest centre.

    Args:
        num_clusters: k (the paper clusters ImageNet into 2,000; a few times the
            number of classes at small scale).
        pca_dim: PCA-whitening output dimensions (None: no PCA; clamped to the
            features' rank by `PCAWhitening`).
        l2_normalize: L2-normalise the (whitened) features before k-means.
        layer: read the teacher's features from this layer of its backbone
            (flattened); None = the teacher's own features (`model.embed`).
        batch_size: feature-extraction batch size.
        progress: show progress bars while extracting features.
        seed: k-means seed.
        kmeans: further `KMeans` options (max_iter, batch_size for mini-batch
            k-means, chunk_size, ...).

    Attributes (after `fit`):
        pca: the fitted `PCAWhitening` (or None); kmeans_model: the fitted `KMeans`;
        assignments: (N,) cluster index of each fitted point;
        summary: dict with inertia, iterations, cluster-size statistics, empty
        clusters re-seeded, and the NMI against the fit data's labels.

    Example:
    >>> import keras
    >>> teacher = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    >>> labels = np.repeat([0, 1, 2], 10)
    >>> images = (np.eye(3)[labels] * 200)[:, None, None, :] * np.ones((30, 4, 4, 3))
    >>> labeler = ClusterPseudoLabeler(3, pca_dim=None).fit(teacher, (images, labels))
    >>> labeler.summary["nmi"]
    1.0
    """

    num_clusters: int
    pca_dim: int = 256
    l2_normalize: bool = True
    layer: str = None
    batch_size: int = 256
    progress: bool = False
    seed: int = 0
    kmeans: dict = dataclasses.field(default_factory=dict)

    def __post_init__(self):
        self.pca = None
        self.kmeans_model = None
        self.summary = {}
        self._extractor = None

    def features(self, teacher, data):
        """(N, D) float32 teacher features of `data` after the fitted projection."""
        features, _ = self._extract(teacher, data)
        return self._project(features)

    def _extract(self, teacher, data):
        if self._extractor is None or self._extractor[0] is not teacher:
            self._extractor = (teacher, FeatureExtractor(teacher, layer=self.layer))
        features, labels = self._extractor[1].extract(data, self.batch_size, self.progress)
        _check_finite(features, "teacher features")
        return features, labels

    def _project(self, features):
        if self.pca is not None:
            return np.asarray(self.pca.transform(features), np.float32)
        if self.l2_normalize:
            return np.asarray(l2_normalize(features), np.float32)
        return features

    def fit(self, teacher, data):
        """Extracts, projects and clusters the features of `data`; returns self.

        Args:
            teacher: the pretext model (any model `FeatureExtractor` takes).
            data: (images, labels) arrays, an `ArrayDataset` or a batched
                `tf.data.Dataset`; the labels only score the clusters (NMI).
        """
        features, labels = self._extract(teacher, data)
        return self.fit_features(features, labels)

    def fit_features(self, features, labels=None):
        """Fits the projection and k-means on extracted (N, D) features; returns self.

        Args:
            features: (N, D) float features.
            labels: optional (N,) true labels (for the NMI in `summary`).
        """
        features = np.asarray(features, np.float32)   # PCAWhitening / KMeans reject NaN
        if self.pca_dim is not None:
            self.pca = PCAWhitening(dim=int(self.pca_dim),
                                    l2_normalize=self.l2_normalize).fit(features)
        projected = self._project(features)
        self.kmeans_model = KMeans(int(self.num_clusters), seed=self.seed,
                                   **self.kmeans).fit(projected)
        assignments = np.asarray(self.kmeans_model.labels_)
        sizes = np.bincount(assignments, minlength=int(self.num_clusters))
        self.summary = {
            "num_points": int(len(assignments)),
            "num_clusters": int(self.num_clusters),
            "feature_dim": int(features.shape[1]),
            "projected_dim": int(projected.shape[1]),
            "inertia": float(self.kmeans_model.inertia_),
            "iterations": int(self.kmeans_model.n_iter_),
            "empty_reseeded": int(getattr(self.kmeans_model, "empty_reseeded_", 0)),
            "cluster_size_min": int(sizes.min()),
            "cluster_size_median": float(np.median(sizes)),
            "cluster_size_max": int(sizes.max()),
            "cluster_sizes": sizes.tolist(),
            "nmi": None if labels is None else nmi(labels, assignments),
        }
        self.assignments = assignments
        return self

    def predict(self, teacher, data):
        """Pseudo-labels (N,) int64 of `data`: the nearest fitted centre."""
        return self.predict_features(self._extract(teacher, data)[0])

    def predict_features(self, features):
        """Pseudo-labels (N,) int64 of extracted (N, D) features: the nearest centre."""
        if self.kmeans_model is None:
            raise ValueError("ClusterPseudoLabeler.predict needs fit() first.")
        return np.asarray(self.kmeans_model.predict(self._project(features)), np.int64)


def cluster_pseudo_labels(teacher, data, num_clusters, label_data=None, **options):
    """Pseudo-labels of `label_data` (default: `data`) from k-means on `data`.

    Steps (b) and (c) of the transfer: cluster the teacher's features of `data`, then
    label every image of `label_data` (which may be another data set) with its nearest
    centre.

    Args:
        teacher: the pretext model.
        data: what is clustered ((images, labels), `ArrayDataset`, tf.data).
        num_clusters: k.
        label_data: what gets pseudo-labels (default: `data`).
        **options: `ClusterPseudoLabeler` options (pca_dim, layer, kmeans, ...).

    Returns:
        (pseudo_labels (N,) int64 of `label_data`, the fitted `ClusterPseudoLabeler`).

    Example:
    >>> import keras
    >>> teacher = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    >>> labels = np.repeat([0, 1], 6)
    >>> images = (np.eye(3)[labels] * 200)[:, None, None, :] * np.ones((12, 4, 4, 3))
    >>> pseudo, labeler = cluster_pseudo_labels(teacher, (images, labels), 2,
    ...                                         pca_dim=None)
    >>> len(set(pseudo[:6].tolist())), len(set(pseudo.tolist()))
    (1, 2)
    """
    labeler = ClusterPseudoLabeler(num_clusters, **options).fit(teacher, data)
    if label_data is None:
        return labeler.assignments.astype(np.int64), labeler
    return labeler.predict(teacher, label_data), labeler


@register_evaluator("kmeans")
def kmeans_evaluate(model, train, test, num_classes, num_clusters=None, batch_size=256,
                    pca_dim=None, seed=0, **kmeans):
    """k-means on the model's training features, scored as a classifier and by NMI.

    Each cluster takes the majority class of its training images; a test image gets
    the class of its nearest centre (k-means with `num_clusters` = C is "cluster
    accuracy" under a many-to-one mapping). The NMI of the test images' clusters
    against their labels measures the clustering itself.

    Args:
        model: an encoder.
        train: labelled data to cluster (labels name the clusters).
        test: labelled data to score.
        num_classes: C; k defaults to C.
        num_clusters: k.
        batch_size: feature-extraction batch size.
        pca_dim: optional PCA-whitening before k-means.
        seed: k-means seed.
        **kmeans: `KMeans` options.

    Returns:
        `classification_metrics` of the test predictions plus "nmi", "inertia" and
        "num_clusters".

    Example:
    >>> import keras
    >>> model = keras.Sequential([keras.layers.GlobalAveragePooling2D()])
    >>> labels = np.repeat([0, 1], 4)
    >>> images = (np.eye(3)[labels] * 100)[:, None, None, :] * np.ones((8, 2, 2, 3))
    >>> out = kmeans_evaluate(model, (images, labels), (images, labels), 2)
    >>> out["accuracy"], out["nmi"]
    (1.0, 1.0)
    """
    from ssl_zoo.evaluation.metrics import class_counts, classification_metrics
    k = int(num_clusters or num_classes)
    labeler = ClusterPseudoLabeler(k, pca_dim=pca_dim, batch_size=batch_size, seed=seed,
                                   kmeans=kmeans)
    features, train_labels = labeler._extract(model, train)
    labeler.fit_features(features, train_labels)
    votes = np.zeros((k, int(num_classes)), np.int64)
    np.add.at(votes, (labeler.assignments, train_labels), 1)
    cluster_class = votes.argmax(1)
    test_features, test_labels = labeler._extract(model, test)
    test_clusters = labeler.predict_features(test_features)
    metrics = classification_metrics(test_labels, cluster_class[test_clusters],
                                     int(num_classes),
                                     train_counts=class_counts(train_labels,
                                                               int(num_classes)))
    return {**metrics, "nmi": nmi(test_labels, test_clusters),
            "inertia": labeler.summary["inertia"], "num_clusters": float(k)}


__all__ = ["ClusterPseudoLabeler", "cluster_pseudo_labels", "kmeans_evaluate"]
