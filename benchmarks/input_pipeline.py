"""Input-pipeline benchmark: images/s of each view pipeline vs a ResNet-32 training step.

Measures, in one run on this machine: loading CIFAR-10 from the JPEG archive (cold
decode and cached), the images/s of `make_pipeline` with view none / weak / strong /
supcon x2 at batch 128, and the images/s of a ResNet-32 + Dense(10) SGD training step
at batch 128 (graph and XLA). The ratio pipeline / model says how much of the step time
the input pipeline would need (target >= 5x). Prints a markdown table and writes
benchmarks/results/input_pipeline.json atomically.

    python benchmarks/input_pipeline.py                 # about 3 minutes on 2 cores
    python benchmarks/input_pipeline.py --batches 10 --model_steps 3   # quick look
"""

import os
import platform
import shutil
import sys
import tempfile
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)

_SHARED = os.environ.get("SSL_ZOO_SHARED_DATA", os.path.join(_REPO, "..", "shared", "data"))
flags.DEFINE_string("data", os.path.join(_SHARED, "cifar10-jpeg.zip"),
                    "CIFAR-10 archive or folder; digits resized to 32 if absent.")
flags.DEFINE_string("split", "train", "Split to read.")
flags.DEFINE_integer("batch_size", 128, "Batch size (pipelines and model).")
flags.DEFINE_integer("batches", 40, "Timed batches per pipeline (after 5 warm-up).")
flags.DEFINE_integer("model_steps", 8, "Timed training steps per model mode.")
flags.DEFINE_float("width", 1.0, "ResNet-32 width multiplier.")
flags.DEFINE_list("jit", ["graph", "xla"], "Model modes: graph, xla.")
flags.DEFINE_string("cache_dir", None, "Array cache (default: a fresh temp dir, so the "
                    "cold decode is measured).")
flags.DEFINE_string("out", os.path.join(_REPO, "benchmarks", "results",
                                        "input_pipeline.json"), "JSON output.")
FLAGS = flags.FLAGS

PIPELINES = (("none", "none", 1), ("weak", "weak", 1), ("strong", "strong", 1),
             ("supcon x2", "supcon", 2))


def load(path, split, cache_dir):
    from ssl_zoo.data import load_arrays
    if not os.path.exists(path):
        print(f"{path} is absent: using the embedded digits resized to 32x32.")
        start = time.perf_counter()
        data = load_arrays("digits", "all", image_size=32)
        return data, {"source": "digits@32", "cold_s": time.perf_counter() - start}
    start = time.perf_counter()
    data = load_arrays(path, split, cache_dir=cache_dir)
    cold = time.perf_counter() - start
    start = time.perf_counter()
    data = load_arrays(path, split, cache_dir=cache_dir)
    warm = time.perf_counter() - start
    return data, {"source": os.path.abspath(path), "cold_s": cold, "cached_s": warm}


def pipeline_rate(data, view, num_views, batch_size, batches):
    from ssl_zoo.data import make_pipeline
    ds = make_pipeline(data, batch_size, view=view, num_views=num_views, seed=0,
                       repeat=True, drop_remainder=True)
    it = iter(ds)
    for _ in range(5):
        next(it)
    start = time.perf_counter()
    for _ in range(batches):
        x, _ = next(it)
    x.numpy()
    return batches * batch_size / (time.perf_counter() - start)


def model_rate(jit, width, batch_size, size, steps):
    import keras
    import numpy as np
    from ssl_zoo.backbones import get_backbone
    keras.utils.set_random_seed(0)
    backbone = get_backbone("resnet32_cifar", width=width, input_shape=(size, size, 3))
    model = keras.Sequential([backbone, keras.layers.Dense(10)])
    model.compile(optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=(jit == "xla"))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch_size, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, batch_size)
    for _ in range(2):
        model.train_on_batch(x, y)
    start = time.perf_counter()
    for _ in range(steps):
        model.train_on_batch(x, y)
    return steps * batch_size / (time.perf_counter() - start)


def main(_):
    import keras
    import tensorflow as tf
    from ssl_zoo.utils.io import atomic_write_json

    cache_dir = FLAGS.cache_dir or tempfile.mkdtemp(prefix="ssl_zoo_bench_")
    try:
        data, load_info = load(FLAGS.data, FLAGS.split, cache_dir)
    finally:
        if not FLAGS.cache_dir:
            shutil.rmtree(cache_dir, ignore_errors=True)
    size = data.images.shape[1]
    print(f"data: {data.info.name}/{data.info.split} {data.images.shape}; load "
          + ", ".join(f"{k} {v:.2f} s" for k, v in load_info.items() if k.endswith("_s")),
          flush=True)
    models = {}
    for jit in FLAGS.jit:
        models[jit] = model_rate(jit, FLAGS.width, FLAGS.batch_size, size,
                                 FLAGS.model_steps)
        print(f"ResNet-32 train step ({jit}): {models[jit]:.0f} img/s", flush=True)
    pipes = {}
    for label, view, nv in PIPELINES:
        rate = pipeline_rate(data, view, nv, FLAGS.batch_size, FLAGS.batches)
        pipes[label] = {"view": view, "num_views": nv, "images_per_s": rate,
                        "views_per_s": rate * nv,
                        **{f"ratio_vs_{j}": rate / models[j] for j in models}}
        print(f"pipeline {label}: {rate:.0f} img/s", flush=True)

    header = "| pipeline | images/s | " + " | ".join(
        f"ratio vs ResNet-32 step ({j}, {models[j]:.0f} img/s)" for j in models) + " |"
    print("\n" + header)
    print("|" + "---|" * (2 + len(models)))
    for label, row in pipes.items():
        print(f"| {label} | {row['images_per_s']:.0f} | " + " | ".join(
            f"{row[f'ratio_vs_{j}']:.1f}x" for j in models) + " |")

    result = {
        "benchmark": "input_pipeline",
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(),
                    "gpus": len(tf.config.list_physical_devices("GPU"))},
        "versions": {"tensorflow": tf.__version__, "keras": keras.__version__},
        "data": {"name": data.info.name, "split": data.info.split,
                 "shape": list(data.images.shape), **load_info},
        "batch_size": FLAGS.batch_size, "timed_batches": FLAGS.batches,
        "model": {"backbone": "resnet32_cifar", "width": FLAGS.width, "head": "Dense(10)",
                  "optimizer": "SGD(0.1, momentum=0.9)", "steps": FLAGS.model_steps,
                  **{f"{j}_images_per_s": r for j, r in models.items()}},
        "pipelines": pipes,
    }
    atomic_write_json(FLAGS.out, result)
    print(f"\nwrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
