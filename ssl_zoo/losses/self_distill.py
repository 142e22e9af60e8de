"""Self-distillation loss of SLA+SD (Lee et al. 2020, eq. 6)."""

import keras
from keras import ops


@keras.saving.register_keras_serializable(package="ssl_zoo")
class SelfDistillationLoss(keras.losses.Loss):
    """CE(u, y) + T^2 * KL(softmax(teacher / T) || softmax(u / T)), per example.

    The teacher (the aggregated joint prediction) is wrapped in stop-gradient, so
    only the student head u (and the features under it) learns from the KL term.

    Args:
        temperature: T > 0 (the authors use 1).
        distill_weight: weight of the KL term (1 in the paper).

    Call args:
        y_true: a pair (labels (B,), teacher_logits (B, N)).
        y_pred: student logits u (B, N).

    Returns:
        With reduction None, per-example losses (B,); by default their mean.

    Example:
    >>> loss = SelfDistillationLoss(temperature=2.0)
    >>> y, t, u = ops.array([0, 1]), ops.zeros((2, 3)), ops.zeros((2, 3))
    >>> round(float(loss((y, t), u)), 4)  # KL is 0, CE is log 3
    1.0986
    """

    def __init__(self, temperature=1.0, distill_weight=1.0, name="self_distillation",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        if not temperature > 0:
            raise ValueError(f"temperature must be > 0, got {temperature}.")
        self.temperature = float(temperature)
        self.distill_weight = float(distill_weight)

    def call(self, y_true, y_pred):
        labels, teacher = y_true
        labels = ops.cast(ops.reshape(labels, (-1,)), "int32")
        student = ops.cast(y_pred, "float32")
        teacher = ops.stop_gradient(ops.cast(teacher, "float32"))
        ce = keras.losses.sparse_categorical_crossentropy(labels, student, from_logits=True)
        t = self.temperature
        log_p_t = ops.log_softmax(teacher / t, axis=-1)
        log_p_s = ops.log_softmax(student / t, axis=-1)
        kl = ops.sum(ops.exp(log_p_t) * (log_p_t - log_p_s), axis=-1)
        return ce + self.distill_weight * (t * t) * kl

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "distill_weight": self.distill_weight}
