"""Training-step time under float32, mixed_bfloat16 and mixed_float16, interleaved in
one process (shared machines are noisy: compare the ratios, not the seconds).

    python benchmarks/precision.py                          # sla, supcon, daso, jigsaw
    python benchmarks/precision.py --methods=sla --batch_size=256

For each method, each policy builds its own model (the policy is set while it is
built, then restored) and trains with `train_on_batch` on the same batch of the
method's own training stream (`ssl_zoo.training.make_train_stream` over random uint8
images): SLA's batch is expanded by its 4 rotations, SupCon's holds 2 views, DASO's a
labeled batch plus mu x unlabeled weak and strong views, Jigsaw's puzzles of 9 tiles.
Graph mode (jit_compile=False) and, with --xla, XLA too. Writes
benchmarks/results/precision.json.
"""

import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import stream_batch, time_interleaved  # noqa: E402

flags.DEFINE_list("methods", ["sla", "supcon", "daso", "jigsaw"], "Registered methods.")
flags.DEFINE_string("backbone", "resnet32_cifar",
                    "Backbone (Jigsaw always uses its tile encoder, vgg_tile).")
flags.DEFINE_float("width", 1.0, "Backbone width.")
flags.DEFINE_integer("batch_size", 128, "Images (labeled images for DASO) per step.")
flags.DEFINE_integer("mu", 2, "DASO: unlabeled images per labeled image.")
flags.DEFINE_integer("image_size", 32, "Image side.")
flags.DEFINE_integer("steps", 5, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Timed rounds per policy.")
flags.DEFINE_list("policies", ["float32", "mixed_bfloat16", "mixed_float16"], "Policies.")
flags.DEFINE_bool("xla", False, "Also time jit_compile=True.")
flags.DEFINE_string("out", os.path.join(_REPO, "benchmarks", "results", "precision.json"),
                    "Results file.")
FLAGS = flags.FLAGS


def method_batch(spec, model, rng):
    """One batch of the method's own training stream, as tensors."""
    import tensorflow as tf

    from ssl_zoo.data import load_arrays
    n = max(2 * FLAGS.batch_size * (FLAGS.mu + 1), 512)
    size = image_size(spec)
    images = rng.randint(0, 256, (n, size, size, 3)).astype("uint8")
    data = load_arrays((images, np.arange(n) % 10), cache_dir=False)
    batch = stream_batch(spec, data, FLAGS.batch_size, FLAGS.mu, model=model)
    return tf.nest.map_structure(tf.constant, batch)


def image_size(spec):
    # Jigsaw cuts 3 x 3 tiles: it trains on 64-pixel images (Tiny-ImageNet).
    return 64 if spec.view == "model" else FLAGS.image_size


def build(spec, name):
    kwargs = {"backbone": "vgg_tile" if name == "jigsaw" else FLAGS.backbone,
              "width": FLAGS.width}
    if spec.class_labels:
        kwargs["num_classes"] = 10
    return spec.build(**kwargs)


def main(_):
    import keras
    import tensorflow as tf

    from ssl_zoo.models import get_method
    from ssl_zoo.utils.io import atomic_write_json
    results = {}
    for name in FLAGS.methods:
        spec = get_method(name)
        x, y = method_batch(spec, build(spec, name), np.random.RandomState(0))
        fns = {}
        for jit in ([False, True] if FLAGS.xla else [False]):
            for policy in FLAGS.policies:
                previous = keras.mixed_precision.global_policy()
                keras.mixed_precision.set_global_policy(policy)
                try:
                    model = build(spec, name)
                    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                                  jit_compile=jit)
                finally:
                    keras.mixed_precision.set_global_policy(previous)
                fns[f"{policy}{'_xla' if jit else ''}"] = (
                    lambda m=model: m.train_on_batch(x, y))
        seconds = time_interleaved(fns, FLAGS.steps, FLAGS.rounds)
        base = seconds["float32"]
        results[name] = {"seconds_per_step": seconds, "image_size": image_size(spec),
                         "speedup_over_float32": {k: base / v for k, v in seconds.items()}}
        print(name, {k: round(v, 3) for k, v in results[name]["speedup_over_float32"].items()},
              flush=True)
    result = {"methods": results, "backbone": FLAGS.backbone, "width": FLAGS.width,
              "batch_size": FLAGS.batch_size, "image_size": FLAGS.image_size,
              "mu": FLAGS.mu, "steps": FLAGS.steps, "rounds": FLAGS.rounds,
              "tensorflow": tf.__version__, "keras": keras.__version__,
              "cpu_count": os.cpu_count()}
    atomic_write_json(FLAGS.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
