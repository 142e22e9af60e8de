"""Losses (keras `Loss` subclasses returning per-example values)."""

from ssl_zoo.losses.self_distill import SelfDistillationLoss
from ssl_zoo.losses.semi import PseudoLabelCrossEntropy, SemanticAlignmentLoss
from ssl_zoo.losses.supcon import SupConLoss

__all__ = ["PseudoLabelCrossEntropy", "SelfDistillationLoss", "SemanticAlignmentLoss",
           "SupConLoss"]
