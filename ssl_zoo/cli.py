"""`ssl-zoo` command line: train | evaluate | export | list | pack | unpack (absl flags
live only here).

Examples:
    ssl-zoo train                                   # SLA on the embedded digits
    ssl-zoo train --method=sla --dataset=../shared/data/cifar10-jpeg.zip \
        --epochs=30 --model_dir=runs/sla   # the authors' recipe and option-A ResNet-32
    ssl-zoo evaluate --model_path=runs/sla/model.keras --dataset=...
    ssl-zoo export --model_path=runs/sla/model.keras --export_dir=out/sla
    ssl-zoo list
    ssl-zoo pack --model_dir=runs/sla --archive=sla_run.tar.gz   # carry an unfinished run
    ssl-zoo unpack --archive=sla_run.tar.gz --model_dir=runs/sla # ... and resume it here
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

COMMANDS = ("train", "evaluate", "export", "list", "pack", "unpack")
FLAGS = flags.FLAGS

flags.DEFINE_string("method", "sla", "Method name (see `ssl-zoo list`).")
flags.DEFINE_string("dataset", "digits",
                    "Embedded 'digits', a tensorflow-datasets name prepared locally, an "
                    "image folder root/<class>/* or root/<split>/<class>/*, a .zip "
                    "archive of such folders, or a .npz file.")
flags.DEFINE_string("data_dir", None, "tensorflow-datasets data_dir.")
flags.DEFINE_integer("image_size", None, "Resize images to this square size.")
flags.DEFINE_string("train_split", "train", "Training split.")
flags.DEFINE_string("test_split", "test", "Evaluation split ('val' is accepted too).")
flags.DEFINE_integer("max_train_examples", None, "Train on a random subset.")
flags.DEFINE_integer("max_test_examples", None, "Evaluate on a random subset.")
flags.DEFINE_string("backbone", None, "Backbone name (default: the method's own, e.g. "
                    "resnet32_cifar_a for the SLA family, wrn28_2 for FixMatch/DASO, "
                    "vgg_tile for Jigsaw, resnet32_cifar for SupCon/SimCLR).")
flags.DEFINE_float("width", 0.5, "Backbone width multiplier.")
flags.DEFINE_integer("epochs", 8, "Training epochs.")
flags.DEFINE_integer("steps_per_epoch", None, "Steps per epoch (default: one pass).")
flags.DEFINE_integer("batch_size", 64, "Global batch size.")
flags.DEFINE_float("learning_rate", None, "Peak SGD learning rate (default: the "
                   "method's recipe, else 0.1).")
flags.DEFINE_float("weight_decay", None, "Weight decay (default: the method's recipe, "
                   "else 1e-4).")
flags.DEFINE_enum("weight_decay_mode", None, ["coupled", "decoupled"],
                  "coupled = PyTorch's L2 in the gradient (the authors' recipes), "
                  "decoupled = Keras' SGD(weight_decay) (default: the method's recipe, "
                  "else decoupled).")
flags.DEFINE_enum("schedule", None, ["cosine", "step", "constant"],
                  "LR schedule (default: the method's recipe, else cosine).")
flags.DEFINE_integer("eval_every", None, "Evaluate on the test split every N training "
                     "steps and report the median of the last --eval_keep evaluations "
                     "and the best (the DASO / USB protocols).")
flags.DEFINE_integer("eval_keep", 20, "Evaluations in the median of --eval_every.")
flags.DEFINE_string("eval_protocol", None, "Evaluator of --eval_every: direct (the "
                    "model's predictions; the default for classifiers) or knn (weighted "
                    "kNN on the features; the default for SupCon/SimCLR encoders).")
flags.DEFINE_string("augment", "auto", "Training view: auto|none|weak|strong|supcon.")
flags.DEFINE_string("method_kwargs", None,
                    "The method's constructor arguments as JSON, or the path of a .json "
                    "file, e.g. '{\"transforms\": \"rotation_color\"}' for SLA.")
flags.DEFINE_string("transforms", None, "Shorthand for --method_kwargs' transforms "
                    "(SLA/DA/MT): rotation, color_permutation, rotation_color.")
flags.DEFINE_string("data_kwargs", None,
                    "Training-stream options as JSON or a .json path, e.g. "
                    "'{\"mu\": 2}' for semi-supervised methods.")
flags.DEFINE_bool("mixed_precision", False, "Train under mixed_float16.")
flags.DEFINE_enum("precision", None, ["float32", "float16", "bfloat16"],
                  "Compute precision; overrides --mixed_precision (bfloat16: "
                  "mixed_bfloat16, for CPUs with AVX512_BF16, TPUs, recent GPUs).")
flags.DEFINE_enum("jit_compile", "auto", ["auto", "true", "false"], "XLA.")
flags.DEFINE_enum("strategy", "default", ["default", "mirrored", "multiworker"],
                  "tf.distribute strategy.")
flags.DEFINE_string("model_dir", None, "Checkpoints, backup (resume), TensorBoard logs, "
                    "final model.keras and metrics.json.")
flags.DEFINE_integer("backup_every", None, "With --model_dir: also back up the training "
                     "state every N steps (default: at each epoch end), so a killed run "
                     "resumes losing at most N steps.", lower_bound=1)
flags.DEFINE_string("cache_dir", None, "Cache of decoded images (default ~/.cache/ssl_zoo).")
flags.DEFINE_integer("seed", 0, "Random seed.")
flags.DEFINE_string("model_path", None, "A saved .keras model (evaluate/export).")
flags.DEFINE_string("export_dir", None, "SavedModel output directory (export).")
flags.DEFINE_bool("linear_probe", False, "evaluate: train a linear probe on the frozen "
                  "features (the default for SupCon/SimCLR models).")
flags.DEFINE_string("archive", None, "pack/unpack: the .tar.gz that carries a run's "
                    "backup, history and evaluations (or its trained model) between "
                    "machines or sessions.")
flags.DEFINE_bool("overwrite", False, "unpack: replace the run already in --model_dir.")
flags.DEFINE_string("inference", None, "SLA inference mode for evaluate/export: single, "
                    "aggregated or self_distill.")


def _json_flag(name):
    """A JSON object from a flag holding JSON text or the path of a .json file."""
    import json
    value = FLAGS[name].value
    if not value:
        return {}
    try:
        if os.path.isfile(value):
            with open(value, encoding="utf-8") as f:
                parsed = json.load(f)
        else:
            parsed = json.loads(value)
    except (OSError, json.JSONDecodeError) as e:
        raise app.UsageError(f"--{name} must be a JSON object or the path of a .json "
                             f"file: {e}") from None
    if not isinstance(parsed, dict):
        raise app.UsageError(f"--{name} must be a JSON object, got {parsed!r}.")
    return parsed


# The zero-argument quick start (SLA on the embedded 16x16 digits, 8 epochs = 176
# steps) with the projection ResNet-32: the authors' option-A net (the SLA family's
# default) sits on a plateau for its first ~10 epochs of the joint task there (measured:
# SLA+SD 20.9 % after 8 epochs, 52.4 % after 15, 97.8 % after 30, against 97.2 % after 8
# with projections), so the minute-long demo would show an unconverged model.
QUICKSTART_BACKBONE = "resnet32_cifar"


def _backbone(announce=False):
    from ssl_zoo.models.registry import get_method
    if FLAGS.backbone is not None or FLAGS.dataset != "digits":
        return FLAGS.backbone
    if get_method(FLAGS.method).default_backbone == "resnet32_cifar_a":
        if announce:
            print(f"digits quick start: backbone {QUICKSTART_BACKBONE} (the option-A "
                  f"resnet32_cifar_a needs ~30 epochs on the digits; pass --backbone to "
                  f"choose)")
        return QUICKSTART_BACKBONE
    return None


def _config(announce=False):
    from ssl_zoo.training import TrainConfig
    return TrainConfig(
        method=FLAGS.method, dataset=FLAGS.dataset, data_dir=FLAGS.data_dir,
        image_size=FLAGS.image_size, train_split=FLAGS.train_split,
        test_split=FLAGS.test_split, max_train_examples=FLAGS.max_train_examples,
        max_test_examples=FLAGS.max_test_examples, backbone=_backbone(announce),
        width=FLAGS.width, epochs=FLAGS.epochs, steps_per_epoch=FLAGS.steps_per_epoch,
        batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
        weight_decay=FLAGS.weight_decay, weight_decay_mode=FLAGS.weight_decay_mode,
        schedule=FLAGS.schedule, augment=FLAGS.augment, eval_every=FLAGS.eval_every,
        mixed_precision=FLAGS.precision or FLAGS.mixed_precision,
        jit_compile=FLAGS.jit_compile,
        strategy=FLAGS.strategy, model_dir=FLAGS.model_dir,
        backup_every=FLAGS.backup_every, cache_dir=FLAGS.cache_dir,
        seed=FLAGS.seed, method_kwargs=_method_kwargs(),
        data_kwargs=_json_flag("data_kwargs"), eval_keep=FLAGS.eval_keep,
        eval_protocol=FLAGS.eval_protocol)


def _method_kwargs():
    kwargs = _json_flag("method_kwargs")
    if FLAGS.transforms:
        kwargs.setdefault("transforms", FLAGS.transforms)
    return kwargs


def cmd_train():
    from ssl_zoo.training import format_metrics, train_and_evaluate
    out = train_and_evaluate(_config(announce=True))
    print(f"\n{FLAGS.method} on {FLAGS.dataset}: test metrics after "
          f"{out['seconds']:.1f} s")
    print(format_metrics(out["metrics"]))
    if FLAGS.model_dir:
        print(f"model and metrics written to {FLAGS.model_dir}")


def _load_model():
    import ssl_zoo  # noqa: F401  (registers the serialisable classes)
    from ssl_zoo.utils.io import load_model_file
    if not FLAGS.model_path:
        raise app.UsageError("--model_path is required (a .keras file).")
    if not os.path.exists(FLAGS.model_path):
        raise app.UsageError(f"--model_path {FLAGS.model_path!r} does not exist.")
    model = load_model_file(FLAGS.model_path)
    if FLAGS.inference:
        if not hasattr(model, "inference"):
            raise app.UsageError(f"{type(model).__name__} has no inference modes.")
        model.inference = model._check_mode(FLAGS.inference)
    return model


def cmd_evaluate():
    from ssl_zoo.data import load_arrays
    from ssl_zoo.models.registry import MethodSpec, method_of
    from ssl_zoo.training import evaluate, format_metrics
    model = _load_model()
    kw = dict(data_dir=FLAGS.data_dir, image_size=FLAGS.image_size,
              cache_dir=FLAGS.cache_dir)
    test = load_arrays(FLAGS.dataset, split=FLAGS.test_split, **kw)
    name, spec = method_of(model)
    if spec is None:   # not a registered method (e.g. a LinearProbe): score it directly
        spec = MethodSpec(type(model), "", evaluation="direct")
    if FLAGS.linear_probe:
        spec = MethodSpec(spec.model_class, spec.description, evaluation="linear_probe")
    if spec.evaluation == "direct" and test.info.num_classes != model.num_classes:
        raise app.UsageError(f"The model has {model.num_classes} classes but "
                             f"{FLAGS.dataset} has {test.info.num_classes}.")
    # Direct evaluation reads no training data: the many/medium/few-shot groups (which
    # need the labeled split's counts) are in the training run's metrics.json instead.
    train = (load_arrays(FLAGS.dataset, split=FLAGS.train_split, **kw)
             if spec.evaluation != "direct" else None)
    metrics, _ = evaluate(model, spec, train, test, _config())
    metrics.pop("probe", None)
    print(format_metrics(metrics))


def cmd_export():
    from ssl_zoo.export import export_model
    if not FLAGS.export_dir:
        raise app.UsageError("--export_dir is required.")
    model = _load_model()
    export_model(model, FLAGS.export_dir, image_size=FLAGS.image_size)
    print(f"SavedModel written to {FLAGS.export_dir}")


def cmd_list():
    from ssl_zoo.backbones import list_backbones
    from ssl_zoo.data import list_datasets
    from ssl_zoo.models import METHODS
    print("methods:")
    for name in sorted(METHODS):
        print(f"  {name:<12} {METHODS[name].description}")
    print("backbones:\n  " + ", ".join(list_backbones()))
    print("datasets:\n  " + ", ".join(list_datasets()) +
          ", or a folder / .zip / .npz path")
    try:
        from ssl_zoo.presets import list_presets
    except ImportError:
        return
    presets = list_presets()
    if presets:
        print("presets:")
        for name, desc in presets.items():
            print(f"  {name:<36} {desc}")


def _run_and_archive():
    if not FLAGS.model_dir or not FLAGS.archive:
        raise app.UsageError("--model_dir and --archive are required.")
    return FLAGS.model_dir, FLAGS.archive


def cmd_pack():
    from ssl_zoo.backup import pack_run
    model_dir, archive = _run_and_archive()
    out = pack_run(model_dir, archive)
    at = "a trained run" if out["step"] is None else f"the backup of step {out['step']}"
    print(f"packed {at} of {model_dir} into {archive} ({out['bytes']} bytes: "
          f"{', '.join(out['files'])})")


def cmd_unpack():
    from ssl_zoo.backup import unpack_run
    model_dir, archive = _run_and_archive()
    out = unpack_run(archive, model_dir, overwrite=FLAGS.overwrite)
    if out["step"] is None:
        print(f"unpacked a trained run into {model_dir}: the same training command "
              f"evaluates its model")
    else:
        print(f"unpacked the backup of step {out['step']} into {model_dir}: the same "
              f"training command resumes it")


def main(argv):
    if len(argv) < 2 or argv[1] not in COMMANDS:
        raise app.UsageError(f"usage: ssl-zoo {{{'|'.join(COMMANDS)}}} [--flags]; "
                             f"got {argv[1:]!r}.")
    if len(argv) > 2:
        raise app.UsageError(f"Unexpected arguments {argv[2:]!r}.")
    try:
        {"train": cmd_train, "evaluate": cmd_evaluate, "export": cmd_export,
         "list": cmd_list, "pack": cmd_pack, "unpack": cmd_unpack}[argv[1]]()
    except Exception as e:   # named errors are printed; anything else is a bug
        from ssl_zoo.utils.io import DirectoryInUseError
        if not isinstance(e, (ValueError, TypeError, FileNotFoundError,
                              DirectoryInUseError)):
            raise
        print(f"ssl-zoo {argv[1]}: error: {e}", file=sys.stderr)
        sys.exit(2)


def run():
    """Console-script entry point."""
    app.run(main)


if __name__ == "__main__":
    run()
