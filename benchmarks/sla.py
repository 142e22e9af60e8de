"""SLA benchmark: supervised, DA, MT and SLA (single / AG / SD) side by side, plus speed.

One run, same backbone, budget and seed for every method, on the real CIFAR-10 in
../shared/data. Writes the accuracies to benchmarks/results/sla.json and the speed
ratios to benchmarks/results/sla_speed.json (each file only from a run that measured
it, so neither can go stale beside the other), and prints a markdown table.

    python benchmarks/sla.py                      # the documented budget (~40 min on 2 CPU cores)
    python benchmarks/sla.py --quick              # a couple of minutes
    python benchmarks/sla.py --skip_accuracy      # speed ratios only
    python benchmarks/sla.py --skip_speed         # accuracies only
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from timing import time_interleaved  # noqa: E402

flags.DEFINE_string("data", os.path.join(_REPO, "..", "shared", "data", "cifar10-jpeg.zip"),
                    "CIFAR-10 archive/folder.")
flags.DEFINE_float("width", 0.5, "ResNet-32 width multiplier.")
flags.DEFINE_integer("epochs", 5, "Epochs per method.")
flags.DEFINE_integer("train_examples", 10000, "Training subset size.")
flags.DEFINE_integer("test_examples", 10000, "Test subset size.")
flags.DEFINE_integer("batch_size", 64, "Batch size before the x M expansion.")
flags.DEFINE_float("learning_rate", 0.1, "Peak SGD learning rate (cosine).")
flags.DEFINE_list("methods", ["supervised", "da", "mt", "sla"], "Methods to train.")
flags.DEFINE_integer("speed_steps", 10, "Timed steps per speed measurement.")
flags.DEFINE_bool("skip_accuracy", False, "Only measure speed.")
flags.DEFINE_bool("quick", False, "Tiny budget for a smoke run.")
flags.DEFINE_string("jit", "both", "Speed: graph | xla | both.")
flags.DEFINE_string("out", os.path.join(_REPO, "benchmarks", "results", "sla.json"),
                    "JSON output of the accuracy runs.")
flags.DEFINE_string("speed_out", os.path.join(_REPO, "benchmarks", "results",
                                              "sla_speed.json"),
                    "JSON output of the speed ratios.")
flags.DEFINE_bool("skip_speed", False, "Only train for accuracy.")
FLAGS = flags.FLAGS


def accuracy_runs(cfg_kwargs):
    from ssl_zoo.training import TrainConfig, train_and_evaluate
    rows = {}
    for method in FLAGS.methods:
        cfg = TrainConfig(method=method, augment="weak", verbose=2, **cfg_kwargs)
        out = train_and_evaluate(cfg, log=lambda s: print("  " + s, flush=True))
        m = out["metrics"]
        print(f"{method}: {m} ({out['seconds']:.0f} s)", flush=True)
        if method == "sla":
            rows["SLA single"] = m["single_accuracy"]
            rows["SLA+AG"] = m["aggregated_accuracy"]
            if "self_distill_accuracy" in m:
                rows["SLA+SD"] = m["self_distill_accuracy"]
        else:
            rows[{"supervised": "Supervised", "da": "DA", "mt": "MT"}.get(
                method, method)] = m["accuracy"]
        rows[f"_seconds_{method}"] = out["seconds"]
    return rows


def speed(jit, width, batch, size, steps):
    import keras
    import tensorflow as tf
    from ssl_zoo import SLAModel, SupervisedModel
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, size, size, 3)).astype("float32")
    y = rng.integers(0, 10, batch)
    keras.utils.set_random_seed(0)
    sla = SLAModel("resnet32_cifar", 10, width=width, self_distill=True)
    sla.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit)
    sup = SupervisedModel("resnet32_cifar", 10, width=width)
    sup.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=jit)
    m = sla.num_transforms
    x_exp = sla.transformations(x).numpy()
    y_exp = np.repeat(y, m)
    def infer(model, mode=None):
        kw = {} if mode is None else {"inference": mode}
        f = tf.function(lambda t: model(t, training=False, **kw), jit_compile=jit is True)
        return lambda: f(tf.constant(x)).numpy()

    t = time_interleaved({"sla": lambda: sla.train_on_batch(x, y),
                           "ce": lambda: sup.train_on_batch(x_exp, y_exp)}, steps)
    t_sla, t_ce = t["sla"], t["ce"]
    t = time_interleaved({"sup": infer(sup), "sd": infer(sla, "self_distill"),
                           "ag": infer(sla, "aggregated")}, steps)
    t_sup_inf, t_sd_inf, t_ag_inf = t["sup"], t["sd"], t["ag"]
    return {
        "jit_compile": jit, "batch": batch, "expanded_batch": batch * m, "width": width,
        "sla_step_s": t_sla, "ce_step_on_expanded_batch_s": t_ce,
        "sla_step_over_ce_step": t_sla / t_ce,
        "sla_train_images_per_s": batch * m / t_sla,
        "supervised_inference_s": t_sup_inf, "sla_sd_inference_s": t_sd_inf,
        "sla_ag_inference_s": t_ag_inf,
        "sd_inference_over_supervised": t_sd_inf / t_sup_inf,
        "ag_inference_over_supervised": t_ag_inf / t_sup_inf,
    }


def main(_):
    from ssl_zoo.utils.io import atomic_write_json
    if FLAGS.quick:
        FLAGS.epochs, FLAGS.train_examples, FLAGS.test_examples = 1, 512, 512
        FLAGS.width, FLAGS.speed_steps = 0.25, 3
    import tensorflow as tf
    result = {"device": ", ".join(d.device_type for d in tf.config.list_logical_devices()),
              "config": {k: FLAGS[k].value for k in ("width", "epochs", "train_examples",
                                                     "test_examples", "batch_size",
                                                     "learning_rate", "data")}}
    jits = {"graph": [False], "xla": [True], "both": [False, True]}[FLAGS.jit]
    if not FLAGS.skip_speed:
        speeds = [speed(j, FLAGS.width, 128 if not FLAGS.quick else 32, 32,
                        FLAGS.speed_steps) for j in jits]
        for s in speeds:
            print(f"speed (jit_compile={s['jit_compile']}): SLA step / CE step on the "
                  f"same {s['expanded_batch']}-image batch = "
                  f"{s['sla_step_over_ce_step']:.3f}; SD inference / supervised = "
                  f"{s['sd_inference_over_supervised']:.3f}; AG inference / supervised "
                  f"= {s['ag_inference_over_supervised']:.3f}", flush=True)
        atomic_write_json(FLAGS.speed_out, {**result, "speed": speeds})
        print(f"wrote {FLAGS.speed_out}")
    if not FLAGS.skip_accuracy:
        if not os.path.exists(FLAGS.data):
            sys.exit(f"CIFAR-10 not found at {FLAGS.data}; pass --data.")
        result["accuracy"] = accuracy_runs(dict(
            dataset=FLAGS.data, width=FLAGS.width, epochs=FLAGS.epochs,
            batch_size=FLAGS.batch_size, learning_rate=FLAGS.learning_rate,
            max_train_examples=FLAGS.train_examples,
            max_test_examples=FLAGS.test_examples))
        print("\n| method | test top-1 (%) |\n|---|---|")
        for k, v in result["accuracy"].items():
            if not k.startswith("_"):
                print(f"| {k} | {100 * v:.2f} |")
        atomic_write_json(FLAGS.out, result)
        print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
