"""Train SupCon (or SimCLR) on CIFAR-10, then report the linear-probe top-1.

Stage 1 trains a backbone + projection head with the supervised contrastive loss on
two augmented views per image; stage 2 freezes the backbone and trains a linear
classifier on its features.

    python examples/supcon_cifar.py --smoke                  # seconds, embedded digits
    python examples/supcon_cifar.py --epochs 100 --width 1   # CIFAR-10 from --data
    python examples/supcon_cifar.py --method simclr          # the unsupervised baseline
"""

import os
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

flags.DEFINE_string("data", os.path.join(_REPO, "..", "shared", "data", "cifar10-jpeg.zip"),
                    "CIFAR-10 zip archive or folder (<split>/<class>/<image>).")
flags.DEFINE_enum("method", "supcon", ["supcon", "simclr"], "Loss: SupCon or SimCLR.")
flags.DEFINE_string("backbone", "resnet32_cifar", "Backbone name.")
flags.DEFINE_float("width", 0.5, "Backbone width multiplier.")
flags.DEFINE_integer("epochs", 20, "Contrastive training epochs.")
flags.DEFINE_integer("batch_size", 256, "Images per batch (x2 views).")
flags.DEFINE_float("learning_rate", 0.2, "Peak SGD learning rate (cosine, 10% warm-up).")
flags.DEFINE_float("weight_decay", 1e-4, "Decoupled weight decay.")
flags.DEFINE_float("temperature", 0.1, "Loss temperature tau.")
flags.DEFINE_integer("projection_dim", 128, "Projection head output width.")
flags.DEFINE_integer("train_examples", 0, "Use only this many training images (0 = all).")
flags.DEFINE_integer("probe_epochs", 30, "Linear-probe epochs.")
flags.DEFINE_string("jit_compile", "auto", "auto | true | false (XLA).")
flags.DEFINE_string("save", "", "Save the trained model here (.keras).")
flags.DEFINE_bool("smoke", False, "A seconds-long run on the embedded digits.")
flags.DEFINE_integer("seed", 0, "Seed.")
FLAGS = flags.FLAGS


def load(split):
    from ssl_zoo.data import load_arrays
    if FLAGS.smoke:
        return load_arrays("digits", split)
    if not os.path.exists(FLAGS.data):
        sys.exit(f"No data at {FLAGS.data}: pass --data (a CIFAR-10 zip or folder) "
                 f"or --smoke.")
    return load_arrays(FLAGS.data, split)


def main(_):
    import keras
    from ssl_zoo.data import make_pipeline
    from ssl_zoo.evaluation import linear_probe
    from ssl_zoo.models.supcon import SimCLRModel, SupConModel
    from ssl_zoo.optimizers import make_optimizer
    from ssl_zoo.training import parse_jit_compile

    if FLAGS.smoke:
        FLAGS.epochs, FLAGS.width, FLAGS.batch_size = 1, 0.125, 64
        FLAGS.train_examples, FLAGS.probe_epochs, FLAGS.projection_dim = 256, 20, 32
    keras.utils.set_random_seed(FLAGS.seed)
    full = load("train")
    train, test = full.random_subset(FLAGS.train_examples, FLAGS.seed), load("test")
    print(f"{full.info.name}: {len(train.labels)} train / {len(test.labels)} test "
          f"images {train.images.shape[1:]}, {train.info.num_classes} classes")

    cls = SupConModel if FLAGS.method == "supcon" else SimCLRModel
    model = cls(FLAGS.backbone, projection_dim=FLAGS.projection_dim,
                temperature=FLAGS.temperature, width=FLAGS.width,
                mean=train.info.mean, std=train.info.std)
    views = make_pipeline(train, FLAGS.batch_size, view="supcon", num_views=2,
                          seed=FLAGS.seed, drop_remainder=True)
    steps = max(1, FLAGS.epochs * (len(train.labels) // FLAGS.batch_size))
    jit = parse_jit_compile(FLAGS.jit_compile)
    model.compile(optimizer=make_optimizer(
        FLAGS.learning_rate, steps, "cosine", momentum=0.9, nesterov=False,
        weight_decay=FLAGS.weight_decay, weight_decay_mode="decoupled",
        warmup_steps=steps // 10), jit_compile=jit)
    start = time.perf_counter()
    model.fit(views, epochs=FLAGS.epochs, verbose=2)
    print(f"{FLAGS.method} training: {time.perf_counter() - start:.0f} s")
    if FLAGS.save:
        model.save(FLAGS.save)
        print(f"saved {FLAGS.save}")

    result = linear_probe(model, train, test, train.info.num_classes,
                          epochs=FLAGS.probe_epochs, batch_size=256, seed=FLAGS.seed)
    print(f"linear probe ({FLAGS.method}, {FLAGS.backbone} x{FLAGS.width}): "
          f"top-1 {100 * result['top1']:.2f}% (train {100 * result['train_top1']:.2f}%)")


if __name__ == "__main__":
    app.run(main)
