"""Shared plumbing of every ssl_zoo model: backbone, in-model normalisation, input
checks, the one gradient step (mixed precision, replicas, XLA) and serialisation."""

import keras
import numpy as np
import tensorflow as tf
from keras import ops

from ssl_zoo.backbones import get_backbone
from ssl_zoo.distribute import is_multi_worker, unscale_loss
from ssl_zoo.layers.normalization import CIFAR10_MEAN, CIFAR10_STD, ImageNormalization
from ssl_zoo.utils.labels import label_vector


def _numpy_free_shape(shape):
    return tuple(None if d is None else int(d) for d in shape)


def non_numeric_dtype(value, allow_bool=False):
    """The dtype name of an array or tensor whose values are not numbers (strings,
    objects, bools unless `allow_bool`), else None (numbers, or no dtype to read:
    datasets, generators, dicts)."""
    dtype = getattr(value, "dtype", None)
    if dtype is None:
        if not (isinstance(value, (list, tuple)) and value
                and isinstance(value[0], (str, bytes))):
            return None
        dtype = np.asarray(value).dtype
    if isinstance(dtype, np.dtype):
        if dtype.kind in ("iufb" if allow_bool else "iuf"):
            return None
        return f"str ({dtype.str})" if dtype.kind in "US" else dtype.name
    try:
        dtype = tf.as_dtype(dtype)
    except TypeError:
        return str(dtype)
    numeric = dtype.is_floating or dtype.is_integer or (allow_bool and dtype.is_bool)
    return None if numeric else dtype.name


def inference_features(model, images):
    """Inference-mode features (B, D), float32, of any model mapping images to features.

    Uses `model.embed(images)` when the model has it (every ssl_zoo
    `BackboneModel`: the features its inference uses, e.g. the EMA network's for
    FixMatch/DASO), else `model.features(images, training=False)`, else
    `model(images, training=False)` (a backbone, a plain keras model); extra axes are
    flattened.

    Args:
        model: an ssl_zoo model, a backbone or any keras model.
        images: what the model takes, e.g. (B, H, W, 3) raw 0..255 images.

    Returns:
        (B, D) float32 tensor.

    Example:
    >>> from ssl_zoo.models.supervised import SupervisedModel
    >>> model = SupervisedModel("resnet32_cifar", num_classes=10, width=0.25)
    >>> tuple(inference_features(model, ops.zeros((2, 16, 16, 3))).shape)
    (2, 16)
    """
    embed_fn = getattr(model, "embed", None)
    features_fn = getattr(model, "features", None)
    if callable(embed_fn):
        features = embed_fn(images)
    elif callable(features_fn):
        features = features_fn(images, training=False)
    else:
        features = model(images, training=False)
    features = ops.cast(features, "float32")
    if len(features.shape) != 2:
        features = ops.reshape(features, (ops.shape(features)[0], -1))
    return features


def _preset_statistics(backbone, mean, std):
    """A preset encoder's input statistics (what it was trained with), else (mean, std)."""
    from ssl_zoo.backbones import BACKBONES
    if not isinstance(backbone, str) or backbone in BACKBONES:
        return mean, std
    from ssl_zoo.presets import get_metadata, is_preset_name
    if not is_preset_name(backbone):
        return mean, std
    pre = get_metadata(backbone).get("preprocessing", {})
    return pre.get("mean", mean), pre.get("std", std)


class _ClassPresets:
    """`Model.presets`: {name: description} of the installed presets of that class."""

    def __get__(self, obj, cls):
        from ssl_zoo.presets import list_presets
        return list_presets(cls=cls)


class PresetMixin:
    """`from_preset` and `presets` for every ssl_zoo model class."""

    #: {name: description} of the installed presets holding this class (or a subclass).
    presets = _ClassPresets()

    @classmethod
    def from_preset(cls, name, num_classes=None, image_size=None, **kwargs):
        """Builds a pretrained model from `ssl_zoo.presets` (sha256-verified weights).

        Args:
            name: an `arch.tag` name from `cls.presets`; the preset must hold this class.
            num_classes: if given and different from the preset's, a new freshly
                initialised class head (and everything else pretrained) for
                fine-tuning on `num_classes` classes.
            image_size: if given, must match the preset (else PresetError).
            **kwargs: `root` (presets folder), `cache_dir` (weights cache).

        Returns:
            The built model with its weights and no optimizer (compile it to train).

        Example:
        >>> from ssl_zoo import SLAModel
        >>> sorted(SLAModel.presets)
        ['resnet32_cifar.sla_rotation_cifar10', 'resnet32_cifar_a.sla_rotation_cifar10']
        >>> model = SLAModel.from_preset("resnet32_cifar_a.sla_rotation_cifar10",
        ...                              num_classes=100)
        >>> model.num_classes, model.compiled
        (100, False)
        """
        from ssl_zoo.presets import load_preset
        return load_preset(name, cls=cls, num_classes=num_classes, image_size=image_size,
                           **kwargs)


class BackboneModel(PresetMixin, keras.Model):
    """Base class of every ssl_zoo method: images -> `ImageNormalization` -> backbone,
    and the one gradient step all methods train with.

    A method writes four things in `keras.ops`, and the base does the rest (the
    gradient tape, mixed-precision loss scaling, replica scaling, logging,
    validation that survives XLA):

    - `unpack(data, training)`: checks a batch from `fit`/`evaluate` and returns it
      in the method's own structure (default: `(images, labels)`). Runs outside XLA,
      so its graph assertions (label range, batch sizes) hold under
      `jit_compile=True` as well.
    - `forward(batch, training)`: the forward pass; returns a dict of tensors.
    - `compute_losses(batch, outputs)`: a dict name -> scalar loss, each from a
      per-example `keras.losses.Loss` (which scales by 1/replicas); they are summed.
    - `update_metrics(batch, outputs, training)`: metric updates (optional).

    and, for state outside the gradient (an EMA teacher, a feature queue), a
    `post_step(batch, outputs)` run after the optimizer step, on every replica.

    Args:
        backbone: a name from `ssl_zoo.backbones.list_backbones()`, a `keras.Model`
            mapping images to (B, D) features, its serialised config, or a preset's
            `arch.tag` name: that preset's pretrained encoder (e.g.
            `SupervisedModel(backbone="resnet32_cifar.supcon_cifar10")`).
        num_classes: number of classes N, or None for an encoder without classes
            (labels are then not range-checked).
        width: channel multiplier when `backbone` is a name (a preset's is its own).
        mean, std: per-channel statistics on the 0..255 scale used inside the model
            (default: CIFAR-10's, or a preset encoder's own).
        sync_batchnorm: global-batch batch-norm statistics under `tf.distribute`.

    Example:
    >>> import numpy as np
    >>> from ssl_zoo.models.supervised import SupervisedModel
    >>> model = SupervisedModel("resnet32_cifar", num_classes=3, width=0.25)
    >>> model.compile(optimizer="sgd", jit_compile=True)
    >>> model.fit(np.zeros((4, 8, 8, 3)), np.array([0, 1, 2, 5]), verbose=0)
    Traceback (most recent call last):
    ...
    ValueError: SupervisedModel: labels must be in [0, 3) (num_classes=3); found 5 at index 3.
    """

    #: whether `call` returns class logits (False for pure encoders such as SupCon);
    #: export writes class probabilities only for models that have them.
    has_classifier = True

    def __init__(self, backbone="resnet32_cifar", num_classes=10, width=1.0,
                 mean=CIFAR10_MEAN, std=CIFAR10_STD, sync_batchnorm=False, **kwargs):
        super().__init__(**kwargs)
        if num_classes is not None and (
                isinstance(num_classes, bool) or int(num_classes) != num_classes
                or int(num_classes) < 1):
            raise ValueError(f"num_classes must be a positive integer, got {num_classes!r}.")
        self.num_classes = None if num_classes is None else int(num_classes)
        self.width = float(width)
        self.sync_batchnorm = bool(sync_batchnorm)
        if isinstance(backbone, dict):
            backbone = keras.saving.deserialize_keras_object(backbone)
        if mean is CIFAR10_MEAN and std is CIFAR10_STD:
            mean, std = _preset_statistics(backbone, mean, std)
        self._backbone_name = backbone if isinstance(backbone, str) else None
        self.backbone = get_backbone(backbone, width=width, sync_batchnorm=sync_batchnorm)
        self.normalizer = ImageNormalization(mean, std, name="normalizer")
        self.feature_dim = int(self.backbone.output_shape[-1])
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self._loss_components = ()
        self._recording_shape = False
        self._trained_image_shape = None

    def track_losses(self, *names):
        """Logs each named entry of `compute_losses` as its own metric (besides 'loss').

        Call in `__init__`; the names must be keys of the dict `compute_losses` returns.
        """
        for name in names:
            setattr(self, f"_{name}_tracker", keras.metrics.Mean(name=name))
        self._loss_components = tuple(self._loss_components) + tuple(names)

    # ----------------------------------------------------------------- building
    def build(self, input_shape):
        if isinstance(input_shape, dict):   # a two-stream batch: build for its images
            input_shape = input_shape["images"]
        input_shape = _numpy_free_shape(input_shape)
        self.check_image_shape(input_shape)
        self.normalizer.build(input_shape)
        self.build_heads((None, self.feature_dim))
        self.built = True

    def _ensure_built(self):
        # train/test steps call the sub-layers directly, never `self(x)`, so without
        # a strategy Keras never builds the model: it would stay unbuilt after fit(),
        # and a saved .keras file (no build config) would reload with re-initialised
        # heads. Build eagerly, before tracing: head variables created inside the
        # traced step break the next fit() once a first trace has failed.
        if not self.built:
            self.build(self.default_input_shape())

    def default_input_shape(self):
        """The shape the model is built with before its first batch is known."""
        return (None, None, None, len(self.normalizer.mean))

    def build_heads(self, feature_shape):
        """Builds the subclass' heads for features of `feature_shape`."""

    @staticmethod
    def build_layers(feature_shape, *layers):
        for layer in layers:
            if not layer.built:
                layer.build(feature_shape)

    # ------------------------------------------------------------------ checks
    def __call__(self, *args, **kwargs):
        # Keras builds the model from the input's shape before `call` sees its
        # dtype: check the dtype first, or strings would be reported as a bad shape.
        images = args[0] if args else kwargs.get("images")
        self.check_image_dtype(images)
        return super().__call__(*args, **kwargs)

    def fit(self, x=None, y=None, *args, **kwargs):
        # Keras converts arrays before any step runs, with an unhelpful "Invalid
        # dtype" for strings: name the problem first.
        self.check_array_dtypes(x, y)
        return super().fit(x, y, *args, **kwargs)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Under a strategy, Keras reads a first batch, averages it over replicas with
        # `strategy.reduce` (which fails under MultiWorkerMirroredStrategy: "Attempt
        # to convert a value (PerReplica ...)") and resets the iterator (so training
        # reads a second iterator, whose shuffle order differs from one device's),
        # only to build the model from the batch's shape. A BackboneModel builds
        # from its input shape and compiles no Keras loss or metrics: build here,
        # without touching the data.
        strategy = self._distribute_strategy
        if (strategy is None or self._compile_loss is not None
                or self._compile_metrics is not None):
            return super()._maybe_symbolic_build(iterator, data_batch)
        with strategy.scope():
            self._ensure_built()
            for layer in self._flatten_layers():
                # Layers whose build only checks shapes (they own no weights) are
                # built by their first call in the step; `call` checks too.
                if not layer.built and getattr(layer, "builds_no_weights", False):
                    layer.built = True
            if not all(layer.built for layer in self._flatten_layers()):
                return super()._maybe_symbolic_build(iterator, data_batch)
            self._symbolic_build(data_batch=())   # builds the optimizer only

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self.check_array_dtypes(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    def predict(self, x, *args, **kwargs):
        self.check_array_dtypes(x, None)
        return super().predict(x, *args, **kwargs)

    def check_image_dtype(self, images):
        """TypeError unless `images` (array, tensor or KerasTensor) holds numbers."""
        dtype = non_numeric_dtype(images)
        if dtype is not None:
            raise TypeError(
                f"{type(self).__name__} expects numeric images (uint8, or float on the "
                f"0..255 scale), got dtype {dtype}. Decode image files into arrays "
                f"first (ssl_zoo.data.load_arrays reads image folders and .zip "
                f"archives).")

    def check_array_dtypes(self, x, y):
        """Checks the dtypes of array inputs of `fit`/`evaluate`/`predict` (datasets
        are checked batch by batch in `unpack`)."""
        for leaf in keras.tree.flatten(x) if x is not None else ():
            self.check_image_dtype(leaf)
        for leaf in keras.tree.flatten(y) if y is not None else ():
            dtype = non_numeric_dtype(leaf, allow_bool=True)
            if dtype is not None:
                raise TypeError(
                    f"{type(self).__name__} expects integer class labels 0..N-1, got "
                    f"dtype {dtype}; map class names to indices first (e.g. "
                    f"numpy.unique(names, return_inverse=True)).")
        if self.checks_label_range and isinstance(y, (np.ndarray, list)):
            self.check_label_range(np.asarray(y))

    @property
    def checks_label_range(self):
        """Whether training reads class labels in [0, num_classes) (checked up front
        for arrays given to `fit`/`evaluate`, in the step for datasets)."""
        return self.num_classes is not None

    def check_label_range(self, labels):
        """ValueError naming the first labels outside [0, num_classes) of an array."""
        if labels.size == 0 or not np.issubdtype(labels.dtype, np.integer):
            return
        bad = np.flatnonzero((labels.reshape(-1) < 0)
                             | (labels.reshape(-1) >= self.num_classes))
        if bad.size:
            flat = labels.reshape(-1)
            shown = ", ".join(f"{int(flat[i])} at index {int(i)}" for i in bad[:3])
            raise ValueError(
                f"{type(self).__name__}: labels must be in [0, {self.num_classes}) "
                f"(num_classes={self.num_classes}); found {shown}"
                f"{f' and {bad.size - 3} more' if bad.size > 3 else ''}.")

    def check_image_shape(self, shape):
        channels = len(self.normalizer.mean)
        if len(shape) != 4:
            raise ValueError(
                f"{type(self).__name__} expects images of rank 4 (batch, height, width, "
                f"{channels}), got shape {tuple(shape)}.")
        if shape[-1] is not None and shape[-1] != channels:
            raise ValueError(
                f"{type(self).__name__} expects images with {channels} channels "
                f"(last axis), got shape {tuple(shape)}.")

    def check_images(self, images):
        if isinstance(images, (dict, list, tuple)):
            raise ValueError(
                f"{type(self).__name__} expects a single image tensor as input, got a "
                f"{type(images).__name__}.")
        images = ops.convert_to_tensor(images)
        self.check_image_dtype(images)
        self.check_image_shape(tuple(images.shape))
        if self._recording_shape and self._trained_image_shape is None:
            shape = tuple(images.shape)
            if all(d is not None for d in shape[1:]):
                self._trained_image_shape = (None,) + tuple(int(d) for d in shape[1:])
        return images

    def get_build_config(self):
        # Built before tracing with unknown image sizes (see `_ensure_built`): keep
        # the size the model was trained on, which export and reloading need.
        config = super().get_build_config()
        shape = (config or {}).get("input_shape")
        if self._trained_image_shape is not None and shape is not None \
                and len(shape) == len(self._trained_image_shape) \
                and any(d is None for d in shape[1:]):
            config = {**config, "input_shape": list(self._trained_image_shape)}
        return config

    def check_labels(self, labels, images=None):
        """Flattens labels to (B,) int32 and asserts 0 <= y < num_classes in the graph
        (the range check is skipped when `num_classes` is None).

        The assertions run in `unpack`, outside the XLA-compiled part of the step, so
        they hold with `jit_compile=True` too.
        """
        if labels is None:
            raise ValueError(f"{type(self).__name__}.fit/evaluate needs labels: feed "
                             f"(images, labels) pairs.")
        labels = label_vector(labels, None, type(self).__name__)
        checks = []
        if self.num_classes is not None:  # None: labels are ids without a range
            checks += [
                tf.debugging.assert_non_negative(
                    labels, message=f"labels must be in [0, {self.num_classes})"),
                tf.debugging.assert_less(
                    labels, tf.constant(self.num_classes, tf.int32),
                    message=f"labels must be in [0, {self.num_classes}) (num_classes="
                            f"{self.num_classes})"),
            ]
        if images is not None:
            checks.append(tf.debugging.assert_equal(
                tf.shape(labels)[0], tf.shape(images)[0],
                message="labels and images must have the same batch size"))
        with tf.control_dependencies(checks):
            return tf.identity(labels)

    def unpack(self, data, training=True):
        """Checks a `fit`/`evaluate` batch; returns `(images, labels)`.

        Override for other batch structures (views, labeled + unlabeled streams).
        """
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        if sample_weight is not None:
            raise ValueError(f"{type(self).__name__} does not support sample weights.")
        x = self.check_images(x)
        return x, self.check_labels(y, x)

    # ----------------------------------------------------------------- forward
    def normalize(self, images):
        """What the backbone sees of raw 0..255 images (default: per-channel
        standardisation with the model's `mean` / `std`)."""
        return self.normalizer(images)

    def features(self, images, training=False):
        """Backbone features (B, D) of raw 0..255 images."""
        return self.backbone(self.normalize(images), training=training)

    def reset_compiled_functions(self):
        """Drops the traced predict/test functions (after a Python-level setting that
        `call` reads, such as an inference mode, changes)."""
        self.predict_function = None
        self.test_function = None

    def embed(self, images):
        """Inference-mode features (B, D) of the network `call` uses (for export,
        linear probes, kNN); the backbone's unless a method says otherwise."""
        return self.features(images, training=False)

    # ------------------------------------------------------ the method's contract
    def forward(self, batch, training):
        """The method's forward pass on an unpacked batch; a dict of tensors."""
        raise NotImplementedError(f"{type(self).__name__} must implement forward().")

    def compute_losses(self, batch, outputs):
        """A dict name -> scalar loss (per-example `Loss` objects, reduced)."""
        raise NotImplementedError(f"{type(self).__name__} must implement "
                                  f"compute_losses().")

    def update_metrics(self, batch, outputs, training):
        """Updates the method's metrics (besides the loss trackers)."""

    def post_step(self, batch, outputs):
        """State updates outside the gradient, after the optimizer step (training only)."""

    # ----------------------------------------------------------------- the step
    def train_step(self, data):
        return self._train_body(self.unpack(data, training=True))

    def test_step(self, data):
        return self._test_body(self.unpack(data, training=False))

    def _train_body(self, batch):
        with tf.GradientTape() as tape:
            outputs = self.forward(batch, training=True)
            losses = self.compute_losses(batch, outputs)
            loss = _total(losses)
            scaled = self.optimizer.scale_loss(loss)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        self.post_step(batch, outputs)
        return self._log(batch, outputs, losses, loss, training=True)

    def _test_body(self, batch):
        outputs = self.forward(batch, training=False)
        losses = self.compute_losses(batch, outputs)
        return self._log(batch, outputs, losses, _total(losses), training=False)

    def _log(self, batch, outputs, losses, loss, training):
        # Loss objects scale by 1/replicas for the gradient; undo it for the logs.
        self.loss_tracker.update_state(unscale_loss(loss))
        for name in self._loss_components:
            getattr(self, f"_{name}_tracker").update_state(unscale_loss(losses[name]))
        self.update_metrics(batch, outputs, training)
        return {m.name: m.result() for m in self.metrics_to_log(batch, training)}

    def metrics_to_log(self, batch, training):
        """The metrics a step returns (default: all of them)."""
        return self.metrics

    def make_train_function(self, force=False):
        return self._make_step_function("train", force)

    def make_test_function(self, force=False):
        return self._make_step_function("test", force)

    def _make_step_function(self, kind, force):
        attr = f"{kind}_function"
        if getattr(self, attr) is not None and not force:
            return getattr(self, attr)
        self._ensure_built()
        training = kind == "train"
        body = self._train_body if training else self._test_body
        xla = self.jit_compile is True and not self.run_eagerly
        # A nested XLA function cannot hold the cross-replica sums of a multi-replica
        # step (gradients, synchronised batch norm: "merge_call called while defining
        # a new graph"), and Keras' own whole-step XLA fails on replicas of one host's
        # CPU ("Trying to access resource ... located in device CPU:1").
        replicas = self.distribute_strategy.num_replicas_in_sync
        if xla and replicas > 1:
            raise ValueError(
                f"jit_compile=True is not supported on {replicas} replicas: compile with "
                f"jit_compile=False or 'auto' (which is graph mode with TensorFlow) "
                f"under a multi-replica strategy.")
        if xla:
            # XLA drops graph assertions: only the step body is compiled; the batch
            # is unpacked and checked in the plain graph around it.
            body = tf.function(body, jit_compile=True, reduce_retracing=True)

        multi_worker = is_multi_worker(self.distribute_strategy)

        def step(data):
            self._recording_shape = True
            try:
                batch = self.unpack(data, training=training)
            finally:
                self._recording_shape = False
            logs = body(batch)
            if multi_worker:
                # Keras averages each log across workers with strategy.reduce("MEAN",
                # v, axis=0), which fails on scalars (tensorflow/tensorflow#72388):
                # give it shape (1,), and the mean over axis 0 of the replicas' values
                # is the scalar mean.
                logs = keras.tree.map_structure(
                    lambda v: tf.reshape(v, [1]) if v.shape.rank == 0 else v, logs)
            return logs

        jit_compile = self._jit_compile
        self._jit_compile = False
        try:
            function = self._make_function(step)
        finally:
            self._jit_compile = jit_compile
        setattr(self, attr, function)
        return function

    # ------------------------------------------------------------------ config
    def get_config(self):
        config = super().get_config()
        normalizer = self.normalizer
        config.update({
            "backbone": self._backbone_name if self._backbone_name is not None
            else keras.saving.serialize_keras_object(self.backbone),
            "num_classes": self.num_classes,
            "width": self.width,
            "mean": normalizer.mean,
            "std": normalizer.std,
            "sync_batchnorm": self.sync_batchnorm,
        })
        return config

    @classmethod
    def from_config(cls, config):
        # `trainable=False` passed to keras.Model.__init__ would be set before the
        # backbone exists and never reach its layers: apply it once they are built.
        config = dict(config)
        trainable = config.pop("trainable", True)
        model = cls(**config)
        if not trainable:
            model.trainable = True
            model.trainable = False
        return model


def _total(losses):
    if not losses:
        raise ValueError("compute_losses returned no loss.")
    values = list(losses.values())
    total = values[0]
    for value in values[1:]:
        total = total + value
    return total


class InferenceModeMixin:
    """An `inference` setting read by `call` (SLA's single/aggregated/self_distill,
    FixMatch's ema/student): validated by the class' `_check_mode`, and setting it
    drops the traced predict/test functions so the new mode takes effect."""

    @property
    def inference(self):
        """The default inference mode of `call` / `predict` / `evaluate` / export."""
        return self._inference

    @inference.setter
    def inference(self, mode):
        self._inference = self._check_mode(mode)
        self.reset_compiled_functions()


class LinearClassifierMixin:
    """An N-way linear classifier on the backbone features (one-pass inference).

    Mixed into `BackboneModel` subclasses (supervised, DA, MT): `add_classifier()`
    in `__init__` creates `classifier` and the `accuracy` metric; `call` returns the
    float32 logits of the untransformed images, and the default `forward` /
    `compute_losses` train them with cross-entropy.
    """

    def add_classifier(self):
        if self.num_classes is None:
            raise ValueError(f"{type(self).__name__} needs num_classes.")
        self.classifier = keras.layers.Dense(self.num_classes, name="classifier")
        self.ce = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
        self.accuracy = keras.metrics.SparseCategoricalAccuracy(name="accuracy")

    def classify(self, features):
        return ops.cast(self.classifier(features), "float32")

    def build_heads(self, feature_shape):
        self.build_layers(feature_shape, self.classifier)

    def call(self, images, training=False):
        images = self.check_images(images)
        return self.classify(self.features(images, training))

    def forward(self, batch, training):
        images, labels = batch
        return {"logits": self.classify(self.features(images, training)),
                "labels": labels}

    def compute_losses(self, batch, outputs):
        return {"ce": self.ce(outputs["labels"], outputs["logits"])}

    def update_metrics(self, batch, outputs, training):
        self.accuracy.update_state(outputs["labels"], outputs["logits"])

