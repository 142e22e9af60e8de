"""Supervised contrastive loss (Khosla et al., NeurIPS 2020) and its unsupervised case,
SimCLR's NT-Xent, with negatives gathered from every replica."""

import numbers

import keras
import tensorflow as tf
from keras import ops

from ssl_zoo import distribute
from ssl_zoo.utils.labels import label_vector

CONTRAST_MODES = ("all", "one")

# Added to the logit of an anchor against itself before the log-sum-exp. A large
# *finite* value, applied with `where` in float32: never -inf (whose product with a
# zero mask is NaN) and never a float16 constant (-1e9 overflows float16).
_SELF_LOGIT = -1e9
_NORM_EPSILON = 1e-12


def l2_normalize(x, axis=-1):
    """x / max(||x||_2, 1e-6) along `axis` (zero vectors stay zero).

    Example:
    >>> float(ops.sum(l2_normalize(ops.array([[3.0, 4.0]])) ** 2))
    1.0
    """
    x = ops.convert_to_tensor(x)
    sq = ops.sum(ops.square(x), axis=axis, keepdims=True)
    return x * ops.rsqrt(ops.maximum(sq, ops.cast(_NORM_EPSILON, x.dtype)))


def _dense_label_ids(labels):
    """Ids 0..K-1 of the distinct values of `labels` (N,), with static shapes.

    A sort-based `tf.unique` that XLA compiles (`tf.unique` has a data-dependent
    output shape): ids follow the sorted order of the label values.
    """
    order = ops.argsort(labels)
    ordered = ops.take(labels, order)
    starts = ops.concatenate([ops.ones((1,), "int32"),
                              ops.cast(ordered[1:] != ordered[:-1], "int32")])
    ids_in_order = ops.cumsum(starts) - 1
    return ops.take(ids_in_order, ops.argsort(order))


@keras.saving.register_keras_serializable(package="ssl_zoo")
class SupConLoss(keras.losses.Loss):
    """Supervised contrastive loss L_out; SimCLR's NT-Xent when there are no labels.

    For the V views of B samples (V*B feature vectors z, the "multi-view batch"),
    anchor i, positives P(i) (the other vectors with i's label) and A(i) (all vectors
    but i):

        L_out = sum_i (-1/|P(i)|) sum_{p in P(i)}
                    log( exp(z_i.z_p / tau) / sum_{a in A(i)} exp(z_i.z_a / tau) )

    multiplied by tau / base_tau as in the authors' code (Khosla et al. 2020, eq. 2)
    and averaged over anchors. Without labels (`y_true=None` or `supervised=False`)
    each sample's label is its own index, so P(i) are i's other views: NT-Xent.

    Anchors with no positive (a label present once in the batch, with a single
    view) have an undefined term. They are **left out of the mean**
    (the mean is over anchors that have a positive; a batch with none gives 0); the
    official code gives them NaN before Dec 2023 and counts them as 0 in the mean
    since. The two conventions agree whenever every anchor has a positive, which is
    always the case with >= 2 views.

    Under a `tf.distribute` strategy (replica context) the features and labels of
    all replicas are all-gathered (the gradient flows back to the owning replica):
    each replica's anchors are contrasted with the global multi-view batch, and
    the anchor count used for the mean is global, so the loss and its gradients for
    a global batch do not depend on the number of replicas (given equal
    per-replica batches).

    Everything is computed in float32 whatever the input dtype (safe under
    `mixed_float16`); the self-contrast is masked with `where` and a finite value,
    and the log-sum-exp subtracts the row maximum.

    Features are L2-normalised inside the loss when `normalize=True` (the default;
    idempotent on the unit-norm output of `ProjectionHead`), so un-normalised input
    gives the loss of its directions. With `normalize=False` the caller guarantees
    unit norm and nothing is checked.

    Args:
        temperature: tau > 0 (0.1 in the paper's recipe).
        base_temperature: tau_base > 0; the loss is multiplied by tau / tau_base.
            Set it equal to `temperature` for the plain equation.
        contrast_mode: "all" (every view is an anchor, the paper's L_out) or "one"
            (only view 0 of each sample is an anchor; all views are contrasted).
        supervised: use the labels; False gives SimCLR / NT-Xent and ignores them.
        normalize: L2-normalise the features first (see above).
        gather_replicas: all-gather over replicas under a distribution strategy.
        name, reduction, dtype: see `keras.losses.Loss`.

    Call args:
        y_true: labels (B,) or (B, 1), integer class ids (exact up to 2^24, as
            Keras casts them to float32), or None for NT-Xent.
        y_pred: features (B, V, D), V views per sample, in any float dtype.

    Returns:
        Per-sample losses (B,) with `reduction=None` (the mean over the sample's
        anchor views, already rescaled so that their plain mean over the global
        batch is L_out's mean over valid anchors); by default their mean.

    Raises:
        ValueError: temperature or base_temperature <= 0, an unknown contrast mode,
            features of rank != 3, fewer than 2 views without labels, labels of
            the wrong rank or length (at trace time where shapes are static;
            `tf.debugging` assertions otherwise).

    Example:
    >>> loss = SupConLoss(temperature=0.1)
    >>> z = l2_normalize(keras.random.normal((4, 2, 8), seed=1))
    >>> float(loss(ops.array([0, 0, 1, 1]), z)) > 0
    True
    """

    def __init__(self, temperature=0.1, base_temperature=0.07, contrast_mode="all",
                 supervised=True, normalize=True, gather_replicas=True, name="supcon",
                 reduction="sum_over_batch_size", dtype=None):
        super().__init__(name=name, reduction=reduction, dtype=dtype)
        for arg, value in (("temperature", temperature),
                           ("base_temperature", base_temperature)):
            if isinstance(value, bool) or not isinstance(value, numbers.Real) \
                    or not value > 0:
                raise ValueError(f"SupConLoss {arg} must be a number > 0, got {value!r}.")
        if contrast_mode not in CONTRAST_MODES:
            raise ValueError(f"SupConLoss contrast_mode must be one of {CONTRAST_MODES}, "
                             f"got {contrast_mode!r}.")
        self.temperature = float(temperature)
        self.base_temperature = float(base_temperature)
        self.contrast_mode = contrast_mode
        self.supervised = bool(supervised)
        self.normalize = bool(normalize)
        self.gather_replicas = bool(gather_replicas)

    # ------------------------------------------------------------------ checks
    def _check_features(self, features):
        shape = tuple(features.shape)
        if len(shape) != 3:
            raise ValueError(
                f"SupConLoss expects features of shape (batch, views, dim) (rank 3), "
                f"got shape {shape}; stack the views on axis 1, e.g. "
                f"ops.stack([z1, z2], axis=1).")
        return shape

    # -------------------------------------------------------------------- loss
    def __call__(self, y_true, y_pred, sample_weight=None):
        # keras.losses.Loss converts y_true to a tensor; an empty structure passes
        # through that conversion unchanged and stands for "no labels". (No zero-arg
        # super(): its __class__ cell stops AutoGraph inside a user's tf.function.)
        return keras.losses.Loss.__call__(
            self, () if y_true is None else y_true, y_pred, sample_weight)

    def call(self, y_true, y_pred):
        if isinstance(y_true, (tuple, list)) and len(y_true) == 0:
            y_true = None
        features = ops.cast(y_pred, "float32")
        batch, views, _ = self._check_features(features)
        supervised = self.supervised and y_true is not None
        if not supervised and views is not None and views < 2:
            raise ValueError(
                f"SupConLoss without labels (SimCLR / NT-Xent) needs >= 2 views per "
                f"sample, got features of shape {tuple(features.shape)}.")
        if self.normalize:
            features = l2_normalize(features)
        if supervised:
            labels = label_vector(y_true, batch, "SupConLoss")
            checks = [tf.debugging.assert_equal(
                tf.shape(labels)[0], tf.shape(features)[0],
                message="SupConLoss labels length does not match the features' batch "
                        "size")]
            with tf.control_dependencies(checks):
                features = tf.identity(features)
        else:
            labels = None
        return self._supcon(features, labels)

    def _supcon(self, features, labels):
        n_local = ops.shape(features)[0]
        num_views = ops.shape(features)[1]
        dim = ops.shape(features)[2]
        gather = self.gather_replicas and distribute.replica_context() is not None
        if gather:
            offset = distribute.replica_offset(n_local)
            all_features = distribute.all_gather(features)
        else:
            offset = 0
            all_features = features
        n_global = ops.shape(all_features)[0]
        if labels is None:
            # NT-Xent: a sample's label is its global index.
            all_labels = ops.arange(n_global, dtype="int32")
        else:
            all_labels = distribute.all_gather(labels) if gather else labels

        # Contrast set: the global multi-view batch, sample-major (row s*V + v).
        contrast = ops.reshape(all_features, (-1, dim))
        contrast_labels = ops.reshape(
            ops.repeat(all_labels[:, None], num_views, axis=1), (-1,))
        rows = ops.arange(n_local, dtype="int32")
        if self.contrast_mode == "all":
            anchors = ops.reshape(features, (-1, dim))
            position = ops.reshape(
                ((offset + rows) * num_views)[:, None]
                + ops.arange(num_views, dtype="int32")[None, :], (-1,))
        else:
            anchors = features[:, 0]
            position = (offset + rows) * num_views
        position = ops.cast(position, "int32")

        # Denominator: log sum_{a != i} exp(z_i.z_a / tau), row max subtracted.
        logits = ops.matmul(anchors, ops.transpose(contrast)) / self.temperature
        is_self = position[:, None] == ops.arange(ops.shape(contrast)[0],
                                                  dtype="int32")[None, :]
        masked = ops.where(is_self, ops.cast(_SELF_LOGIT, "float32"), logits)
        row_max = ops.stop_gradient(ops.max(masked, axis=1, keepdims=True))
        log_denominator = ops.log(ops.sum(ops.exp(masked - row_max), axis=1)) \
            + row_max[:, 0]

        # Numerator: (1/|P(i)|) sum_p z_i.z_p / tau, from per-label sums of the
        # contrast features (O(B*D) memory instead of a second (B*V)^2 mask).
        class_of = _dense_label_ids(contrast_labels)
        num_contrast = ops.shape(contrast_labels)[0]
        class_sum = ops.segment_sum(contrast, class_of, num_segments=num_contrast)
        class_count = ops.segment_sum(ops.ones_like(contrast_labels, dtype="float32"),
                                      class_of, num_segments=num_contrast)
        anchor_class = ops.take(class_of, position)
        positives_sum = ops.take(class_sum, anchor_class, axis=0) - anchors
        num_positives = ops.take(class_count, anchor_class) - 1.0
        valid = num_positives > 0.5
        mean_positive_logit = ops.sum(anchors * positives_sum, axis=1) \
            / (self.temperature * ops.maximum(num_positives, 1.0))
        anchor_loss = -(self.temperature / self.base_temperature) \
            * (mean_positive_logit - log_denominator)
        anchor_loss = ops.where(valid, anchor_loss, 0.0)

        # Mean over the *global* anchors that have a positive: rescale so that the
        # per-replica mean (and Keras' 1/replicas scaling) gives exactly that.
        global_positives = ops.reshape(ops.take(class_count, class_of) - 1.0,
                                       (-1, num_views))
        if self.contrast_mode == "one":
            global_positives = global_positives[:, :1]
        num_anchors = ops.cast(ops.size(global_positives), "float32")
        num_valid = ops.sum(ops.cast(global_positives > 0.5, "float32"))
        anchor_loss = anchor_loss * (num_anchors / ops.maximum(num_valid, 1.0))
        if self.contrast_mode == "all":
            return ops.mean(ops.reshape(anchor_loss, (-1, num_views)), axis=1)
        return anchor_loss

    def get_config(self):
        return {**super().get_config(), "temperature": self.temperature,
                "base_temperature": self.base_temperature,
                "contrast_mode": self.contrast_mode, "supervised": self.supervised,
                "normalize": self.normalize, "gather_replicas": self.gather_replicas}
