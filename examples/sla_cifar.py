"""Train SLA (self-supervised label augmentation) on CIFAR-10 and report all inferences.

    python examples/sla_cifar.py --smoke            # seconds, embedded digits
    python examples/sla_cifar.py --epochs 30        # CIFAR-10 from ../shared/data
    python examples/sla_cifar.py --data /path/to/cifar10-jpeg.zip --transforms rotation_color

Prints single, aggregated (SLA+AG) and self-distilled (SLA+SD) test accuracy.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from ssl_zoo.training import TrainConfig, format_metrics, train_and_evaluate  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string("data", os.path.join(_REPO, "..", "shared", "data", "cifar10-jpeg.zip"),
                    "CIFAR-10 as a zip/folder of class folders, or a tfds name.")
flags.DEFINE_bool("smoke", False, "A seconds-long run on the embedded digits.")
flags.DEFINE_integer("epochs", 30, "Epochs.")
flags.DEFINE_integer("batch_size", 128, "Batch size (before the x M expansion).")
flags.DEFINE_float("width", 1.0, "ResNet-32 width multiplier.")
flags.DEFINE_float("learning_rate", 0.1, "SGD learning rate.")
flags.DEFINE_string("transforms", "rotation", "rotation | color_permutation | rotation_color")
flags.DEFINE_bool("self_distill", True, "Add the self-distillation head (SLA+SD).")
flags.DEFINE_integer("max_train_examples", None, "Train on a subset.")
flags.DEFINE_bool("mixed_precision", False, "mixed_float16.")
flags.DEFINE_string("model_dir", None, "Where to write checkpoints and metrics.")
FLAGS = flags.FLAGS


def main(_):
    if FLAGS.smoke:
        cfg = TrainConfig(method="sla", dataset="digits", width=0.25, epochs=1,
                          steps_per_epoch=5, batch_size=32, verbose=2)
    else:
        cfg = TrainConfig(method="sla", dataset=FLAGS.data, width=FLAGS.width,
                          epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
                          learning_rate=FLAGS.learning_rate, augment="weak",
                          max_train_examples=FLAGS.max_train_examples,
                          mixed_precision=FLAGS.mixed_precision,
                          model_dir=FLAGS.model_dir)
    cfg.method_kwargs = {"transforms": FLAGS.transforms,
                         "self_distill": FLAGS.self_distill}
    out = train_and_evaluate(cfg)
    print(format_metrics(out["metrics"]))


if __name__ == "__main__":
    app.run(main)
