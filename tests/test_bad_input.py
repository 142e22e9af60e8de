"""Bad input across the public API: each is a named error whose message says what is
wrong and what to do, never a crash deep inside TensorFlow or a silent wrong result.

One table: (id, zero-argument call, exception class, regex its message must match).
Every case runs in its own empty working directory, so the files a case writes
(truncated archives, broken model files) are relative paths there.
"""

import os
import zipfile

import keras
import numpy as np
import pytest
import tensorflow as tf

from ssl_zoo import DASOModel, FixMatchModel, SLAModel, SupervisedModel
from ssl_zoo.data import (
    CorruptArchiveError,
    EmptyDatasetError,
    ImageShapeError,
    LabelError,
    MissingPathError,
    SplitNotFoundError,
    UnknownDatasetError,
    hamming_permutations,
    jigsaw_puzzles,
    load_arrays,
    make_pipeline,
    make_semi_supervised_pipeline,
    make_unlabeled_pipeline,
)
from ssl_zoo.evaluation import KMeans, cluster_pseudo_labels, get_evaluator
from ssl_zoo.export import export_model
from ssl_zoo.layers.heads import AggregatedInference
from ssl_zoo.models import ClusterClassificationModel, get_method
from ssl_zoo.presets import PresetError, load_preset, save_preset
from ssl_zoo.training import (
    PeriodicEvaluation,
    TrainConfig,
    get_strategy,
    parse_jit_compile,
    train_and_evaluate,
)
from ssl_zoo.utils.io import load_model_file

TINY = dict(backbone="vgg_tile", width=0.0625)
IMAGES = np.zeros((4, 8, 8, 3), np.float32)


# ------------------------------------------------------------------- helpers
def _arrays(n=10):
    return load_arrays((np.zeros((n, 8, 8, 3), np.uint8), np.arange(n) % 2))


def _file(path, data):
    with open(path, "wb") as f:
        f.write(data)
    return path


def _write_zip(path, members, keep=1.0):
    """A zip archive of `members` {name: bytes}, cut to `keep` of its size."""
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    with open(path, "rb") as f:
        data = f.read()
    return _file(path, data[:int(len(data) * keep)])


def _png():
    return tf.io.encode_png(tf.zeros([4, 4, 3], tf.uint8)).numpy()


def _image_zip(path, keep=1.0):
    return _write_zip(path, {"a/0.png": _png(), "b/0.png": _png()}, keep)


def _truncated_keras(path="model.keras"):
    """What an interrupted download of a .keras file looks like."""
    return _write_zip(path, {"metadata.json": b"{}", "config.json": b"{}",
                             "model.weights.h5": bytes(4000)}, keep=0.5)


def _graph_fn(fn, signature=None, jit=False):
    return tf.function(fn, input_signature=signature, jit_compile=jit)


def _fit(model, x, y=None, jit=False, **kwargs):
    model.compile(optimizer="sgd", jit_compile=jit)
    return model.fit(x, y, verbose=0, **kwargs)


def _fit_stream(model, features, labels, jit=False):
    ds = tf.data.Dataset.from_tensors((features, labels)).repeat()
    return _fit(model, ds, jit=jit, steps_per_epoch=1)


def _cli(command, *argv):
    """`ssl-zoo <command> <argv>` in this process (the command's own exception)."""
    from harness import cli_flags

    from ssl_zoo import cli
    with cli_flags(*argv):
        return getattr(cli, f"cmd_{command}")()


def _train(**overrides):
    cfg = dict(method="supervised", dataset="digits", epochs=1, steps_per_epoch=1,
               batch_size=8, max_train_examples=40, max_test_examples=20, verbose=0,
               cache_dir=False, **TINY)
    return train_and_evaluate(TrainConfig(**{**cfg, **overrides}), log=lambda *a: None)


def _preset_with_truncated_weights(name="tiny"):
    model = SupervisedModel(num_classes=2, **TINY)
    model(np.zeros((1, 8, 8, 3), np.float32))
    path = save_preset(model, name, {"num_classes": 2, "input_shape": [8, 8, 3]},
                       root="presets")
    weights = path / "model.weights.h5"
    weights.write_bytes(weights.read_bytes()[:1000])
    return name


def _puzzles(images, **options):
    seed = tf.constant([0, 1], tf.int64)
    return jigsaw_puzzles(images, seed, hamming_permutations(4).permutations, **options)


def _nan_teacher():
    return keras.Sequential([keras.layers.GlobalAveragePooling2D(),
                             keras.layers.Lambda(lambda z: z * np.nan)])


def _semi_batch(**keys):
    return {"images": IMAGES, **keys}


_UNKNOWN_B = [tf.TensorSpec([None, 6], tf.float32)]

# ---------------------------------------------------------------------- cases
CASES = [
    # 1. AggregatedInference on a batch that is not a multiple of M.
    ("aggregate_batch_not_multiple_of_m_eager",
     lambda: AggregatedInference(3, 2)(np.zeros((5, 6), np.float32)),
     ValueError, r"got B=5 rows, not a multiple of M=2"),
    ("aggregate_batch_not_multiple_of_m_graph",
     lambda: _graph_fn(AggregatedInference(3, 2))(tf.zeros((5, 6))),
     ValueError, r"got B=5 rows, not a multiple of M=2"),
    ("aggregate_batch_not_multiple_of_m_jit",
     lambda: _graph_fn(AggregatedInference(3, 2), jit=True)(tf.zeros((5, 6))),
     ValueError, r"got B=5 rows, not a multiple of M=2"),
    ("aggregate_batch_unknown_until_run",
     lambda: _graph_fn(AggregatedInference(3, 2), _UNKNOWN_B)(tf.zeros((5, 6))),
     tf.errors.InvalidArgumentError, r"not a multiple of M=2.*\[B =\] \[5\]"),
    ("aggregate_symbolic_batch_not_multiple_of_m",
     lambda: AggregatedInference(3, 2).compute_output_shape((5, 6)),
     ValueError, r"got B=5 rows, not a multiple of M=2"),
    # 2. ... on logits whose last axis is not N*M.
    ("aggregate_width_not_n_times_m",
     lambda: AggregatedInference(3, 2)(np.zeros((4, 5), np.float32)),
     ValueError, r"N\*M = 3\*2 = 6 columns .*got 5"),
    ("aggregate_width_not_n_times_m_graph",
     lambda: _graph_fn(AggregatedInference(3, 2))(tf.zeros((4, 8))),
     ValueError, r"N\*M = 3\*2 = 6 columns .*got 8"),
    # 3. drop_remainder with a batch larger than the data set.
    ("pipeline_batch_larger_than_data",
     lambda: make_pipeline(_arrays(10), 16, drop_remainder=True),
     EmptyDatasetError, r"batch_size=16 is larger than the data set \(10 examples\).*"
                        r"batch_size <= 10 or drop_remainder=False"),
    ("pipeline_tf_data_batch_larger_than_data",
     lambda: make_pipeline(tf.data.Dataset.from_tensor_slices(
         (np.zeros((3, 8, 8, 3), np.uint8), np.zeros(3, np.int64))), 4,
         drop_remainder=True),
     EmptyDatasetError, r"batch_size=4 is larger than the data set \(3 examples\)"),
    ("unlabeled_pipeline_batch_larger_than_data",
     lambda: make_unlabeled_pipeline(_arrays(10), 16, drop_remainder=True),
     EmptyDatasetError, r"batch_size=16 is larger than the data set \(10 examples\)"),
    ("semi_supervised_empty_labeled_set",
     lambda: make_semi_supervised_pipeline(_arrays().subset([]), _arrays(), 4),
     EmptyDatasetError, r"labeled set is empty"),
    # 4. Non-numeric images: a dtype problem, not a shape problem.
    ("model_call_string_images",
     lambda: SupervisedModel(num_classes=2, **TINY)(np.array(["a.png", "b.png"])),
     TypeError, r"expects numeric images .*got dtype str"),
    ("model_fit_string_images",
     lambda: _fit(SupervisedModel(num_classes=2, **TINY), np.array(["a.png", "b.png"]),
                  np.array([0, 1])),
     TypeError, r"expects numeric images .*got dtype str"),
    ("model_fit_string_images_stream_jit",
     lambda: _fit_stream(SupervisedModel(num_classes=2, **TINY),
                         tf.constant(["a.png", "b.png"]), tf.constant([0, 1]), jit=True),
     TypeError, r"expects numeric images .*got dtype string"),
    ("load_arrays_string_images",
     lambda: load_arrays((np.array(["a.png", "b.png"]), np.array([0, 1]))),
     ImageShapeError, r"images must be numbers .*got dtype <U5.*Decode image files"),
    ("model_fit_string_labels",
     lambda: _fit(SupervisedModel(num_classes=2, **TINY), IMAGES[:2],
                  np.array(["cat", "dog"])),
     TypeError, r"integer class labels .*got dtype str.*map class names to indices"),
    ("model_fit_string_labels_stream",
     lambda: _fit_stream(SupervisedModel(num_classes=2, **TINY), IMAGES[:2],
                         tf.constant(["cat", "dog"])),
     TypeError, r"labels must be integer class ids, got strings"),
    # 5. A truncated or non-zip archive.
    ("truncated_zip_data_set",
     lambda: load_arrays(_image_zip("images.zip", keep=0.6), cache_dir=False),
     CorruptArchiveError, r"images\.zip is truncated or not a zip archive"),
    ("non_zip_named_zip",
     lambda: load_arrays(_file("notes.zip", b"hello"), cache_dir=False),
     CorruptArchiveError, r"notes\.zip is truncated or not a zip archive"),
    ("truncated_npz_data_set",
     lambda: load_arrays(_write_zip("arrays.npz", {"x.npy": bytes(400)}, keep=0.5),
                         cache_dir=False),
     CorruptArchiveError, r"arrays\.npz is truncated or not an \.npz \(zip\) archive"),
    # 6. A truncated or non-Keras model file.
    ("load_model_file_truncated",
     lambda: load_model_file(_truncated_keras()),
     ValueError, r"model\.keras is truncated or not a Keras archive \(\.keras\)"),
    ("load_model_file_zip_without_config",
     lambda: load_model_file(_image_zip("images.keras")),
     ValueError, r"images\.keras is truncated or not a Keras archive.*no config\.json"),
    ("load_model_file_missing",
     lambda: load_model_file("nowhere.keras"),
     FileNotFoundError, r"nowhere\.keras does not exist"),
    ("cli_evaluate_truncated_model",
     lambda: _cli("evaluate", f"--model_path={_truncated_keras()}"),
     ValueError, r"model\.keras is truncated or not a Keras archive \(\.keras\)"),
    ("cli_export_truncated_model",
     lambda: _cli("export", f"--model_path={_truncated_keras()}", "--export_dir=out"),
     ValueError, r"model\.keras is truncated or not a Keras archive \(\.keras\)"),
    ("cluster_teacher_truncated",
     lambda: ClusterClassificationModel(num_clusters=2, teacher=_truncated_keras(),
                                        **TINY).prepare_training_data(_arrays()),
     ValueError, r"model\.keras is truncated or not a Keras archive \(\.keras\)"),
    # Unknown names.
    ("unknown_method", lambda: get_method("nope"),
     ValueError, r"Unknown method 'nope'\. Known methods: .*supervised"),
    ("unknown_backbone", lambda: SupervisedModel("nope", num_classes=2),
     ValueError, r"Unknown backbone 'nope'\. Known backbones: .*vgg_tile"),
    ("unknown_view", lambda: make_pipeline(_arrays(), 2, view="nope"),
     ValueError, r"Unknown view 'nope'; registered views: .*weak"),
    ("unknown_evaluator", lambda: get_evaluator("nope"),
     ValueError, r"Unknown evaluator 'nope'; known evaluators: .*linear_probe"),
    ("unknown_dataset", lambda: load_arrays("nope"),
     UnknownDatasetError, r"Unknown data set 'nope'\. Known names: digits"),
    ("unknown_split", lambda: load_arrays("digits", split="nope"),
     SplitNotFoundError, r"splits 'train' .*got split='nope'"),
    ("unknown_sla_inference_mode",
     lambda: SLAModel(num_classes=2, inference="nope", **TINY),
     ValueError, r"Unknown inference mode 'nope'; choose one of .*aggregated"),
    ("unknown_preset", lambda: SLAModel.from_preset("nope"),
     PresetError, r"Unknown preset 'nope'\. Known presets"),
    ("preset_truncated_weights",
     lambda: load_preset(_preset_with_truncated_weights(), root="presets",
                         cache_dir="cache"),
     PresetError, r"Preset 'tiny': could not fetch verified weights .*sha256"),
    # Models and their steps (graph mode, and under XLA).
    ("num_classes_zero", lambda: SupervisedModel(num_classes=0, **TINY),
     ValueError, r"num_classes must be a positive integer, got 0"),
    ("labels_out_of_range_array",   # named before any step runs
     lambda: _fit(SupervisedModel(num_classes=3, **TINY), IMAGES, np.array([0, 1, 2, 3])),
     ValueError, r"SupervisedModel: labels must be in \[0, 3\) \(num_classes=3\); "
                 r"found 3 at index 3\.$"),
    ("labels_out_of_range_array_many",
     lambda: SupervisedModel(num_classes=3, **TINY).evaluate(
         IMAGES, np.array([-1, 7, 8, 9]), verbose=0),
     ValueError, r"found -1 at index 0, 7 at index 1, 8 at index 2 and 1 more\.$"),
    ("labels_out_of_range_graph",
     lambda: _fit_stream(SupervisedModel(num_classes=3, **TINY), IMAGES,
                         np.array([0, 1, 2, 3])),
     tf.errors.InvalidArgumentError, r"labels must be in \[0, 3\)"),
    ("labels_out_of_range_jit",
     lambda: _fit_stream(SupervisedModel(num_classes=3, **TINY), IMAGES,
                         np.array([0, 1, 2, 3]), jit=True),
     tf.errors.InvalidArgumentError, r"labels must be in \[0, 3\)"),
    ("images_wrong_rank",
     lambda: SupervisedModel(num_classes=2, **TINY)(np.zeros((8, 8, 3), np.float32)),
     ValueError, r"expects images of rank 4 \(batch, height, width, 3\), got shape "
                 r"\(8, 8, 3\)"),
    ("images_wrong_rank_fit_jit",
     lambda: _fit(SupervisedModel(num_classes=2, **TINY), np.zeros((4, 8, 8), "float32"),
                  np.array([0, 1, 0, 1]), jit=True),
     ValueError, r"expects images of rank 4"),
    ("images_wrong_channels",
     lambda: SupervisedModel(num_classes=2, **TINY)(np.zeros((2, 8, 8, 1), np.float32)),
     ValueError, r"expects images with 3 channels \(last axis\), got shape"),
    ("fixmatch_batch_without_unlabeled_part",
     lambda: _fit_stream(FixMatchModel(num_classes=2, **TINY), _semi_batch(),
                         np.array([0, 1, 0, 1])),
     ValueError, r"FixMatchModel trains on a labeled and an unlabeled stream.*"
                 r"make_semi_supervised_pipeline; got \['images'\]"),
    ("daso_batch_without_unlabeled_strong_jit",
     lambda: _fit_stream(DASOModel(num_classes=2, **TINY),
                         _semi_batch(unlabeled_weak=IMAGES), np.array([0, 1, 0, 1]),
                         jit=True),
     ValueError, r"DASOModel trains on a labeled and an unlabeled stream.*got "
                 r"\['images', 'unlabeled_weak'\]"),
    ("fixmatch_fit_on_plain_arrays",
     lambda: _fit(FixMatchModel(num_classes=2, **TINY), IMAGES, np.array([0, 1, 0, 1])),
     ValueError, r"labeled and an unlabeled stream.*got a single image tensor"),
    ("export_unbuilt_model",
     lambda: export_model(SupervisedModel(num_classes=2, **TINY), "out"),
     ValueError, r"Build the model \(fit it or call it on a batch\) before export"),
    # Data.
    ("missing_data_directory", lambda: load_arrays("no_such_dir/"),
     MissingPathError, r"no_such_dir does not exist"),
    ("labels_length_mismatch",
     lambda: load_arrays((np.zeros((4, 8, 8, 3), np.uint8), [0, 1])),
     LabelError, r"labels must have shape \(4,\) to match the images, got \(2,\)"),
    ("image_values_out_of_range",
     lambda: load_arrays((np.full((2, 8, 8, 3), 300.0), [0, 1])),
     ImageShapeError, r"image values must lie in 0\.\.255"),
    ("semi_supervised_mu_zero",
     lambda: make_semi_supervised_pipeline(_arrays(), _arrays(), 4, mu=0),
     ValueError, r"mu \(unlabeled images per labeled image\) must be an int >= 1, got 0"),
    # Jigsaw.
    ("hamming_more_permutations_than_9_factorial",
     lambda: hamming_permutations(400_000),
     ValueError, r"3x3 grid has 9! = 362880 permutations.*cannot choose 400000\. "
                 r"Ask for at most"),
    ("jigsaw_images_smaller_than_grid",
     lambda: _puzzles(np.zeros((2, 2, 2, 3), np.uint8)),
     ImageShapeError, r"images of 2x2 px are smaller than the 3x3 grid"),
    ("jigsaw_max_occluded_more_than_tiles",
     lambda: _puzzles(np.zeros((2, 9, 9, 3), np.uint8), max_occluded=10),
     ValueError, r"max_occluded=10 is more than the 9 tiles of a 3x3 puzzle; pass "
                 r"max_occluded <= 9"),
    # Clustering.
    ("kmeans_more_clusters_than_points", lambda: KMeans(5).fit(np.zeros((3, 2))),
     ValueError, r"k=5 is larger than the number of points n=3; ask for fewer clusters"),
    ("kmeans_features_with_nan",
     lambda: KMeans(2).fit(np.array([[0.0, np.nan], [1, 1], [2, 2]])),
     ValueError, r"features contain NaN/Inf at row 0"),
    ("cluster_pseudo_labels_nan_teacher",
     lambda: cluster_pseudo_labels(_nan_teacher(), (np.ones((6, 4, 4, 3)), np.zeros(6)),
                                   2, pca_dim=None),
     ValueError, r"teacher features contain NaN/Inf in 6 of 6 rows.*check the teacher"),
    # Run configuration (what the CLI's flags become).
    ("config_unknown_method", lambda: _train(method="nope"),
     ValueError, r"Unknown method 'nope'"),
    ("config_zero_epochs", lambda: _train(epochs=0),
     ValueError, r"epochs must be >= 1, got 0"),
    ("config_eval_every_zero", lambda: _train(eval_every=0),
     ValueError, r"eval_every must be >= 1 \(or None for no periodic evaluation\)"),
    ("config_unknown_precision", lambda: _train(mixed_precision="int8"),
     ValueError, r"mixed_precision must be False, True or one of"),
    ("config_unknown_strategy", lambda: get_strategy("tpu"),
     ValueError, r"Unknown strategy 'tpu'; choose one of"),
    ("config_bad_jit_compile", lambda: parse_jit_compile("maybe"),
     ValueError, r"jit_compile must be auto, true or false; got 'maybe'"),
    ("config_unknown_dataset", lambda: _train(dataset="nope"),
     UnknownDatasetError, r"Unknown data set 'nope'"),
    ("config_unknown_weight_decay_mode", lambda: _train(weight_decay_mode="nope"),
     ValueError, r"weight_decay_mode must be one of \('coupled', 'decoupled'\)"),
    ("config_data_options_for_a_labeled_stream", lambda: _train(data_kwargs={"mu": 2}),
     ValueError, r"Unknown data options \['mu'\] for the 'none' view of a labeled "
                 r"stream; it takes \[\]"),
    ("config_unknown_method_kwarg", lambda: _train(method_kwargs={"bogus": 1}),
     ValueError, r"Unrecognized keyword arguments passed to SupervisedModel: "
                 r"\{'bogus': 1\}"),
    ("config_direct_periodic_evaluation_of_an_encoder",
     lambda: _train(method="supcon", eval_every=1, eval_protocol="direct"),
     ValueError, r"eval_protocol='direct' scores the model's own predictions; supcon has "
                 r"none \(it is evaluated by 'linear_probe'\): use eval_protocol='knn'"),
    ("config_unknown_eval_protocol",
     lambda: _train(eval_every=1, eval_protocol="nope"),
     ValueError, r"Unknown evaluator 'nope'; known evaluators: direct, kmeans, knn, "
                 r"linear_probe"),
    ("periodic_evaluation_every_zero",
     lambda: PeriodicEvaluation((IMAGES, np.zeros(4)), 2, every=0),
     ValueError, r"eval_every and eval_keep must be >= 1, got 0"),
]


@pytest.mark.parametrize("case_id, call, error, pattern", CASES,
                         ids=[case[0] for case in CASES])
def test_bad_input_raises_a_named_error(case_id, call, error, pattern, tmp_path,
                                        monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(error, match=pattern) as info:
        call()
    assert type(info.value) is error, (
        f"{case_id}: raised {type(info.value).__name__}, not {error.__name__}")


def test_a_failed_call_leaves_no_partial_output(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="not a Keras archive"):
        _cli("export", f"--model_path={_truncated_keras()}",
             f"--export_dir={tmp_path / 'export'}")
    with pytest.raises(ValueError, match="Build the model"):
        export_model(SupervisedModel(num_classes=2, **TINY), tmp_path / "unbuilt")
    with pytest.raises(CorruptArchiveError):
        load_arrays(_image_zip("images.zip", keep=0.6), cache_dir=tmp_path / "cache")
    with pytest.raises(EmptyDatasetError):
        make_pipeline(_arrays(10), 16, drop_remainder=True)
    with pytest.raises(PresetError, match="sha256"):
        load_preset(_preset_with_truncated_weights(), root="presets", cache_dir="cache")
    # Only the broken inputs: no export directory, no temporary one, no data cache,
    # no unverified weights in the preset cache.
    assert sorted(os.listdir(tmp_path)) == ["cache", "images.zip", "model.keras",
                                            "presets"]
    assert not [files for _, _, files in os.walk(tmp_path / "cache") if files]
