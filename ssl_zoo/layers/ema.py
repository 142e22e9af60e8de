"""EMATeacher: an exponential-moving-average copy of a network, batch-norm statistics
included, updated explicitly after each optimizer step and identical on every replica."""

import numbers

import keras
from keras import ops

from ssl_zoo import distribute

STATISTICS_MODES = ("average", "copy")


@keras.saving.register_keras_serializable(package="ssl_zoo")
class EMATeacher(keras.layers.Layer):
    """A never-trainable clone of `network` that tracks the student by EMA.

    After each optimizer step, `update(student)` sets, for every weight w,

        teacher_w = decay * teacher_w + (1 - decay) * student_w

    for the student's trainable weights and, with `statistics="average"`, for its
    non-trainable float weights (batch-norm moving mean/variance) too, as FixMatch's
    TensorFlow code and the DASO code's `EMAModel` average them; `statistics="copy"`
    copies those instead, as the PyTorch `ModelEMA` of kekmodel/FixMatch does. Non-float
    weights (counters) are always copied. Keras' optimizer `use_ema` averages trainable
    weights only, so it cannot keep an EMA model's batch-norm statistics: that is what
    this layer is for.

    The teacher's variables are replica-synchronised state
    (`ssl_zoo.distribute.synchronized_state_scope`): called inside `strategy.run`,
    `initialize` and `update` write the first replica's result to every replica, so
    the teacher stays identical everywhere (the replicas compute the same values from
    the student's mirrored weights; with unsynchronised batch norm the student's
    statistics may differ per replica and replica 0's win).

    Args:
        network: the student network, a `keras.Model` (e.g. a backbone), or its
            `keras.saving.serialize_keras_object` dict. The teacher is a new model
            built from that config; the student itself is never changed.
        decay: EMA decay in [0, 1] (FixMatch / DASO: 0.999). 1 freezes the teacher,
            0 makes it a copy of the student.
        statistics: "average" or "copy", for the student's non-trainable float weights.
        **kwargs: `keras.layers.Layer` arguments (`name`, `dtype`, ...).

    Call arguments:
        inputs: the network's inputs.
        training: ignored: the teacher always runs in inference mode (batch norm
            uses its moving statistics), under `stop_gradient`.

    Returns (call):
        The teacher network's outputs, with no gradient.

    Example:
    >>> import numpy as np
    >>> student = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2),
    ...                             keras.layers.BatchNormalization()])
    >>> ema = EMATeacher(student, decay=0.9)
    >>> ema.build((None, 3))
    >>> ema.initialize(student)
    >>> x = np.ones((4, 3), "float32")
    >>> bool(np.allclose(ema(x), student(x, training=False)))
    True
    >>> _ = student.layers[0].kernel.assign(student.layers[0].kernel + 1.0)
    >>> ema.update(student)
    >>> delta = ema.teacher.layers[0].kernel - (student.layers[0].kernel - 1.0)
    >>> bool(np.allclose(delta, 0.1)), len(ema.trainable_weights)
    (True, 0)
    """

    def __init__(self, network, decay=0.999, statistics="average", **kwargs):
        kwargs.pop("trainable", None)  # never trainable (see the `trainable` property)
        super().__init__(trainable=False, **kwargs)
        if (not isinstance(decay, numbers.Real) or isinstance(decay, bool)
                or not 0.0 <= decay <= 1.0):
            raise ValueError(f"EMATeacher decay must be a number in [0, 1], got {decay!r}.")
        if statistics not in STATISTICS_MODES:
            raise ValueError(f"EMATeacher statistics must be one of {STATISTICS_MODES}, "
                             f"got {statistics!r}.")
        if isinstance(network, keras.Model):
            network = keras.saving.serialize_keras_object(network)
        elif not isinstance(network, dict):
            raise ValueError(f"EMATeacher network must be a keras.Model or its serialised "
                             f"config dict, got {type(network).__name__}.")
        self.decay = float(decay)
        self.statistics = statistics
        with distribute.synchronized_state_scope():
            self.teacher = keras.saving.deserialize_keras_object(network)
        self.teacher.trainable = False
        self.built = self.teacher.built  # e.g. a functional network is built already

    @property
    def trainable(self):
        return False

    @trainable.setter
    def trainable(self, value):
        # A parent's `model.trainable = True` must not make the teacher trainable: it
        # changes only through `update`.
        keras.layers.Layer.trainable.fset(self, False)

    def build(self, input_shape):
        if not self.teacher.built:
            with distribute.synchronized_state_scope():
                self.teacher.build(input_shape)
        self.built = True

    def compute_output_shape(self, input_shape):
        return self.teacher.compute_output_shape(input_shape)

    def call(self, inputs, training=False):
        del training
        return keras.tree.map_structure(ops.stop_gradient,
                                        self.teacher(inputs, training=False))

    # ------------------------------------------------------------------ updates
    def _pairs(self, student):
        """(student weight, teacher weight) pairs; a clear error if they do not match."""
        student_weights = student.weights
        teacher_weights = self.teacher.weights
        if not self.teacher.built or not teacher_weights:
            raise ValueError("EMATeacher is not built: call it on an input batch or "
                             "call `build(input_shape)` before initialize/update.")
        for index, (s, t) in enumerate(zip(student_weights, teacher_weights)):
            if tuple(s.shape) != tuple(t.shape) or s.dtype != t.dtype:
                raise ValueError(
                    f"EMATeacher: the student's weight {index} '{s.path}' has shape "
                    f"{tuple(s.shape)} and dtype {s.dtype} but the teacher's weight "
                    f"'{t.path}' has shape {tuple(t.shape)} and dtype {t.dtype}; the "
                    f"student must be the network the teacher was cloned from.")
        if len(student_weights) != len(teacher_weights):
            raise ValueError(
                f"EMATeacher: the student has {len(student_weights)} weights but the "
                f"teacher has {len(teacher_weights)}; the student must be the network "
                f"the teacher was cloned from (and be built).")
        return list(zip(student_weights, teacher_weights))

    def initialize(self, student):
        """Copies every weight of `student` into the teacher (BN statistics included).

        Args:
            student: the network the teacher was cloned from (built).

        Returns:
            None.

        Example:
        >>> import numpy as np
        >>> student = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
        >>> ema = EMATeacher(student)
        >>> ema.initialize(student)
        >>> bool(np.array_equal(ema.teacher.layers[0].kernel, student.layers[0].kernel))
        True
        """
        for s, t in self._pairs(student):
            t.assign(s)

    def update(self, student, decay=None):
        """One EMA step toward `student` (call it after the optimizer step).

        Args:
            student: the network the teacher was cloned from.
            decay: this step's decay (a float or scalar tensor, e.g. the warm-up
                min(1 - 1/t, decay) of the DASO code); None uses `self.decay`.

        Returns:
            None.

        Example:
        >>> student = keras.Sequential([keras.Input((1,)),
        ...                             keras.layers.Dense(1, kernel_initializer="ones")])
        >>> ema = EMATeacher(student, decay=0.75)
        >>> ema.initialize(student)
        >>> _ = student.layers[0].kernel.assign([[3.0]])
        >>> ema.update(student)
        >>> float(ema.teacher.layers[0].kernel[0, 0])
        1.5
        """
        decay = self.decay if decay is None else decay
        for s, t in self._pairs(student):
            if not keras.backend.is_float_dtype(s.dtype):
                t.assign(s)
            elif s.trainable or self.statistics == "average":
                d = ops.cast(decay, t.dtype)
                t.assign(d * t + (1.0 - d) * ops.cast(s, t.dtype))
            else:
                t.assign(s)

    # ------------------------------------------------------------------- config
    def get_config(self):
        return {**super().get_config(),
                "network": keras.saving.serialize_keras_object(self.teacher),
                "decay": self.decay, "statistics": self.statistics}

    @classmethod
    def from_config(cls, config):
        return cls(**config)
