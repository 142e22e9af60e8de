"""Layers: input normalisation, transformations, classifier heads, and the state
mechanisms methods declare they use (EMA teacher, per-class feature queue)."""

from ssl_zoo.layers.ema import EMATeacher
from ssl_zoo.layers.feature_queue import ClassFeatureQueue, fifo_write_rows
from ssl_zoo.layers.daso import DASOPseudoLabeler
from ssl_zoo.layers.heads import (AggregatedInference, JointLabelHead, SelfDistillHead,
                                  single_logits)
from ssl_zoo.layers.projection import ProjectionHead
from ssl_zoo.layers.normalization import CIFAR10_MEAN, CIFAR10_STD, ImageNormalization
from ssl_zoo.layers.transforms import (COLOR_PERMUTATIONS, ROTATIONS, TRANSFORM_SETS,
                                       InputTransformations, apply_transform,
                                       permute_channels, resolve_transforms, rotate90)

__all__ = ["AggregatedInference", "DASOPseudoLabeler", "CIFAR10_MEAN", "CIFAR10_STD", "COLOR_PERMUTATIONS",
           "ClassFeatureQueue", "EMATeacher", "ImageNormalization", "InputTransformations",
           "JointLabelHead", "ProjectionHead", "ROTATIONS", "SelfDistillHead",
           "TRANSFORM_SETS", "apply_transform", "permute_channels", "resolve_transforms",
           "fifo_write_rows", "rotate90", "single_logits"]
