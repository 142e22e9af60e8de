"""FixMatch and DASO: numpy references for q, v, p~, the threshold mask and both
losses; the pseudo-label count window and the warm-up switch; the EMA update of
weights and batch-norm statistics; one DASO step against a reference built from the
model's own queue; bad input. Serialisation, mixed precision, XLA, 1-vs-2-replica
parity (queues, counts, EMA), fit and export are in the method battery."""

import keras
import numpy as np
import pytest

from harness import assert_close_to_reference, one_batch_dataset, to_numpy
from ssl_zoo.layers import DASOPseudoLabeler
from ssl_zoo.losses import PseudoLabelCrossEntropy, SemanticAlignmentLoss
from ssl_zoo.models import DASOModel, FixMatchModel

K = 3
TINY = dict(backbone="vgg_tile", width=0.0625)


def np_softmax(z):
    z = np.asarray(z, np.float64)
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def np_cos_logits(z, prototypes, valid, temperature):
    zn = z / np.maximum(np.linalg.norm(z, axis=1, keepdims=True), 1e-8)
    cn = prototypes / np.maximum(np.linalg.norm(prototypes, axis=1, keepdims=True), 1e-8)
    logits = zn @ cn.T / temperature
    return np.where(valid[None], logits, -1e9)


def np_blend_weights(counts, temperature):
    counts = np.asarray(counts, np.float64)
    if counts.max() == 0:
        return np.zeros_like(counts)
    v = counts ** (1.0 / temperature)
    return v / v.max()


def semi_batch(seed=0, b=4, mu=2, size=8, with_truth=True):
    rng = np.random.RandomState(seed)
    x = {"images": rng.uniform(0, 255, (b, size, size, 3)).astype("float32"),
         "unlabeled_weak": rng.uniform(0, 255, (mu * b, size, size, 3)).astype("float32"),
         "unlabeled_strong": rng.uniform(0, 255, (mu * b, size, size, 3)).astype("float32")}
    if with_truth:
        x["unlabeled_labels"] = rng.randint(0, K, mu * b)
    return x, np.arange(b) % K


# ------------------------------------------------------------------ the labeler
def test_semantic_pseudo_labels_match_numpy_and_mask_empty_classes():
    rng = np.random.RandomState(0)
    labeler = DASOPseudoLabeler(num_classes=4, feature_dim=5, queue_size=3,
                                proto_temperature=0.1, warmup_steps=0)
    feats = rng.normal(size=(7, 5)).astype("float32")
    labels = np.array([0, 0, 1, 1, 1, 1, 0])          # class 2 and 3 never enqueued
    labeler.enqueue(feats, labels)
    prototypes = np.stack([feats[[0, 1, 6]].mean(0), feats[[3, 4, 5]].mean(0),
                           np.zeros(5), np.zeros(5)])   # queue of 3 keeps the last 3
    valid = np.array([True, True, False, False])
    z = rng.normal(size=(6, 5)).astype("float32")
    expected = np_softmax(np_cos_logits(z, prototypes, valid, 0.1))
    q = to_numpy(labeler.semantic_pseudo_labels(z))
    assert_close_to_reference(q, expected, atol=1e-5, name="q")
    assert np.all(q[:, 2:] == 0.0) and np.all(np.isfinite(q))


def test_q_is_uniform_before_any_prototype():
    labeler = DASOPseudoLabeler(num_classes=3, feature_dim=2, warmup_steps=0)
    q = to_numpy(labeler.semantic_pseudo_labels(np.ones((2, 2), "float32")))
    assert_close_to_reference(q, np.full((2, 3), 1 / 3), atol=1e-6, name="q")


@pytest.mark.parametrize("temperature", [1.5, 0.3])
def test_blend_weights_and_blend_match_numpy(temperature):
    labeler = DASOPseudoLabeler(num_classes=4, feature_dim=2, count_window=2,
                                dist_temperature=temperature, warmup_steps=0)
    labels = [np.array([0, 0, 0, 1]), np.array([0, 1, 2, 0])]   # window of 2 steps
    for pl in labels:
        labeler.update_counts(pl)
    counts = np.bincount(np.concatenate(labels), minlength=4)
    assert to_numpy(labeler.counts).tolist() == counts.tolist()
    v = np_blend_weights(counts, temperature)
    assert_close_to_reference(labeler.blend_weights(), v, atol=1e-6, name="v")
    rng = np.random.RandomState(1)
    p = np_softmax(rng.normal(size=(5, 4)))
    q = np_softmax(rng.normal(size=(5, 4)))
    vk = v[p.argmax(1)][:, None]
    expected = (1 - vk) * p + vk * q
    out = to_numpy(labeler.blend(p.astype("float32"), q.astype("float32")))
    assert_close_to_reference(out, expected, atol=1e-6, name="p~")


def test_counts_use_a_tumbling_window_summed_over_steps():
    labeler = DASOPseudoLabeler(num_classes=3, feature_dim=2, count_window=3)
    assert to_numpy(labeler.blend_weights()).tolist() == [0, 0, 0]   # no window yet
    steps = [[0, 0], [1, 0], [2, 2], [1, 1], [1, 1]]
    for i, pl in enumerate(steps):
        labeler.update_counts(np.array(pl))
        if i < 2:
            assert to_numpy(labeler.counts).tolist() == [0, 0, 0]
    # window 1 = steps 0..2 completed at step 3; steps 3..4 are still accumulating
    assert to_numpy(labeler.counts).tolist() == [3, 1, 2]
    assert to_numpy(labeler.window_counts).tolist() == [0, 4, 0]
    assert int(labeler.step) == 5


def test_warmup_switch():
    labeler = DASOPseudoLabeler(num_classes=2, feature_dim=2, count_window=1,
                                warmup_steps=2)
    p = np.array([[0.9, 0.1]], "float32")
    q = np.array([[0.0, 1.0]], "float32")
    labeler.update_counts(np.array([0]))
    assert float(labeler.active()) == 0.0
    assert_close_to_reference(labeler.blend(p, q), p, name="blend during warm-up")
    labeler.update_counts(np.array([0]))
    assert float(labeler.active()) == 1.0
    # counts [2, 0]: v = [1, 0]; argmax p = 0 -> p~ = q
    assert_close_to_reference(labeler.blend(p, q), q, atol=1e-6, name="blend after")


def test_fixed_interpolation_without_distribution_awareness():
    labeler = DASOPseudoLabeler(num_classes=2, feature_dim=2, warmup_steps=0,
                                dist_aware=False, interp_alpha=0.25)
    out = labeler.blend(np.array([[1.0, 0.0]], "float32"), np.array([[0.0, 1.0]], "float32"))
    assert_close_to_reference(out, [[0.75, 0.25]], atol=1e-6, name="p~")


@pytest.mark.parametrize("kwargs, match", [
    (dict(num_classes=0), "num_classes"), (dict(queue_size=0), "queue_size must be >= 1"),
    (dict(proto_temperature=0), "proto_temperature"), (dict(count_window=0), "count_window"),
    (dict(warmup_steps=-1), "warmup_steps"), (dict(interp_alpha=1.5), "interp_alpha"),
])
def test_labeler_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DASOPseudoLabeler(**{"num_classes": 3, **kwargs})


# ----------------------------------------------------------------------- losses
def test_losses_match_numpy():
    rng = np.random.RandomState(2)
    logits = rng.normal(size=(6, K)).astype("float32")
    targets = rng.randint(0, K, 6)
    mask = np.array([1, 0, 1, 1, 0, 0], "float32")
    ce = -np.log(np_softmax(logits))[np.arange(6), targets]
    out = PseudoLabelCrossEntropy()((targets, mask), logits)
    assert float(out) == pytest.approx(float((mask * ce).mean()), rel=1e-5)
    q = np_softmax(rng.normal(size=(6, K)))
    sim = rng.normal(size=(6, K)).astype("float32")
    expected = -(q * np.log(np_softmax(sim))).sum(1).mean()
    out = SemanticAlignmentLoss()(q.astype("float32"), sim)
    assert float(out) == pytest.approx(expected, rel=1e-5)


# ----------------------------------------------------------------------- models
def test_fixmatch_threshold_mask_and_losses_match_numpy():
    keras.utils.set_random_seed(0)
    model = FixMatchModel(num_classes=K, threshold=0.4, lambda_u=2.0, **TINY)
    x, y = semi_batch()
    batch = model.unpack((x, y), training=True)
    out = model.forward(batch, training=False)
    losses = model.compute_losses(batch, out)
    features = to_numpy(model.features(np.concatenate(
        [x["images"], x["unlabeled_weak"], x["unlabeled_strong"]]), training=False))
    logits = to_numpy(model.classify(features))
    n = len(y)
    p = np_softmax(logits[n:3 * n])
    mask = (p.max(1) >= 0.4).astype(float)
    ce_u = -np.log(np_softmax(logits[3 * n:]))[np.arange(2 * n), p.argmax(1)]
    ce_l = -np.log(np_softmax(logits[:n]))[np.arange(n), y]
    assert to_numpy(out["mask"]).tolist() == mask.tolist()
    assert float(losses["labeled_loss"]) == pytest.approx(ce_l.mean(), rel=1e-4)
    assert float(losses["unlabeled_loss"]) == pytest.approx(2.0 * (mask * ce_u).mean(),
                                                            rel=1e-4)


@pytest.mark.parametrize("statistics", ["average", "copy"])
def test_ema_update_of_weights_and_batchnorm_statistics(statistics):
    keras.utils.set_random_seed(1)
    model = FixMatchModel(num_classes=K, ema_decay=0.9, ema_warmup=False,
                          ema_statistics=statistics, **TINY)
    x, y = semi_batch()
    model(x["images"])
    before_teacher = [w.copy() for w in to_numpy(model.ema_backbone.teacher.weights)]
    assert all(np.array_equal(a, b) for a, b in
               zip(before_teacher, to_numpy(model.backbone.weights)))
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(one_batch_dataset(x, y), epochs=1, verbose=0)
    moved_stats = 0
    for s, t, t0 in zip(model.backbone.weights, model.ema_backbone.teacher.weights,
                        before_teacher):
        s_now, t_now = to_numpy(s), to_numpy(t)
        if s.trainable or statistics == "average":
            expected = 0.9 * t0 + 0.1 * s_now
        else:
            expected = s_now
        assert_close_to_reference(t_now, expected, atol=1e-6, name=f"EMA of {s.path}")
        moved_stats += (not s.trainable) and not np.allclose(t0, s_now)
    assert moved_stats > 0, "no batch-norm statistic changed: the test is vacuous"
    assert not model.ema_backbone.trainable_weights


def test_ema_warmup_decay_follows_the_daso_code():
    model = FixMatchModel(num_classes=K, ema_decay=0.999, **TINY)
    x, y = semi_batch()
    model.compile(optimizer=keras.optimizers.SGD(0.1))
    model.fit(one_batch_dataset(x, y), epochs=1, verbose=0)
    # step 1: decay min(1 - 1/1, 0.999) = 0, so the teacher equals the student
    for s, t in zip(model.backbone.trainable_weights,
                    model.ema_backbone.teacher.trainable_weights):
        assert_close_to_reference(t, s, atol=1e-7, name="teacher after step 1")


def test_daso_step_against_a_reference_from_its_own_queue():
    keras.utils.set_random_seed(2)
    model = DASOModel(num_classes=K, threshold=0.3, warmup_steps=0, count_window=1,
                      queue_size=8, proto_temperature=0.1, dist_temperature=0.5, **TINY)
    x, y = semi_batch(seed=3)
    model(x["images"])
    model.labeler.counts.assign([5.0, 1.0, 2.0])       # a known distribution
    batch = model.unpack((x, y), training=True)
    ema_feats = to_numpy(model.ema_features(x["images"]))
    out = model.forward(batch, training=True)
    # the labeled batch's EMA features were enqueued first
    for k in range(K):
        assert_close_to_reference(model.labeler.queue.contents(k), ema_feats[y == k],
                                  atol=1e-5, name=f"queue of class {k}")
    means, valid = (to_numpy(t) for t in model.labeler.queue.prototypes())
    fw, fs = to_numpy(out["features_weak"]), to_numpy(out["features_strong"])
    q = np_softmax(np_cos_logits(fw, means, valid, 0.1))
    assert_close_to_reference(out["semantic"], q, atol=1e-4, name="q")
    n = len(y)
    logits = to_numpy(model.classify(model.features(np.concatenate(
        [x["images"], x["unlabeled_weak"], x["unlabeled_strong"]]), training=True)))
    p = np_softmax(logits[n:3 * n])
    v = np_blend_weights([5.0, 1.0, 2.0], 0.5)[p.argmax(1)][:, None]
    blended = (1 - v) * p + v * q
    assert to_numpy(out["pseudo_labels"]).tolist() == blended.argmax(1).tolist()
    assert_close_to_reference(out["confidence"], blended.max(1), atol=1e-4, name="conf")
    assert to_numpy(out["mask"]).tolist() == (blended.max(1) >= 0.3).tolist()
    losses = model.compute_losses(batch, out)
    sim = np_cos_logits(fs, means, valid, 0.1)
    expected = -(q * np.log(np_softmax(sim))).sum(1).mean()
    assert float(losses["alignment_loss"]) == pytest.approx(expected, rel=1e-3)


def test_daso_warmup_is_plain_fixmatch():
    keras.utils.set_random_seed(3)
    model = DASOModel(num_classes=K, threshold=0.3, warmup_steps=100, **TINY)
    x, y = semi_batch()
    model(x["images"])
    model.labeler.counts.assign([5.0, 1.0, 2.0])
    batch = model.unpack((x, y), training=True)
    out = model.forward(batch, training=True)
    assert to_numpy(out["pseudo_labels"]).tolist() == \
        to_numpy(out["linear_pseudo_labels"]).tolist()
    assert float(model.compute_losses(batch, out)["alignment_loss"]) == 0.0


def test_training_logs_pseudo_label_quality_and_details():
    keras.utils.set_random_seed(4)
    model = DASOModel(num_classes=K, threshold=0.3, warmup_steps=1, count_window=1,
                      **TINY)
    x, y = semi_batch()
    model.compile(optimizer=keras.optimizers.SGD(0.05))
    logs = model.fit(one_batch_dataset(x, y).repeat(3), epochs=1, verbose=0).history
    for key in ("mask_rate", "pseudo_label_accuracy", "linear_pseudo_label_accuracy",
                "semantic_pseudo_label_accuracy", "alignment_loss"):
        assert key in logs and np.isfinite(logs[key][0]), key
    details = model.training_details()
    assert sum(details["pseudo_label"]["count"]) == 3 * len(x["unlabeled_weak"])
    # without the held-out labels, the pseudo-label metrics are not logged at all
    x.pop("unlabeled_labels")
    logs = model.fit(one_batch_dataset(x, y), epochs=1, verbose=0).history
    assert "pseudo_label_accuracy" not in logs and "mask_rate" in logs


@pytest.mark.parametrize("x_fn, match", [
    (lambda x: x["images"], "labeled and an unlabeled stream"),
    (lambda x: {k: v for k, v in x.items() if k != "unlabeled_strong"}, "unlabeled stream"),
    (lambda x: {**x, "unlabeled_strong": x["unlabeled_strong"][:, :4]}, "same shape"),
])
def test_bad_streams_are_named(x_fn, match):
    model = DASOModel(num_classes=K, **TINY)
    x, y = semi_batch()
    with pytest.raises(ValueError, match=match):
        model.unpack((x_fn(x), y), training=True)


@pytest.mark.parametrize("kwargs, match", [
    (dict(threshold=0.0), "threshold"), (dict(threshold=1.5), "threshold"),
    (dict(queue_size=0), "queue_size"), (dict(lambda_u=-1), "lambda_u"),
    (dict(inference="teacher"), "inference"),
])
def test_bad_model_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        DASOModel(num_classes=K, **{**TINY, **kwargs})


def test_a_labeler_for_another_number_of_classes_is_refused():
    with pytest.raises(ValueError, match="num_classes=4.*num_classes=3"):
        DASOModel(num_classes=K, labeler=DASOPseudoLabeler(num_classes=4), **TINY)
    labeler = DASOPseudoLabeler(num_classes=K, queue_size=7)
    model = DASOModel(num_classes=K, labeler=labeler, **TINY)
    assert model.labeler is labeler and model.get_config()["queue_size"] == 7
