"""Models: subclassed `keras.Model`s trained with plain `fit`."""

from ssl_zoo.models.base import BackboneModel, inference_features
from ssl_zoo.models.registry import (METHODS, MethodSpec, get_method, method_of,
                                     register_method, unregister_method)
from ssl_zoo.models.sla import DAModel, MTModel, SLAModel, TransformationModel
from ssl_zoo.models.linear_probe import LinearProbe
from ssl_zoo.models.supcon import SimCLRModel, SupConModel
from ssl_zoo.models.supervised import SupervisedModel
from ssl_zoo.models.fixmatch import FixMatchModel
from ssl_zoo.models.daso import DASOModel
from ssl_zoo.models.jigsaw import JigsawModel
from ssl_zoo.models.cluster import ClusterClassificationModel

__all__ = ["BackboneModel", "ClusterClassificationModel", "DAModel", "DASOModel",
           "FixMatchModel", "JigsawModel", "LinearProbe", "METHODS", "MTModel",
           "MethodSpec", "SLAModel", "SimCLRModel", "SupConModel", "SupervisedModel",
           "TransformationModel", "get_method", "inference_features", "method_of",
           "register_method", "unregister_method"]
