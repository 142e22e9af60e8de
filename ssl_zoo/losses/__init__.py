"""Losses (keras `Loss` subclasses returning per-example values)."""

from ssl_zoo.losses.self_distill import SelfDistillationLoss

__all__ = ["SelfDistillationLoss"]
