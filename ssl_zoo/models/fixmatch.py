"""FixMatch (Sohn et al., NeurIPS 2020): pseudo-labels from a weak view, kept when
confident, taught to the strong view; an EMA model for evaluation."""

import keras
from keras import ops

from ssl_zoo.layers.ema import EMATeacher
from ssl_zoo.losses.semi import PseudoLabelCrossEntropy
from ssl_zoo.models.base import BackboneModel, InferenceModeMixin
from ssl_zoo.models.registry import MethodSpec, register_method
from ssl_zoo.utils.checks import check_choice, check_number

STREAM_KEYS = ("images", "unlabeled_weak", "unlabeled_strong")
INFERENCE_MODES = ("ema", "student")


@keras.saving.register_keras_serializable(package="ssl_zoo")
class PseudoLabelConfusion(keras.metrics.Metric):
    """Confusion matrix of pseudo-labels against the (held-out) true labels.

    `result()` is the pseudo-label accuracy over the samples counted (0 when none);
    `matrix()` the (K, K) counts [true, pseudo] for per-class precision and recall.
    `sample_weight` selects samples (e.g. the confident ones).

    Example:
    >>> m = PseudoLabelConfusion(3)
    >>> m.update_state(ops.array([0, 1, 2]), ops.array([0, 2, 2]))
    >>> round(float(m.result()), 4), ops.convert_to_numpy(m.matrix())[1].tolist()
    (0.6667, [0.0, 0.0, 1.0])
    """

    def __init__(self, num_classes, name="pseudo_label_accuracy", **kwargs):
        super().__init__(name=name, **kwargs)
        self.num_classes = int(num_classes)
        self.counts = self.add_variable(shape=(self.num_classes, self.num_classes),
                                        initializer="zeros", name="counts",
                                        aggregation="sum")

    def update_state(self, y_true, y_pred, sample_weight=None):
        k = self.num_classes
        true = ops.one_hot(ops.cast(ops.reshape(y_true, (-1,)), "int32"), k)
        pred = ops.one_hot(ops.cast(ops.reshape(y_pred, (-1,)), "int32"), k)
        if sample_weight is not None:
            true = true * ops.cast(ops.reshape(sample_weight, (-1, 1)), true.dtype)
        self.counts.assign_add(ops.cast(ops.matmul(ops.transpose(true), pred),
                                        self.counts.dtype))

    def matrix(self):
        return ops.convert_to_tensor(self.counts)

    def result(self):
        counts = self.matrix()
        return ops.divide_no_nan(ops.trace(counts), ops.sum(counts))

    def reset_state(self):
        self.counts.assign(ops.zeros_like(self.counts))

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes}


def per_class_precision_recall(matrix):
    """Per-class precision and recall (lists, None where undefined) of a confusion
    matrix [true, predicted].

    Example:
    >>> per_class_precision_recall([[2, 0], [1, 1]])
    {'precision': [0.6667, 1.0], 'recall': [1.0, 0.5], 'count': [2, 2], 'predicted': [3, 1]}
    """
    import numpy as np
    m = np.asarray(matrix, np.float64)
    true, predicted = m.sum(1), m.sum(0)
    diag = np.diag(m)
    div = lambda a, b: [None if d == 0 else round(float(n / d), 4)  # noqa: E731
                        for n, d in zip(a, b)]
    return {"precision": div(diag, predicted), "recall": div(diag, true),
            "count": [int(c) for c in true], "predicted": [int(c) for c in predicted]}


@keras.saving.register_keras_serializable(package="ssl_zoo")
class FixMatchModel(InferenceModeMixin, BackboneModel):
    """FixMatch: a labeled CE plus a confidence-masked pseudo-label CE on strong views.

    One step takes a labeled batch (B images, labels) and an unlabeled batch of mu*B
    images seen twice, weak and strong (`ssl_zoo.data.make_semi_supervised_pipeline`).
    The concatenated [labeled, weak, strong] batch goes through the network in **one
    forward pass** (batch norm sees all of it, as in the authors' code); the
    pseudo-label of each unlabeled image is argmax of the weak view's prediction
    (stop-gradient), kept when its confidence is >= `threshold`; the loss is
    CE(labeled) + lambda_u * mean over all unlabeled images of mask * CE(strong view,
    pseudo-label). After each optimizer step an EMA copy of the network (weights and
    batch-norm statistics, `EMATeacher`, warm-up decay min(1 - 1/t, ema_decay) as in
    the DASO code) is updated; it is what `call`, `predict`, `evaluate` and export
    use by default.

    Args:
        backbone: backbone name ("wrn28_2" in the papers), `keras.Model` or config.
        num_classes: K.
        threshold: confidence threshold tau in (0, 1] (0.95).
        lambda_u: weight of the unlabeled loss (1).
        ema_decay: EMA decay (0.999).
        ema_warmup: use min(1 - 1/t, ema_decay) at step t (the DASO code).
        ema_statistics: "average" (the DASO code averages batch-norm statistics too)
            or "copy".
        inference: "ema" (default) or "student": which network `call` uses.
        width, mean, std, sync_batchnorm: see `BackboneModel`.

    Call args:
        images: (B, H, W, 3) raw images on the 0..255 scale.

    Returns:
        (B, K) float32 logits of the EMA (or student) network.

    Example:
    >>> model = FixMatchModel("resnet32_cifar", num_classes=3, width=0.25)
    >>> tuple(model(ops.zeros((2, 16, 16, 3))).shape)
    (2, 3)
    """

    def __init__(self, backbone="wrn28_2", num_classes=10, threshold=0.95, lambda_u=1.0,
                 ema_decay=0.999, ema_warmup=True, ema_statistics="average",
                 inference="ema", **kwargs):
        super().__init__(backbone=backbone, num_classes=num_classes, **kwargs)
        if self.num_classes is None:
            raise ValueError(f"{type(self).__name__} needs num_classes.")
        self.threshold = check_number(threshold, "threshold", 0, 1, low_open=True)
        self.lambda_u = check_number(lambda_u, "lambda_u", 0)
        self._inference = self._check_mode(inference)
        self.ema_decay = check_number(ema_decay, "ema_decay", 0, 1)
        self.ema_warmup = bool(ema_warmup)
        self.ema_statistics = ema_statistics
        # A Model (not a bare Dense) so that the EMA teacher can clone it.
        self.classifier = keras.Sequential(
            [keras.Input((self.feature_dim,)), keras.layers.Dense(self.num_classes)],
            name="classifier")
        self.ema_backbone = EMATeacher(self.backbone, ema_decay, ema_statistics,
                                       name="ema_backbone")
        self.ema_classifier = EMATeacher(self.classifier, ema_decay, ema_statistics,
                                         name="ema_classifier")
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.unlabeled_loss = PseudoLabelCrossEntropy()
        self.track_losses("labeled_loss", "unlabeled_loss")
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")
        self.mask_rate = keras.metrics.Mean(name="mask_rate")
        self.pseudo_label_confusion = PseudoLabelConfusion(
            self.num_classes, name="pseudo_label_accuracy")
        self.linear_label_confusion = PseudoLabelConfusion(
            self.num_classes, name="linear_pseudo_label_accuracy")

    # ----------------------------------------------------------------- building
    def build(self, input_shape):
        super().build(input_shape)
        # The teacher starts as a copy of the student (built eagerly, before tracing).
        self.ema_backbone.initialize(self.backbone)
        self.ema_classifier.initialize(self.classifier)

    # ----------------------------------------------------------------- forward
    def classify(self, features):
        return ops.cast(self.classifier(features), "float32")

    def ema_features(self, images):
        """Features of the EMA backbone (inference mode, no gradient)."""
        return self.ema_backbone(self.normalize(images))

    def embed(self, images):
        if self.inference == "student":
            return self.features(images, training=False)
        return self.ema_features(images)

    def _check_mode(self, mode):
        return check_choice(mode, "inference", INFERENCE_MODES)

    def call(self, images, training=False, inference=None):
        if isinstance(images, dict):   # the training stream's inputs: use its images
            images = images["images"]
        images = self.check_images(images)
        mode = self.inference if inference is None else self._check_mode(inference)
        if mode == "student":
            return self.classify(self.features(images, training))
        return ops.cast(self.ema_classifier(self.ema_features(images)), "float32")

    # ------------------------------------------------------------------ checks
    def unpack(self, data, training=True):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} does not support sample weights.")
        if not training and not isinstance(x, dict):
            images = self.check_images(x)            # evaluation: (images, labels)
            return {"images": images, "labels": self.check_labels(y, images)}
        name = type(self).__name__
        if not isinstance(x, dict) or any(k not in x for k in STREAM_KEYS):
            got = (sorted(x) if isinstance(x, dict) else "a single image tensor"
                   if hasattr(x, "shape") else type(x).__name__)
            raise ValueError(
                f"{name} trains on a labeled and an unlabeled stream: feed "
                f"({{'images', 'unlabeled_weak', 'unlabeled_strong'}}, labels) batches, "
                f"e.g. from ssl_zoo.data.make_semi_supervised_pipeline; got {got}.")
        images = self.check_images(x["images"])
        weak = self.check_images(x["unlabeled_weak"])
        strong = self.check_images(x["unlabeled_strong"])
        if tuple(weak.shape[1:]) != tuple(images.shape[1:]) \
                or tuple(strong.shape) != tuple(weak.shape):
            raise ValueError(
                f"{name}: the unlabeled weak and strong views must have the same shape, "
                f"and the labeled images' image shape; got images {tuple(images.shape)}, "
                f"unlabeled_weak {tuple(weak.shape)}, unlabeled_strong "
                f"{tuple(strong.shape)}.")
        batch = {"images": images, "labels": self.check_labels(y, images),
                 "unlabeled_weak": weak, "unlabeled_strong": strong}
        if "unlabeled_labels" in x:   # held-out truth, for pseudo-label metrics only
            batch["unlabeled_labels"] = self.check_labels(x["unlabeled_labels"], weak)
        return batch

    # ----------------------------------------------------------------- the step
    def forward(self, batch, training):
        if "unlabeled_weak" not in batch:   # evaluation on labeled test data
            return {"logits": self(batch["images"], training=False)}
        images, weak, strong = (batch["images"], batch["unlabeled_weak"],
                                batch["unlabeled_strong"])
        n_l, n_u = ops.shape(images)[0], ops.shape(weak)[0]
        features = self.features(ops.concatenate([images, weak, strong], axis=0),
                                 training)
        logits = self.classify(features)
        out = {"logits": logits[:n_l],
               "features_weak": features[n_l:n_l + n_u],
               "features_strong": features[n_l + n_u:],
               "logits_strong": logits[n_l + n_u:]}
        probabilities = ops.softmax(ops.stop_gradient(logits[n_l:n_l + n_u]), axis=-1)
        out["linear_pseudo_labels"] = ops.argmax(probabilities, axis=-1)
        out.update(self.pseudo_label(batch, out, probabilities, training))
        out["mask"] = ops.cast(out["confidence"] >= self.threshold, "float32")
        return out

    def pseudo_label(self, batch, outputs, probabilities, training):
        """Final pseudo-labels of the unlabeled batch: {"pseudo_labels", "confidence"}.

        FixMatch: the weak view's own prediction. DASO overrides this.
        """
        del batch, outputs, training
        return {"pseudo_labels": ops.argmax(probabilities, axis=-1),
                "confidence": ops.max(probabilities, axis=-1)}

    def compute_losses(self, batch, outputs):
        losses = {"labeled_loss": self.ce(batch["labels"], outputs["logits"])}
        if "logits_strong" in outputs:
            losses["unlabeled_loss"] = self.lambda_u * self.unlabeled_loss(
                (outputs["pseudo_labels"], outputs["mask"]), outputs["logits_strong"])
        else:
            losses["unlabeled_loss"] = ops.zeros((), "float32")
        return losses

    def post_step(self, batch, outputs):
        decay = None
        if self.ema_warmup:
            step = ops.cast(self.optimizer.iterations, "float32")   # t, after the step
            decay = ops.minimum(1.0 - 1.0 / ops.maximum(step, 1.0), self.ema_decay)
        self.ema_backbone.update(self.backbone, decay=decay)
        self.ema_classifier.update(self.classifier, decay=decay)

    def update_metrics(self, batch, outputs, training):
        self.accuracy.update_state(batch["labels"], outputs["logits"])
        if "mask" not in outputs:
            return
        self.mask_rate.update_state(outputs["mask"])
        if "unlabeled_labels" in batch:
            truth = batch["unlabeled_labels"]
            self.pseudo_label_confusion.update_state(truth, outputs["pseudo_labels"])
            self.linear_label_confusion.update_state(truth,
                                                     outputs["linear_pseudo_labels"])

    def metrics_to_log(self, batch, training):
        # Pseudo-label quality needs the held-out unlabeled labels; without them the
        # metrics would read 0, so they are left out of the logs.
        skip = () if "unlabeled_labels" in batch else self.pseudo_label_metrics()
        skip_ids = {id(m) for m in skip}
        if "unlabeled_weak" not in batch:   # evaluation on labeled data
            skip_ids.update(id(m) for m in self.metrics if m.name in (
                "mask_rate", *self._loss_components[1:]))
        return [m for m in self.metrics if id(m) not in skip_ids]

    def pseudo_label_metrics(self):
        return [self.pseudo_label_confusion, self.linear_label_confusion]

    def training_details(self):
        """Per-class precision/recall of the pseudo-labels of the last epoch (when
        the stream carried the unlabeled labels)."""
        details = {}
        for metric in self.pseudo_label_metrics():
            matrix = ops.convert_to_numpy(metric.matrix())
            if matrix.sum() > 0:
                name = metric.name.replace("_accuracy", "")
                details[name] = per_class_precision_recall(matrix)
        return details

    # ------------------------------------------------------------------ config
    def get_config(self):
        return {**super().get_config(), "threshold": self.threshold,
                "lambda_u": self.lambda_u, "ema_decay": self.ema_decay,
                "ema_warmup": self.ema_warmup, "ema_statistics": self.ema_statistics,
                "inference": self.inference}


# The DASO code's recipe: SGD momentum 0.9 Nesterov, constant lr 0.03, coupled L2 5e-4.
SEMI_SUPERVISED_RECIPE = {"learning_rate": 0.03, "momentum": 0.9, "nesterov": True,
                          "weight_decay": 5e-4, "weight_decay_mode": "coupled",
                          "schedule": "constant"}

register_method("fixmatch", MethodSpec(
    FixMatchModel, "FixMatch: confident weak-view pseudo-labels taught to strong views, "
                   "EMA model for evaluation (Sohn et al. 2020).",
    stream="semi_supervised", view="weak", recipe=SEMI_SUPERVISED_RECIPE,
    data_kwargs={"mu": 2, "strong": "strong_fixmatch", "include_unlabeled_labels": True},
    test_kwargs={"threshold": 0.5}))
