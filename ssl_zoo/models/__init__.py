"""Models: subclassed `keras.Model`s trained with plain `fit`."""

from ssl_zoo.models.base import BackboneModel
from ssl_zoo.models.registry import METHODS, MethodSpec, get_method, register_method
from ssl_zoo.models.sla import DAModel, MTModel, SLAModel, TransformationModel
from ssl_zoo.models.supervised import SupervisedModel

__all__ = ["BackboneModel", "DAModel", "METHODS", "MTModel", "MethodSpec", "SLAModel",
           "SupervisedModel", "TransformationModel", "get_method", "register_method"]
