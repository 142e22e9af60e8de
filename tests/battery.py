"""The test battery every registered method gets for free.

`tests/test_method_battery.py` runs every check below for every name in
`ssl_zoo.models.METHODS`; a new method that registers itself next to its model
(`register_method(name, MethodSpec(...))`) is tested with no edit here. Each check
builds the method's model from its `MethodSpec` (tiny backbone, `test_kwargs`) and
feeds it one batch of its own declared training stream (`training.make_train_stream`
on a small synthetic data set), so the data the battery uses is the data `fit` gets.

Checks: `.keras` / weights round trip, mixed precision, XLA (including the label
check that XLA would drop), 1-vs-2-replica parity, fit lowers the loss, export and
reload.
"""

import os

import keras
import numpy as np
import tensorflow as tf

from harness import (assert_close_to_reference, one_batch_dataset, run_fit_reduces_loss,
                     run_model_saving_test, run_precision_test, run_replica_parity_test,
                     to_numpy)
from ssl_zoo.data import load_arrays
from ssl_zoo.export import export_model
from ssl_zoo.models import get_method
from ssl_zoo.training import make_train_stream

NUM_CLASSES = 3
BATCH = 4
IMAGE_SIZE = 8
TINY = dict(backbone="vgg_tile", width=0.0625)


def build(name, **kwargs):
    """The method's model on a tiny backbone, with its spec's test arguments."""
    spec = get_method(name)
    classes = {"num_classes": NUM_CLASSES} if spec.class_labels else {}
    return spec.build(**{**TINY, **classes, **spec.test_kwargs, **kwargs})


def raw_images(seed=0, n=8 * NUM_CLASSES):
    """(images uint8 (n, IMAGE_SIZE, IMAGE_SIZE, 3), labels) the battery draws from."""
    rng = np.random.RandomState(seed)
    images = rng.randint(0, 256, (n, IMAGE_SIZE, IMAGE_SIZE, 3)).astype("uint8")
    return images, np.arange(n) % NUM_CLASSES


def method_batch(name, batch_size=BATCH, seed=0, model=None):
    """One (x, y) batch, as numpy, of the method's own training stream (a model-made
    view, e.g. Jigsaw puzzles, comes from `model` or one built like the battery's)."""
    spec = get_method(name)
    data = load_arrays(raw_images(seed), cache_dir=False)
    if model is None and spec.view == "model":
        model = build(name)
    stream = make_train_stream(spec, data, batch_size, seed=seed, model=model)
    x, y = next(iter(stream))
    return to_numpy(x), to_numpy(y)


def inference_input(x):
    """What `model(...)` takes, from a training batch's inputs."""
    return x["images"] if isinstance(x, dict) else x


def check_saving(name, tmp_path):
    x, y = method_batch(name)
    model = build(name)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit(one_batch_dataset(x, y), epochs=1, verbose=0)
    run_model_saving_test(model, inference_input(x), tmp_path)


def check_precision(name):
    x, y = method_batch(name)
    # Enough steps for the loss scale to drop from 2^15 past the first overflows.
    run_precision_test(lambda: build(name), (x, y), steps=8)


def _label_error(fn):
    try:
        fn()
    except tf.errors.InvalidArgumentError as e:
        return e.message
    return None


def check_xla(name):
    x, y = method_batch(name)
    model = build(name)
    model.compile(optimizer=keras.optimizers.SGD(0.01), jit_compile=True)
    history = model.fit(one_batch_dataset(x, y).repeat(2), epochs=1, verbose=0)
    assert model.jit_compile is True
    assert all(np.isfinite(history.history["loss"])), history.history
    # Labels out of range: where the method checks labels (its eager `unpack`
    # raises), the XLA step — same shapes, so the compiled function is reused — must
    # raise too, although XLA drops graph assertions.
    bad = np.full_like(y, model.num_classes)
    eager_error = _label_error(lambda: model.unpack((x, bad), training=True))
    xla_error = _label_error(
        lambda: model.fit(one_batch_dataset(x, bad), epochs=1, verbose=0))
    if eager_error is None:  # the method ignores labels (e.g. SimCLR)
        assert xla_error is None, xla_error
    else:
        assert "labels must be in" in eager_error, eager_error
        assert xla_error is not None and "labels must be in" in xla_error, (
            f"XLA trained on out-of-range labels in silence ({xla_error!r})")


def check_parity(name):
    x, y = method_batch(name)
    run_replica_parity_test(lambda: build(name, sync_batchnorm=True), (x, y),
                            lambda: keras.optimizers.SGD(0.1))


def check_fit_reduces_loss(name):
    x, y = method_batch(name)
    run_fit_reduces_loss(build(name), x, y, steps=5,
                         optimizer=keras.optimizers.SGD(0.05))


def check_export(name, tmp_path):
    model = build(name)
    x, y = method_batch(name, model=model)
    model.compile(optimizer=keras.optimizers.SGD(0.01))
    model.fit(one_batch_dataset(x, y), epochs=1, verbose=0)
    images = raw_images()[0][:BATCH]   # whatever the training input, serve images
    path = export_model(model, os.path.join(tmp_path, "export"))
    loaded = tf.saved_model.load(path)   # keep a reference: its variables die with it
    out = loaded.serve(tf.constant(images))
    features = to_numpy(model.embed(images.astype("float32")))
    assert_close_to_reference(out["features"], features, atol=1e-4, rtol=1e-4,
                              name="exported features")
    if model.has_classifier:
        logits = to_numpy(model(images.astype("float32"), training=False))
        probs = np.exp(logits - logits.max(-1, keepdims=True))
        probs /= probs.sum(-1, keepdims=True)
        assert_close_to_reference(out["probabilities"], probs, atol=1e-5, rtol=1e-4,
                                  name="exported probabilities")
    else:
        assert "probabilities" not in out, sorted(out)


CHECKS = {
    "saving": lambda name, tmp_path: check_saving(name, tmp_path),
    "mixed_precision": lambda name, tmp_path: check_precision(name),
    "xla": lambda name, tmp_path: check_xla(name),
    "replica_parity": lambda name, tmp_path: check_parity(name),
    "fit_reduces_loss": lambda name, tmp_path: check_fit_reduces_loss(name),
    "export": lambda name, tmp_path: check_export(name, tmp_path),
}


# A registered name that only changes constructor defaults of a class another name
# already covers (sla_no_sd = SLAModel(self_distill=False)) gets these checks: the
# ones its defaults can change. The rest are the same code path as its sibling's.
VARIANT_CHECKS = ("saving", "fit_reduces_loss", "export")


def checks_for(name):
    """The battery checks of a registered method (see VARIANT_CHECKS)."""
    from ssl_zoo.models import METHODS
    spec = METHODS[name]
    has_sibling = bool(spec.defaults) and any(
        other.model_class is spec.model_class and not other.defaults
        for other in METHODS.values())
    return VARIANT_CHECKS if has_sibling else tuple(CHECKS)


def run_battery(name, tmp_path, checks=None):
    """Runs `checks` (default: all) for the registered method `name`."""
    for check in checks or CHECKS:
        keras.utils.set_random_seed(1234)
        CHECKS[check](name, os.path.join(os.fspath(tmp_path), check))
        keras.utils.clear_session()

