"""FixMatch vs DASO on CIFAR-10-LT (gamma = 100), consistent and reversed unlabeled
distributions, at a reduced CPU budget; and the DASO / FixMatch step-time ratio.

Real CIFAR-10 from ../shared/data. Each run trains with `ssl_zoo.training` (the
authors' recipe: SGD momentum 0.9 Nesterov, constant lr 0.03, coupled L2 5e-4, EMA
0.999 model evaluated every `--eval_every` steps) and reports the median of the last
20 evaluations (the DASO protocol) and the best (the USB protocol). Every run keeps its
state under --work_dir (resumable: rerun the same command) and the results file is
rewritten after each run.

    python benchmarks/daso.py                   # documented budget (about 65 min, 2 CPU cores)
    python benchmarks/daso.py --quick           # a couple of minutes
    python benchmarks/daso.py --skip_accuracy   # speed ratio only
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

flags.DEFINE_string("data", os.path.join(_REPO, "..", "shared", "data", "cifar10-jpeg.zip"),
                    "CIFAR-10 archive or folder.")
flags.DEFINE_string("backbone", "resnet32_cifar", "Backbone (the papers: wrn28_2).")
flags.DEFINE_float("width", 0.5, "Backbone width multiplier.")
flags.DEFINE_integer("steps", 2000, "Training steps per run (the papers: 250k).")
flags.DEFINE_integer("batch_size", 32, "Labeled batch (the papers: 64).")
flags.DEFINE_integer("mu", 2, "Unlabeled images per labeled image (DASO code: 2).")
flags.DEFINE_integer("num_labeled_head", 500, "N_1.")
flags.DEFINE_integer("num_unlabeled_head", 4000, "M_1.")
flags.DEFINE_float("imbalance_ratio", 100.0, "gamma.")
flags.DEFINE_integer("eval_every", 50, "Evaluate the EMA model every N steps.")
flags.DEFINE_integer("eval_keep", 10, "Median over the last N evaluations (the "
                     "papers: the last 20, every 500 of 250k steps = the last "
                     "4%; here the last 25%).")
flags.DEFINE_float("warmup_fraction", 0.02, "DASO warm-up as a fraction of the steps "
                   "(the paper: 5k of 250k = 2%); at least one count window.")
flags.DEFINE_integer("test_examples", 5000, "Evaluate on a seeded random test "
                     "subset (the same for every run).")
flags.DEFINE_list("settings", ["consistent", "reversed"], "Unlabeled distributions.")
flags.DEFINE_list("methods", ["fixmatch", "daso"], "Methods.")
flags.DEFINE_string("strong", "strong_daso", "Strong view for both methods.")
flags.DEFINE_integer("speed_steps", 5, "Timed steps per speed measurement.")
flags.DEFINE_string("jit", "both", "Speed: graph | xla | both.")
flags.DEFINE_bool("skip_accuracy", False, "Only measure the step-time ratio.")
flags.DEFINE_bool("skip_speed", False, "Only train.")
flags.DEFINE_bool("quick", False, "Tiny budget for a smoke run.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("work_dir", os.path.join(_REPO, "runs", "daso_benchmark"),
                    "Per-run model_dir (resumable).")
flags.DEFINE_string("out", os.path.join(_REPO, "benchmarks", "results", "daso.json"),
                    "JSON output.")
FLAGS = flags.FLAGS

# DASO's T_dist for CIFAR-10 (configs/cifar10/fixmatch_daso.yaml): 1.5 when the labeled
# and unlabeled imbalance agree, 0.3 otherwise.
DIST_TEMPERATURE = {"consistent": 1.5, "uniform": 0.3, "reversed": 0.3}
TAIL = 3   # the tail classes reported: the last three (fewest labels)


def run_one(method, setting):
    from ssl_zoo.training import TrainConfig, train_and_evaluate
    warmup = max(100, int(FLAGS.warmup_fraction * FLAGS.steps))
    method_kwargs = {}
    if method == "daso":
        method_kwargs = {"dist_temperature": DIST_TEMPERATURE[setting],
                         "warmup_steps": warmup, "count_window": 100}
    cfg = TrainConfig(
        method=method, dataset=FLAGS.data, backbone=FLAGS.backbone, width=FLAGS.width,
        batch_size=FLAGS.batch_size, epochs=FLAGS.steps // FLAGS.eval_every,
        steps_per_epoch=FLAGS.eval_every, eval_every=FLAGS.eval_every,
        eval_keep=FLAGS.eval_keep, max_test_examples=FLAGS.test_examples,
        augment="weak", seed=FLAGS.seed, verbose=2, method_kwargs=method_kwargs,
        data_kwargs={"num_labeled_head": FLAGS.num_labeled_head,
                     "num_unlabeled_head": FLAGS.num_unlabeled_head,
                     "imbalance_ratio": FLAGS.imbalance_ratio,
                     "unlabeled_distribution": setting, "mu": FLAGS.mu,
                     "strong": FLAGS.strong},
        model_dir=os.path.join(FLAGS.work_dir, f"{method}_{setting}"))
    out = train_and_evaluate(cfg, log=lambda s: print("  " + s, flush=True))
    m, details = out["metrics"], out["details"]
    last = details["periodic_evaluations"][-FLAGS.eval_keep:]
    recall = np.median(np.array([row["recall_per_class"] for row in last], float), axis=0)
    row = {k: m[k] for k in m if k.startswith(("median", "best", "accuracy",
                                                 "balanced_accuracy", "few_shot",
                                                 "mask_rate"))}
    row.update({
        "median_per_class_recall": [round(float(r), 4) for r in recall],
        "median_tail_recall": float(recall[-TAIL:].mean()),
        "final_recall_per_class": details.get("recall_per_class"),
        "pseudo_labels": details.get("pseudo_label"),
        "linear_pseudo_labels": details.get("linear_pseudo_label"),
        "semantic_pseudo_labels": details.get("semantic_pseudo_label"),
        "curve": [{k: r[k] for k in ("step", "accuracy", "balanced_accuracy")}
                  for r in details["periodic_evaluations"]],
        "seconds": out["seconds"], "warmup_steps": warmup if method == "daso" else None,
    })
    return row


def speed(jit):
    import keras
    import tensorflow as tf
    from ssl_zoo.models import DASOModel, FixMatchModel
    rng = np.random.default_rng(0)
    b, size = FLAGS.batch_size, 32
    x = {"images": rng.integers(0, 256, (b, size, size, 3)).astype("float32"),
         "unlabeled_weak": rng.integers(0, 256, (FLAGS.mu * b, size, size, 3)).astype(
             "float32"),
         "unlabeled_strong": rng.integers(0, 256, (FLAGS.mu * b, size, size, 3)).astype(
             "float32")}
    y = np.arange(b) % 10
    models = {}
    for name, cls, kw in (("fixmatch", FixMatchModel, {}),
                          ("daso", DASOModel, {"warmup_steps": 0, "count_window": 1})):
        keras.utils.set_random_seed(0)
        model = cls(FLAGS.backbone, 10, width=FLAGS.width, **kw)
        model.compile(optimizer=keras.optimizers.SGD(0.03, momentum=0.9, nesterov=True),
                      jit_compile=jit)
        models[name] = model
    data = {k: tf.constant(v) for k, v in x.items()}, tf.constant(y)
    t = time_interleaved({n: (lambda m=m: m.train_on_batch(*data)) for n, m in
                          models.items()}, FLAGS.speed_steps)
    return {"jit_compile": jit, "labeled_batch": b, "mu": FLAGS.mu,
            "backbone": FLAGS.backbone, "width": FLAGS.width,
            "fixmatch_step_s": t["fixmatch"], "daso_step_s": t["daso"],
            "daso_over_fixmatch": t["daso"] / t["fixmatch"]}


def main(_):
    from ssl_zoo.utils.io import atomic_write_json
    if FLAGS.quick:
        FLAGS.steps, FLAGS.eval_every, FLAGS.eval_keep = 40, 20, 2
        FLAGS.width, FLAGS.test_examples, FLAGS.speed_steps = 0.25, 500, 2
        FLAGS.work_dir = os.path.join(FLAGS.work_dir, "quick")
        FLAGS.out = FLAGS.out.replace(".json", "_quick.json")
    result = {}
    if os.path.exists(FLAGS.out):   # keep finished runs (the script is resumable)
        with open(FLAGS.out, encoding="utf-8") as f:
            result = json.load(f)
    result["config"] = {k: FLAGS[k].value for k in (
        "backbone", "width", "steps", "batch_size", "mu", "num_labeled_head",
        "num_unlabeled_head", "imbalance_ratio", "eval_every", "eval_keep",
        "warmup_fraction", "test_examples", "strong", "seed")}
    if not FLAGS.skip_speed:
        jits = {"graph": [False], "xla": [True], "both": [False, True]}[FLAGS.jit]
        result["speed"] = [speed(j) for j in jits]
        for s in result["speed"]:
            print(f"speed (jit_compile={s['jit_compile']}): DASO step / FixMatch step = "
                  f"{s['daso_over_fixmatch']:.3f} ({s['daso_step_s']:.3f} s / "
                  f"{s['fixmatch_step_s']:.3f} s)", flush=True)
        atomic_write_json(FLAGS.out, result)
    if not FLAGS.skip_accuracy:
        if not os.path.exists(FLAGS.data):
            sys.exit(f"CIFAR-10 not found at {FLAGS.data}; pass --data.")
        runs = result.setdefault("runs", {})
        for setting in FLAGS.settings:
            for method in FLAGS.methods:
                key = f"{method}_{setting}"
                if key in runs:
                    print(f"{key}: done already (delete it from {FLAGS.out} to rerun)")
                    continue
                print(f"== {key}", flush=True)
                runs[key] = run_one(method, setting)
                atomic_write_json(FLAGS.out, result)
        print(f"\n| setting | method | acc (median {FLAGS.eval_keep}) | bal. acc (median) "
              f"| tail recall (median) | acc (best) |\n|---|---|---|---|---|---|")
        for key, r in runs.items():
            method, setting = key.split("_", 1)
            keep = FLAGS.eval_keep
            print(f"| {setting} | {method} | {100 * r[f'median{keep}_accuracy']:.2f} | "
                  f"{100 * r[f'median{keep}_balanced_accuracy']:.2f} | "
                  f"{100 * r['median_tail_recall']:.2f} | {100 * r['best_accuracy']:.2f} |")
    atomic_write_json(FLAGS.out, result)
    print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
