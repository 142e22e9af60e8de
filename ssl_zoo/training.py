"""Training plumbing shared by the CLI, the examples and the benchmarks.

`TrainConfig` holds one run's settings; `train_and_evaluate` loads the data, builds
the method's model under the chosen precision and distribution strategy, fits it
with checkpoints that survive interruption, evaluates it and writes the metrics.
"""

import contextlib
import dataclasses
import functools
import importlib.util
import inspect
import json
import os
import shutil
import sys
import time

import keras
import numpy as np
import tensorflow as tf

from ssl_zoo.backup import TrainingBackup, restore_backup, resume_plan
from ssl_zoo.distribute import distribute_global_batches
from ssl_zoo.models.registry import get_method
from ssl_zoo.optimizers import make_optimizer
from ssl_zoo.utils.io import (atomic_path, atomic_write_json, directory_lock,
                              load_model_file)

STRATEGIES = ("default", "mirrored", "multiworker")


@dataclasses.dataclass
class TrainConfig:
    """Settings of one training run (most fields are `ssl-zoo train` flags of the same
    name; momentum, nesterov, warmup_steps and verbose are Python-only, and the CLI's
    own defaults for width / epochs / batch_size are 0.5 / 8 / 64).

    Example:
    >>> cfg = TrainConfig(method="sla", dataset="digits", epochs=1)
    >>> cfg.backbone is None  # the method's backbone (`resolve_backbone`)
    True
    """

    method: str = "sla"
    dataset: str = "digits"
    data_dir: str = None
    image_size: int = None
    train_split: str = "train"
    test_split: str = "test"
    max_train_examples: int = None
    max_test_examples: int = None
    backbone: str = None              # None: the method's (`resolve_backbone`)
    width: float = 1.0
    epochs: int = 10
    steps_per_epoch: int = None
    batch_size: int = 128
    # Optimizer recipe: None = the method's recipe, else DEFAULT_RECIPE.
    learning_rate: float = None
    momentum: float = None
    nesterov: bool = None
    weight_decay: float = None
    weight_decay_mode: str = None
    schedule: str = None
    warmup_steps: int = None
    augment: str = "auto"
    mixed_precision: object = False   # False | True (float16) | 'bfloat16'
    jit_compile: object = "auto"
    strategy: str = "default"
    model_dir: str = None
    backup_every: int = None          # steps between backups (None: each epoch end)
    cache_dir: str = None
    seed: int = 0
    verbose: object = "auto"
    eval_every: int = None
    eval_keep: int = 20
    eval_protocol: str = None         # None: "direct" for classifiers, "knn" for encoders
    method_kwargs: dict = dataclasses.field(default_factory=dict)
    data_kwargs: dict = dataclasses.field(default_factory=dict)


def get_strategy(name):
    """'default' | 'mirrored' (all local devices) | 'multiworker' (TF_CONFIG)."""
    if name == "default":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        return tf.distribute.MirroredStrategy()
    if name == "multiworker":
        return tf.distribute.MultiWorkerMirroredStrategy()
    raise ValueError(f"Unknown strategy {name!r}; choose one of {STRATEGIES}.")


def parse_jit_compile(value):
    """Maps 'auto'/'true'/'false' (or bools) to Keras' jit_compile argument."""
    if isinstance(value, bool) or value == "auto":
        return value
    text = str(value).lower()
    if text in ("true", "1", "yes", "xla"):
        return True
    if text in ("false", "0", "no", "graph"):
        return False
    if text == "auto":
        return "auto"
    raise ValueError(f"jit_compile must be auto, true or false; got {value!r}.")


# The optimizer recipe when neither the method (`MethodSpec.recipe`) nor the caller
# sets a field: SGD, momentum 0.9 Nesterov, decoupled decay 1e-4, cosine (the
# milestone-1 settings the shipped SLA/SupCon figures were measured with).
DEFAULT_RECIPE = {"learning_rate": 0.1, "momentum": 0.9, "nesterov": True,
                  "weight_decay": 1e-4, "weight_decay_mode": "decoupled",
                  "schedule": "cosine", "warmup_steps": 0}


def resolve_backbone(cfg, spec):
    """The backbone of a run: `cfg.backbone`, else the method's
    (`MethodSpec.default_backbone`: its model class's constructor default unless the
    spec names another).

    Example:
    >>> from ssl_zoo.models import get_method
    >>> resolve_backbone(TrainConfig(), get_method("sla"))  # the authors' option-A net
    'resnet32_cifar_a'
    >>> resolve_backbone(TrainConfig(backbone="wrn28_2"), get_method("sla"))
    'wrn28_2'
    """
    return cfg.backbone or spec.default_backbone


def steps_per_epoch(num_examples, batch_size):
    """Training steps in an epoch of `num_examples` images at `batch_size`: the
    trainer drops a last partial batch, and trains at least one step.

    Example:
    >>> steps_per_epoch(50000, 512)
    97
    >>> steps_per_epoch(100, 512)
    1
    """
    return max(1, num_examples // batch_size)


def resolve_recipe(cfg, spec):
    """The optimizer settings of a run: defaults < the method's recipe < `cfg` fields
    that are set (not None).

    Example:
    >>> from ssl_zoo.models import get_method
    >>> resolve_recipe(TrainConfig(learning_rate=0.5), get_method("sla"))["learning_rate"]
    0.5
    """
    explicit = {k: getattr(cfg, k) for k in DEFAULT_RECIPE if getattr(cfg, k) is not None}
    return {**DEFAULT_RECIPE, **spec.recipe, **explicit}


class AtomicModelCheckpoint(keras.callbacks.Callback):
    """Saves the whole model at each epoch end; the file is replaced atomically."""

    def __init__(self, path):
        super().__init__()
        self.path = path

    def on_epoch_end(self, epoch, logs=None):
        check_finite_weights(self.model, f"the end of epoch {epoch + 1}")
        save_model_atomic(self.model, self.path)


class NonFiniteError(FloatingPointError):
    """A loss or a weight became NaN/Inf during training."""


def check_finite_weights(model, when):
    """Raises `NonFiniteError` naming the first variable with a NaN/Inf value."""
    for variable in model.variables:
        value = keras.ops.convert_to_numpy(variable.value)
        if np.issubdtype(value.dtype, np.floating) and not np.isfinite(value).all():
            raise NonFiniteError(
                f"{variable.path} holds NaN/Inf at {when}: nothing was saved. Check the "
                f"inputs for NaN/Inf pixels and lower the learning rate.")


class StopOnNonFinite(keras.callbacks.Callback):
    """Stops `fit` at the first step whose logged loss is NaN/Inf, naming the step.

    Runs before the checkpoint callbacks, so no non-finite model is saved: the last
    checkpoint and backup are those of the last finite epoch.
    """

    def on_train_batch_end(self, batch, logs=None):
        loss = (logs or {}).get("loss")
        if loss is not None and not np.isfinite(float(loss)):
            step = int(self.model.optimizer.iterations)
            self.model.stop_training = True
            raise NonFiniteError(
                f"training loss became {float(loss)} at step {step} (batch {batch} of "
                f"this epoch): the stopped run saved nothing non-finite (the last "
                f"checkpoint is the previous epoch's). Check the inputs for NaN/Inf "
                f"pixels and lower the learning rate.")


def save_model_atomic(model, path):
    """`model.save(path)` through `atomic_path`, so a crash never leaves half a file."""
    with atomic_path(path) as tmp:
        model.save(tmp)
    return os.fspath(path)


# Settings an evaluator echoes in its result (kNN's k and temperature): not metrics.
_EVALUATOR_OPTIONS = ("k", "temperature")


class PeriodicEvaluation(keras.callbacks.Callback):
    """Scores the model on test data every `every` training steps (DASO / USB protocol).

    Each evaluation runs the evaluator `protocol` and keeps its scalar metrics:
    "direct" (`ssl_zoo.evaluation.direct_evaluate`: the model's own predictions, e.g.
    the EMA model's for FixMatch/DASO) under their own names, any other registered
    evaluator (e.g. "knn", the weighted-kNN monitor of an encoder's features against
    the training images, for SupCon/SimCLR, which have no classifier) with its name
    as a prefix (`knn_accuracy`).
    `summary()` reports, for each metric, the median of the last `keep` evaluations
    (what the DASO code reports, `keep=20`) and the best (what USB reports).

    Args:
        test: test data ((images, labels) or an `ArrayDataset`).
        num_classes: C.
        every: evaluate every `every` training steps (>= 1).
        keep: evaluations in the median.
        train: the training data: "direct" reads only its labels (the
            many/medium/few-shot groups; None leaves them out), "knn" its images too.
        batch_size: evaluation batch size.
        log: where to print one line per evaluation (None: silent).
        path: a JSON file the evaluations are written to after each one (atomically)
            and read back from when a run resumes.
        protocol: the evaluator's name in `ssl_zoo.evaluation.EVALUATORS`.

    Example:
    >>> callback = PeriodicEvaluation((np.zeros((2, 8, 8, 3)), np.zeros(2)), 2, every=500)
    >>> callback.summary()
    {}
    """

    def __init__(self, test, num_classes, every, keep=20, train=None,
                 batch_size=256, log=None, path=None, protocol="direct"):
        super().__init__()
        from ssl_zoo.evaluation import get_evaluator
        if int(every) < 1 or int(keep) < 1:
            raise ValueError(f"eval_every and eval_keep must be >= 1, got {every} and "
                             f"{keep}.")
        get_evaluator(protocol)   # an unknown name fails here, not after an epoch
        if protocol != "direct" and train is None:
            raise ValueError(f"the {protocol!r} evaluation needs the training data.")
        self.protocol = protocol
        self.test, self.num_classes = test, int(num_classes)
        self.every, self.keep = int(every), int(keep)
        self.train, self.batch_size, self.log = train, batch_size, log
        self.path = path
        self.history = []
        if path and os.path.exists(path):   # a resumed run keeps its evaluations
            with open(path, encoding="utf-8") as f:
                self.history = json.load(f)

    def on_train_begin(self, logs=None):
        # After BackupAndRestore, forget evaluations past the restored step.
        step = int(self.model.optimizer.iterations)
        self.history = [row for row in self.history if row["step"] <= step]

    def on_train_batch_end(self, batch, logs=None):
        step = int(self.model.optimizer.iterations)
        if step % self.every == 0 and (not self.history or self.history[-1]["step"] < step):
            self.evaluate_now(step)

    def evaluate_now(self, step=None):
        from ssl_zoo.evaluation import evaluate
        step = int(self.model.optimizer.iterations) if step is None else step
        result = evaluate(self.protocol, self.model, self.train, self.test,
                          self.num_classes, batch_size=self.batch_size)
        prefix = "" if self.protocol == "direct" else self.protocol + "_"
        row = {"step": step, **{prefix + k: float(v) for k, v in result.items()
                                if isinstance(v, (int, float)) and not isinstance(v, bool)
                                and k not in _EVALUATOR_OPTIONS}}
        row[prefix + "recall_per_class"] = result.get("recall_per_class")
        self.history.append(row)
        if self.path:
            atomic_write_json(self.path, self.history)
        if self.log:
            name = f"{self.protocol} accuracy" if prefix else "accuracy"
            self.log(f"step {step}: {name} {row[prefix + 'accuracy']:.4f}, balanced "
                     f"{row[prefix + 'balanced_accuracy']:.4f}")
        return row

    def summary(self):
        """{"median{keep}_<metric>", "best_<metric>", "evaluations"} of the evaluations."""
        if not self.history:
            return {}
        out = {"evaluations": float(len(self.history))}
        last = self.history[-self.keep:]
        for key, value in self.history[0].items():
            if key == "step" or key.endswith("_classes") or not isinstance(value, float):
                continue
            values = [row[key] for row in last if row.get(key) is not None]
            if values:
                out[f"median{self.keep}_{key}"] = float(np.median(values))
            out[f"best_{key}"] = float(max(row[key] for row in self.history
                                           if row.get(key) is not None))
        return out


class EpochHistory(keras.callbacks.Callback):
    """Every epoch's logs and wall time, kept across the `fit` calls of a run and, with
    a `path`, across its resumptions.

    `fit`'s own history holds only the epochs of one call; a run resumed from a
    backup would lose the curve of the epochs before. With `path`, each epoch's row is
    written (atomically) at its end, and a resumed run reads the rows of the epochs
    finished before its backup (`resume_epoch`) back.

    Args:
        path: a JSON file, or None to keep the rows in memory only.
        resume_epoch: epochs finished before this run (the backup's epoch); rows
            past it, written after the backup, are dropped.

    Example:
    >>> h = EpochHistory()
    >>> h.on_epoch_begin(0); h.on_epoch_end(0, {"loss": 1.5})
    >>> h.history(), h.rows[0]["epoch"]
    ({'loss': [1.5]}, 0)
    """

    def __init__(self, path=None, resume_epoch=0):
        super().__init__()
        self.path, self.rows, self._start = path, [], None
        if path and os.path.exists(path) and resume_epoch:
            with open(path, encoding="utf-8") as f:
                self.rows = [r for r in json.load(f) if r["epoch"] < resume_epoch]

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.time()

    def on_epoch_end(self, epoch, logs=None):
        self.rows.append({"epoch": int(epoch), "seconds": time.time() - self._start,
                          "logs": {k: float(v) for k, v in (logs or {}).items()}})
        if self.path:
            atomic_write_json(self.path, self.rows)

    def history(self):
        """{metric: [value per epoch]}, like `fit(...).history`."""
        out = {}
        for row in self.rows:
            for key, value in row["logs"].items():
                out.setdefault(key, []).append(value)
        return out

    def seconds(self):
        """Training wall time summed over the recorded epochs."""
        return float(sum(row["seconds"] for row in self.rows))


def load_data(cfg):
    """(train ArrayDataset, test ArrayDataset) for the run's data set."""
    from ssl_zoo.data import load_arrays
    kw = dict(data_dir=cfg.data_dir, image_size=cfg.image_size, cache_dir=cfg.cache_dir)
    train = load_arrays(cfg.dataset, split=cfg.train_split, **kw)
    if cfg.image_size is None:
        kw["image_size"] = train.images.shape[1]
    test = load_arrays(cfg.dataset, split=cfg.test_split, **kw)
    train = train.random_subset(cfg.max_train_examples, cfg.seed)
    test = test.random_subset(cfg.max_test_examples, cfg.seed + 1)
    return train, test


def train_view(cfg, spec):
    """The training view: `cfg.augment`, or the method's own view for 'auto'."""
    if cfg.augment == "auto":
        # Flips and shifts of 8x8 digits change what they depict; leave them plain.
        return "none" if cfg.dataset == "digits" and spec.view == "weak" else spec.view
    return cfg.augment


def make_train_stream(spec, train, batch_size, *, view=None, seed=0,
                      return_labeled=False, model=None, skip_batches=0, **data_kwargs):
    """The endless, shuffled training stream a method declares (`spec.stream`).

    Args:
        spec: the method's `MethodSpec`.
        train: an `ssl_zoo.data.ArrayDataset`.
        batch_size: (labeled) batch size.
        view: training view (default: the method's); "model" asks `model` for it.
        seed: shuffle / augmentation seed.
        model: the model being trained; needed when the view is "model"
            (`model.make_view(image_shape, **data_kwargs)`, e.g. Jigsaw puzzles
            with the model's permutation set).
        **data_kwargs: stream options over the method's `spec.data_kwargs`; for a
            labeled stream and for a model-made view, the view's options (e.g.
            `pad_mode="reflect"` for the weak view; a method's own option the chosen
            view does not take is left out, the caller's is an error); for
            "semi_supervised" see
            `semi_supervised_split` and `mu` (unlabeled images per labeled image),
            `strong` (the strong view's name) and `include_unlabeled_labels`
            (held-out truth for pseudo-label metrics).
        return_labeled: also return the labeled training set (for a semi-supervised
            stream its labeled split, which defines the many/medium/few-shot groups).
        skip_batches: start after this many batches (a resumed run): the same stream
            as `.skip(skip_batches)`, without augmenting the batches it skips.

    Returns:
        A `tf.data.Dataset` in the structure `spec.model_class` trains on (and the
        labeled `ArrayDataset` with `return_labeled=True`).

    Example:
    >>> from ssl_zoo.data import load_arrays
    >>> from ssl_zoo.models import get_method
    >>> ds = make_train_stream(get_method("supcon"), load_arrays("digits", "test"), 8)
    >>> tuple(ds.element_spec[0].shape)
    (8, 2, 16, 16, 3)
    """
    from ssl_zoo.data import make_pipeline, make_semi_supervised_pipeline
    view = spec.view if view is None else view
    options = {**spec.data_kwargs, **data_kwargs}
    if isinstance(view, str) and view == "model":
        if model is None or not callable(getattr(model, "make_view", None)):
            raise ValueError(f"The {spec.model_class.__name__} stream is made by the "
                             f"model (view='model'): pass model=<the model>.")
        view = model.make_view(tuple(train.images.shape[1:3]), **options)
        options = {}   # the model's view took them all
    elif spec.stream == "labeled":
        view = _view_with_options(view, spec.data_kwargs, data_kwargs)
    if spec.stream == "labeled":
        ds = make_pipeline(train, batch_size, view=view, num_views=spec.num_views,
                           shuffle=True, seed=seed, drop_remainder=True, repeat=True,
                           skip_batches=skip_batches)
        return (ds, train) if return_labeled else ds
    stream = {k: options.pop(k) for k in ("mu", "strong", "include_unlabeled_labels")
              if k in options}
    labeled, unlabeled = semi_supervised_split(train, seed=seed, **options)
    ds = make_semi_supervised_pipeline(
        labeled, unlabeled, batch_size, mu=stream.get("mu", 7), seed=seed, weak=view,
        strong=stream.get("strong", "strong"),
        include_unlabeled_labels=stream.get("include_unlabeled_labels", False),
        skip_batches=skip_batches)
    return (ds, labeled) if return_labeled else ds


def _view_with_options(view, method_options, options):
    """`view` with its keyword options bound: the method's that the view takes, and
    every one of the caller's (an option the view does not take is a named error)."""
    from ssl_zoo.data.views import resolve_view
    if not method_options and not options:
        return view
    fn, emits_labels = resolve_view(view)
    params = inspect.signature(fn).parameters
    takes_any = any(p.kind is p.VAR_KEYWORD for p in params.values())
    accepted = {k: v for k, v in method_options.items() if takes_any or k in params}
    unknown = sorted(k for k in options if not (takes_any or k in params))
    if unknown:
        name = view if isinstance(view, str) else getattr(fn, "__name__", "view")
        known = sorted(k for k in params if k not in ("image", "images", "seed"))
        raise ValueError(f"Unknown data options {unknown} for the {name!r} view of a "
                         f"labeled stream; it takes {known}.")
    accepted.update(options)
    if not accepted:
        return view
    bound = functools.partial(fn, **accepted)
    bound.emits_labels = emits_labels
    return bound


def semi_supervised_split(train, *, seed=0, labeled_per_class=None, num_labeled_head=None,
                          imbalance_ratio=1.0, num_unlabeled_head=None,
                          unlabeled_distribution="consistent",
                          unlabeled_imbalance_ratio=None):
    """(labeled, unlabeled) `ArrayDataset`s of a labelled training set.

    With `num_labeled_head` (N_1): the long-tailed split of the DASO paper
    (`ssl_zoo.data.long_tailed_semi_supervised_split`: N_k = N_1 gamma^-(k-1)/(K-1)
    labeled, M_k unlabeled from M_1 = `num_unlabeled_head`, consistent / uniform /
    reversed). Else `labeled_per_class` (int or list; default 10% of each class)
    labeled images per class and all the rest unlabeled. The unlabeled set keeps its
    labels, for pseudo-label metrics only.

    Example:
    >>> from ssl_zoo.data import load_arrays
    >>> lab, unl = semi_supervised_split(load_arrays("digits", "train"),
    ...                                  labeled_per_class=5)
    >>> len(lab), len(unl)
    (50, 1388)
    """
    from ssl_zoo.data import labeled_unlabeled_split, long_tailed_semi_supervised_split
    if num_labeled_head is not None:
        labeled, unlabeled = long_tailed_semi_supervised_split(
            train.labels, num_labeled_head, imbalance_ratio,
            num_unlabeled_head=num_unlabeled_head,
            unlabeled_distribution=unlabeled_distribution,
            unlabeled_imbalance_ratio=unlabeled_imbalance_ratio,
            num_classes=train.info.num_classes, seed=seed)
    else:
        if labeled_per_class is None:
            counts = np.bincount(train.labels, minlength=train.info.num_classes)
            labeled_per_class = [max(1, int(c) // 10) for c in counts]
        labeled, unlabeled = labeled_unlabeled_split(train.labels, labeled_per_class,
                                                     seed=seed)
    return train.subset(labeled), train.subset(unlabeled)


def build_model(cfg, info, spec=None, sync_batchnorm=False):
    """Builds the method's model for a data set described by `info` (DatasetInfo).

    `cfg.method_kwargs` win over the run's settings (e.g. `{"sync_batchnorm":
    false}` keeps per-replica batch norm under a mirrored strategy).
    """
    spec = spec or get_method(cfg.method)
    kwargs = dict(backbone=resolve_backbone(cfg, spec), width=cfg.width, mean=info.mean,
                  std=info.std, sync_batchnorm=sync_batchnorm)
    if spec.class_labels:
        kwargs["num_classes"] = info.num_classes
    return spec.build(**{**kwargs, **cfg.method_kwargs})


def train_and_evaluate(cfg, log=print):
    """Trains `cfg.method` on `cfg.dataset` and evaluates it on the test split.

    With `cfg.model_dir`, one run at a time holds the directory (a second raises
    `DirectoryInUseError`; a killed run leaves no stale lock); a run whose training
    finished there is evaluated, not retrained; a NaN/Inf loss stops training with
    `NonFiniteError` naming the step, and nothing non-finite is saved.

    Returns:
        dict with 'metrics' (test metrics, floats), 'details' (per-class results),
        'history' (every epoch's training metrics, those before a resumption
        included), 'model', 'probe' (the trained `LinearProbe` for linear-probe
        methods, else None), 'info', 'seconds' (this call) and 'train_seconds' (the
        training's wall time summed over its epochs, resumptions included; None for
        a run finished before this was recorded).

    Example:
    >>> out = train_and_evaluate(TrainConfig(method="sla", dataset="digits",
    ...                          width=0.25, epochs=1))  # doctest: +SKIP
    >>> sorted(out["metrics"])  # doctest: +SKIP
    ['aggregated_accuracy', 'joint_accuracy', 'loss', 'self_distill_accuracy', ...]
    """
    if int(cfg.epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {cfg.epochs}.")
    if cfg.eval_every is not None and int(cfg.eval_every) < 1:
        raise ValueError(f"eval_every must be >= 1 (or None for no periodic evaluation), "
                         f"got {cfg.eval_every}.")
    if cfg.backup_every is not None and not int(cfg.backup_every) >= 1:
        raise ValueError(f"backup_every must be >= 1 steps (or None: a backup at each "
                         f"epoch end), got {cfg.backup_every}.")
    cfg = dataclasses.replace(cfg, model_dir=worker_model_dir(cfg.model_dir),
                              backbone=resolve_backbone(cfg, get_method(cfg.method)))
    policy = precision_policy(cfg.mixed_precision)
    previous = keras.mixed_precision.global_policy()
    created = bool(cfg.model_dir) and not os.path.exists(cfg.model_dir)
    # The run's policy while its model is built, the caller's again afterwards.
    keras.mixed_precision.set_global_policy(policy)
    try:
        with (directory_lock(cfg.model_dir) if cfg.model_dir
              else contextlib.nullcontext()):
            return _train_and_evaluate(cfg, log)
    except BaseException:
        if created:   # a run that failed before writing anything leaves no directory
            _remove_if_only_locks(cfg.model_dir)
        raise
    finally:
        keras.mixed_precision.set_global_policy(previous)


def _remove_if_only_locks(directory):
    try:
        names = os.listdir(directory)
    except OSError:
        return
    if all(name.startswith(".lock") for name in names):
        for name in names:
            os.remove(os.path.join(directory, name))
        os.rmdir(directory)


PRECISIONS = {False: "float32", True: "mixed_float16", "float32": "float32",
              "float16": "mixed_float16", "mixed_float16": "mixed_float16",
              "bfloat16": "mixed_bfloat16", "mixed_bfloat16": "mixed_bfloat16"}


def precision_policy(mixed_precision):
    """The Keras dtype policy of `TrainConfig.mixed_precision`.

    False / "float32": float32; True / "float16": mixed_float16 (loss scaling, GPUs);
    "bfloat16": mixed_bfloat16 (no loss scaling; CPUs with AVX512_BF16, TPUs, recent
    GPUs).

    Example:
    >>> precision_policy(True), precision_policy("bfloat16")
    ('mixed_float16', 'mixed_bfloat16')
    """
    key = mixed_precision.lower() if isinstance(mixed_precision, str) else mixed_precision
    if key in ("true", "false"):
        key = key == "true"
    if key not in PRECISIONS:
        raise ValueError(f"mixed_precision must be False, True or one of float32, "
                         f"float16, bfloat16; got {mixed_precision!r}.")
    return PRECISIONS[key]


def worker_model_dir(model_dir):
    """Where this process writes a run's files.

    `model_dir` itself, except for a worker other than the chief of a multi-worker
    cluster (`TF_CONFIG`), which writes to `model_dir/workers/<type>-<index>`: every
    worker saves its backups (each restores its own on a restart), and the chief's
    files are the run's. The chief is the `chief` task, or worker 0 of a cluster
    without one.

    Example:
    >>> import json, os
    >>> os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": ["a:1", "b:2"]},
    ...                                       "task": {"type": "worker", "index": 1}})
    >>> worker_model_dir("runs/x")
    'runs/x/workers/worker-1'
    >>> del os.environ["TF_CONFIG"]
    >>> worker_model_dir("runs/x")
    'runs/x'
    """
    config = json.loads(os.environ.get("TF_CONFIG") or "{}")
    task, cluster = config.get("task") or {}, config.get("cluster") or {}
    if not model_dir or not task:
        return model_dir
    kind, index = task.get("type"), int(task.get("index", 0))
    chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in cluster)
    return model_dir if chief else os.path.join(model_dir, "workers", f"{kind}-{index}")


def _train_and_evaluate(cfg, log):
    spec = get_method(cfg.method)
    recipe = resolve_recipe(cfg, spec)
    start = time.time()
    keras.utils.set_random_seed(cfg.seed)
    strategy = get_strategy(cfg.strategy)
    replicas = strategy.num_replicas_in_sync

    train, test = load_data(cfg)
    info = train.info
    log(f"data: {cfg.dataset} train={len(train.labels)} test={len(test.labels)} "
        f"classes={info.num_classes} image={tuple(train.images.shape[1:])}")
    view = train_view(cfg, spec)
    finished = _finished_training(cfg, log)
    if finished is not None:
        # An earlier run trained to the end and failed after (in evaluation, say):
        # evaluate what it trained instead of training again.
        log(f"training finished earlier in {cfg.model_dir}: evaluating its model")
        with strategy.scope():
            model = load_model_file(finished["path"])
        labeled = train
        if spec.stream != "labeled":
            _, labeled = make_train_stream(spec, train, cfg.batch_size, seed=cfg.seed,
                                           return_labeled=True, **cfg.data_kwargs)
        periodic = None   # the evaluations made during training, read back
        if cfg.eval_every:
            periodic = PeriodicEvaluation(
                test, info.num_classes, cfg.eval_every, keep=cfg.eval_keep,
                path=os.path.join(cfg.model_dir, "evaluations.json"))
        return _evaluate_and_save(cfg, spec, recipe, model, labeled, test, info,
                                  finished["history"], finished["training_details"],
                                  periodic, start, finished.get("train_seconds"))
    with strategy.scope():
        model = build_model(cfg, info, spec, sync_batchnorm=replicas > 1)
    # A model may make its own targets (cluster classification: a teacher's k-means
    # clusters); the true labels stay for evaluation.
    prepare = getattr(model, "prepare_training_data", None)
    stream_data = prepare(train, log=log) if callable(prepare) else train
    # One endless shuffled stream; an epoch is `steps` batches, so no epoch runs dry.
    stream = functools.partial(make_train_stream, spec, stream_data, cfg.batch_size,
                               view=view, seed=cfg.seed, model=model, **cfg.data_kwargs)
    train_ds, labeled = stream(return_labeled=True)
    if labeled is stream_data:
        labeled = train
    else:
        counts = np.bincount(labeled.labels, minlength=info.num_classes)
        log(f"labeled split: {len(labeled)} images, per class {counts.tolist()}")
        if cfg.batch_size > len(labeled):
            log(f"the labeled batch ({cfg.batch_size}) is larger than the labeled split "
                f"({len(labeled)} images): each labeled batch repeats images (FixMatch's "
                f"40-label runs do the same)")
    steps = cfg.steps_per_epoch or steps_per_epoch(len(train.labels), cfg.batch_size)

    with strategy.scope():
        # Built up front so a backup can be restored into it.
        model.build(_image_shape(train_ds.element_spec[0], model))
        model.compile(optimizer=make_optimizer(total_steps=steps * cfg.epochs, **recipe),
                      jit_compile=parse_jit_compile(cfg.jit_compile))
        backup_dir = cfg.model_dir and os.path.join(cfg.model_dir, "backup")
        epoch, batch = restore_backup(model, backup_dir, steps) if backup_dir else (0, 0)
    if epoch or batch:
        log(f"resuming from the backup of epoch {epoch}, step {batch} of the next "
            f"({epoch * steps + batch} steps done) in {cfg.model_dir}")

    epoch_history = EpochHistory(cfg.model_dir and os.path.join(cfg.model_dir,
                                                                "history.json"),
                                 resume_epoch=epoch)
    callbacks = [StopOnNonFinite(), epoch_history]
    if cfg.model_dir:
        os.makedirs(cfg.model_dir, exist_ok=True)
        callbacks.append(AtomicModelCheckpoint(os.path.join(cfg.model_dir,
                                                            "checkpoint.keras")))
        if importlib.util.find_spec("tensorboard") is not None:
            callbacks.append(keras.callbacks.TensorBoard(os.path.join(cfg.model_dir, "logs")))
        else:
            log("tensorboard is not installed: no TensorBoard logs "
                "(pip install tensorboard, or ssl_zoo[tensorboard])")
    log(f"training {cfg.method} ({spec.model_class.__name__}, {cfg.backbone} x{cfg.width}) "
        f"for {cfg.epochs} epochs x {steps} steps, batch {cfg.batch_size}, "
        f"{replicas} replica(s), view={view}")
    periodic = None
    if cfg.eval_every:
        periodic = PeriodicEvaluation(test, info.num_classes, cfg.eval_every,
                                      keep=cfg.eval_keep, train=labeled,
                                      batch_size=cfg.batch_size, log=log,
                                      path=cfg.model_dir and os.path.join(
                                          cfg.model_dir, "evaluations.json"),
                                      protocol=periodic_protocol(cfg, spec, model))
        callbacks.append(periodic)
    verbose = cfg.verbose
    if verbose == "auto":  # a live progress bar on a terminal, one line per epoch in logs
        verbose = 1 if sys.stdout.isatty() else 2
    # Each `fit` gets a stream built afresh (a second iterator of the same tf.data
    # shuffle draws another order) that skips the batches consumed before it, by an
    # earlier call or by the run a backup came from: a resumed run sees exactly the
    # batches an uninterrupted one sees. The skip comes before the views, so the
    # skipped batches are not augmented.
    for i, part in enumerate(resume_plan(epoch, batch, cfg.epochs, steps)):
        if i or part["skip"]:
            train_ds = stream(skip_batches=part["skip"])
        part_callbacks = list(callbacks)
        if backup_dir:
            part_callbacks.append(TrainingBackup(
                backup_dir, steps, save_freq=cfg.backup_every or "epoch",
                batch_offset=part["batch_offset"]))
        model.fit(distribute_global_batches(strategy, train_ds),
                  epochs=part["epochs"], initial_epoch=part["initial_epoch"],
                  steps_per_epoch=part["steps_per_epoch"], callbacks=part_callbacks,
                  verbose=verbose, shuffle=False)
    history, train_seconds = epoch_history.history(), epoch_history.seconds()
    # Read before evaluate(), which resets the model's metrics.
    training_details = getattr(model, "training_details", dict)()
    if cfg.model_dir:   # keep what was trained (a rerun evaluates it), then drop the backup
        save_model_atomic(model, os.path.join(cfg.model_dir, "trained.keras"))
        atomic_write_json(os.path.join(cfg.model_dir, "trained.json"), _jsonable({
            "config": dataclasses.asdict(cfg), "history": history,
            "training_details": training_details, "train_seconds": train_seconds}))
        shutil.rmtree(backup_dir, ignore_errors=True)   # the trained model replaces it
    return _evaluate_and_save(cfg, spec, recipe, model, labeled, test, info, history,
                              training_details, periodic, start, train_seconds)


def periodic_protocol(cfg, spec, model):
    """The evaluator of `cfg.eval_every`: `cfg.eval_protocol`, else "direct" (the
    model's own predictions) for a method scored directly, "knn" (its features) for an
    encoder such as SupCon/SimCLR.

    Example:
    >>> from ssl_zoo.models import get_method
    >>> spec = get_method("supcon")
    >>> periodic_protocol(TrainConfig(method="supcon"), spec, spec.model_class(num_classes=2))
    'knn'
    """
    direct = spec.evaluation == "direct" and getattr(model, "has_classifier", False)
    protocol = cfg.eval_protocol or ("direct" if direct else "knn")
    if protocol == "direct" and not direct:
        raise ValueError(f"eval_protocol='direct' scores the model's own predictions; "
                         f"{cfg.method} has none (it is evaluated by "
                         f"{spec.evaluation!r}): use eval_protocol='knn'.")
    return protocol


def _finished_training(cfg, log=None):
    """The record of a training run of the same config finished in `cfg.model_dir`;
    None (and a log line naming the settings that differ) when the model there was
    trained with another config, which this run then replaces."""
    if not cfg.model_dir:
        return None
    path = os.path.join(cfg.model_dir, "trained.keras")
    record = os.path.join(cfg.model_dir, "trained.json")
    if not (os.path.exists(path) and os.path.exists(record)):
        return None
    with open(record, encoding="utf-8") as f:
        done = json.load(f)
    old = _training_fields(done.get("config") or {})
    new = _training_fields(_jsonable(dataclasses.asdict(cfg)))
    # a setting the record lacks (added to TrainConfig since) counts as None, the
    # default of every field added so far
    differ = ", ".join(f"{k}: {old.get(k)!r} there, {new.get(k)!r} here"
                       for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k))
    if differ:
        if log is not None:
            log(f"{cfg.model_dir} holds a model trained with other settings ({differ}): "
                f"training anew")
        return None
    return {**done, "path": path}


# Settings that cannot change what a finished run trained: where it lives and how it
# reported (the same directory given as a relative path is the same run).
_NOT_TRAINING_FIELDS = ("model_dir", "cache_dir", "verbose", "backup_every", "jit_compile")


def _training_fields(config):
    fields = {k: v for k, v in config.items() if k not in _NOT_TRAINING_FIELDS}
    # a data set named by a path is the same whether the path is relative or absolute
    dataset = fields.get("dataset")
    if isinstance(dataset, str) and os.path.exists(dataset):
        fields["dataset"] = os.path.realpath(dataset)
    return fields


def _evaluate_and_save(cfg, spec, recipe, model, labeled, test, info, history,
                       training_details, periodic, start, train_seconds):
    metrics, details = evaluate(model, spec, labeled, test, cfg)
    probe = metrics.pop("probe", None)
    details.update(training_details)
    if periodic is not None:
        metrics.update(periodic.summary())
        details["periodic_evaluations"] = periodic.history
    seconds = time.time() - start
    if cfg.model_dir:
        save_model_atomic(model, os.path.join(cfg.model_dir, "model.keras"))
        atomic_write_json(os.path.join(cfg.model_dir, "metrics.json"), {
            "metrics": {k: float(v) for k, v in metrics.items()},
            "details": details,
            "config": _jsonable(dataclasses.asdict(cfg)),
            "optimizer": recipe,
            "dataset": info.to_dict(),
            "seconds": seconds,
            "train_seconds": train_seconds,
        })
    return {"metrics": metrics, "details": details, "history": history,
            "model": model, "probe": probe, "info": info, "seconds": seconds,
            "train_seconds": train_seconds}


def evaluate(model, spec, train, test, cfg):
    """Test metrics of a trained model by the method's evaluation protocol.

    "direct": `model.evaluate` (every metric the model reports, e.g. SLA's single /
    aggregated / self-distilled accuracies) plus the scalar metrics of
    `ssl_zoo.evaluation.classification_metrics` (balanced accuracy, geometric-mean
    recall, many/medium/few-shot accuracy). Other protocols run the evaluator of that
    name and prefix its metrics with it ("linear_probe_accuracy", "knn_accuracy").

    `train` is the labeled training data (for a linear probe's training and the
    many/medium/few-shot groups); None for "direct" leaves the groups out. A model
    that was never compiled (e.g. a reloaded `LinearProbe`) skips `model.evaluate`.

    Returns:
        (metrics, details): metrics a flat dict of floats (plus "probe", the trained
        `LinearProbe`, for the linear-probe protocol); details the non-scalar results
        (per-class recall and precision, confusion matrix, ...).
    """
    from ssl_zoo.data import make_pipeline
    from ssl_zoo.evaluation import evaluate as run_evaluator
    metrics, details = {}, {}
    prefix = "" if spec.evaluation == "direct" else f"{spec.evaluation}_"
    if spec.evaluation == "direct" and model.compiled:
        test_ds = make_pipeline(test, cfg.batch_size, view="none", shuffle=False)
        metrics.update({k: float(v) for k, v in
                        model.evaluate(test_ds, return_dict=True, verbose=0).items()})
    result = run_evaluator(spec.evaluation, model, train, test, test.info.num_classes,
                           batch_size=cfg.batch_size)
    for key, value in result.items():
        if key == "probe":
            metrics["probe"] = value
        elif isinstance(value, (int, float)) and not isinstance(value, bool) \
                and not key.endswith("_classes"):   # group sizes are details
            metrics.setdefault(prefix + key, float(value))
        else:
            details[prefix + key] = value
    return metrics, details


def _image_shape(spec, model):
    """The image shape a model is built with, from a stream's element spec."""
    if isinstance(spec, dict):
        spec = spec["images"]
    shape = tuple(spec.shape)
    if len(shape) == len(model.default_input_shape()):   # e.g. puzzles (B, 9, t, t, 3)
        return (None,) + shape[1:]
    return (None,) + shape[-3:]   # views (B, V, H, W, 3): built for single images


def _jsonable(obj):
    return json.loads(json.dumps(obj, default=str))


def format_metrics(metrics):
    """A small aligned table of metric name -> value."""
    width = max(len(k) for k in metrics)
    return "\n".join(f"  {k:<{width}}  {v:.4f}" for k, v in sorted(metrics.items()))
