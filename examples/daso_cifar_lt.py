"""Train FixMatch or DASO on a long-tailed semi-supervised CIFAR-10 split.

    python examples/daso_cifar_lt.py --smoke                    # seconds, embedded digits
    python examples/daso_cifar_lt.py --method daso --steps 2500 # CIFAR-10-LT from ../shared/data
    python examples/daso_cifar_lt.py --unlabeled reversed       # the tail has the most unlabeled

Builds the DASO paper's split (N_1 labeled images of the head class, gamma = N_1/N_K,
M_1 unlabeled, consistent / uniform / reversed), trains with the authors' recipe
(SGD 0.03 constant, Nesterov, coupled L2 5e-4, EMA 0.999), evaluates the EMA model
every --eval_every steps and prints the overall, balanced, many/medium/few-shot
accuracies, the median of the last 20 evaluations and the best, and the per-class
precision and recall of the pseudo-labels.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

from ssl_zoo.training import TrainConfig, format_metrics, train_and_evaluate  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
flags.DEFINE_string("data", os.path.join(_REPO, "..", "shared", "data", "cifar10-jpeg.zip"),
                    "CIFAR-10 as a zip/folder of class folders, or a tfds name.")
flags.DEFINE_bool("smoke", False, "A seconds-long run on the embedded digits.")
flags.DEFINE_enum("method", "daso", ["daso", "fixmatch"], "Method.")
flags.DEFINE_enum("unlabeled", "consistent", ["consistent", "uniform", "reversed"],
                  "Unlabeled class distribution.")
flags.DEFINE_integer("num_labeled_head", 500, "N_1.")
flags.DEFINE_integer("num_unlabeled_head", 4000, "M_1.")
flags.DEFINE_float("imbalance_ratio", 100.0, "gamma.")
flags.DEFINE_integer("steps", 2500, "Training steps.")
flags.DEFINE_integer("eval_every", 100, "Evaluate the EMA model every N steps.")
flags.DEFINE_integer("batch_size", 32, "Labeled batch size.")
flags.DEFINE_integer("mu", 2, "Unlabeled images per labeled image.")
flags.DEFINE_string("backbone", "resnet32_cifar", "Backbone (the papers: wrn28_2).")
flags.DEFINE_float("width", 0.5, "Backbone width multiplier.")
flags.DEFINE_integer("warmup_steps", 100, "DASO: plain-FixMatch steps first.")
flags.DEFINE_float("dist_temperature", None, "DASO T_dist (default: 1.5 consistent, "
                   "0.3 otherwise, the authors' CIFAR-10 setting).")
flags.DEFINE_string("model_dir", None, "Checkpoints, metrics.json (resumable).")
FLAGS = flags.FLAGS


def main(_):
    method_kwargs = {}
    if FLAGS.method == "daso":
        temperature = FLAGS.dist_temperature or (
            1.5 if FLAGS.unlabeled == "consistent" else 0.3)
        method_kwargs = {"dist_temperature": temperature,
                         "warmup_steps": FLAGS.warmup_steps}
    if FLAGS.smoke:
        cfg = TrainConfig(method=FLAGS.method, dataset="digits", width=0.25, epochs=2,
                          steps_per_epoch=5, batch_size=16, eval_every=5, verbose=2,
                          method_kwargs={**method_kwargs, "warmup_steps": 3,
                                         "count_window": 2}
                          if FLAGS.method == "daso" else {},
                          data_kwargs={"num_labeled_head": 40, "imbalance_ratio": 10,
                                       "num_unlabeled_head": 80,
                                       "unlabeled_distribution": FLAGS.unlabeled})
    else:
        cfg = TrainConfig(
            method=FLAGS.method, dataset=FLAGS.data, backbone=FLAGS.backbone,
            width=FLAGS.width, batch_size=FLAGS.batch_size,
            epochs=max(1, FLAGS.steps // FLAGS.eval_every),
            steps_per_epoch=FLAGS.eval_every, eval_every=FLAGS.eval_every,
            augment="weak", model_dir=FLAGS.model_dir, method_kwargs=method_kwargs,
            data_kwargs={"num_labeled_head": FLAGS.num_labeled_head,
                         "num_unlabeled_head": FLAGS.num_unlabeled_head,
                         "imbalance_ratio": FLAGS.imbalance_ratio,
                         "unlabeled_distribution": FLAGS.unlabeled, "mu": FLAGS.mu})
    out = train_and_evaluate(cfg)
    print(format_metrics(out["metrics"]))
    details = out["details"]
    print("per-class test recall:", details.get("recall_per_class"))
    for name in ("linear_pseudo_label", "semantic_pseudo_label", "pseudo_label"):
        if name in details:
            print(f"{name}s (last epoch): precision {details[name]['precision']}, "
                  f"recall {details[name]['recall']}")


if __name__ == "__main__":
    app.run(main)
