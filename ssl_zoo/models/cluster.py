"""Cluster classification (Noroozi et al., CVPR 2018): a network — usually a different,
bigger architecture than the pretext model's — trained to predict the k-means cluster
of each image in the pretext model's feature space. This transfers what the pretext
model learned into the new architecture; its features are then evaluated (linear
probe, kNN)."""

import dataclasses

import keras

from ssl_zoo.models.base import BackboneModel, LinearClassifierMixin
from ssl_zoo.models.registry import MethodSpec, register_method
from ssl_zoo.utils.io import load_model_file


@keras.saving.register_keras_serializable(package="ssl_zoo")
class ClusterClassificationModel(LinearClassifierMixin, BackboneModel):
    """Backbone + linear classifier over `num_clusters` pseudo-classes.

    Train it on (images, cluster labels). With a `teacher`, the trainer (CLI,
    `ssl_zoo.training`) makes those labels itself before the stream is built:
    `prepare_training_data(train)` extracts the teacher's features, PCA-whitens,
    L2-normalises and clusters them (`ssl_zoo.evaluation.ClusterPseudoLabeler`) and
    relabels each image with its nearest centre. The clustering summary (cluster
    sizes, inertia, NMI against the true labels) is in `training_details()`.

    Args:
        backbone: the new architecture (name, `keras.Model` or config).
        num_clusters: k, the number of pseudo-classes.
        teacher: the pretext model: a path to a `.keras` file (loaded with
            `ssl_zoo.utils.load_model_file`: a missing, truncated or non-Keras file
            is named), or a model (not saved in the config).
        clustering: `ClusterPseudoLabeler` options (pca_dim, layer, l2_normalize,
            kmeans, batch_size, seed).
        width, mean, std, sync_batchnorm: see `BackboneModel`.

    Call args:
        images: (B, H, W, 3) raw images on the 0..255 scale.

    Returns:
        (B, num_clusters) float32 cluster logits.

    Example:
    >>> import numpy as np
    >>> from keras import ops
    >>> model = ClusterClassificationModel("resnet32_cifar", num_clusters=20, width=0.25)
    >>> tuple(model(ops.zeros((2, 16, 16, 3))).shape)
    (2, 20)
    """

    has_classifier = False  # cluster logits are not the data set's classes

    def __init__(self, backbone="resnet32_cifar", num_clusters=100, teacher=None,
                 clustering=None, **kwargs):
        kwargs.pop("num_classes", None)  # the classes are the clusters
        super().__init__(backbone=backbone, num_classes=num_clusters, **kwargs)
        self.num_clusters = self.num_classes
        self.teacher = teacher
        self.clustering = dict(clustering or {})
        self.add_classifier()
        self._clustering_summary = {}

    def prepare_training_data(self, train, log=None):
        """`train` (an `ArrayDataset`) relabelled with the teacher's cluster indices.

        Without a teacher the data is returned unchanged (its labels are taken to be
        cluster indices already).
        """
        if self.teacher is None:
            return train
        from ssl_zoo.evaluation.cluster_transfer import cluster_pseudo_labels
        teacher = self.teacher
        if isinstance(teacher, str):
            teacher = load_model_file(teacher)
        options = {"progress": log is not None, "seed": 0, **self.clustering}
        pseudo, labeler = cluster_pseudo_labels(teacher, train, self.num_clusters,
                                                **options)
        summary = labeler.summary
        self._clustering_summary = summary
        if log is not None:
            log(f"k-means: {summary['num_clusters']} clusters of "
                f"{summary['num_points']} images ({summary['feature_dim']} -> "
                f"{summary['projected_dim']} dims), inertia {summary['inertia']:.4g}, "
                f"sizes {summary['cluster_size_min']}..{summary['cluster_size_max']} "
                f"(median {summary['cluster_size_median']:g}), NMI vs labels "
                f"{summary['nmi']:.4f}")
        return dataclasses.replace(train, labels=pseudo)

    def training_details(self):
        """The clustering summary of the last `prepare_training_data`."""
        return {"clustering": self._clustering_summary} if self._clustering_summary \
            else {}

    def get_config(self):
        config = super().get_config()
        config.pop("num_classes", None)
        config.update({
            "num_clusters": self.num_clusters,
            "teacher": self.teacher if isinstance(self.teacher, str) else None,
            "clustering": self.clustering,
        })
        return config


register_method("cluster_classification", MethodSpec(
    ClusterClassificationModel,
    "Cluster classification: train a (different) network on the k-means clusters of a "
    "pretext model's features (Noroozi et al. 2018); evaluated by linear probe.",
    view="weak", evaluation="linear_probe", class_labels=False,
    test_kwargs={"num_clusters": 3}))
