"""SLA layers and loss against numpy references written from DESIGN.md section 1.

References (independent of the library code):
- t_1..t_M with t_1 the identity; rotations counter-clockwise (np.rot90, k = 0..3);
  colour permutations in itertools.permutations((0, 1, 2)) order; the 24-set is
  rotation-major (j = 6 r + c).
- The expanded batch is interleaved per sample: row b*M + j is t_j(x_b), joint label
  y_b*M + j.
- Joint logit of (class k, transformation j) is column k*M + j.
- Aggregated logits: (1/M) sum_j z(t_j(x))[k*M + j]; single: z(x)[k*M].
- SLA+SD: CE(u, y) + T^2 KL(softmax(teacher/T) || softmax(u/T)), teacher stop-gradient.
"""

import itertools

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import ops

from harness import (assert_close_to_reference, run_layer_serialization_test,
                     run_object_serialization_test, to_numpy)
from ssl_zoo.layers import (COLOR_PERMUTATIONS, ROTATIONS, TRANSFORM_SETS,
                            AggregatedInference, ImageNormalization,
                            InputTransformations, JointLabelHead, SelfDistillHead,
                            apply_transform, resolve_transforms, rotate90, single_logits)
from ssl_zoo.losses import SelfDistillationLoss

PERMS = list(itertools.permutations(range(3)))


def _images(b=2, h=4, w=4, c=3, seed=0):
    # Distinct integer values: any misplaced pixel or channel changes the result.
    rng = np.random.RandomState(seed)
    return rng.permutation(b * h * w * c).reshape(b, h, w, c).astype("float32")


def np_rotation_set(x):
    return [np.rot90(x, k, axes=(1, 2)) for k in range(4)]


def np_color_set(x):
    return [x[..., list(p)] for p in PERMS]


def np_rotation_color_set(x):
    return [np.rot90(x, r, axes=(1, 2))[..., list(p)] for r in range(4) for p in PERMS]


def np_expand(views):
    """Interleaves per sample: row b*M + j = views[j][b]."""
    return np.stack(views, axis=1).reshape((-1,) + views[0].shape[1:])


def np_log_softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    return z - np.log(np.exp(z).sum(axis=-1, keepdims=True))


# ------------------------------------------------------------------ transformations
@pytest.mark.parametrize("k", [0, 1, 2, 3])
def test_rotate90_matches_np_rot90_counter_clockwise(k):
    x = _images(2, 5, 5, 3)
    np.testing.assert_array_equal(to_numpy(rotate90(x, k)), np.rot90(x, k, axes=(1, 2)))
    np.testing.assert_array_equal(to_numpy(apply_transform(x, f"rot{90 * k}")),
                                  np.rot90(x, k, axes=(1, 2)))


def test_rotate90_direction_on_a_known_image():
    # [[0, 1], [2, 3]] rotated 90 degrees counter-clockwise is [[1, 3], [0, 2]].
    x = np.array([[0.0, 1.0], [2.0, 3.0]]).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(to_numpy(rotate90(x, 1))[0, ..., 0], [[1, 3], [0, 2]])


def test_rotate90_inside_tf_function():
    x = _images(2, 4, 4, 3)
    fn = tf.function(lambda t: rotate90(t, 3),
                     input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_array_equal(fn(x).numpy(), np.rot90(x, 3, axes=(1, 2)))


def test_transform_set_orders():
    assert TRANSFORM_SETS["rotation"] == ["rot0", "rot90", "rot180", "rot270"]
    assert [ROTATIONS[n] for n in TRANSFORM_SETS["rotation"]] == [0, 1, 2, 3]
    assert [COLOR_PERMUTATIONS[n] for n in TRANSFORM_SETS["color_permutation"]] == PERMS
    assert PERMS[0] == (0, 1, 2)
    expected_24 = [(r, p) for r in range(4) for p in PERMS]
    parsed = [(ROTATIONS[n.split("+")[0]], COLOR_PERMUTATIONS[n.split("+")[1]])
              for n in TRANSFORM_SETS["rotation_color"]]
    assert parsed == expected_24


@pytest.mark.parametrize("perm_index", range(6))
def test_color_permutation_matches_numpy(perm_index):
    x = _images(2, 3, 5, 3)
    name = TRANSFORM_SETS["color_permutation"][perm_index]
    np.testing.assert_array_equal(to_numpy(apply_transform(x, name)),
                                  x[..., list(PERMS[perm_index])])


@pytest.mark.parametrize("transforms,reference", [
    ("rotation", np_rotation_set),
    ("color_permutation", np_color_set),
    ("rotation_color", np_rotation_color_set),
])
def test_input_transformations_interleave_per_sample(transforms, reference):
    x = _images(3, 4, 4, 3)
    layer = InputTransformations(transforms)
    views = reference(x)
    assert layer.num_transforms == len(views)
    out = to_numpy(layer(x))
    np.testing.assert_array_equal(out, np_expand(views))
    m = len(views)
    for b in range(3):
        for j in range(m):
            np.testing.assert_array_equal(out[b * m + j], views[j][b])
    assert layer.compute_output_shape((3, 4, 4, 3)) == (3 * m, 4, 4, 3)


def test_input_transformations_in_graph_with_unknown_shape():
    x = _images(2, 4, 4, 3)
    layer = InputTransformations("rotation")
    fn = tf.function(layer, input_signature=[tf.TensorSpec((None, None, None, 3))])
    np.testing.assert_array_equal(fn(x).numpy(), np_expand(np_rotation_set(x)))
    with pytest.raises(tf.errors.InvalidArgumentError, match="square"):
        fn(_images(2, 4, 6, 3))


def test_joint_transform_and_repeated_labels():
    y = np.array([2, 0, 1])
    for transforms, m in (("rotation", 4), ("color_permutation", 6), ("none", 1)):
        layer = InputTransformations(transforms)
        expected = np.array([y_b * m + j for y_b in y for j in range(m)])
        np.testing.assert_array_equal(to_numpy(layer.joint_labels(y)), expected)
        np.testing.assert_array_equal(to_numpy(layer.joint_labels(y[:, None])), expected)
        np.testing.assert_array_equal(to_numpy(layer.transform_labels(3)),
                                      np.array([j for _ in y for j in range(m)]))
        np.testing.assert_array_equal(to_numpy(layer.repeat_labels(y)),
                                      np.array([y_b for y_b in y for _ in range(m)]))


@pytest.mark.parametrize("transforms", ["rotation", "rotation_color",
                                        ["identity", "rot90"], ["rot0", "rot270"]])
def test_rotation_rejects_non_square_images(transforms):
    layer = InputTransformations(transforms)
    with pytest.raises(ValueError, match="square"):
        layer(_images(2, 4, 6, 3))


def test_color_permutation_and_rot180_accept_non_square_images():
    x = _images(2, 4, 6, 3)
    out = to_numpy(InputTransformations("color_permutation")(x))
    np.testing.assert_array_equal(out, np_expand(np_color_set(x)))
    out = to_numpy(InputTransformations(["rot0", "rot180"])(x))
    np.testing.assert_array_equal(out, np_expand([x, np.rot90(x, 2, axes=(1, 2))]))


def test_input_transformations_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"rank 4.*\(4, 4, 3\)"):
        InputTransformations("rotation")(np.zeros((4, 4, 3), "float32"))


@pytest.mark.parametrize("bad", ["rot45", ["rot0", "rot45"], ["identity", "bgr+rot33"]])
def test_unknown_transformation_raises(bad):
    with pytest.raises(ValueError, match="Unknown transformation"):
        InputTransformations(bad)


def test_unknown_set_names_known_sets():
    with pytest.raises(ValueError) as err:
        resolve_transforms("rotations")
    for name in TRANSFORM_SETS:
        assert name in str(err.value)


@pytest.mark.parametrize("bad,match", [
    (["rot90", "rot0"], "identity"),
    (["gbr", "rgb"], "identity"),
    ([], "identity"),
    (["rot0", "rot90", "rot90"], "distinct"),
])
def test_transform_list_must_start_with_identity_and_be_distinct(bad, match):
    with pytest.raises(ValueError, match=match):
        resolve_transforms(bad)


def test_transform_list_accepts_identity_first():
    assert resolve_transforms(["identity", "rot180"]) == ["identity", "rot180"]
    assert resolve_transforms(["rgb", "bgr"]) == ["rgb", "bgr"]


# --------------------------------------------------------------------------- heads
def np_aggregate(joint, n, m):
    """(1/M) sum_j z(t_j(x_b))[k*M + j], looping like the equation reads."""
    b_total = joint.shape[0] // m
    out = np.zeros((b_total, n))
    for b in range(b_total):
        for k in range(n):
            out[b, k] = sum(joint[b * m + j, k * m + j] for j in range(m)) / m
    return out


@pytest.mark.parametrize("n,m", [(3, 4), (5, 6), (2, 24), (4, 1)])
def test_aggregated_inference_matches_numpy_loop(n, m):
    joint = np.random.RandomState(n * m).normal(size=(3 * m, n * m)).astype("float32")
    out = AggregatedInference(n, m)(joint)
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    assert_close_to_reference(out, np_aggregate(joint, n, m), atol=1e-6, rtol=1e-6)
    assert AggregatedInference(n, m).compute_output_shape((3 * m, n * m)) == (3, n)


def test_aggregated_with_one_transform_is_single_inference():
    joint = np.random.RandomState(0).normal(size=(5, 3)).astype("float32")
    agg = to_numpy(AggregatedInference(3, 1)(joint))
    np.testing.assert_array_equal(agg, joint)
    np.testing.assert_array_equal(agg, to_numpy(single_logits(joint, 3, 1)))


@pytest.mark.parametrize("n,m", [(3, 4), (5, 6), (4, 1)])
def test_single_logits_reads_identity_rows_and_columns(n, m):
    joint = np.random.RandomState(1).normal(size=(2 * m, n * m)).astype("float32")
    expected = np.array([[joint[b * m, k * m] for k in range(n)] for b in range(2)])
    np.testing.assert_array_equal(to_numpy(single_logits(joint, n, m)), expected)
    flat = joint[:2]
    expected_flat = np.array([[flat[b, k * m] for k in range(n)] for b in range(2)])
    np.testing.assert_array_equal(
        to_numpy(single_logits(flat, n, m, interleaved=False)), expected_flat)


def test_joint_label_head_layout_and_shape():
    head = JointLabelHead(3, 4)
    feats = np.random.RandomState(0).normal(size=(2, 5)).astype("float32")
    out = to_numpy(head(feats))
    kernel, bias = to_numpy(head.weights)
    assert out.shape == (2, 12)
    assert_close_to_reference(out, feats @ kernel + bias, atol=1e-5)
    assert head.compute_output_shape((None, 5)) == (None, 12)


def test_joint_label_head_rejects_bad_sizes():
    with pytest.raises(ValueError):
        JointLabelHead(0, 4)
    with pytest.raises(ValueError):
        JointLabelHead(3, 0)


@pytest.mark.parametrize("make", [lambda: JointLabelHead(3, 4), lambda: SelfDistillHead(3)])
def test_heads_output_float32_under_mixed_precision(make):
    keras.mixed_precision.set_global_policy("mixed_float16")
    head = make()
    feats = np.random.RandomState(0).normal(size=(2, 8)).astype("float16")
    out = head(feats)
    assert head.dense.compute_dtype == "float16"
    assert head.dense.variable_dtype == "float32"
    assert keras.backend.standardize_dtype(out.dtype) == "float32"
    agg = AggregatedInference(3, 2)(ops.cast(ops.zeros((4, 6)), "float16"))
    assert keras.backend.standardize_dtype(agg.dtype) == "float32"


# --------------------------------------------------------------------------- loss
def np_self_distill(labels, teacher, student, t, weight=1.0):
    log_p_s = np_log_softmax(student.astype(np.float64))
    ce = -log_p_s[np.arange(len(labels)), labels]
    log_pt_t = np_log_softmax(teacher.astype(np.float64) / t)
    log_ps_t = np_log_softmax(student.astype(np.float64) / t)
    kl = np.sum(np.exp(log_pt_t) * (log_pt_t - log_ps_t), axis=-1)
    return ce + weight * t * t * kl


def _loss_data(seed=0, b=5, n=4):
    rng = np.random.RandomState(seed)
    labels = rng.randint(0, n, size=b)
    teacher = (3 * rng.normal(size=(b, n))).astype("float32")
    student = (3 * rng.normal(size=(b, n))).astype("float32")
    return labels, teacher, student


@pytest.mark.parametrize("t", [2.0, 0.5, 1.0])
def test_self_distillation_loss_matches_numpy(t):
    labels, teacher, student = _loss_data()
    expected = np_self_distill(labels, teacher, student, t)
    per_example = SelfDistillationLoss(temperature=t, reduction=None)((labels, teacher),
                                                                      student)
    assert_close_to_reference(per_example, expected, atol=1e-5, rtol=1e-5)
    mean = SelfDistillationLoss(temperature=t)((labels, teacher), student)
    assert_close_to_reference(mean, expected.mean(), atol=1e-5, rtol=1e-5)


def test_self_distillation_loss_weight_and_zero_kl():
    labels, teacher, student = _loss_data(1)
    loss = SelfDistillationLoss(temperature=2.0, distill_weight=0.25, reduction=None)
    assert_close_to_reference(loss((labels, teacher), student),
                              np_self_distill(labels, teacher, student, 2.0, 0.25),
                              atol=1e-5, rtol=1e-5)
    # With teacher == student the KL term vanishes: the loss is the plain CE.
    ce = -np_log_softmax(student.astype(np.float64))[np.arange(5), labels]
    assert_close_to_reference(
        SelfDistillationLoss(2.0, reduction=None)((labels, student), student), ce,
        atol=1e-5, rtol=1e-5)


def test_self_distillation_loss_rejects_bad_temperature():
    for t in (0.0, -1.0):
        with pytest.raises(ValueError, match="temperature"):
            SelfDistillationLoss(temperature=t)


def test_self_distillation_teacher_gets_no_gradient():
    labels, teacher, student = _loss_data(2)
    teacher, student = tf.Variable(teacher), tf.Variable(student)
    loss_fn = SelfDistillationLoss(temperature=2.0)
    with tf.GradientTape() as tape:
        loss = loss_fn((labels, teacher), student)
    g_teacher, g_student = tape.gradient(loss, [teacher, student])
    assert g_teacher is None or not np.any(g_teacher.numpy())
    assert g_student is not None and np.any(g_student.numpy())
    # The student's gradient is that of CE + T^2 KL with the teacher held constant:
    # (softmax(u) - onehot(y)) / B + T * (softmax(u/T) - softmax(t/T)) / B.
    u, t_np, temp, b = student.numpy(), teacher.numpy(), 2.0, len(labels)
    onehot = np.eye(4)[labels]
    expected = (np.exp(np_log_softmax(u)) - onehot
                + temp * (np.exp(np_log_softmax(u / temp))
                          - np.exp(np_log_softmax(t_np / temp)))) / b
    assert_close_to_reference(g_student, expected, atol=1e-5, rtol=1e-4)


# ---------------------------------------------------------------- normalisation
def test_image_normalization_matches_numpy():
    mean, std = (10.0, 20.0, 30.0), (2.0, 4.0, 5.0)
    x = np.random.RandomState(0).randint(0, 256, size=(2, 3, 3, 3)).astype("uint8")
    out = ImageNormalization(mean, std)(x)
    assert_close_to_reference(out, (x - np.array(mean)) / np.array(std), atol=1e-5)


def test_image_normalization_rejects_bad_arguments():
    with pytest.raises(ValueError, match="channels"):
        ImageNormalization()(np.zeros((1, 2, 2, 1), "float32"))
    with pytest.raises(ValueError, match="same length"):
        ImageNormalization((1.0, 2.0), (1.0,))
    with pytest.raises(ValueError, match="positive"):
        ImageNormalization((1.0,), (0.0,))


# ---------------------------------------------------------------- serialisation
@pytest.mark.parametrize("make,data", [
    (lambda: ImageNormalization(mean=(1.0, 2.0, 3.0), std=(4.0, 5.0, 6.0)),
     lambda: _images(2, 3, 3, 3)),
    (lambda: InputTransformations("rotation"), lambda: _images(2, 4, 4, 3)),
    (lambda: InputTransformations("rotation_color"), lambda: _images(1, 2, 2, 3)),
    (lambda: InputTransformations(["rot0", "rot180+gbr", "brg"]),
     lambda: _images(2, 3, 5, 3)),
    (lambda: JointLabelHead(3, 4), lambda: _images(2, 1, 1, 5)[:, 0, 0] / 10),
    (lambda: AggregatedInference(3, 4),
     lambda: np.random.RandomState(0).normal(size=(8, 12)).astype("float32")),
    (lambda: SelfDistillHead(3), lambda: _images(2, 1, 1, 5)[:, 0, 0] / 10),
], ids=["ImageNormalization", "InputTransformations-rotation",
        "InputTransformations-rotation_color", "InputTransformations-list",
        "JointLabelHead", "AggregatedInference", "SelfDistillHead"])
def test_layer_serialization(make, data):
    layer = make()
    revived = run_layer_serialization_test(layer, data())
    for attr in ("num_classes", "num_transforms", "names", "mean", "std"):
        if hasattr(layer, attr):
            assert getattr(revived, attr) == getattr(layer, attr), attr


def test_self_distillation_loss_serialization():
    loss = SelfDistillationLoss(temperature=0.5, distill_weight=2.0, reduction=None)
    revived = run_object_serialization_test(loss)
    labels, teacher, student = _loss_data(3)
    assert_close_to_reference(revived((labels, teacher), student),
                              loss((labels, teacher), student), atol=0, rtol=0)
