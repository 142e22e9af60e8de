"""SupCon benchmark: cross-entropy vs SimCLR vs SupCon on real CIFAR-10, and the loss's
cost (time share of a training step, memory).

Protocol (the authors' settings at a CPU budget): the same backbone, training subset,
batch and seed for every method; SGD momentum 0.9 without Nesterov, weight decay 1e-4
as PyTorch applies it (coupled L2), cosine decay, and -- as the authors' code does for
batches above 256 -- a 10-epoch linear warm-up; learning rates are the README commands'
at batch 1024 (CE 0.8, SupCon and SimCLR 0.5) scaled linearly to `--batch_size`;
temperature 0.1 for SupCon and 0.5 for SimCLR (the README's). CE trains on flip +
zero-padded crops, SimCLR/SupCon on two SupCon views (resized crop 0.2-1, flip, colour
jitter p=0.8, grey p=0.2). Every method is scored by a linear probe on frozen features
(CE also end to end). Each run lives in `--model_dir/<method>` with step backups: a
killed benchmark resumes, a finished run is read back. Writes
benchmarks/results/supcon.json (atomically, after each run) with the per-epoch
training curves, and prints markdown tables. The methods that file already holds under
the same protocol are kept, not retrained (the file carries them across sessions;
`--rerun` runs the selected methods again). The earlier protocol's figures (width 0.25,
5 epochs, before the authors' optimizer) are in benchmarks/results/supcon_earlier.json.

    python benchmarks/supcon.py                  # the documented protocol (hours)
    python benchmarks/supcon.py --quick          # minutes (writes to runs/quick)
    python benchmarks/supcon.py --skip_accuracy  # speed and memory only
"""

import json
import os
import resource
import subprocess
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
from absl import app, flags  # noqa: E402

_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, _REPO)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from protocol import comparable  # noqa: E402

flags.DEFINE_string("data", os.path.join(_REPO, "..", "shared", "data", "cifar10-jpeg.zip"),
                    "CIFAR-10 archive or folder.")
flags.DEFINE_string("backbone", "resnet32_cifar", "Backbone name (the same for all).")
flags.DEFINE_float("width", 0.5, "Backbone width multiplier.")
flags.DEFINE_integer("epochs", 100, "Training epochs per method.")
flags.DEFINE_integer("train_examples", 10000, "Training subset (a seeded random sample).")
flags.DEFINE_integer("test_examples", 10000, "Test subset.")
flags.DEFINE_integer("batch_size", 512, "Images per batch (contrastive: x2 views).")
flags.DEFINE_integer("warmup_epochs", None, "Linear warm-up epochs (default: the "
                     "authors' rule, 10 when the batch is above 256, else 0).")
flags.DEFINE_float("weight_decay", 1e-4, "Coupled L2 (PyTorch's weight decay).")
flags.DEFINE_integer("probe_epochs", 30, "Linear-probe epochs (on cached features).")
flags.DEFINE_integer("eval_epochs", 10, "Learning curve: the weighted-kNN monitor (k 200, "
                     "T 0.07) of every method's features on the test set every this many "
                     "epochs; 0 for none.")
flags.DEFINE_list("methods", ["ce", "supcon", "simclr"], "Methods to train.")
flags.DEFINE_string("precision", "bfloat16", "float32 | bfloat16 (faster on this CPU).")
flags.DEFINE_string("model_dir", os.path.join(_REPO, "runs", "supcon_protocol"),
                    "Run directories (resumable).")
flags.DEFINE_integer("backup_every", 100, "Steps between backups.")
flags.DEFINE_list("speed_batches", ["256", "512"], "Global batches for the time share.")
flags.DEFINE_list("memory_batches", ["1024", "4096"], "Batches for the loss memory.")
flags.DEFINE_integer("speed_steps", 3, "Timed steps per measurement.")
flags.DEFINE_string("jit", "both", "Loss timing: graph | xla | both.")
flags.DEFINE_bool("skip_accuracy", False, "Only measure speed and memory.")
flags.DEFINE_bool("skip_speed", False, "Only train for accuracy.")
flags.DEFINE_bool("quick", False, "Tiny budget (minutes).")
flags.DEFINE_bool("rerun", False, "Run the selected methods again instead of keeping "
                  "their rows recorded in --out (other recorded methods stay); with --out "
                  "of another protocol, replace its accuracy rows.")
flags.DEFINE_integer("seed", 0, "Seed.")
flags.DEFINE_string("out", os.path.join(_REPO, "benchmarks", "results", "supcon.json"),
                    "JSON output.")
FLAGS = flags.FLAGS

PROJECTION_DIM = 128
# The authors' README commands (batch 1024): lr and temperature per method.
AUTHORS = {"ce": {"learning_rate": 0.8}, "supcon": {"learning_rate": 0.5,
                                                     "temperature": 0.1},
           "simclr": {"learning_rate": 0.5, "temperature": 0.5}}
REGISTRY = {"ce": "supervised", "supcon": "supcon", "simclr": "simclr"}


# ------------------------------------------------------------------ accuracy
def steps_per_epoch():
    """Training steps per epoch of the trainer under the protocol."""
    from ssl_zoo.training import steps_per_epoch as trainer_steps
    return trainer_steps(FLAGS.train_examples, FLAGS.batch_size)


def method_config(method):
    """The `TrainConfig` of one method under the protocol."""
    from ssl_zoo.training import TrainConfig
    steps = steps_per_epoch()
    warm = FLAGS.warmup_epochs
    if warm is None:
        warm = 10 if FLAGS.batch_size > 256 else 0
    authors = AUTHORS[method]
    kwargs = {} if method == "ce" else {"projection_dim": PROJECTION_DIM,
                                        "temperature": authors["temperature"]}
    return TrainConfig(
        method=REGISTRY[method], dataset=FLAGS.data, backbone=FLAGS.backbone,
        width=FLAGS.width, epochs=FLAGS.epochs, batch_size=FLAGS.batch_size,
        max_train_examples=FLAGS.train_examples, max_test_examples=FLAGS.test_examples,
        learning_rate=authors["learning_rate"] * FLAGS.batch_size / 1024, momentum=0.9,
        nesterov=False, weight_decay=FLAGS.weight_decay, weight_decay_mode="coupled",
        schedule="cosine", warmup_steps=min(warm, FLAGS.epochs) * steps,
        augment="auto", mixed_precision=FLAGS.precision, seed=FLAGS.seed, verbose=2,
        backup_every=FLAGS.backup_every, method_kwargs=kwargs,
        # the same monitor for all three (CE's own predictions are scored at the end)
        eval_every=FLAGS.eval_epochs * steps or None, eval_protocol="knn", eval_keep=1,
        model_dir=os.path.join(FLAGS.model_dir, method))


def train_method(method, train, test):
    """Trains one method (or reads its finished run back); its metrics and curves."""
    from ssl_zoo.evaluation import linear_probe
    from ssl_zoo.training import train_and_evaluate
    cfg = method_config(method)
    out = train_and_evaluate(cfg, log=lambda s: print("  " + s, flush=True))
    model, metrics = out["model"], out["metrics"]
    steps = steps_per_epoch()
    # "seconds": training wall time over all resumptions (kNN monitor included)
    row = {"seconds": float(out["train_seconds"] or out["seconds"]),
           "learning_rate": cfg.learning_rate, "warmup_steps": cfg.warmup_steps,
           "steps_per_epoch": steps,
           "train_curve": {k: [float(v) for v in vals]
                           for k, vals in out["history"].items()},
           "test_curve": [{"epoch": e["step"] / steps, "knn_accuracy": e["knn_accuracy"]}
                          for e in out["details"].get("periodic_evaluations", [])],
           "final_train_loss": float(out["history"]["loss"][-1])}
    if method == "ce":
        row["end_to_end_top1"] = float(metrics["accuracy"])
        probe = linear_probe(model, train, test, train.info.num_classes,
                             epochs=FLAGS.probe_epochs, batch_size=256,
                             learning_rate=1e-2, seed=FLAGS.seed)
        row.update(probe_top1=probe["top1"], probe_train_top1=probe["train_top1"])
    else:   # the registry's evaluator: the same linear probe
        row.update(probe_top1=float(metrics["linear_probe_accuracy"]),
                   probe_train_top1=float(metrics.get("linear_probe_train_accuracy",
                                                      float("nan"))))
    row["feature_dim"] = int(model.feature_dim)
    return row


def accuracy_runs(result):
    from ssl_zoo.training import TrainConfig, load_data
    from ssl_zoo.utils.io import atomic_write_json
    if not os.path.exists(FLAGS.data):
        sys.exit(f"CIFAR-10 not found at {FLAGS.data}; pass --data.")
    train, test = load_data(TrainConfig(
        dataset=FLAGS.data, max_train_examples=FLAGS.train_examples,
        max_test_examples=FLAGS.test_examples, seed=FLAGS.seed))
    print(f"data: {len(train.labels)} train / {len(test.labels)} test images "
          f"{train.images.shape[1:]}", flush=True)
    rows = result.setdefault("accuracy", {})
    for method in FLAGS.methods:
        if method in rows and not FLAGS.rerun:
            print(f"{method}: recorded in {FLAGS.out}, kept (--rerun runs it again)",
                  flush=True)
            continue
        rows[method] = train_method(method, train, test)
        print(f"{method}: probe {100 * rows[method]['probe_top1']:.2f} "
              f"({rows[method]['seconds']:.0f} s)", flush=True)
        _order(result)
        atomic_write_json(FLAGS.out, result)
    _order(result)
    return rows


def _order(result):
    rows = result["accuracy"]
    names = {"ce": "CE", "simclr": "SimCLR", "supcon": "SupCon"}
    result["ordering"] = " > ".join(
        names.get(k, k) for k in sorted(rows, key=lambda k: -rows[k]["probe_top1"]))


# What makes two accuracy rows comparable: a results file holds one protocol's rows.
PROTOCOL_KEYS = ("backbone", "width", "epochs", "train_examples", "test_examples",
                 "batch_size", "warmup_epochs", "weight_decay", "probe_epochs",
                 "precision", "seed")


def recorded_results(path, protocol, rerun=False):
    """What `path` already holds, to be kept by this run: its accuracy rows when they
    were trained under `protocol` (the values of PROTOCOL_KEYS; rows of another
    protocol are a named error, or dropped with `rerun`), and its speed and memory
    figures.

    The JSON carries finished runs across sessions and machines (`--model_dir` is a
    scratch directory): a rerun trains only the methods the file does not hold.

    >>> import json, tempfile
    >>> path = tempfile.mkstemp(suffix=".json")[1]
    >>> protocol = {k: 1 for k in PROTOCOL_KEYS}
    >>> _ = open(path, "w").write(json.dumps({"config": protocol, "speed": [],
    ...                                       "accuracy": {"ce": {"probe_top1": 0.5}}}))
    >>> sorted(recorded_results(path, protocol).items())
    [('accuracy', {'ce': {'probe_top1': 0.5}}), ('speed', [])]
    >>> recorded_results(path, dict(protocol, epochs=2))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: ... holds accuracy rows of another protocol (epochs 1, here 2): pass another --out, or --rerun to replace them
    """
    if not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as f:
        old = json.load(f)
    kept = {k: old[k] for k in ("speed", "memory") if k in old}
    if old.get("accuracy") and comparable(path, old.get("config", {}), protocol, rerun,
                                          what="accuracy rows"):
        kept["accuracy"] = old["accuracy"]
    return kept


# --------------------------------------------------------------------- speed
def _time(fn, steps):
    fn()  # trace / compile
    fn()
    start = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - start) / steps


def loss_seconds(batch, jit, steps):
    """Forward + backward of SupConLoss on given (batch, 2, 128) features."""
    import tensorflow as tf
    from ssl_zoo.losses.supcon import SupConLoss
    rng = np.random.default_rng(0)
    z = tf.Variable(rng.normal(size=(batch, 2, PROJECTION_DIM)).astype("float32"))
    labels = tf.constant(rng.integers(0, 10, batch))
    loss = SupConLoss(AUTHORS["supcon"]["temperature"])

    @tf.function(jit_compile=jit)
    def step():
        with tf.GradientTape() as tape:
            value = loss(labels, z)
        return value, tape.gradient(value, z)

    return _time(lambda: [t.numpy() for t in step()], steps)


def step_seconds(batch, steps):
    """One SupConModel training step (graph mode, Keras' default on CPU)."""
    import keras
    import tensorflow as tf
    from ssl_zoo.models.supcon import SupConModel
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (batch, 2, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, batch)
    keras.utils.set_random_seed(0)
    model = SupConModel(FLAGS.backbone, projection_dim=PROJECTION_DIM, width=FLAGS.width)
    model.compile(optimizer=keras.optimizers.SGD(0.01, momentum=0.9), jit_compile=False)
    data = tf.data.Dataset.from_tensors((x, y)).repeat()
    model.fit(data, steps_per_epoch=2, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(data, steps_per_epoch=steps, epochs=1, verbose=0)
    return (time.perf_counter() - start) / steps


_MEMORY_PROBE = r"""
import os, sys, json
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
sys.path.insert(0, sys.argv[1])
import numpy as np, tensorflow as tf
from ssl_zoo.losses.supcon import SupConLoss
loss = SupConLoss(0.1)
def make(batch):
    rng = np.random.default_rng(0)
    z = tf.Variable(rng.normal(size=(batch, 2, 128)).astype("float32"))
    labels = tf.constant(rng.integers(0, 10, batch))
    @tf.function
    def step():
        with tf.GradientTape() as tape:
            value = loss(labels, z)
        return value, tape.gradient(value, z)
    return step
# Start TensorFlow's runtime (thread pools, oneDNN) on a tiny batch, trace the big
# one, then measure only the big step's execution.
[t.numpy() for t in make(8)()]
step = make(int(sys.argv[2]))
step.get_concrete_function()
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
# ru_maxrss would include the parent's memory (it survives fork + exec); VmHWM is
# this process's own high-water mark, reset here ("5" > clear_refs, Linux >= 4.0).
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
rss_before = status("VmRSS")
out = [t.numpy() for t in step()]
print(json.dumps({"rss_before": rss_before, "peak_after": status("VmHWM"),
                  "finite": bool(np.isfinite(out[0]))}))
"""


def loss_memory(batch):
    """Peak RSS growth of one loss forward+backward, in a fresh process (CPU).

    `tf.config.experimental.get_memory_info` is GPU-only, so on CPU the figure is
    the process's peak resident memory (VmHWM, reset just before) during the step
    minus its resident memory just before (the runtime already started on a tiny
    batch and the step traced); the analytic size of one (2B x 2B) float32 matrix of logits is
    reported beside it.
    """
    proc = subprocess.run([sys.executable, "-c", _MEMORY_PROBE, _REPO, str(batch)],
                          capture_output=True, text=True, check=True)
    m = json.loads(proc.stdout.strip().splitlines()[-1])
    growth = m["peak_after"] - max(m["rss_before"], 0)
    anchors = 2 * batch
    return {"batch": batch, "anchors": anchors,
            "measured_peak_growth_mib": growth / 2 ** 20,
            "logits_matrix_mib": anchors * anchors * 4 / 2 ** 20,
            "peak_growth_in_logits_matrices": growth / (anchors * anchors * 4),
            "finite": m["finite"]}


def speed_runs():
    jits = {"graph": [False], "xla": [True], "both": [False, True]}[FLAGS.jit]
    rows = []
    for batch in (int(b) for b in FLAGS.speed_batches):
        step = step_seconds(batch, FLAGS.speed_steps)
        row = {"global_batch": batch, "views": 2, "step_seconds": step}
        for jit in jits:
            t = loss_seconds(batch, jit, max(FLAGS.speed_steps, 5))
            key = "xla" if jit else "graph"
            row[f"loss_seconds_{key}"] = t
            row[f"loss_share_{key}"] = t / step
        rows.append(row)
        print(f"speed: {row}", flush=True)
    memory = []
    for batch in (int(b) for b in FLAGS.memory_batches):
        memory.append(loss_memory(batch))
        print(f"memory: {memory[-1]}", flush=True)
    return rows, memory


# ---------------------------------------------------------------------- main
def _table(result):
    lines = []
    if "accuracy" in result:
        lines += ["| method | linear-probe top-1 (%) | end-to-end top-1 (%) | "
                  "time (s) |", "|---|---|---|---|"]
        names = {"ce": "Cross-entropy", "simclr": "SimCLR", "supcon": "SupCon"}
        for k, v in result["accuracy"].items():
            e2e = f"{100 * v['end_to_end_top1']:.2f}" if "end_to_end_top1" in v else "-"
            lines.append(f"| {names.get(k, k)} | {100 * v['probe_top1']:.2f} | {e2e} | "
                         f"{v['seconds']:.0f} |")
        lines.append(f"\nmeasured ordering (probe): {result['ordering']}; "
                     f"paper (ResNet-50, CIFAR-10): SupCon 96.0 >= CE 95.0 > SimCLR 93.6")
    lines += ["", "| global batch | step (s) | loss fwd+bwd graph (ms) | share | "
              "loss XLA (ms) | share |", "|---|---|---|---|---|---|"]
    for r in result.get("speed", []):
        g = r.get("loss_seconds_graph"), r.get("loss_share_graph")
        x = r.get("loss_seconds_xla"), r.get("loss_share_xla")

        def fmt(t, s):
            return ("-", "-") if t is None else (f"{1000 * t:.1f}", f"{100 * s:.2f}%")
        lines.append(f"| {r['global_batch']} | {r['step_seconds']:.3f} | "
                     f"{' | '.join(fmt(*g))} | {' | '.join(fmt(*x))} |")
    lines += ["", "| batch (anchors) | peak RSS growth (MiB) | one logits matrix (MiB) | "
              "growth / matrix |", "|---|---|---|---|"]
    for m in result.get("memory", []):
        lines.append(f"| {m['batch']} ({m['anchors']}) | {m['measured_peak_growth_mib']:.0f} "
                     f"| {m['logits_matrix_mib']:.0f} | "
                     f"{m['peak_growth_in_logits_matrices']:.1f} |")
    return "\n".join(lines)


def main(_):
    from ssl_zoo.utils.io import atomic_write_json
    if FLAGS.quick:
        FLAGS.epochs, FLAGS.train_examples, FLAGS.test_examples = 2, 256, 256
        FLAGS.width, FLAGS.batch_size, FLAGS.probe_epochs = 0.125, 64, 5
        FLAGS.warmup_epochs, FLAGS.eval_epochs = 1, 1
        FLAGS.speed_batches, FLAGS.memory_batches = ["64"], ["1024"]
        FLAGS.speed_steps, FLAGS.jit = 2, "graph"
        # a smoke run writes beside its runs, never over the protocol's results
        for name, default in (("out", "supcon.json"), ("model_dir", "supcon_protocol")):
            if FLAGS[name].using_default_value:
                FLAGS[name].value = os.path.join(_REPO, "runs", "quick", default)
    import tensorflow as tf
    start = time.perf_counter()
    result = {
        "device": ", ".join(d.device_type for d in tf.config.list_logical_devices()),
        "cpu_count": os.cpu_count(),
        "config": {k: FLAGS[k].value for k in (
            "backbone", "width", "epochs", "train_examples", "test_examples",
            "batch_size", "warmup_epochs", "weight_decay", "probe_epochs", "precision",
            "seed", "data", "quick", "eval_epochs")},
        "authors_at_batch_1024": AUTHORS,
        "notes": "CPU only. SGD momentum 0.9, coupled L2, cosine with the authors' "
                 "warm-up rule; lr = README lr x batch / 1024. CE uses flip + zero-"
                 "padded crops; SimCLR/SupCon two SupCon views (resized crop 0.2-1, "
                 "flip, colour jitter p=0.8, grey p=0.2). Linear probe: Adam (lr 1e-2, "
                 "batch 256) on standardised cached features, no augmentation.",
    }
    # Kept from an earlier run of the same protocol, replaced by what this run measures.
    result.update(recorded_results(
        FLAGS.out, {k: result["config"][k] for k in PROTOCOL_KEYS}, FLAGS.rerun))
    if not FLAGS.skip_accuracy:
        accuracy_runs(result)
    elif result.get("accuracy"):
        _order(result)
    if not FLAGS.skip_speed:
        result["speed"], result["memory"] = speed_runs()
    result["seconds"] = time.perf_counter() - start
    result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print("\n" + _table(result))
    atomic_write_json(FLAGS.out, result)
    print(f"\nwrote {FLAGS.out} ({result['seconds']:.0f} s)")


if __name__ == "__main__":
    app.run(main)
