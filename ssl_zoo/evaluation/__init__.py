"""Evaluation protocols behind one signature, `fn(model, train, test, num_classes,
**kwargs) -> dict of metrics`, and the feature extraction and metrics they share."""

from ssl_zoo.evaluation.registry import (EVALUATORS, evaluate, get_evaluator,
                                         register_evaluator)
from ssl_zoo.evaluation.features import (FeatureExtractor, apply_in_batches, as_batches,
                                         encoder_features, extract_features, labels_of)
from ssl_zoo.evaluation.metrics import (class_counts, classification_metrics,
                                        confusion_matrix, nmi, shot_groups)
from ssl_zoo.evaluation.direct import direct_evaluate, predict_logits
from ssl_zoo.evaluation.knn import knn_evaluate, knn_predict
from ssl_zoo.evaluation.linear_probe import linear_probe, linear_probe_evaluate
# The function `kmeans` stays in its module: exported here it would hide the module.
from ssl_zoo.evaluation.kmeans import (KMeans, PCAWhitening, kmeans_plusplus, l2_normalize,
                                       pca_whiten)
from ssl_zoo.evaluation.cluster_transfer import (ClusterPseudoLabeler,
                                                 kmeans_evaluate,
                                                 cluster_pseudo_labels)

__all__ = ["ClusterPseudoLabeler", "EVALUATORS", "FeatureExtractor", "KMeans",
           "PCAWhitening", "cluster_pseudo_labels", "kmeans_evaluate",
           "kmeans_plusplus", "l2_normalize", "pca_whiten", "apply_in_batches", "as_batches",
           "class_counts", "classification_metrics", "confusion_matrix",
           "direct_evaluate", "encoder_features", "evaluate", "extract_features",
           "get_evaluator", "knn_evaluate", "knn_predict", "labels_of", "linear_probe",
           "linear_probe_evaluate", "nmi", "predict_logits", "register_evaluator",
           "shot_groups"]
