"""DASOPseudoLabeler: DASO's distribution-aware blending of linear and semantic
pseudo-labels (Oh, Kim & Kweon, CVPR 2022), with its momentum prototype queue."""

import keras
from keras import ops

from ssl_zoo import distribute
from ssl_zoo.layers.feature_queue import ClassFeatureQueue
from ssl_zoo.utils.checks import check_int, check_number

# A finite, float32-safe logit for classes whose queue is empty (never -inf: its
# product with a zero target would be NaN).
_EMPTY_CLASS_LOGIT = -1e9


@keras.saving.register_keras_serializable(package="ssl_zoo")
class DASOPseudoLabeler(keras.layers.Layer):
    """Semantic pseudo-labels from class prototypes, blended by the pseudo-label
    distribution (DASO).

    - **Prototypes.** A per-class FIFO queue (`ClassFeatureQueue`, `queue_size`
      slots, the same for every class: DASO's balanced queue) of the EMA encoder's
      features of labeled samples; prototype C_k = the mean of class k's queue. The
      model calls `enqueue` first in each step, then uses the prototypes (the
      authors' order). Under `tf.distribute` the queue enqueues the global batch.
    - **Semantic pseudo-label** q = softmax_k(cos(z, C_k) / proto_temperature) of the
      student's weak-view features z, from the **same** step's prototypes. A class
      whose queue is still empty is masked explicitly: its logit is -1e9, so q_k = 0
      (the authors' zero prototype would give it cos = 0 instead). If no class has a
      prototype yet, q is uniform.
    - **Distribution-aware blending.** N_k counts the final pseudo-labels argmax p~
      of all unlabeled samples (confident or not) in the last complete window of
      `count_window` steps (a tumbling window, updated every `count_window` steps,
      counts summed over replicas), v = N^(1/dist_temperature) / max, and
      p~ = (1 - v_k^) p + v_k^ q with k^ = argmax p (the linear prediction). Before
      the first window completes N = 0 and v = 0 (no blending). With
      `dist_aware=False` the weight is the constant `interp_alpha`.
    - **Warm-up.** During the first `warmup_steps` steps (counted by `step`) the
      blending and the alignment loss are off (plain FixMatch); the queue and the
      counts are filled all the same, as in the authors' code.

    State (replica-synchronised, saved with the model): the queue, `window_counts`
    (K,) and `counts` (K,) float32, `step` () int32.

    Args:
        num_classes: K.
        feature_dim: D of the encoder features (None: from the first build).
        queue_size: slots per class (>= 1; 256 in DASO).
        proto_temperature: T_proto of the prototype similarities (0.05).
        dist_temperature: T_dist (DASO: 1.5 for CIFAR-10 when labeled and unlabeled
            imbalance agree, 0.3 otherwise, and 0.3 for CIFAR-100).
        count_window: steps per pseudo-label count window (100).
        warmup_steps: plain-FixMatch steps before DASO starts (5000).
        dist_aware: blend with v (True) or with the constant `interp_alpha`.
        interp_alpha: the constant blending weight when `dist_aware=False`.

    Example:
    >>> labeler = DASOPseudoLabeler(num_classes=3, feature_dim=2, proto_temperature=1.0)
    >>> labeler.enqueue(ops.array([[1.0, 0.0], [0.0, 1.0]]), ops.array([0, 1]))
    >>> q = labeler.semantic_pseudo_labels(ops.array([[2.0, 0.1]]))
    >>> [round(float(v), 3) for v in q[0]]
    [0.721, 0.279, 0.0]
    """

    def __init__(self, num_classes, feature_dim=None, queue_size=256,
                 proto_temperature=0.05, dist_temperature=1.5, count_window=100,
                 warmup_steps=5000, dist_aware=True, interp_alpha=0.5,
                 gather_replicas=True, **kwargs):
        super().__init__(**kwargs)
        name = "DASOPseudoLabeler"
        self.num_classes = check_int(num_classes, f"{name} num_classes")
        self.queue_size = check_int(queue_size, f"{name} queue_size")
        self.proto_temperature = check_number(proto_temperature,
                                              f"{name} proto_temperature", 0, low_open=True)
        self.dist_temperature = check_number(dist_temperature, f"{name} dist_temperature",
                                             0, low_open=True)
        self.count_window = check_int(count_window, f"{name} count_window")
        self.warmup_steps = check_int(warmup_steps, f"{name} warmup_steps", minimum=0)
        self.dist_aware = bool(dist_aware)
        self.interp_alpha = check_number(interp_alpha, f"{name} interp_alpha", 0, 1)
        self.gather_replicas = bool(gather_replicas)
        self.queue = ClassFeatureQueue(self.num_classes, self.queue_size, feature_dim,
                                       gather_replicas=gather_replicas, name="queue")
        self.feature_dim = self.queue.feature_dim
        if feature_dim is not None:
            self.build((None, feature_dim))

    def build(self, input_shape):
        if self.built:
            return
        if not self.queue.built:
            self.queue.build(input_shape)
        self.feature_dim = self.queue.feature_dim
        k = self.num_classes
        self.window_counts = distribute.state_weight(self, "window_counts", (k,))
        self.counts = distribute.state_weight(self, "counts", (k,))
        self.step = distribute.state_weight(self, "step", (), "int32")
        self.built = True

    # -------------------------------------------------------------------- state
    def active(self):
        """1.0 once `warmup_steps` steps have been counted, else 0.0 (a tensor)."""
        return ops.cast(ops.convert_to_tensor(self.step) >= self.warmup_steps, "float32")

    def enqueue(self, features, labels):
        """Appends the EMA features of a labeled batch to the class queues."""
        if not self.built:
            self.build(tuple(features.shape))
        self.queue.enqueue(ops.stop_gradient(ops.cast(features, "float32")), labels)

    def update_counts(self, pseudo_labels):
        """Counts a step's final pseudo-labels (all of them); advances `step`.

        Every `count_window` steps the window's counts (summed over replicas) become
        the N used by `blend`, and a new window starts.
        """
        k = self.num_classes
        one_hot = ops.one_hot(ops.cast(pseudo_labels, "int32"), k, dtype="float32")
        batch_counts = ops.sum(one_hot, axis=0)
        if self.gather_replicas:
            batch_counts = distribute.all_sum(batch_counts)
        window = ops.convert_to_tensor(self.window_counts) + batch_counts
        step = ops.convert_to_tensor(self.step) + 1
        done = ops.equal(ops.mod(step, self.count_window), 0)
        self.counts.assign(ops.where(done, window, ops.convert_to_tensor(self.counts)))
        self.window_counts.assign(ops.where(done, ops.zeros_like(window), window))
        self.step.assign(step)

    # --------------------------------------------------------------- the labels
    def similarity_logits(self, features):
        """cos(z, C_k) / proto_temperature (B, K), float32; empty classes -1e9."""
        prototypes, valid = self.queue.prototypes()
        z = ops.normalize(ops.cast(features, "float32"), axis=-1, order=2, epsilon=1e-8)
        c = ops.normalize(prototypes, axis=-1, order=2, epsilon=1e-8)
        logits = ops.matmul(z, ops.transpose(c)) / self.proto_temperature
        return ops.where(valid[None, :], logits, _EMPTY_CLASS_LOGIT)

    def semantic_pseudo_labels(self, features):
        """q (B, K) of the weak view's student features, under stop-gradient."""
        return ops.stop_gradient(ops.softmax(self.similarity_logits(features), axis=-1))

    def blend_weights(self):
        """v (K,): the blending weight of each class from the pseudo-label counts."""
        if not self.dist_aware:
            return ops.full((self.num_classes,), self.interp_alpha, "float32")
        counts = ops.convert_to_tensor(self.counts)
        top = ops.max(counts)
        # (N / max N)^(1/T) = N^(1/T) / max N^(1/T); all-zero counts give v = 0.
        ratio = counts / ops.maximum(top, 1.0)
        return ops.where(top > 0, ops.power(ratio, 1.0 / self.dist_temperature), 0.0)

    def blend(self, probabilities, q):
        """p~ = (1 - v_k^) p + v_k^ q with k^ = argmax p, once active; else p."""
        p = ops.cast(probabilities, "float32")
        v = ops.take(self.blend_weights(), ops.argmax(p, axis=-1))[:, None]
        blended = (1.0 - v) * p + v * ops.cast(q, "float32")
        return ops.where(self.active() > 0.5, blended, p)

    def call(self, features):
        """The semantic pseudo-labels q of `features` (no state change)."""
        return self.semantic_pseudo_labels(features)

    def get_config(self):
        return {**super().get_config(), "num_classes": self.num_classes,
                "feature_dim": self.feature_dim, "queue_size": self.queue_size,
                "proto_temperature": self.proto_temperature,
                "dist_temperature": self.dist_temperature,
                "count_window": self.count_window, "warmup_steps": self.warmup_steps,
                "dist_aware": self.dist_aware, "interp_alpha": self.interp_alpha,
                "gather_replicas": self.gather_replicas}
