"""Test session set-up: split the CPU into 2 logical devices before TensorFlow starts.

Multi-replica tests then use `tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])`.
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("KERAS_BACKEND", "tensorflow")

import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

SHARED_DATA = os.path.abspath(
    os.environ.get("SSL_ZOO_SHARED_DATA",
                   os.path.join(os.path.dirname(__file__), "..", "..", "shared", "data")))


@pytest.fixture
def shared_data():
    """Path of ../shared/data; skips the test with a clear reason when absent."""
    if not os.path.isdir(SHARED_DATA):
        pytest.skip(f"real-data test: {SHARED_DATA} is absent (set SSL_ZOO_SHARED_DATA)")
    return SHARED_DATA


@pytest.fixture
def two_replica_strategy():
    # Reduce through one device, not with collective ops: a second MirroredStrategy in
    # the same process reuses collective instance keys registered by the first with
    # other shapes ("Shape mismatch in the collective instance ...").
    return tf.distribute.MirroredStrategy(
        ["/cpu:0", "/cpu:1"], cross_device_ops=tf.distribute.ReductionToOneDevice())


@pytest.fixture(autouse=True)
def _reset_policy():
    import keras
    yield
    keras.mixed_precision.set_global_policy("float32")
    keras.utils.clear_session()
