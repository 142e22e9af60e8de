"""SLA protocol: supervised, DA, MT and SLA (single / AG / SD) trained to a plateau, plus speed.

Every method runs with the authors' recipe (the registry's default: SGD 0.1 without
Nesterov, coupled L2 1e-4, lr x0.1 at 50 % and 75 % of training, option-A ResNet-32,
zero-padded crop + flip) on CIFAR-10 subsets from ../shared/data, for each training-set
size and seed (the seed draws the subset, the initialisation and the batches), one run
at a time. Each run lives in `--model_dir/n<size>/seed<seed>/<method>` with step
backups, so a killed benchmark resumes where it stopped and a finished run is read back
(evaluated again, not retrained). After each run the JSON is rewritten with every
finished run: per run the final test metrics on the full test set, the per-epoch
training curves and the test accuracy every `--eval_epochs` epochs; per size the mean
and spread over seeds and SLA's gain over the supervised baseline. The JSON carries the
finished runs across sessions and machines: a later run of the script keeps the runs it
already holds under the same protocol and trains only the missing ones (`--rerun`
runs the selected ones again and keeps the rest; a file of another protocol is
refused by name, or replaced with `--rerun`). An unfinished
run moves with `ssl-zoo pack` / `ssl-zoo unpack` of its run directory.

    python benchmarks/sla.py                       # the documented protocol (hours)
    python benchmarks/sla.py --quick               # minutes: a smoke run (to runs/quick)
    python benchmarks/sla.py --skip_accuracy       # speed ratios only
    python benchmarks/plot_sla.py                  # curves and bar chart -> docs/images

Speed: the SLA step and the plain cross-entropy step of the same network on the same
expanded batch (B x M images), graph and XLA, interleaved in one run; see
`speed_ratios`.
"""

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from plot_sla import accuracy_table  # noqa: E402
from protocol import comparable  # noqa: E402
from sla_rows import METHODS, rows_of, summarise  # noqa: E402
from timing import time_interleaved  # noqa: E402

flags.DEFINE_string("data", os.path.join(_REPO, "..", "shared", "data", "cifar10-jpeg.zip"),
                    "CIFAR-10 archive/folder.")
flags.DEFINE_float("width", 0.5, "ResNet-32 width multiplier.")
flags.DEFINE_integer("epochs", 150, "Epochs per run (the step schedule decays at 50/75 %).")
flags.DEFINE_list("train_sizes", ["2000", "5000"], "Training-subset sizes (in this "
                  "order: every seed and method of one size before the next).")
flags.DEFINE_list("seeds", ["0", "1"], "Seeds (subset, initialisation, batches).")
flags.DEFINE_integer("test_examples", 10000, "Test images (the full CIFAR-10 test set).")
flags.DEFINE_integer("batch_size", 128, "Batch size before the x M expansion (authors: 128).")
flags.DEFINE_integer("eval_epochs", 10, "Test accuracy every this many epochs (curves).")
flags.DEFINE_list("methods", ["supervised", "sla", "da", "mt"], "Methods to train "
                  "(in this order: the baseline and SLA first).")
flags.DEFINE_string("precision", "bfloat16", "float32 | bfloat16 (1.3x faster here).")
flags.DEFINE_string("model_dir", os.path.join(_REPO, "runs", "sla_protocol"),
                    "Where each run keeps its model and backups (resumable).")
flags.DEFINE_integer("backup_every", 100, "Steps between backups.")
flags.DEFINE_integer("speed_batch", 128, "Speed: images per SLA step (x4 expanded).")
flags.DEFINE_integer("speed_steps", 10, "Timed steps per speed measurement.")
flags.DEFINE_bool("skip_accuracy", False, "Only measure speed.")
flags.DEFINE_bool("skip_speed", False, "Only train for accuracy.")
flags.DEFINE_bool("quick", False, "Tiny budget for a smoke run.")
flags.DEFINE_bool("rerun", False, "Run the selected sizes, seeds and methods again "
                  "instead of keeping their results recorded in --out (other recorded runs "
                  "stay); with --out of another protocol, replace that file.")
flags.DEFINE_string("jit", "both", "Speed: graph | xla | both.")
flags.DEFINE_string("out", os.path.join(_REPO, "benchmarks", "results", "sla.json"),
                    "JSON output of the accuracy runs.")
flags.DEFINE_string("speed_out", os.path.join(_REPO, "benchmarks", "results",
                                              "sla_speed.json"),
                    "JSON output of the speed ratios.")
FLAGS = flags.FLAGS

CURVE_KEYS = ("loss", "accuracy", "joint_accuracy", "single_accuracy",
              "aggregated_accuracy", "self_distill_accuracy", "transform_accuracy")


def one_run(method, size, seed, steps_per_epoch):
    from ssl_zoo.training import TrainConfig, train_and_evaluate
    cfg = TrainConfig(
        method=method, dataset=FLAGS.data, width=FLAGS.width, epochs=FLAGS.epochs,
        batch_size=FLAGS.batch_size, max_train_examples=size,
        max_test_examples=FLAGS.test_examples, seed=seed, augment="auto",
        mixed_precision=FLAGS.precision, verbose=2, backup_every=FLAGS.backup_every,
        eval_every=FLAGS.eval_epochs * steps_per_epoch,
        eval_keep=1, model_dir=os.path.join(FLAGS.model_dir, f"n{size}", f"seed{seed}",
                                            method))
    out = train_and_evaluate(cfg, log=lambda s: print("  " + s, flush=True))
    history = {k: [float(v) for v in out["history"][k]] for k in CURVE_KEYS
               if k in out["history"]}
    periodic = [{"step": e.get("step"), **{k: e[k] for k in e if k.endswith("accuracy")}}
                for e in out["details"].get("periodic_evaluations", [])]
    return {"metrics": {k: float(v) for k, v in out["metrics"].items()
                        if isinstance(v, (int, float))},
            "train_curve": history, "test_curve": periodic,
            # training wall time (periodic evaluations included), over resumptions
            "seconds": out["train_seconds"], "steps_per_epoch": steps_per_epoch}


# What makes two runs comparable: a results file holds runs of one protocol only.
PROTOCOL_KEYS = ("width", "epochs", "test_examples", "batch_size", "precision")


def recorded_results(path, protocol, rerun=False):
    """The runs already in `path` ({size: {seed: {method: run}}}) when they were made
    under `protocol` (the values of PROTOCOL_KEYS); a file of another protocol is a
    named error, or replaced (nothing kept) with `rerun`.

    Finished runs are kept across sessions in the JSON itself, not in `--model_dir`
    (a scratch directory another machine may not have): a rerun of the benchmark with
    other sizes or seeds adds its runs to the file and trains only what is missing.

    >>> import json, tempfile
    >>> path = tempfile.mkstemp(suffix=".json")[1]
    >>> protocol = dict(width=0.5, epochs=150, test_examples=10000, batch_size=128,
    ...                 precision="bfloat16")
    >>> _ = open(path, "w").write(json.dumps({"config": protocol,
    ...                                       "runs": {"2000": {"0": {"sla": {}}}}}))
    >>> recorded_results(path, protocol)
    {'2000': {'0': {'sla': {}}}}
    >>> recorded_results(path, dict(protocol, epochs=300))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... holds runs of another protocol (epochs 150, here 300): pass another --out, or --rerun to replace them
    >>> recorded_results(path, dict(protocol, epochs=300), rerun=True)
    {}
    """
    import json
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    if not old.get("runs"):
        return {}
    return old["runs"] if comparable(path, old.get("config", {}), protocol, rerun) else {}


def accuracy_protocol(result):
    from ssl_zoo.training import steps_per_epoch
    from ssl_zoo.utils.io import atomic_write_json
    runs = result.setdefault("runs", {})
    for size in [int(s) for s in FLAGS.train_sizes]:
        steps = steps_per_epoch(size, FLAGS.batch_size)
        for seed in [int(s) for s in FLAGS.seeds]:
            for method in FLAGS.methods:
                if method in runs.get(str(size), {}).get(str(seed), {}) and not FLAGS.rerun:
                    print(f"== {method} n={size} seed={seed}: recorded in {FLAGS.out}, "
                          f"kept (--rerun runs it again)", flush=True)
                    continue
                print(f"== {method} n={size} seed={seed} ({FLAGS.epochs} epochs x "
                      f"{steps} steps)", flush=True)
                run = one_run(method, size, seed, steps)
                runs.setdefault(str(size), {}).setdefault(str(seed), {})[method] = run
                print(f"   {method}: " + ", ".join(
                    f"{row} {100 * run['metrics'][k]:.2f}"
                    for row, k in rows_of(method).items() if k in run["metrics"])
                    + f" ({run['seconds'] or 0:.0f} s)", flush=True)
                _describe_runs(result)
                atomic_write_json(FLAGS.out, result)
    _describe_runs(result)
    return result


def _describe_runs(result):
    """The summary and the sizes, seeds and methods the file holds (over sessions)."""
    runs = result["runs"]
    result["summary"] = summarise(runs)
    result["config"].update(
        train_sizes=sorted(runs, key=int),
        seeds=sorted({s for by_seed in runs.values() for s in by_seed}, key=int),
        methods=[m for m in METHODS if any(
            m in r for by_seed in runs.values() for r in by_seed.values())])


def speed_ratios(jit, width, batch, steps):
    """Seconds per step: SLA (B images -> B x M), CE on the same B x M batch through
    `SupervisedModel`, and a hand-written Keras CE step of the same backbone."""
    import keras
    import tensorflow as tf
    from ssl_zoo import SLAModel, SupervisedModel
    from ssl_zoo.backbones import get_backbone
    from ssl_zoo.optimizers import CoupledSGD
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batch)
    keras.utils.set_random_seed(0)

    def sgd():
        return CoupledSGD(0.1, momentum=0.9, l2=1e-4)

    sla = SLAModel("resnet32_cifar_a", 10, width=width, self_distill=True)
    sla.compile(optimizer=sgd(), jit_compile=jit)
    sup = SupervisedModel("resnet32_cifar_a", 10, width=width)
    sup.compile(optimizer=sgd(), jit_compile=jit)
    m = sla.num_transforms
    x_exp = sla.transformations(x).numpy()
    y_exp = np.repeat(y, m)
    # The plain Keras baseline: backbone + Dense in a functional model, built-in fit step.
    inputs = keras.Input((32, 32, 3))
    feats = get_backbone("resnet32_cifar_a", width=width)(
        keras.layers.Rescaling(1 / 255.0)(inputs))
    plain = keras.Model(inputs, keras.layers.Dense(10)(feats))
    plain.compile(optimizer=sgd(), jit_compile=jit, loss=keras.losses.
                  SparseCategoricalCrossentropy(from_logits=True))

    def infer(model, mode=None):
        kw = {} if mode is None else {"inference": mode}
        f = tf.function(lambda t: model(t, training=False, **kw), jit_compile=jit is True)
        return lambda: f(tf.constant(x)).numpy()

    t = time_interleaved({"sla": lambda: sla.train_on_batch(x, y),
                          "ce": lambda: sup.train_on_batch(x_exp, y_exp),
                          "plain": lambda: plain.train_on_batch(x_exp, y_exp)}, steps)
    t_inf = time_interleaved({"sup": infer(sup), "sd": infer(sla, "self_distill"),
                              "ag": infer(sla, "aggregated")}, steps)
    return {
        "jit_compile": jit, "batch": batch, "expanded_batch": batch * m, "width": width,
        "backbone": "resnet32_cifar_a",
        "sla_step_s": t["sla"], "ce_step_on_expanded_batch_s": t["ce"],
        "plain_keras_ce_step_s": t["plain"],
        "sla_step_over_ce_step": t["sla"] / t["ce"],
        "sla_step_over_plain_keras_step": t["sla"] / t["plain"],
        "library_ce_step_over_plain_keras_step": t["ce"] / t["plain"],
        "sla_train_images_per_s": batch * m / t["sla"],
        "supervised_inference_s": t_inf["sup"], "sla_sd_inference_s": t_inf["sd"],
        "sla_ag_inference_s": t_inf["ag"],
        "sd_inference_over_supervised": t_inf["sd"] / t_inf["sup"],
        "ag_inference_over_supervised": t_inf["ag"] / t_inf["sup"],
    }


def main(_):
    from ssl_zoo.utils.io import atomic_write_json
    if FLAGS.quick:
        FLAGS.epochs, FLAGS.train_sizes, FLAGS.seeds = 2, ["256"], ["0"]
        FLAGS.test_examples, FLAGS.width, FLAGS.speed_steps = 256, 0.25, 3
        FLAGS.batch_size, FLAGS.eval_epochs, FLAGS.speed_batch = 64, 1, 32
        # a smoke run writes beside its runs, never over the protocol's results
        for name, default in (("out", "sla.json"), ("speed_out", "sla_speed.json"),
                              ("model_dir", "sla_protocol")):
            if FLAGS[name].using_default_value:
                FLAGS[name].value = os.path.join(_REPO, "runs", "quick", default)
    import tensorflow as tf
    result = {"device": ", ".join(d.device_type for d in tf.config.list_logical_devices()),
              "config": {k: FLAGS[k].value for k in (
                  "width", "epochs", "train_sizes", "seeds", "test_examples",
                  "batch_size", "precision", "methods", "data")},
              "recipe": "registry default (the authors': SGD 0.1, momentum 0.9, no "
                        "Nesterov, coupled L2 1e-4, x0.1 at 50/75 %, resnet32_cifar_a, "
                        "zero-padded crop + flip)"}
    if not FLAGS.skip_accuracy:   # before the speed runs: a refused file fails at once
        result["runs"] = recorded_results(
            FLAGS.out, {k: result["config"][k] for k in PROTOCOL_KEYS}, FLAGS.rerun)
    jits = {"graph": [False], "xla": [True], "both": [False, True]}[FLAGS.jit]
    if not FLAGS.skip_speed:
        speeds = [speed_ratios(j, FLAGS.width, FLAGS.speed_batch, FLAGS.speed_steps)
                  for j in jits]
        for s in speeds:
            print(f"speed (jit_compile={s['jit_compile']}), {s['expanded_batch']}-image "
                  f"batch: SLA step / CE step = {s['sla_step_over_ce_step']:.3f}; SLA / "
                  f"plain Keras step = {s['sla_step_over_plain_keras_step']:.3f}; library "
                  f"CE / plain Keras = {s['library_ce_step_over_plain_keras_step']:.3f}",
                  flush=True)
        atomic_write_json(FLAGS.speed_out, {**result, "speed": speeds})
        print(f"wrote {FLAGS.speed_out}")
    if not FLAGS.skip_accuracy:
        if not os.path.exists(FLAGS.data):
            sys.exit(f"CIFAR-10 not found at {FLAGS.data}; pass --data.")
        accuracy_protocol(result)
        print()
        print("\n".join(accuracy_table(result)))   # docs/sla.md's table, from the JSON
        print(f"wrote {FLAGS.out}")


if __name__ == "__main__":
    app.run(main)
