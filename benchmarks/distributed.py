"""Training-step time on 1 replica vs 2 replicas at equal per-replica batch, for the
methods whose step synchronises across replicas (SLA, SupCon, DASO), graph and XLA.

The physical CPU is split into 2 logical devices (as `tests/conftest.py` does); both
share the same cores and thread pools, so 2 replicas at per-replica batch B do the work
of 1 replica at batch 2B. Per method and mode (jit_compile False / True) it times

    t1(B)   1 replica (default strategy), batch B
    t1(2B)  1 replica, batch 2B
    t2(B)   2 replicas (MirroredStrategy over /cpu:0, /cpu:1), B per replica, with
            sync_batchnorm=True (what `ssl-zoo train` uses with > 1 replica) and,
            as an extra column, sync_batchnorm=False

and reports overhead = t2(B) / t1(2B) (same total work: what splitting, the gradient
all-reduce, synchronised batch norm, SupCon's all-gather and DASO's queue sync cost;
the goal of the issue "Reliability and scale" is <= 1.10) and, for information, the
scaling t2(B) / t1(B). Shared machines are noisy: compare the ratios, not the seconds.

    python benchmarks/distributed.py                           # sla, supcon, daso; graph + XLA
    python benchmarks/distributed.py --methods=sla --steps=2 --rounds=1 --xla=false

Data: one global batch (2B) of each method's own training stream
(`ssl_zoo.training.make_train_stream` over 2,048 random 32x32 images, 10 classes), so
shapes and structure (SupCon's 2 views, DASO's labeled/weak/strong dict) are the real
ones. Every model trains on that batch over and over: replica i of the 2-replica model
gets the i-th contiguous half of every component (`distribute_datasets_from_function`,
as `tests/harness.py` does; Keras' own rebatching cannot split DASO's dict, whose
components have different batch sizes), the 1-replica model at B gets the first half,
the one at 2B the whole batch.

Timing: each model is built (under the strategy's scope for 2 replicas), compiled with
SGD(0.01, momentum 0.9) and trained one `fit` step (this builds the optimizer and
traces/compiles the step); then one timed call is `model.train_function(iterator)` on
an iterator made once, which runs exactly one training step, and reading the loss as a
Python float waits for it. This leaves out what `fit` adds per call (callbacks, a new
(distributed) iterator, epoch bookkeeping), which would otherwise weigh on the
2-replica side. All the models of one method and mode are timed interleaved
(`timing.time_interleaved`: load from other processes hits them alike; the fastest
round counts). A model that fails to build or compile (e.g. under XLA) is recorded
with its error instead of stopping the run. Writes benchmarks/results/distributed.json.
"""

import json
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import numpy as np  # noqa: E402
from absl import app, flags, logging  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import stream_batch, time_interleaved  # noqa: E402

flags.DEFINE_list("methods", ["sla", "supcon", "daso"], "Registered methods.")
flags.DEFINE_string("backbone", "resnet32_cifar", "Backbone.")
flags.DEFINE_float("width", 0.5, "Backbone width multiplier.")
flags.DEFINE_integer("batch_size", 64, "Per-replica (labeled) batch B; SLA expands it "
                     "x 4 rotations inside the model, DASO adds mu x B unlabeled "
                     "images in two views.")
flags.DEFINE_integer("mu", 2, "DASO: unlabeled images per labeled image.")
flags.DEFINE_integer("num_images", 2048, "Size of the random data set the batch is "
                     "drawn from.")
flags.DEFINE_integer("image_size", 32, "Image side.")
flags.DEFINE_integer("steps", 5, "Timed steps per round.")
flags.DEFINE_integer("rounds", 3, "Timed rounds per model.")
flags.DEFINE_bool("xla", True, "Also time jit_compile=True.")
flags.DEFINE_float("goal", 1.10, "Target overhead t2(B) / t1(2B).")
flags.DEFINE_string("out", os.path.join(_REPO, "benchmarks", "results",
                                        "distributed.json"), "Results file.")
FLAGS = flags.FLAGS

# The timed models of one method and mode: (key, replicas, per-replica batch as a
# multiple of B, sync_batchnorm).
VARIANTS = (("t1_B", 1, 1, False),
            ("t1_2B", 1, 2, False),
            ("t2_B_sync_bn", 2, 1, True),
            ("t2_B_no_sync_bn", 2, 1, False))


def _split_cpu():
    """Two logical CPU devices; must run before TensorFlow initialises its devices."""
    import tensorflow as tf
    cpus = tf.config.list_physical_devices("CPU")
    tf.config.set_logical_device_configuration(
        cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)


def _shards(batch, parts):
    """`parts` contiguous slices of every component of `batch` (the split of `fit`)."""
    import keras

    def cut(t, i):
        n = len(t) // parts
        return t[i * n:(i + 1) * n]
    return [keras.tree.map_structure(lambda t, i=i: cut(t, i), batch)
            for i in range(parts)]


def _shapes(batch):
    import keras
    return keras.tree.map_structure(lambda t: list(t.shape), batch)


def _prepare(spec, strategy, batch, replicas, sync_bn, jit):
    """A compiled model that has run one step, and its one-step timed callable."""
    import contextlib

    import keras
    import tensorflow as tf

    kwargs = {"backbone": FLAGS.backbone, "width": FLAGS.width,
              "sync_batchnorm": sync_bn}
    if spec.class_labels:
        kwargs["num_classes"] = 10
    x, _ = batch
    images = x["images"] if isinstance(x, dict) else x
    if replicas == 1:
        scope = contextlib.nullcontext()
        dataset = tf.data.Dataset.from_tensors(batch).repeat()
    else:
        scope = strategy.scope()
        shards = _shards(batch, replicas)

        def make(_):
            ds = tf.data.Dataset.from_tensors(shards[0])
            for shard in shards[1:]:
                ds = ds.concatenate(tf.data.Dataset.from_tensors(shard))
            return ds.repeat()
        dataset = strategy.distribute_datasets_from_function(make)
    with scope:
        model = spec.build(**kwargs)
        model(images[:2], training=False)
        model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9),
                      jit_compile=jit)
    model.fit(dataset, steps_per_epoch=1, epochs=1, verbose=0, shuffle=False)
    train_function = model.train_function
    iterator = iter(dataset)

    def step():
        return float(train_function(iterator)["loss"])
    loss = step()
    if not np.isfinite(loss):
        raise FloatingPointError(f"loss {loss} after a training step")
    return model, step


def _error_summary(e):
    """The error's type, the first frame of ours it names, and its cause: TensorFlow
    puts the traceback of the traced code first and the underlying error (a line
    "SomethingError: ...") last, possibly followed by the layer's call arguments."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    ours = next((line for line in lines if "ssl_zoo/" in line), None)
    causes = [i for i, line in enumerate(lines) if re.match(r"\w+(Error|Exception): ", line)]
    if causes:
        cause = lines[causes[-1]:]
        cause = cause[:next((i for i, line in enumerate(cause)
                             if line.startswith("Arguments received")), len(cause))]
    else:
        cause = lines[-3:]
    return (f"{type(e).__name__}: " + (f"[{ours}] " if ours else "")
            + " ".join(cause)[:600])


def measure(spec, strategy, batch, jit):
    """Seconds per step of every variant, and the errors of those that failed."""
    half = _shards(batch, 2)[0]
    fns, errors, models = {}, {}, []
    for key, replicas, multiple, sync_bn in VARIANTS:
        # 2 replicas split the global batch 2B; 1 replica takes B or all 2B.
        data = half if replicas * multiple == 1 else batch
        start = time.perf_counter()
        try:
            model, fns[key] = _prepare(spec, strategy, data, replicas, sync_bn, jit)
            models.append(model)
        except Exception as e:  # noqa: BLE001 - recorded, the run goes on
            errors[key] = _error_summary(e)
            print(f"  {key}: FAILED {errors[key]}", flush=True)
            continue
        print(f"  {key}: ready in {time.perf_counter() - start:.0f} s", flush=True)
    seconds = time_interleaved(fns, FLAGS.steps, FLAGS.rounds) if fns else {}
    del models
    return seconds, errors


def ratios(seconds):
    def r(a, b):
        return seconds[a] / seconds[b] if a in seconds and b in seconds else None
    out = {}
    for sync in ("sync_bn", "no_sync_bn"):
        out[f"overhead_{sync}"] = r(f"t2_B_{sync}", "t1_2B")
        out[f"scaling_{sync}"] = r(f"t2_B_{sync}", "t1_B")
    out["sync_bn_cost"] = r("t2_B_sync_bn", "t2_B_no_sync_bn")
    out["t1_2B_over_t1_B"] = r("t1_2B", "t1_B")
    return out


def _fmt(v):
    return "  -  " if v is None else f"{v:5.2f}"


def main(_):
    _split_cpu()
    logging.set_verbosity(logging.WARNING)  # MirroredStrategy logs every reduction
    import gc

    import keras
    import tensorflow as tf

    from ssl_zoo.data import load_arrays
    from ssl_zoo.models import get_method
    from ssl_zoo.utils.io import atomic_write_json

    started = time.perf_counter()
    # One strategy per process: see tests/harness.py::two_cpu_strategy.
    strategy = tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())
    rng = np.random.RandomState(0)
    side = FLAGS.image_size
    data = load_arrays((rng.randint(0, 256, (FLAGS.num_images, side, side, 3),
                                    dtype=np.uint8),
                        rng.randint(0, 10, FLAGS.num_images)), cache_dir=False)
    modes = [("graph", False)] + ([("xla", True)] if FLAGS.xla else [])
    results = {}
    for name in FLAGS.methods:
        spec = get_method(name)
        batch = stream_batch(spec, data, 2 * FLAGS.batch_size, FLAGS.mu)
        results[name] = {"global_batch_shapes": _shapes(batch)}
        for mode, jit in modes:
            print(f"{name} / {mode}", flush=True)
            t0 = time.perf_counter()
            seconds, errors = measure(spec, strategy, batch, jit)
            results[name][mode] = {"jit_compile": jit, "seconds_per_step": seconds,
                                   **ratios(seconds), "errors": errors,
                                   "wall_seconds": time.perf_counter() - t0}
            gc.collect()
    total = time.perf_counter() - started
    result = {
        "what": "training-step time, 2 replicas at per-replica batch B vs 1 replica "
                "at 2B (overhead) and at B (scaling), 2 logical CPUs on shared cores",
        "goal_overhead": FLAGS.goal,
        "settings": {"methods": FLAGS.methods, "backbone": FLAGS.backbone,
                     "width": FLAGS.width, "per_replica_batch": FLAGS.batch_size,
                     "mu_daso": FLAGS.mu, "num_images": FLAGS.num_images,
                     "image_size": FLAGS.image_size, "steps": FLAGS.steps,
                     "rounds": FLAGS.rounds, "xla": FLAGS.xla,
                     "optimizer": "SGD(0.01, momentum=0.9)",
                     "strategy": "MirroredStrategy(['/cpu:0', '/cpu:1'], "
                                 "cross_device_ops=ReductionToOneDevice())",
                     "timed_call": "model.train_function(iterator), one step"},
        "results": results,
        "total_wall_seconds": total,
        "tensorflow": tf.__version__, "keras": keras.__version__,
        "cpu_count": os.cpu_count()}
    atomic_write_json(FLAGS.out, result)

    print(f"\noverhead = t2(B)/t1(2B) (goal <= {FLAGS.goal}); scaling = t2(B)/t1(B); "
          f"B = {FLAGS.batch_size} per replica")
    print("| method | mode | overhead sync BN | overhead no sync BN | scaling sync BN "
          "| scaling no sync BN | sync BN cost | t1(2B)/t1(B) |")
    print("|---|---|---|---|---|---|---|---|")
    for name, per_mode in results.items():
        for mode, _ in modes:
            row = per_mode[mode]
            print(f"| {name} | {mode} | " + " | ".join(_fmt(row[k]) for k in (
                "overhead_sync_bn", "overhead_no_sync_bn", "scaling_sync_bn",
                "scaling_no_sync_bn", "sync_bn_cost", "t1_2B_over_t1_B")) + " |")
    for name, per_mode in results.items():
        for mode, _ in modes:
            for key, err in per_mode[mode]["errors"].items():
                print(f"failed: {name} {mode} {key}: {err}")
    print(f"\ntotal {total / 60:.1f} min; wrote {FLAGS.out}")
    print(json.dumps({n: {m: r[m]["seconds_per_step"] for m, _ in modes}
                      for n, r in results.items()}, indent=1))


if __name__ == "__main__":
    app.run(main)
