"""Training-step time under float32, mixed_bfloat16 and mixed_float16, interleaved in
one process (shared machines are noisy: compare the ratios, not the seconds).

    python benchmarks/precision.py                    # SLA ResNet-32, batch 128 x 4 rotations
    python benchmarks/precision.py --method supervised --batch_size 256

Each policy builds its own model (the policy is set while it is built, then restored)
and trains on the same random batch; graph mode (jit_compile=False) and, with --xla,
XLA too. Writes benchmarks/results/precision.json.
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

from timing import time_interleaved  # noqa: E402

flags.DEFINE_string("method", "sla", "Registered method with a labeled image stream.")
flags.DEFINE_string("backbone", "resnet32_cifar", "Backbone.")
flags.DEFINE_float("width", 1.0, "Backbone width.")
flags.DEFINE_integer("batch_size", 128, "Images per step.")
flags.DEFINE_integer("image_size", 32, "Image side.")
flags.DEFINE_integer("steps", 5, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Timed rounds per policy.")
flags.DEFINE_list("policies", ["float32", "mixed_bfloat16", "mixed_float16"], "Policies.")
flags.DEFINE_bool("xla", False, "Also time jit_compile=True.")
flags.DEFINE_string("out", os.path.join(_REPO, "benchmarks", "results", "precision.json"),
                    "Results file.")
FLAGS = flags.FLAGS


def main(_):
    import keras
    import tensorflow as tf

    from ssl_zoo.models import get_method
    from ssl_zoo.utils.io import atomic_write_json
    rng = np.random.RandomState(0)
    x = rng.randint(0, 256, (FLAGS.batch_size, FLAGS.image_size, FLAGS.image_size, 3))
    x = tf.constant(x.astype("float32"))
    y = tf.constant(rng.randint(0, 10, FLAGS.batch_size))
    fns = {}
    for jit in ([False, True] if FLAGS.xla else [False]):
        for policy in FLAGS.policies:
            previous = keras.mixed_precision.global_policy()
            keras.mixed_precision.set_global_policy(policy)
            try:
                model = get_method(FLAGS.method).build(
                    backbone=FLAGS.backbone, num_classes=10, width=FLAGS.width)
                model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                              jit_compile=jit)
            finally:
                keras.mixed_precision.set_global_policy(previous)
            fns[f"{policy}{'_xla' if jit else ''}"] = (
                lambda m=model: m.train_on_batch(x, y))
    seconds = time_interleaved(fns, FLAGS.steps, FLAGS.rounds)
    base = seconds["float32"]
    result = {"method": FLAGS.method, "backbone": FLAGS.backbone, "width": FLAGS.width,
              "batch_size": FLAGS.batch_size, "image_size": FLAGS.image_size,
              "seconds_per_step": seconds,
              "speedup_over_float32": {k: base / v for k, v in seconds.items()},
              "tensorflow": tf.__version__, "keras": keras.__version__,
              "cpu_count": os.cpu_count()}
    atomic_write_json(FLAGS.out, result)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    app.run(main)
