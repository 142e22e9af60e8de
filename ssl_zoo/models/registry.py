"""Method registry: what each method needs from the data and how it is evaluated.

Each method registers itself next to its model (`register_method(...)` at the end of
its model file); the CLI, `training.py`, the examples, the benchmarks and the test
battery read this registry and have no per-method branches.
"""

import dataclasses
import inspect

STREAMS = ("labeled", "semi_supervised")


@dataclasses.dataclass(frozen=True)
class MethodSpec:
    """How to build, feed and evaluate one method.

    Attributes:
        model_class: the `keras.Model` subclass (a `BackboneModel`).
        description: one line for `ssl-zoo list`.
        stream: what the training data stream yields:
            "labeled": `(images, labels)` batches (B, H, W, 3), or
            `(views, labels)` (B, V, H, W, 3) when `num_views > 1`; a view that
            emits its own labels (e.g. puzzles) replaces the class labels.
            "semi_supervised": a labeled and an unlabeled stream zipped,
            `({"images", "unlabeled_weak", "unlabeled_strong"}, labels)`.
        view: the training view, a name registered in `ssl_zoo.data` (weak,
            strong, supcon, ...), or "model": the model makes it
            (`model.make_view(image_shape, **data_kwargs)`, e.g. Jigsaw puzzles
            with the model's own permutation set, emitting their own labels).
        num_views: views per image in a training batch.
        evaluation: how a trained model is scored, a name of
            `ssl_zoo.evaluation.EVALUATORS` ("direct", "linear_probe", "knn").
        defaults: constructor keyword arguments implied by the method name.
        test_kwargs: small constructor arguments for the test battery.
        recipe: the method's optimizer recipe (keys of `training.DEFAULT_RECIPE`:
            learning_rate, momentum, nesterov, weight_decay, weight_decay_mode,
            schedule, warmup_steps); fields the caller sets win.
        data_kwargs: the method's default stream options (`training.make_train_stream`),
            e.g. `{"mu": 2, "strong": "strong_daso"}` or, for a labeled stream, the
            view's options (`{"pad_mode": "constant"}`); the caller's win.
        backbone: the backbone a run uses when its config names none; None (the
            usual case): the model class's own default, so that `SLAModel()` in
            Python and `ssl-zoo train --method=sla` build the same network (see
            `default_backbone`). Set it only for a method that differs from its class.
        class_labels: whether the model predicts the data set's classes (it is
            built with the data set's `num_classes` and trained on its labels).
            False for methods whose targets come from elsewhere (Jigsaw's
            permutation index, cluster classification's pseudo-labels): the CLI,
            trainer and test battery then leave `num_classes` to the method.

    Example:
    >>> spec = get_method("supcon")
    >>> spec.view, spec.num_views, spec.evaluation
    ('supcon', 2, 'linear_probe')
    """

    model_class: type
    description: str
    stream: str = "labeled"
    view: str = "weak"
    num_views: int = 1
    evaluation: str = "direct"
    defaults: dict = dataclasses.field(default_factory=dict)
    test_kwargs: dict = dataclasses.field(default_factory=dict)
    recipe: dict = dataclasses.field(default_factory=dict)
    data_kwargs: dict = dataclasses.field(default_factory=dict)
    backbone: str = None
    class_labels: bool = True

    def __post_init__(self):
        if self.stream not in STREAMS:
            raise ValueError(f"MethodSpec stream must be one of {STREAMS}, got "
                             f"{self.stream!r}.")
        if int(self.num_views) < 1:
            raise ValueError(f"MethodSpec num_views must be >= 1, got {self.num_views}.")

    @property
    def default_backbone(self):
        """The backbone of a run that names none: `backbone`, else a `backbone` in
        `defaults`, else the `backbone` default of `model_class`'s constructor.

        Example:
        >>> get_method("sla").default_backbone  # SLAModel's: the authors' option-A net
        'resnet32_cifar_a'
        >>> get_method("fixmatch").default_backbone
        'wrn28_2'
        """
        if self.backbone:
            return self.backbone
        if self.defaults.get("backbone"):
            return self.defaults["backbone"]
        parameter = inspect.signature(self.model_class.__init__).parameters.get("backbone")
        if parameter is None or parameter.default is inspect.Parameter.empty:
            raise ValueError(f"{self.model_class.__name__} has no default backbone; "
                             f"name one in its MethodSpec (backbone=...).")
        return parameter.default

    def build(self, **kwargs):
        """The model, with `defaults` overridden by `kwargs`."""
        return self.model_class(**{**self.defaults, **kwargs})


METHODS = {}


def register_method(name, spec):
    """Adds (or replaces) a method under `name`; returns `spec`.

    Example:
    >>> from ssl_zoo.models.supervised import SupervisedModel
    >>> _ = register_method("my_baseline", MethodSpec(SupervisedModel, "a copy"))
    >>> get_method("my_baseline").model_class.__name__
    'SupervisedModel'
    >>> _ = unregister_method("my_baseline")
    """
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"register_method needs a MethodSpec, got {type(spec).__name__}.")
    METHODS[name] = spec
    return spec


def unregister_method(name):
    """Removes `name` from the registry; returns its spec (None if absent)."""
    return METHODS.pop(name, None)


def get_method(name):
    """Returns the `MethodSpec` of `name`; unknown names list the known ones."""
    if name not in METHODS:
        raise ValueError(f"Unknown method {name!r}. Known methods: "
                         f"{', '.join(sorted(METHODS))}.")
    return METHODS[name]


def method_of(model):
    """The registered name and spec of a model instance (its class, with matching
    defaults where several names share a class); (None, None) if unregistered.

    Example:
    >>> from ssl_zoo.models.supcon import SimCLRModel
    >>> method_of(SimCLRModel("resnet32_cifar", width=0.25))[0]
    'simclr'
    """
    config = model.get_config()
    best = (None, None)
    for name, spec in sorted(METHODS.items()):
        if type(model) is not spec.model_class:
            continue
        if all(config.get(k) == v for k, v in spec.defaults.items()):
            if best[1] is None or len(spec.defaults) > len(best[1].defaults):
                best = (name, spec)
    return best
