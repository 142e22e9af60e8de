"""The test battery every ssl_zoo layer, loss and model gets for free.

Plain functions (in the spirit of keras-hub's `TestCase`), usable from any pytest test:

- `assert_close_to_reference`: numpy comparison with a message that says where and by
  how much two arrays differ.
- `run_layer_serialization_test`: `get_config`/`from_config` and
  `keras.layers.serialize`/`deserialize` round trips; outputs match after copying weights.
- `run_object_serialization_test`: the same for non-layer objects (losses, metrics).
- `run_model_saving_test`: `.keras` save/load (safe mode, no custom objects) and
  `save_weights`/`load_weights` into a model rebuilt from its config.
- `run_precision_test`: builds and trains a model under `mixed_float16`.
- `run_replica_parity_test`: one training step on 1 replica and on 2 replicas
  (`MirroredStrategy(["/cpu:0", "/cpu:1"])`, see `tests/conftest.py`) must agree.
- `run_fit_reduces_loss`: a few `fit` steps on one batch lower the training loss.
- `read_doc`: the text of a page in docs/, for tests that hold the docs to the code.
- `cli_flags` / `run_cli`: the `ssl-zoo` CLI's flags parsed for a block, or one command
  run through `cli.main`, in the test process.

Keep inputs tiny: the whole project suite runs on 2 shared CPU cores.
"""

import contextlib
import json
import os

import keras
import numpy as np
import tensorflow as tf

__all__ = ["assert_close_to_reference", "assert_weights_close", "cli_flags",
           "normalized_config", "run_cli",
           "run_fit_reduces_loss", "run_layer_serialization_test",
           "run_model_saving_test", "run_object_serialization_test",
           "read_doc", "run_precision_test", "run_replica_parity_test", "to_numpy",
           "two_cpu_strategy"]


# --------------------------------------------------------------------- helpers
DOCS_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs")


def read_doc(name):
    """The text of docs/<name> (e.g. "sla.md"), for tests that check what the docs quote."""
    with open(os.path.join(DOCS_DIR, name), encoding="utf-8") as f:
        return f.read()


@contextlib.contextmanager
def cli_flags(*args):
    """The `ssl-zoo` CLI's absl flags parsed from `args` for the block (yields the
    positional arguments, e.g. `["ssl-zoo", "train"]`), then reset for the next test."""
    from absl import flags

    import ssl_zoo.cli  # noqa: F401  (defines the flags)
    flags.FLAGS.unparse_flags()
    try:
        yield flags.FLAGS(["ssl-zoo", *args])
    finally:
        flags.FLAGS.unparse_flags()


def run_cli(capsys, *args):
    """`ssl-zoo <args>` through `cli.main` in this process, without a new interpreter
    importing TensorFlow again: (exit code, stdout, stderr)."""
    from ssl_zoo import cli
    capsys.readouterr()
    code = 0
    with cli_flags(*args) as argv:
        try:
            cli.main(argv)
        except SystemExit as e:
            code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def to_numpy(value):
    """Converts a tensor / variable / nested structure of them to numpy arrays."""
    return keras.tree.map_structure(
        lambda v: np.asarray(keras.ops.convert_to_numpy(v)), value)


def normalized_config(config):
    """A config as JSON sees it (tuples become lists), for comparing configs.

    Also fails, with the offending config in the message, when the config is not
    JSON-serialisable, which `.keras` saving needs.
    """
    try:
        return json.loads(json.dumps(config, sort_keys=True))
    except TypeError as e:
        raise AssertionError(f"config is not JSON-serialisable ({e}): {config!r}") from e


def assert_close_to_reference(actual, expected, atol=1e-6, rtol=1e-6, name="value"):
    """`np.testing.assert_allclose` with shapes, dtypes and the worst element reported.

    Args:
        actual: array-like (tensors are converted); the value under test.
        expected: array-like; the reference.
        atol, rtol: tolerances as in `np.allclose` (|a - e| <= atol + rtol * |e|).
        name: what is compared, for the message.
    """
    a = np.asarray(to_numpy(actual))
    e = np.asarray(to_numpy(expected))
    if a.shape != e.shape:
        raise AssertionError(f"{name}: shape {a.shape} != expected shape {e.shape}")
    if a.size == 0:
        return
    a64, e64 = a.astype(np.float64), e.astype(np.float64)
    if not np.all(np.isfinite(a64) == np.isfinite(e64)):
        bad = np.argwhere(np.isfinite(a64) != np.isfinite(e64))[0]
        raise AssertionError(f"{name}: non-finite mismatch at index {tuple(bad)}: "
                             f"actual {a64[tuple(bad)]}, expected {e64[tuple(bad)]}")
    diff = np.abs(a64 - e64)
    allowed = atol + rtol * np.abs(e64)
    diff = np.where(np.isfinite(diff), diff, 0.0)
    if np.all(diff <= allowed):
        return
    worst = np.unravel_index(np.argmax(diff - allowed), diff.shape)
    n_bad = int(np.sum(diff > allowed))
    raise AssertionError(
        f"{name}: {n_bad}/{diff.size} elements differ beyond atol={atol}, rtol={rtol}. "
        f"Worst at index {tuple(int(i) for i in worst)}: actual {a64[worst]!r}, "
        f"expected {e64[worst]!r} (|diff| {diff[worst]:.3g}); max |diff| "
        f"{diff.max():.3g}; shape {a.shape}, dtypes {a.dtype}/{e.dtype}.")


def assert_weights_close(actual_weights, expected_weights, atol=1e-6, rtol=1e-6,
                         names=None, name="weights"):
    """Compares two lists of weight arrays element-wise (same length and order)."""
    actual_weights, expected_weights = list(actual_weights), list(expected_weights)
    if len(actual_weights) != len(expected_weights):
        raise AssertionError(f"{name}: {len(actual_weights)} weights != "
                             f"{len(expected_weights)} expected")
    names = names or [str(i) for i in range(len(actual_weights))]
    for a, e, n in zip(actual_weights, expected_weights, names):
        assert_close_to_reference(a, e, atol=atol, rtol=rtol, name=f"{name}[{n}]")


def two_cpu_strategy():
    """`MirroredStrategy` over the 2 logical CPUs of `tests/conftest.py`.

    It reduces through one device instead of collective ops: a second
    `MirroredStrategy` with collective ops in the same process reuses the collective
    instance keys of the first one and fails with "Shape mismatch in the collective
    instance" as soon as the shapes differ.
    """
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())


def one_batch_dataset(x, y):
    """A dataset of the single batch (x, y); `x` may be a dict of unequal batch sizes."""
    return tf.data.Dataset.from_tensors((x, y))


def batch_size_of(x, y=None):
    """The (labeled) batch size: len(y), else the leading dim of x's first leaf."""
    if y is not None:
        return len(y)
    return len(keras.tree.flatten(x)[0])


def replica_sharded_dataset(strategy, x, y):
    """A distributed dataset giving replica i the i-th contiguous slice of every
    component of the global batch (x, y) — the split `fit` makes of a batched
    dataset, also for dicts whose components have different batch sizes."""
    replicas = strategy.num_replicas_in_sync

    def shard(t, i):
        t = np.asarray(t)
        if len(t) % replicas:
            raise ValueError(f"a batch component of size {len(t)} does not split over "
                             f"{replicas} replicas")
        n = len(t) // replicas
        return t[i * n:(i + 1) * n]

    def make(_):
        parts = [keras.tree.map_structure(lambda t, i=i: shard(t, i), (x, y))
                 for i in range(replicas)]
        ds = tf.data.Dataset.from_tensors(parts[0])
        for part in parts[1:]:
            ds = ds.concatenate(tf.data.Dataset.from_tensors(part))
        return ds

    return strategy.distribute_datasets_from_function(make)


def _call(obj, data, kwargs):
    return obj(data, **(kwargs or {}))


def _weight_names(model):
    return [getattr(v, "path", v.name) for v in model.weights]


# ---------------------------------------------------------------- serialisation
def run_layer_serialization_test(layer, input_data, call_kwargs=None, atol=1e-6,
                                 rtol=1e-6):
    """Config and `keras.layers.serialize` round trips give an equivalent layer.

    Checks that (1) `get_config` is JSON-serialisable, (2) `cls.from_config(config)`
    and (3) `keras.layers.deserialize(keras.layers.serialize(layer))` (through JSON,
    with no custom objects) give a layer of the same class with the same config, and
    (4) after copying the weights the revived layers give the same outputs.

    Args:
        layer: a layer (or a functional/subclassed model) to test.
        input_data: an input batch; the layer is called on it (this builds it).
        call_kwargs: extra keyword arguments of the call (e.g. `training=False`).
        atol, rtol: output tolerance.

    Returns:
        The layer revived by `keras.layers.deserialize`.
    """
    expected = to_numpy(_call(layer, input_data, call_kwargs))
    config = layer.get_config()
    norm = normalized_config(config)

    from_config = type(layer).from_config(config)
    assert type(from_config) is type(layer), (type(from_config), type(layer))
    assert normalized_config(from_config.get_config()) == norm, (
        f"from_config(get_config()) changed the config of {layer.name}:\n"
        f"{from_config.get_config()}\n!=\n{config}")

    serialized = json.loads(json.dumps(keras.layers.serialize(layer)))
    revived = keras.layers.deserialize(serialized)
    assert type(revived) is type(layer), (type(revived), type(layer))
    assert normalized_config(revived.get_config()) == norm, (
        f"serialize/deserialize changed the config of {layer.name}:\n"
        f"{revived.get_config()}\n!=\n{config}")

    for other, how in ((from_config, "from_config"), (revived, "deserialize")):
        _call(other, input_data, call_kwargs)  # builds it
        assert len(other.weights) == len(layer.weights), (
            f"{how}: {len(other.weights)} weights != {len(layer.weights)}")
        other.set_weights(layer.get_weights())
        keras.tree.map_structure(
            lambda a, e: assert_close_to_reference(
                a, e, atol=atol, rtol=rtol, name=f"{how} output of {layer.name}"),
            to_numpy(_call(other, input_data, call_kwargs)), expected)
    return revived


def run_object_serialization_test(obj):
    """`keras.saving.serialize_keras_object` round trip (through JSON) of a loss/metric.

    Returns:
        The revived object (same class, same config).
    """
    config = obj.get_config()
    norm = normalized_config(config)
    assert normalized_config(type(obj).from_config(config).get_config()) == norm
    serialized = json.loads(json.dumps(keras.saving.serialize_keras_object(obj)))
    revived = keras.saving.deserialize_keras_object(serialized)
    assert type(revived) is type(obj), (type(revived), type(obj))
    assert normalized_config(revived.get_config()) == norm, (
        f"{revived.get_config()} != {config}")
    return revived


def run_model_saving_test(model, input_data, tmp_path, call_kwargs=None, atol=1e-6,
                          rtol=1e-6):
    """`.keras` and weights-file round trips reproduce the model exactly.

    1. `model.save("model.keras")`, then `keras.models.load_model(path,
       safe_mode=True)` with no `custom_objects`: same class, same config, every
       weight equal, same outputs on `input_data` (inference mode).
    2. `model.save_weights(...)`, then `load_weights` into a fresh
       `type(model).from_config(model.get_config())`: same weights and outputs.

    Args:
        model: the model; it is called on `input_data` first (which builds it).
        input_data: an input batch.
        tmp_path: a directory (pytest's `tmp_path`).
        call_kwargs: extra call arguments (e.g. `{"inference": "aggregated"}`).
        atol, rtol: output tolerance.

    Returns:
        The model loaded from the `.keras` file.
    """
    call_kwargs = {"training": False, **(call_kwargs or {})}
    expected = to_numpy(_call(model, input_data, call_kwargs))
    config = normalized_config(model.get_config())

    os.makedirs(os.fspath(tmp_path), exist_ok=True)
    path = os.path.join(os.fspath(tmp_path), "model.keras")
    model.save(path)
    loaded = keras.models.load_model(path, safe_mode=True)
    assert type(loaded) is type(model), (type(loaded), type(model))
    assert normalized_config(loaded.get_config()) == config, (
        f"{loaded.get_config()}\n!=\n{model.get_config()}")
    assert_weights_close(loaded.get_weights(), model.get_weights(), atol=0, rtol=0,
                         names=_weight_names(model), name=".keras weights")
    keras.tree.map_structure(
        lambda a, e: assert_close_to_reference(a, e, atol=atol, rtol=rtol,
                                               name=".keras reloaded output"),
        to_numpy(_call(loaded, input_data, call_kwargs)), expected)

    weights_path = os.path.join(os.fspath(tmp_path), "model.weights.h5")
    model.save_weights(weights_path)
    fresh = type(model).from_config(model.get_config())
    _call(fresh, input_data, call_kwargs)  # builds it
    fresh.load_weights(weights_path)
    assert_weights_close(fresh.get_weights(), model.get_weights(), atol=0, rtol=0,
                         names=_weight_names(model), name="load_weights weights")
    keras.tree.map_structure(
        lambda a, e: assert_close_to_reference(a, e, atol=atol, rtol=rtol,
                                               name="load_weights output"),
        to_numpy(_call(fresh, input_data, call_kwargs)), expected)
    return loaded


# ------------------------------------------------------------------- training
def _history_losses(history, key="loss"):
    return [float(v) for v in history.history[key]]


def run_fit_reduces_loss(model, x, y, steps=5, optimizer=None, key="loss"):
    """`steps` fit steps on one fixed batch lower the training loss.

    Each epoch is one step on the whole batch (`batch_size=len(x)`), so
    `history["loss"][0]` is the loss before any update and `history["loss"][-1]` the
    loss after `steps - 1` updates.

    Args:
        model: a model; compiled with `optimizer` (default SGD lr 0.05) if not yet.
        x, y: one batch.
        steps: number of fit steps (>= 2).
        key: the log entry to compare.

    Returns:
        The list of per-step training losses.
    """
    if steps < 2:
        raise ValueError("run_fit_reduces_loss needs steps >= 2.")
    if not model.compiled:
        model.compile(optimizer=optimizer or keras.optimizers.SGD(0.05))
    history = model.fit(one_batch_dataset(x, y).repeat(), steps_per_epoch=1,
                        epochs=steps, verbose=0)
    losses = _history_losses(history, key)
    assert all(np.isfinite(losses)), f"non-finite training {key}: {losses}"
    assert losses[-1] < losses[0], (
        f"training {key} did not go down in {steps} steps: {losses}")
    return losses


def run_precision_test(model_fn, data, steps=4, call_kwargs=None, learning_rate=0.05,
                       require_decrease=True):
    """Builds and trains a model under the `mixed_float16` policy.

    The model is built by `model_fn()` while the global policy is `mixed_float16`
    and compiled with plain SGD, which Keras wraps in a `LossScaleOptimizer`. Then:
    some layer computes in float16; `fit` for `steps` steps on one batch gives finite
    losses; the trainable weights change and (with `require_decrease`) the loss
    goes down; the model's outputs are float32. The previous policy is restored.

    Args:
        model_fn: builds the model (no arguments).
        data: (x, y), one batch.
        steps: fit steps (each on the whole batch).
        call_kwargs: extra arguments of the inference call.

    Returns:
        (model, per-step losses).
    """
    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        x, y = data
        model = model_fn()
        assert model.dtype_policy.name == "mixed_float16", model.dtype_policy
        out = _call(model, x["images"] if isinstance(x, dict) else x,
                    {"training": False, **(call_kwargs or {})})
        for o in keras.tree.flatten(out):
            assert keras.backend.standardize_dtype(o.dtype) == "float32", (
                f"outputs must be float32 under mixed_float16, got {o.dtype}")
        assert any(layer.compute_dtype == "float16"
                   for layer in model._flatten_layers(include_self=False)), (
            "no layer computes in float16: the policy did not reach the model")
        model.compile(optimizer=keras.optimizers.SGD(learning_rate))
        assert isinstance(model.optimizer, keras.optimizers.LossScaleOptimizer), (
            type(model.optimizer))
        before = [w.copy() for w in to_numpy(model.trainable_weights)]
        history = model.fit(one_batch_dataset(x, y).repeat(), steps_per_epoch=1,
                            epochs=steps, verbose=0)
        losses = _history_losses(history)
        assert all(np.isfinite(losses)), f"non-finite losses: {losses}"
        after = to_numpy(model.trainable_weights)
        assert all(w.dtype == np.float32 for w in after), "variables must stay float32"
        changed = sum(not np.array_equal(a, b) for a, b in zip(after, before))
        assert changed > 0, "no trainable weight changed under mixed precision"
        if require_decrease:
            assert losses[-1] < losses[0], f"loss did not go down: {losses}"
        out = _call(model, x["images"] if isinstance(x, dict) else x,
                    {"training": False, **(call_kwargs or {})})
        for o in keras.tree.flatten(out):
            assert keras.backend.standardize_dtype(o.dtype) == "float32", o.dtype
            assert np.all(np.isfinite(to_numpy(o))), "non-finite outputs after training"
        return model, losses
    finally:
        keras.mixed_precision.set_global_policy(previous)


def run_replica_parity_test(model_fn, data, optimizer_fn, atol=1e-4, rtol=1e-3,
                            strategy=None, call_kwargs=None, loss_key="loss"):
    """One training step on 1 replica and on 2 replicas gives the same loss and weights.

    Builds a model under the default strategy and an identical one (same initial
    weights, copied) under `MirroredStrategy(["/cpu:0", "/cpu:1"])`, then runs one
    `fit` step of both on the same global batch. `fit` is used (not
    `train_on_batch`, which hands every replica the *whole* batch) so each replica
    really sees half of the batch. Compared: the logged loss, every weight after the
    step (trainable and not, e.g. batch-norm moving statistics), and the update
    w_after - w_before of every weight (so a step twice too large, the classic
    "loss averaged per replica and summed again" bug, fails even when the update is
    smaller than `atol`).

    Backbones must be built with `sync_batchnorm=True`: with per-replica batch norm
    each replica normalises its half-batch with its own statistics, which
    legitimately differs from the 1-replica result.

    Args:
        model_fn: builds the model (no arguments); called once per strategy.
        data: (x, y) global batch; its size must be divisible by 2.
        optimizer_fn: builds a fresh optimizer (no arguments).
        atol: absolute tolerance, scaled by max(1, max |w|) of each weight.
        rtol: relative tolerance of each weight update (relative to its max |update|).
        strategy: the multi-replica strategy (default `two_cpu_strategy()`).

    Returns:
        (loss with 1 replica, loss with 2 replicas).
    """
    x, y = data
    batch = batch_size_of(x, y)
    strategy = strategy or two_cpu_strategy()
    replicas = strategy.num_replicas_in_sync
    if replicas < 2 or batch % replicas:
        raise ValueError(f"need >= 2 replicas and a batch divisible by them, got "
                         f"{replicas} replicas and batch {batch}.")
    call_kwargs = {"training": False, **(call_kwargs or {})}
    inputs = x["images"] if isinstance(x, dict) else x

    single = model_fn()
    _call(single, inputs, call_kwargs)
    initial = [w.copy() for w in single.get_weights()]
    names = _weight_names(single)
    single.compile(optimizer=optimizer_fn())
    loss_1 = _history_losses(single.fit(one_batch_dataset(x, y), epochs=1, verbose=0),
                            loss_key)[0]

    with strategy.scope():
        multi = model_fn()
        _call(multi, inputs, call_kwargs)
        multi.set_weights(initial)
        multi.compile(optimizer=optimizer_fn())
    assert multi.distribute_strategy.num_replicas_in_sync == replicas
    loss_2 = _history_losses(
        multi.fit(replica_sharded_dataset(strategy, x, y), epochs=1, steps_per_epoch=1,
                  verbose=0), loss_key)[0]

    assert np.isfinite(loss_1) and np.isfinite(loss_2), (loss_1, loss_2)
    assert_close_to_reference(loss_2, loss_1, atol=atol, rtol=rtol,
                              name=f"{loss_key} with {replicas} replicas vs 1")
    w1, w2 = single.get_weights(), multi.get_weights()
    assert len(w1) == len(w2) == len(initial)
    moved = 0
    for n, a, b, w0 in zip(names, w2, w1, initial):
        upd_1, upd_2 = b - w0, a - w0
        upd_scale = float(np.max(np.abs(upd_1))) if b.size else 0.0
        scale = max(1.0, float(np.max(np.abs(b)))) if b.size else 1.0
        if upd_scale > 0:
            moved += 1
            # Floor: a few float32 rounding steps of the weights themselves.
            floor = 4 * float(np.finfo(np.float32).eps) * scale
            assert_close_to_reference(
                upd_2, upd_1, atol=rtol * upd_scale + floor, rtol=0,
                name=f"update of {n}, {replicas} replicas vs 1")
        assert_close_to_reference(a, b, atol=atol * scale, rtol=0,
                                  name=f"weight {n} after one step, {replicas} replicas")
    assert moved > 0, "no weight moved in the training step: the test would be vacuous"
    return loss_1, loss_2
