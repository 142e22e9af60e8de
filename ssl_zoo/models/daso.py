"""DASO (Oh, Kim & Kweon, CVPR 2022): FixMatch whose pseudo-labels are blended with
semantic pseudo-labels from a momentum prototype queue, by the pseudo-label
distribution, plus a semantic alignment loss."""

import keras
from keras import ops

from ssl_zoo.layers.daso import DASOPseudoLabeler
from ssl_zoo.losses.semi import SemanticAlignmentLoss
from ssl_zoo.models.fixmatch import (SEMI_SUPERVISED_RECIPE, FixMatchModel,
                                     PseudoLabelConfusion)
from ssl_zoo.models.registry import MethodSpec, register_method
from ssl_zoo.utils.checks import check_number


@keras.saving.register_keras_serializable(package="ssl_zoo")
class DASOModel(FixMatchModel):
    """FixMatch + `DASOPseudoLabeler` + the semantic alignment loss.

    Each training step, in the authors' order:
    1. the EMA encoder embeds the labeled images and they are enqueued (each class'
       FIFO queue of `queue_size`; under `tf.distribute` every replica enqueues the
       global batch);
    2. one forward pass of the student over [labeled, weak, strong];
    3. once past `warmup_steps`: q = softmax(cos(z_weak, C) / proto_temperature) from
       this step's prototypes; p~ = (1 - v_k^) p + v_k^ q with v from the counts of
       final pseudo-labels over the last `count_window` steps; the FixMatch threshold
       applies to max p~; the alignment loss CE(q_weak, softmax(cos(z_strong, C) / T))
       is added with weight `alignment_weight`;
    4. after the optimizer step: the final pseudo-labels of all unlabeled images are
       counted, the EMA network is updated.

    Args:
        backbone, num_classes, threshold, lambda_u, ema_decay, ema_warmup,
            ema_statistics, inference: as `FixMatchModel`.
        queue_size, proto_temperature, dist_temperature, count_window, warmup_steps,
            dist_aware, interp_alpha: as `DASOPseudoLabeler` (DASO: 256, 0.05, 1.5 for
            CIFAR-10 with matching labeled/unlabeled imbalance else 0.3, 100, 5000).
        alignment_weight: weight of the semantic alignment loss (1).
        labeler: a ready `DASOPseudoLabeler` to use instead of one built from the
            arguments above (its num_classes and feature_dim must match the model's;
            its settings are what `get_config` records).
        **kwargs: `BackboneModel` arguments.

    Example:
    >>> model = DASOModel("resnet32_cifar", num_classes=3, width=0.25, warmup_steps=10)
    >>> tuple(model(ops.zeros((2, 16, 16, 3))).shape)
    (2, 3)
    """

    def __init__(self, backbone="wrn28_2", num_classes=10, queue_size=256,
                 proto_temperature=0.05, dist_temperature=1.5, count_window=100,
                 warmup_steps=5000, dist_aware=True, interp_alpha=0.5,
                 alignment_weight=1.0, labeler=None, **kwargs):
        super().__init__(backbone=backbone, num_classes=num_classes, **kwargs)
        self.alignment_weight = check_number(alignment_weight, "alignment_weight", 0)
        if labeler is None:
            labeler = DASOPseudoLabeler(
                self.num_classes, feature_dim=self.feature_dim, queue_size=queue_size,
                proto_temperature=proto_temperature, dist_temperature=dist_temperature,
                count_window=count_window, warmup_steps=warmup_steps,
                dist_aware=dist_aware, interp_alpha=interp_alpha, name="labeler")
        elif not isinstance(labeler, DASOPseudoLabeler):
            raise ValueError(f"DASOModel labeler must be a DASOPseudoLabeler, got "
                             f"{type(labeler).__name__}.")
        elif labeler.num_classes != self.num_classes or (
                labeler.feature_dim not in (None, self.feature_dim)):
            raise ValueError(
                f"DASOModel: the labeler has num_classes={labeler.num_classes} and "
                f"feature_dim={labeler.feature_dim}, the model num_classes="
                f"{self.num_classes} and backbone features of dimension "
                f"{self.feature_dim}; they must match.")
        self.labeler = labeler
        self.alignment_loss = SemanticAlignmentLoss()
        self.track_losses("alignment_loss")
        self.semantic_label_confusion = PseudoLabelConfusion(
            self.num_classes, name="semantic_pseudo_label_accuracy")

    def pseudo_label(self, batch, outputs, probabilities, training):
        # 1. enqueue the EMA features of the labeled batch, then use the prototypes
        # (the authors' order); evaluation never changes the queue.
        if training:
            self.labeler.enqueue(self.ema_features(batch["images"]), batch["labels"])
        q = self.labeler.semantic_pseudo_labels(outputs["features_weak"])
        blended = self.labeler.blend(probabilities, q)
        return {"semantic": q, "semantic_pseudo_labels": ops.argmax(q, axis=-1),
                "similarity_strong": self.labeler.similarity_logits(
                    outputs["features_strong"]),
                "pseudo_labels": ops.argmax(blended, axis=-1),
                "confidence": ops.max(blended, axis=-1)}

    def compute_losses(self, batch, outputs):
        losses = super().compute_losses(batch, outputs)
        if "semantic" in outputs:
            # Off during the warm-up (plain FixMatch), on afterwards.
            active = self.labeler.active()
            losses["alignment_loss"] = (self.alignment_weight * active) * \
                self.alignment_loss(outputs["semantic"], outputs["similarity_strong"])
        else:
            losses["alignment_loss"] = ops.zeros((), "float32")
        return losses

    def post_step(self, batch, outputs):
        self.labeler.update_counts(outputs["pseudo_labels"])
        super().post_step(batch, outputs)

    def update_metrics(self, batch, outputs, training):
        super().update_metrics(batch, outputs, training)
        if "semantic_pseudo_labels" in outputs and "unlabeled_labels" in batch:
            self.semantic_label_confusion.update_state(batch["unlabeled_labels"],
                                                       outputs["semantic_pseudo_labels"])

    def pseudo_label_metrics(self):
        return super().pseudo_label_metrics() + [self.semantic_label_confusion]

    def get_config(self):
        labeler = self.labeler
        return {**super().get_config(), "queue_size": labeler.queue_size,
                "proto_temperature": labeler.proto_temperature,
                "dist_temperature": labeler.dist_temperature,
                "count_window": labeler.count_window,
                "warmup_steps": labeler.warmup_steps, "dist_aware": labeler.dist_aware,
                "interp_alpha": labeler.interp_alpha,
                "alignment_weight": self.alignment_weight}


register_method("daso", MethodSpec(
    DASOModel, "DASO: FixMatch with distribution-aware blending of semantic "
               "pseudo-labels from a momentum prototype queue (Oh et al. 2022).",
    stream="semi_supervised", view="weak", recipe=SEMI_SUPERVISED_RECIPE,
    data_kwargs={"mu": 2, "strong": "strong_daso", "include_unlabeled_labels": True},
    test_kwargs={"threshold": 0.5, "warmup_steps": 0, "count_window": 1,
                 "queue_size": 4}))
