"""The only module that knows about replicas: all-gather with gradient, replica sums,
replica offsets, loss unscaling and replica-synchronised state (`tf.distribute` inside).

Every function is the identity (or 1, 0, None) outside multi-replica execution, so a
layer written with them runs unchanged on one device, inside `tf.function`, and under
XLA.

Replica-synchronised state (an EMA teacher, a feature queue, pseudo-label counts) is
made of variables with Keras' ``aggregation="only_first_replica"``. Measured on this
stack (TensorFlow 2.21, Keras 3.15, `MirroredStrategy` over 2 CPUs), when each replica
assigns a value in replica context:

- ``"none"`` (Keras' default, used by e.g. batch-norm moving statistics): every replica
  writes its own copy; copies silently diverge as soon as the replicas' values differ.
- ``"mean"``: the copies are averaged; creating an integer variable with it fails
  ("aggregation=MEAN and a non-floating dtype is not supported").
- ``"sum"``: adds the replicas' values, so an update computed identically on every
  replica is counted once per replica (wrong for state).
- ``"only_first_replica"``: the first replica's value is written to every copy (one
  `merge_call` per assignment), for float and integer dtypes alike; when every replica
  computes the same value, that value is what is stored, and the copies can never drift.
"""

import contextlib

import keras  # noqa: F401  (used by the doctest examples)
import tensorflow as tf
from keras import ops

STATE_AGGREGATION = "only_first_replica"


def replica_context():
    """The current replica context, or None outside multi-replica execution.

    Returns:
        A `tf.distribute.ReplicaContext` when running inside `strategy.run` of a
        strategy with more than one replica in sync; None otherwise (no strategy,
        the default strategy, a one-replica strategy, or cross-replica context).

    Example:
    >>> replica_context() is None
    True
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return ctx


def num_replicas():
    """Number of replicas computing in sync (1 without a strategy).

    Returns:
        A Python int: the replicas of the current replica context or, in
        cross-replica context, of the current strategy.

    Example:
    >>> num_replicas()
    1
    """
    ctx = tf.distribute.get_replica_context()
    if ctx is not None:
        return ctx.num_replicas_in_sync
    return tf.distribute.get_strategy().num_replicas_in_sync


def replica_id():
    """Index of the current replica in its sync group (0 outside multi-replica execution).

    Returns:
        0 (a Python int) outside multi-replica execution, else the replica's id
        (a scalar int32 tensor under `MirroredStrategy`).

    Example:
    >>> replica_id()
    0
    """
    ctx = replica_context()
    return 0 if ctx is None else ctx.replica_id_in_sync_group


def all_gather(x, axis=0):
    """Concatenates `x` over the replicas, in replica order, along `axis`.

    Every replica gets the same global tensor. The gradient flows back to the replica
    that owns each slice: a replica's gradient for its own `x` is the sum, over all
    replicas, of the gradients reaching that slice of the gathered tensor. Replicas may
    hold different sizes along `axis`.

    Args:
        x: a tensor; all replicas must agree on every dimension except `axis`.
        axis: the axis to concatenate along.

    Returns:
        The gathered tensor; `x` itself outside multi-replica execution.

    Example:
    >>> all_gather(ops.ones((2, 3))).shape
    TensorShape([2, 3])
    """
    ctx = replica_context()
    if ctx is None:
        return x
    return ctx.all_gather(x, axis=axis)


def all_sum(x):
    """Sums `x` over the replicas (every replica gets the sum).

    Args:
        x: a tensor of the same shape on every replica.

    Returns:
        The element-wise sum over replicas; `x` itself outside multi-replica execution.

    Example:
    >>> float(all_sum(ops.convert_to_tensor(3.0)))
    3.0
    """
    ctx = replica_context()
    if ctx is None:
        return x
    return ctx.all_reduce(tf.distribute.ReduceOp.SUM, x)


def replica_offset(local_batch):
    """Row of this replica's first sample in the all-gathered batch.

    Args:
        local_batch: this replica's batch size (int or scalar int tensor); replicas
            may have different sizes.

    Returns:
        The number of rows held by the replicas before this one: 0 outside
        multi-replica execution, else a scalar int32 tensor.

    Example:
    >>> replica_offset(4)
    0
    """
    ctx = replica_context()
    if ctx is None:
        return 0
    sizes = ctx.all_gather(ops.reshape(ops.cast(local_batch, "int32"), (1,)), axis=0)
    return ops.sum(sizes[:ctx.replica_id_in_sync_group])


def unscale_loss(value):
    """Undoes Keras' 1/num_replicas loss scaling, for logging a global-batch loss.

    Keras scales a `Loss` by 1/num_replicas under `tf.distribute` so that the
    gradients summed over replicas are those of the global mean; the value each
    replica logs must be multiplied back.

    Args:
        value: a loss value computed by a Keras `Loss` in replica context.

    Returns:
        `value * num_replicas()` (unchanged with one replica).

    Example:
    >>> float(unscale_loss(ops.convert_to_tensor(0.5)))
    0.5
    """
    try:
        from keras.src.losses.loss import unscale_loss_for_distribution
    except ImportError:  # a Keras without the helper
        replicas = num_replicas()
        return value * ops.cast(replicas, value.dtype) if replicas > 1 else value
    return unscale_loss_for_distribution(value)


def state_weight(layer, name, shape, dtype="float32", initializer="zeros"):
    """A non-trainable weight of `layer` that stays identical on every replica.

    The weight uses `aggregation="only_first_replica"` (see the module docstring for
    why): assigned in replica context, every replica's copy receives the first
    replica's value. Compute the new value identically on every replica (e.g. from
    all-gathered inputs) and assign it.

    Args:
        layer: the `keras.layers.Layer` that owns the weight (call from `build`).
        name: the weight's name.
        shape: its shape.
        dtype: its dtype (float or integer).
        initializer: a Keras initializer (name, instance or callable).

    Returns:
        The new `keras.Variable`.

    Example:
    >>> layer = keras.layers.Layer()
    >>> count = state_weight(layer, "count", (3,), "int32")
    >>> count.trainable, count.aggregation, layer.non_trainable_weights[0] is count
    (False, 'only_first_replica', True)
    """
    return layer.add_weight(name=name, shape=shape, dtype=dtype, initializer=initializer,
                            trainable=False, aggregation=STATE_AGGREGATION)


@contextlib.contextmanager
def synchronized_state_scope():
    """Variables created in this scope are replica-synchronised state.

    For state held by layers that create their own weights (e.g. an EMA copy of a
    whole network, whose layers use Keras' default `aggregation="none"`): every
    `tf.Variable` created inside gets the aggregation of `state_weight`, so an
    assignment in replica context writes the first replica's value to every copy.
    The Keras-level `variable.aggregation` attribute is left as the layer declared it.

    Yields:
        None.

    Example:
    >>> with synchronized_state_scope():
    ...     dense = keras.layers.Dense(2)
    ...     dense.build((None, 3))
    >>> dense.kernel.value.aggregation
    <VariableAggregationV2.ONLY_FIRST_REPLICA: 3>
    """
    aggregation = tf.VariableAggregation.ONLY_FIRST_REPLICA

    def creator(next_creator, **kwargs):
        kwargs["aggregation"] = aggregation
        return next_creator(**kwargs)

    with tf.variable_creator_scope(creator):
        yield


def is_multi_worker(strategy):
    """True under a `MultiWorkerMirroredStrategy` of more than one worker.

    Example:
    >>> is_multi_worker(tf.distribute.get_strategy())
    False
    """
    return (isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy)
            and strategy.extended._in_multi_worker_mode())


def distribute_global_batches(strategy, dataset):
    """A stream of global batches, split so every replica gets the same slice whatever
    the number of workers.

    tf.data's auto-sharding across workers rewrites the pipeline's `batch` to the
    per-worker size, so a view applied to whole batches (seeded per batch: random
    crops, RandAugment) would draw other augmentations than on one machine, and a
    run's result would depend on the cluster. Here every worker builds the global
    batch exactly as one process does and keeps its replicas' consecutive slices
    (replica r of R gets rows [r B/R, (r + 1) B/R) of each leaf of B rows), which is
    how a single-worker strategy splits a batch too. The price: each worker prepares
    the whole global batch (the input work is multiplied by the number of workers).
    Outside a multi-worker strategy `dataset` is returned unchanged.

    Args:
        strategy: the `tf.distribute` strategy.
        dataset: a `tf.data.Dataset` of global batches; each leaf's batch size must
            be static and divisible by the replicas (pipelines with
            `drop_remainder=True` are).

    Returns:
        `dataset`, or a distributed dataset for `fit` under a multi-worker strategy.

    Example:
    >>> ds = tf.data.Dataset.from_tensors((tf.zeros([8, 2]), tf.zeros([8])))
    >>> distribute_global_batches(tf.distribute.get_strategy(), ds) is ds
    True
    """
    if not is_multi_worker(strategy):
        return dataset
    replicas = strategy.num_replicas_in_sync
    for spec in tf.nest.flatten(dataset.element_spec):
        rows = spec.shape[0] if spec.shape.rank else None
        if rows is None or rows % replicas:
            raise ValueError(
                f"Every batch must have a static size divisible by the {replicas} "
                f"replicas to split it across workers; got a leaf of shape {spec.shape} "
                f"(batch with drop_remainder=True and a batch size divisible by "
                f"{replicas}).")

    def dataset_fn(context):
        local = replicas // context.num_input_pipelines
        first = context.input_pipeline_id * local

        def slices(t):
            rows = t.shape[0] // replicas
            part = t[first * rows:(first + local) * rows]
            return tf.reshape(part, [local, rows, *t.shape[1:]])

        def split(*element):
            element = element[0] if len(element) == 1 else element
            return tf.nest.map_structure(slices, element)

        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.OFF)
        return dataset.map(split).unbatch().with_options(options)

    return strategy.distribute_datasets_from_function(dataset_fn)


__all__ = ["STATE_AGGREGATION", "all_gather", "all_sum", "distribute_global_batches",
           "is_multi_worker", "num_replicas", "replica_context",
           "replica_id", "replica_offset", "state_weight", "synchronized_state_scope",
           "unscale_loss"]
